"""Outbound: the app's own connections, redirected to 15001 by the pod's capture rules.

The original destination decides everything. A service's clusterIP:port is load balanced
(P2C over the endpoints not ejected, to ``endpoint ip:targetPort``), HTTP requests to it are
routed per request (HTTPRoutes: backends, timeouts, retries); any other destination (a pod IP,
something outside the mesh) is *passthrough*: connected to as is, no retries beyond a failed
connect.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

from hybridmesh.proxy.context import ProxyContext
from hybridmesh.proxy.discovery import ServicePort, Tables
from hybridmesh.proxy.errors import ProxyError, Reason
from hybridmesh.proxy.hbone_sidecar import pick_via, plan_via, waypoint_hop
from hybridmesh.proxy.plan import NO_RETRY, Plan, finite
from hybridmesh.proxy.protocols.http1 import Headers, Request
from hybridmesh.proxy.routing import NoBackendError, RouteAction
from hybridmesh.proxy.upstream import EndpointKey
from hybridmesh.telemetry.proxy_metrics import REPORTER_SOURCE, Peer

__all__ = ["HeaderView", "OutboundRoute", "request_path"]


class HeaderView(Mapping[str, str]):
    """Request fields as the str mapping routing wants, decoded only when looked up."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Headers) -> None:
        self._fields = fields

    def __getitem__(self, name: str) -> str:
        wanted = name.lower().encode("latin-1")
        for key, value in self._fields:
            if key == wanted:
                return value.decode("latin-1")
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k.decode("latin-1") for k, _ in self._fields))

    def __len__(self) -> int:
        return len({k for k, _ in self._fields})


def request_path(target: bytes) -> str:
    """The path of an origin-form or absolute-form request target (query kept; routing drops
    it)."""
    if target[:1] != b"/" and target.find(b"://") >= 0:
        rest = target.split(b"://", 1)[1]
        slash = rest.find(b"/")
        target = rest[slash:] if slash >= 0 else b"/"
    return target.decode("latin-1")


class OutboundRoute:
    """Routing facts for one outbound connection (see :class:`~hybridmesh.proxy.plan.ConnRoute`)."""

    reporter = REPORTER_SOURCE
    # outbound requests keep their identity headers: the peer's inbound rewrites them
    identity_headers: tuple[tuple[bytes, bytes], ...] | None = None

    def __init__(self, ctx: ProxyContext, tables: Tables, orig: tuple[str, int]) -> None:
        self._ctx = ctx
        self._orig = orig
        self._use(tables)

    def _use(self, tables: Tables) -> None:
        """Take (newer) tables: a keep-alive connection follows snapshot changes between its
        requests; a request in flight keeps the plan it started with."""
        orig = self._orig
        self._tables = tables
        self.source = tables.pod.peer
        sp = tables.by_vip.get(orig)
        self._sp: ServicePort | None = sp
        if sp is not None:
            self.service = sp.fqdn
            self.destination = self.authority = f"{sp.fqdn}:{sp.port}"
            self.opaque = sp.opaque
        else:
            self.service = self.destination = self.authority = f"{orig[0]}:{orig[1]}"
            self.opaque = False
        self._plans: dict[tuple[int, str, int | None], Plan] = {}
        # no HTTPRoute rules for this destination: every request gets the same plan
        self._static: Plan | None = None
        self._routed = sp is not None and tables.routes.static_action(sp.service,
                                                                      sp.port) is None
        # a Service with a waypoint: everything goes through it (hbone_sidecar.py)
        self._waypoint = waypoint_hop(tables, sp.service) if sp is not None else None

    # -- opaque TCP --------------------------------------------------------------------------
    def pick_tcp(self, tried: Collection[EndpointKey]) -> tuple[EndpointKey, Peer] | None:
        sp = self._sp
        if self._waypoint is not None:
            return pick_via(self._waypoint, self._orig)
        if sp is None:
            ep = self._tables.by_ip.get(self._orig[0])
            return self._orig, ep.peer if ep is not None else Peer.unknown()
        bal = self._ctx.balancers.get(sp.service, sp.port)
        key = bal.pick(tried) if bal is not None else None
        if key is None or bal is None:
            return None
        meta = bal.meta.get(key)
        return key, meta.peer if meta is not None else Peer.unknown()

    def finish_tcp(self, key: EndpointKey, started: float, ok: bool) -> None:
        sp = self._sp
        bal = self._ctx.balancers.get(sp.service, sp.port) if sp is not None else None
        if bal is None or self._waypoint is not None:
            return
        bal.lb.finish(key, started, ok)
        if bal.record(key, ok):
            self._ctx.metrics.ejection(sp.fqdn if sp is not None else self.service)

    # -- HTTP --------------------------------------------------------------------------------
    def admit(self, request: Request) -> tuple[Request, tuple[bool, str] | None]:
        """Outbound requests are authorized by the destination's proxy: unchanged."""
        return request, None

    def plan(self, request: Request) -> Plan:
        tables = self._ctx.tables
        if tables is not self._tables and tables is not None:
            self._use(tables)
        static = self._static
        if static is not None:
            return static
        sp = self._sp
        if sp is None:
            static = self._static = self._passthrough()
            return static
        if self._waypoint is not None:
            static = self._static = plan_via(self._waypoint, sp, self._orig)
            return static
        method = request.method.decode("latin-1")
        path = request_path(request.target)
        action = self._tables.routes.match(sp.service, sp.port, method, path,
                                           HeaderView(request.headers))
        try:
            backend = action.choose(self._ctx.rng)
        except NoBackendError as exc:
            raise ProxyError(Reason.NO_BACKEND, self.destination, str(exc)) from None
        key = (id(action), backend.service, backend.port)
        cached = self._plans.get(key)
        if cached is None:
            cached = self._plans[key] = self._backend_plan(action, backend.service,
                                                           backend.port or sp.port)
        if not self._routed:
            self._static = cached
        return cached

    def _backend_plan(self, action: RouteAction, service: str, port: int) -> Plan:
        tables = self._tables
        svc = tables.services.get(service)
        bsp = svc.ports.get(port) if svc is not None else None
        if svc is None or bsp is None:
            what = f"service {service} port {port} is not in this proxy's snapshot"
            raise ProxyError(Reason.NO_ENDPOINTS, self.destination, what)
        return Plan(
            service=bsp.fqdn,
            destination=f"{bsp.fqdn}:{port}",
            route=action.route,
            retry=action.retry,
            request_timeout_s=finite(action.request_timeout_s),
            backend_timeout_s=finite(action.backend_timeout_s),
            balancer=self._ctx.balancers.get(svc.key, port),
            budget=self._ctx.balancers.budget(svc.key),
            app_protocol=bsp.app_protocol,
        )

    def _passthrough(self) -> Plan:
        plan = self._plans.get((0, "", None))
        if plan is None:
            ep = self._tables.by_ip.get(self._orig[0])
            plan = self._plans[(0, "", None)] = Plan(
                service=self.service, destination=self.destination, route=None,
                retry=NO_RETRY, request_timeout_s=None, backend_timeout_s=None,
                fixed=self._orig, fixed_peer=ep.peer if ep is not None else Peer.unknown(),
            )  # fmt: skip
        return plan
