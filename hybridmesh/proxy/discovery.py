"""Discovery: the control-plane watch loop and the lookup tables derived from each snapshot.

A snapshot is JSON (see ``hybridmesh.control.plane``); the proxy's hot path needs dict lookups
instead: ``(clusterIP, port) → service port``, ``pod IP → endpoint`` (peer identity),
``service → endpoints``. :func:`build_tables` derives them all at once into a frozen
:class:`Tables`; the server swaps one reference, so a request keeps the tables it started with
and never sees half an update.

Until mTLS lands (issue 4) nothing about a peer is *authenticated*, so the principal labels are
``unknown`` (Istio reports the same without mTLS); workload and namespace come from the tables.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hybridmesh._http import HttpClient, HttpClientError
from hybridmesh.proxy.retry import RetryPolicy
from hybridmesh.proxy.routing import RouteTable
from hybridmesh.telemetry.proxy_metrics import UNKNOWN, Peer

__all__ = [
    "DEFAULT_RETRY",
    "EndpointMeta",
    "PodMeta",
    "ServiceEntry",
    "ServicePort",
    "SnapshotError",
    "Tables",
    "Watcher",
    "build_tables",
]

log = logging.getLogger(__name__)

DEFAULT_RETRY = RetryPolicy(codes=frozenset({503}), attempts=2)
"""Istio's default: two retries of connect failures and 503s (bounded by the retry budget)."""

_REPLICA = re.compile(r"-\d+$")
_UNKNOWN = Peer.unknown()
_OPAQUE = frozenset(("tcp", "opaque"))


class SnapshotError(ValueError):
    """The control plane sent a snapshot the proxy cannot use (the old tables stay)."""


@dataclass(frozen=True, slots=True)
class PodMeta:
    name: str
    namespace: str
    workload: str
    ip: str
    service_account: str
    peer: Peer


@dataclass(frozen=True, slots=True)
class EndpointMeta:
    """A ready pod behind some service: where to connect and who it is (for labels)."""

    ip: str
    pod: str
    namespace: str
    workload: str
    service_account: str
    placement: str
    node: str
    peer: Peer


@dataclass(frozen=True, slots=True)
class ServicePort:
    service: str  # "ns/name"
    fqdn: str
    name: str
    port: int
    target_port: int
    app_protocol: str | None

    @property
    def opaque(self) -> bool:
        """``appProtocol: tcp|opaque``: skip protocol detection."""
        return self.app_protocol in _OPAQUE


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    key: str
    fqdn: str
    cluster_ip: str
    ports: Mapping[int, ServicePort]
    endpoints: tuple[EndpointMeta, ...]


@dataclass(frozen=True, slots=True)
class InboundPort:
    """What the local pod serves on an app port: the service it backs (for labels)."""

    port: int
    service_fqdn: str
    app_protocol: str | None


@dataclass(frozen=True)
class Tables:
    """Everything a request needs to look up, derived once per snapshot (never mutated)."""

    version: int
    pod: PodMeta
    by_vip: Mapping[tuple[str, int], ServicePort]
    services: Mapping[str, ServiceEntry]
    by_ip: Mapping[str, EndpointMeta]
    inbound: Mapping[int, InboundPort]
    routes: RouteTable
    snapshot: Mapping[str, Any] = field(repr=False)
    sources: Mapping[str, Peer] = field(default_factory=dict, repr=False)

    def peer_of(self, ip: str) -> Peer:
        """The telemetry identity of a peer address: a Service endpoint, else any pod of the
        mesh (a caller that backs no Service, e.g. a load generator), else unknown."""
        meta = self.by_ip.get(ip)
        if meta is not None:
            return meta.peer
        return self.sources.get(ip, _UNKNOWN)

    def config_dump(self) -> dict[str, Any]:
        """For ``/config_dump``: the snapshot plus the derived tables (never key material)."""
        return {
            "version": self.version,
            "snapshot": dict(self.snapshot),
            "derived": {
                "vips": {f"{ip}:{port}": sp.service for (ip, port), sp in self.by_vip.items()},
                "endpoints": {k: [e.ip for e in s.endpoints] for k, s in self.services.items()},
                "inbound": {str(p): i.service_fqdn for p, i in self.inbound.items()},
            },
        }


def _workload_of(pod: str, given: object) -> str:
    """Endpoint JSON has no workload field (yet): pods are ``<workload>-<i>``."""
    return given if isinstance(given, str) and given else _REPLICA.sub("", pod)


def _endpoint(raw: Mapping[str, Any]) -> EndpointMeta:
    pod, ns = str(raw["pod"]), str(raw["namespace"])
    workload = _workload_of(pod, raw.get("workload"))
    return EndpointMeta(
        ip=str(raw["ip"]), pod=pod, namespace=ns, workload=workload,
        service_account=str(raw.get("serviceAccount") or ""),
        placement=str(raw.get("placement") or "none"), node=str(raw.get("node") or ""),
        peer=Peer(workload, ns, UNKNOWN),
    )  # fmt: skip


def _service(raw: Mapping[str, Any]) -> ServiceEntry:
    name, ns = str(raw["name"]), str(raw["namespace"])
    key, fqdn = f"{ns}/{name}", f"{name}.{ns}.svc.cluster.local"
    ports = {}
    for p in raw.get("ports") or ():
        sp = ServicePort(key, fqdn, str(p.get("name") or ""), int(p["port"]),
                         int(p.get("targetPort") or p["port"]), p.get("appProtocol"))
        ports[sp.port] = sp
    endpoints = tuple(_endpoint(e) for e in raw.get("endpoints") or ())
    return ServiceEntry(key, fqdn, str(raw.get("clusterIP") or ""), ports, endpoints)


def _pod(raw: Mapping[str, Any]) -> PodMeta:
    name, ns = str(raw["name"]), str(raw["namespace"])
    workload = _workload_of(name, raw.get("workload"))
    return PodMeta(name, ns, workload, str(raw.get("ip") or ""),
                   str(raw.get("serviceAccount") or ""), Peer(workload, ns, UNKNOWN))


def _selects(raw: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """Whether a service's selector matches the pod (same namespace, labels ⊇ selector)."""
    selector = raw.get("selector") or {}
    labels = pod.get("labels") or {}
    return (
        raw.get("namespace") == pod.get("namespace")
        and bool(selector)
        and all(labels.get(k) == v for k, v in selector.items())
    )


def _inbound(snapshot: Mapping[str, Any]) -> dict[int, InboundPort]:
    """App ports of this pod that a service selecting it targets (first service by name wins):
    by selector, not by endpoint list, so labels are right before the pod is ready."""
    out: dict[int, InboundPort] = {}
    raws = [r for r in snapshot.get("services") or () if _selects(r, snapshot["pod"])]
    for raw in sorted(raws, key=lambda r: str(r["name"])):
        svc = _service(raw)
        for sp in svc.ports.values():
            out.setdefault(sp.target_port, InboundPort(sp.target_port, svc.fqdn, sp.app_protocol))
    return out


def build_tables(snapshot: Mapping[str, Any]) -> Tables:
    """Derive every lookup table from a pod snapshot; :class:`SnapshotError` if malformed."""
    try:
        pod = _pod(snapshot["pod"])
        services = {s.key: s for s in (_service(raw) for raw in snapshot.get("services") or ())}
        by_vip = {(s.cluster_ip, p.port): p for s in services.values() if s.cluster_ip
                  for p in s.ports.values()}
        by_ip = {e.ip: e for s in services.values() for e in s.endpoints}
        routes = RouteTable.compile(list(snapshot.get("routes") or ()), DEFAULT_RETRY)
        version = int(snapshot.get("version", 0))
        inbound = _inbound(snapshot)
        sources = _sources(snapshot.get("peers") or ())
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"unusable snapshot: {type(exc).__name__}: {exc}") from None
    return Tables(version, pod, by_vip, services, by_ip, inbound, routes, snapshot, sources)


def _sources(raws: Iterable[Mapping[str, Any]]) -> dict[str, Peer]:
    """Pod IP → Peer (no principal: only a certificate names one), one object per workload:
    Peers are metric-cache keys, equal-by-identity is the cheapest hit."""
    interned: dict[tuple[str, str], Peer] = {}
    out: dict[str, Peer] = {}
    for raw in raws:
        key = (str(raw["workload"]), str(raw["namespace"]))
        out[str(raw["ip"])] = interned.setdefault(key, Peer(key[0], key[1], UNKNOWN))
    return out


class Watcher:
    """Long-polls the control plane for this pod's snapshot and hands over new tables.

    ``on_tables`` gets every usable snapshot (versions only grow); ``on_deleted`` is called
    once when the control plane answers 404 (the pod is gone: drain and exit), after which
    :meth:`run` returns. Transport errors are retried with backoff; a malformed snapshot is
    logged and skipped (the proxy keeps serving with the tables it has).
    """

    def __init__(
        self,
        client: HttpClient,
        pod_key: str,
        on_tables: Callable[[Tables], None],
        on_deleted: Callable[[], None],
        *,
        timeout_s: float = 30.0,
    ) -> None:
        self._client = client
        self._path = f"/v1/snapshots/pods/{pod_key}"
        self._on_tables = on_tables
        self._on_deleted = on_deleted
        self._timeout = timeout_s
        self.version = -1
        self.errors = 0

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                done = await self._poll_once()
            except (HttpClientError, OSError) as exc:
                self.errors += 1
                if self.errors == 1 or self.errors % 50 == 0:
                    log.warning("control plane unreachable (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if done:
                return

    async def _poll_once(self) -> bool:
        """One long-poll; True when the pod was deleted."""
        url = f"{self._path}?after={self.version}&timeout={self._timeout:g}"
        resp = await self._client.request("GET", url, timeout=self._timeout + 10.0)
        if resp.status == 404:
            self._on_deleted()
            return True
        if resp.status == 304:
            return False
        if resp.status != 200:
            raise HttpClientError(f"GET {url}: status {resp.status}")
        self._accept(resp.json_body())
        return False

    def _accept(self, doc: Any) -> None:
        version = doc.get("version") if isinstance(doc, dict) else None
        if not isinstance(version, int):
            raise HttpClientError("snapshot without an integer version")
        self.version = version
        try:
            tables = build_tables(doc)
        except SnapshotError as exc:
            log.error("snapshot %d ignored: %s", version, exc)
            return
        self._on_tables(tables)
