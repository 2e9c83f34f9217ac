"""What ``hybridmesh observe`` shows: flow events parsed from the agents' JSON, and its filters.

Pure: a :class:`FlowFilter` is built once from the command line (:func:`build_filter`, which
rejects bad input with :class:`FilterError`) and is then a predicate over
:class:`~hybridmesh.agent.datapath.FlowEvent` values. Every filter given must hold (AND), as
with Hubble's flags. A pod is ``[namespace/]name`` or an IP address (for endpoints that are not
pods); a name without a namespace takes ``--namespace`` when given, else matches any namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, cast, get_args

from hybridmesh.agent.datapath import FlowEvent, FlowKind, Verdict

__all__ = [
    "VERDICTS",
    "BadFlowRecord",
    "Endpoint",
    "FilterError",
    "FlowFilter",
    "PodMatch",
    "build_filter",
    "flow_from_json",
    "parse_pod",
]

VERDICTS: tuple[str, ...] = get_args(Verdict)
_KINDS: tuple[str, ...] = get_args(FlowKind)


class FilterError(ValueError):
    """A filter given on the command line is malformed (the message says which and why)."""


class BadFlowRecord(ValueError):
    """An agent sent a line that is not a flow event."""


@dataclass(frozen=True)
class PodMatch:
    """One ``--pod``-style value: a pod (namespace optional) or an address."""

    name: str | None = None
    namespace: str | None = None
    ip: str | None = None

    def matches(self, pod: str | None, ip: str) -> bool:
        if self.ip is not None:
            return ip == self.ip
        if pod is None:
            return False
        namespace, _, name = pod.rpartition("/")
        return name == self.name and self.namespace in (None, namespace)


def parse_pod(value: str, namespace: str | None = None) -> PodMatch:
    """``ns/name``, ``name`` (in ``namespace`` if given) or an IPv4 address."""
    text = value.strip()
    try:
        return PodMatch(ip=str(IPv4Address(text)))
    except ValueError:
        pass
    ns, slash, name = text.rpartition("/")
    if not name or (slash and not ns) or "/" in ns or any(c.isspace() for c in text):
        raise FilterError(f"pod {value!r} is not [namespace/]name or an IP address")
    if slash and namespace is not None and ns != namespace:
        raise FilterError(f"pod {value!r} is not in --namespace {namespace}")
    return PodMatch(name=name, namespace=ns if slash else namespace)


@dataclass(frozen=True)
class Endpoint:
    pod: str | None
    ip: str
    port: int


@dataclass(frozen=True)
class FlowFilter:
    """All the filters of one ``observe`` (None: not filtered on that)."""

    pod: PodMatch | None = None
    from_pod: PodMatch | None = None
    to_pod: PodMatch | None = None
    namespace: str | None = None
    port: int | None = None
    verdict: str | None = None

    @property
    def empty(self) -> bool:
        return self == FlowFilter()

    def __call__(self, event: FlowEvent) -> bool:
        src = Endpoint(event.src_pod, event.src_ip, event.src_port)
        dst = Endpoint(event.dst_pod, event.dst_ip, event.dst_port)
        checks = (
            self.pod is None or _either(self.pod, src, dst),
            self.from_pod is None or self.from_pod.matches(src.pod, src.ip),
            self.to_pod is None or self.to_pod.matches(dst.pod, dst.ip),
            self.namespace is None or self.namespace in (_ns(src.pod), _ns(dst.pod)),
            self.port is None or self.port in (src.port, dst.port),
            self.verdict is None or event.verdict == self.verdict,
        )
        return all(checks)


def _either(match: PodMatch, src: Endpoint, dst: Endpoint) -> bool:
    return match.matches(src.pod, src.ip) or match.matches(dst.pod, dst.ip)


def _ns(pod: str | None) -> str | None:
    return pod.rpartition("/")[0] if pod and "/" in pod else None


def build_filter(
    *,
    pod: str | None = None,
    from_pod: str | None = None,
    to_pod: str | None = None,
    namespace: str | None = None,
    port: int | None = None,
    verdict: str | None = None,
) -> FlowFilter:
    """The command line's filters, checked; :class:`FilterError` says what is wrong."""
    if namespace is not None and (not namespace or "/" in namespace):
        raise FilterError(f"namespace {namespace!r} is not a namespace name")
    if port is not None and not 1 <= port <= 65535:
        raise FilterError(f"port {port} is not in 1..65535")
    if verdict is not None and verdict.upper() not in VERDICTS:
        raise FilterError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")

    def pod_of(value: str | None) -> PodMatch | None:
        return None if value is None else parse_pod(value, namespace)

    return FlowFilter(
        pod=pod_of(pod),
        from_pod=pod_of(from_pod),
        to_pod=pod_of(to_pod),
        namespace=namespace,
        port=port,
        verdict=verdict.upper() if verdict else None,
    )


# --- the agents' JSON -------------------------------------------------------------------------


def _field(doc: Mapping[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadFlowRecord(f"flow field {name!r}: expected {kind.__name__}, got {value!r}")
    return value


def _optional(doc: Mapping[str, Any], name: str, kind: type) -> Any:
    return None if doc.get(name) is None else _field(doc, name, kind)


def flow_from_json(doc: Any) -> FlowEvent:
    """The inverse of ``FlowEvent.to_json``; :class:`BadFlowRecord` for anything else."""
    if not isinstance(doc, Mapping):
        raise BadFlowRecord(f"flow event is not an object: {doc!r}")
    src, dst = _field(doc, "source", Mapping), _field(doc, "destination", Mapping)
    kind, verdict = _field(doc, "kind", str), _field(doc, "verdict", str)
    if kind not in _KINDS or verdict not in VERDICTS:
        raise BadFlowRecord(f"flow event of kind {kind!r}, verdict {verdict!r}")
    return FlowEvent(
        time_ns=_field(doc, "time", int),
        kind=cast(FlowKind, kind),
        src_ip=_field(src, "ip", str),
        src_port=_field(src, "port", int),
        dst_ip=_field(dst, "ip", str),
        dst_port=_field(dst, "port", int),
        verdict=cast(Verdict, verdict),
        policy=_optional(doc, "policy", str),
        protocol=_optional(doc, "protocol", str) or "TCP",
        bytes_sent=_optional(doc, "bytesSent", int) or 0,
        bytes_received=_optional(doc, "bytesReceived", int) or 0,
        rtt_us=_optional(doc, "rttUs", int),
        retransmits=_optional(doc, "retransmits", int) or 0,
        node=_optional(doc, "node", str) or "",
        src_pod=_optional(src, "pod", str),
        dst_pod=_optional(dst, "pod", str),
    )
