"""Per-service balancing state that outlives snapshots: P2C peak-EWMA, outlier ejection, the
retry budget.

Tables are rebuilt on every snapshot, but an endpoint's RTT estimate, its in-flight count and
its ejection must not reset each time an unrelated pod becomes ready. :class:`Balancers` keeps
one :class:`ServiceBalancer` per (service, port) across snapshots and only tells it the new
endpoint set; state of the endpoints that stay survives (``PeakEwmaP2C.set_endpoints``).
"""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import Any

from hybridmesh.proxy.discovery import EndpointMeta, Tables
from hybridmesh.proxy.lb import PeakEwmaP2C
from hybridmesh.proxy.outlier import OutlierDetector
from hybridmesh.proxy.retry import RetryBudget
from hybridmesh.proxy.upstream import EndpointKey

__all__ = ["Balancers", "ServiceBalancer"]


class ServiceBalancer:
    """Endpoint choice for one service port: P2C over the endpoints not ejected."""

    def __init__(self, service: str, port: int, rng: random.Random) -> None:
        self.service = service
        self.port = port
        self.lb: PeakEwmaP2C[EndpointKey] = PeakEwmaP2C(rng=rng)
        self.outlier: OutlierDetector[EndpointKey] = OutlierDetector()
        self.keys: tuple[EndpointKey, ...] = ()
        self.meta: dict[EndpointKey, EndpointMeta] = {}

    def update(self, meta: dict[EndpointKey, EndpointMeta]) -> None:
        self.meta = meta
        self.keys = tuple(sorted(meta))
        self.lb.set_endpoints(self.keys)

    def pick(self, tried: Collection[EndpointKey] = ()) -> EndpointKey | None:
        """The best endpoint not ejected, preferring ones not ``tried`` yet by this request.

        Excluding tried endpoints makes a retry land elsewhere; when every candidate was tried,
        trying one again beats failing the request outright.
        """
        keys = self.keys
        if not keys:
            return None
        if not (tried or self.outlier.active):  # the usual request: nobody to exclude
            return keys[0] if len(keys) == 1 else self.lb.pick()
        ejected = self.outlier.ejected(keys)
        if tried:
            key = self.lb.pick(exclude=ejected | set(tried))
            if key is not None:
                return key
        return self.lb.pick(exclude=ejected)

    def record(self, key: EndpointKey, ok: bool) -> bool:
        """Feed outlier detection; True when ``key`` was just ejected."""
        return self.outlier.record(key, ok, self.keys)

    def snapshot(self) -> dict[str, Any]:
        return {
            "endpoints": [f"{ip}:{port}" for ip, port in self.keys],
            "ejected": sorted(f"{ip}:{port}" for ip, port in self.outlier.ejected(self.keys)),
            "lb": self.lb.snapshot(),
        }


class Balancers:
    """Every service port's balancer, synced to each new snapshot; retry budgets per service."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._by_port: dict[tuple[str, int], ServiceBalancer] = {}
        self._budgets: dict[str, RetryBudget] = {}

    def sync(self, tables: Tables) -> None:
        """Align with ``tables``: new service ports get a balancer, gone ones are dropped."""
        fresh: dict[tuple[str, int], ServiceBalancer] = {}
        for svc in tables.services.values():
            for sp in svc.ports.values():
                key = (svc.key, sp.port)
                bal = self._by_port.get(key) or ServiceBalancer(svc.key, sp.port, self._rng)
                bal.update({(e.ip, sp.target_port): e for e in svc.endpoints})
                fresh[key] = bal
        self._by_port = fresh
        self._budgets = {k: self._budgets.get(k) or RetryBudget() for k in tables.services}

    def get(self, service: str, port: int) -> ServiceBalancer | None:
        return self._by_port.get((service, port))

    def budget(self, service: str) -> RetryBudget:
        budget = self._budgets.get(service)
        if budget is None:
            budget = self._budgets[service] = RetryBudget()
        return budget

    def snapshot(self) -> dict[str, Any]:
        return {f"{svc}:{port}": b.snapshot() for (svc, port), b in sorted(self._by_port.items())}
