"""The identity and mTLS metrics of one proxy worker, rendered as Prometheus text.

A handful of series, updated per connection or per renewal (never per request), so they are
plain dicts rendered at scrape time; the worker's ``/metrics`` appends them to the request
metrics. Names follow the Istio/Linkerd habits of the rest of the proxy:

- ``identity_cert_expiry_timestamp_seconds`` (gauge): expiry of the current SVID, 0 = none;
- ``identity_renewals_total{result}``: issuance attempts, ``success`` or ``failure``;
- ``identity_connections_total{reporter, connection_security_policy, source_principal,
  destination_principal}``: admitted connections, ``mutual_tls`` or ``none``;
- ``identity_connections_refused_total{reporter, reason}``: refused ones (``plaintext-strict``,
  ``handshake``, ``peer-identity``, ``no-identity``).

No label ever carries key material: principals are SPIFFE IDs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

__all__ = ["RENEWAL_RESULTS", "IdentityMetrics"]

RENEWAL_RESULTS: Final = ("success", "failure")
_ADMITTED_LABELS: Final = ("reporter", "connection_security_policy", "source_principal",
                           "destination_principal")


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


def _number(value: float) -> str:
    return repr(float(value))


class IdentityMetrics:
    """Counters and the expiry gauge (see the module docstring)."""

    def __init__(self) -> None:
        self.expiry: Callable[[], float] = lambda: 0.0  # read at scrape: expiry is a state
        self.renewals = dict.fromkeys(RENEWAL_RESULTS, 0)
        self.admitted: dict[tuple[str, str, str, str], int] = {}
        self.refused: dict[tuple[str, str], int] = {}

    def renewal(self, ok: bool) -> None:
        self.renewals["success" if ok else "failure"] += 1

    def admit(self, reporter: str, policy: str, source: str, destination: str) -> None:
        key = (reporter, policy, source, destination)
        self.admitted[key] = self.admitted.get(key, 0) + 1

    def refuse(self, reporter: str, reason: str) -> None:
        key = (reporter, reason)
        self.refused[key] = self.refused.get(key, 0) + 1

    def exposition(self) -> bytes:
        out = [
            "# HELP identity_cert_expiry_timestamp_seconds Expiry (unix time) of the proxy's "
            "current X509-SVID; 0 = none.\n",
            "# TYPE identity_cert_expiry_timestamp_seconds gauge\n",
            f"identity_cert_expiry_timestamp_seconds {_number(self.expiry())}\n",
            "# HELP identity_renewals_total SVID issuance attempts by result.\n",
            "# TYPE identity_renewals_total counter\n",
        ]
        out += (f'identity_renewals_total{{result="{r}"}} {_number(n)}\n'
                for r, n in self.renewals.items())
        out += ["# HELP identity_connections_total Connections by security policy and "
                "verified principals.\n", "# TYPE identity_connections_total counter\n"]
        out += (f"identity_connections_total{_labels(_ADMITTED_LABELS, k)} {_number(n)}\n"
                for k, n in self.admitted.items())
        out += ["# HELP identity_connections_refused_total Connections refused by mTLS "
                "rules, by reason.\n", "# TYPE identity_connections_refused_total counter\n"]
        out += (f"identity_connections_refused_total"
                f"{_labels(('reporter', 'reason'), k)} {_number(n)}\n"
                for k, n in self.refused.items())
        return "".join(out).encode("utf-8")
