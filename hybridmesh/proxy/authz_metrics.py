"""Authorization decisions as Prometheus series (plain counters, like identity_metrics).

``authz_decisions_total{protocol="http|tcp", decision="allow|deny", policy}`` where ``policy``
is the deciding AuthorizationPolicy (``ns/name``), ``default`` for default-deny (an ALLOW
policy binds the pod and none matched), ``none`` when no policy decided (allowed) and
``invalid`` when the snapshot's policies could not be compiled (denied). Linkerd counts the
same thing as ``inbound_http_authz_{allow,deny}_total{authz_name}``; one series with a
``decision`` label keeps the ratio one query away. The proxy's 400s for malformed paths are
not decisions: they are ``proxy_errors_total{reason="bad-request"}``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["AuthzMetrics"]

_LABELS: Final = ("protocol", "decision", "policy")


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class AuthzMetrics:
    """Decision counters keyed by (protocol, allowed, policy label)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, bool, str], int] = {}

    def decision(self, protocol: str, verdict: tuple[bool, str]) -> None:
        key = (protocol, verdict[0], verdict[1])
        self.counts[key] = self.counts.get(key, 0) + 1

    def total(self, *, allowed: bool | None = None, policy: str | None = None) -> int:
        """Sum of the matching counters (for tests and ``/config_dump``)."""
        return sum(n for (_, ok, name), n in self.counts.items()
                   if (allowed is None or ok is allowed) and (policy is None or name == policy))

    def exposition(self) -> bytes:
        out = ["# HELP authz_decisions_total Inbound authorization decisions by protocol, "
               "decision and deciding policy.\n", "# TYPE authz_decisions_total counter\n"]
        for (protocol, allowed, policy), n in sorted(self.counts.items()):
            values = (protocol, "allow" if allowed else "deny", policy)
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(_LABELS, values, strict=True))
            out.append(f"authz_decisions_total{{{labels}}} {float(n)!r}\n")
        return "".join(out).encode("utf-8")
