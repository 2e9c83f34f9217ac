"""Inbound: connections to the pod's IP, redirected to 15006 by the pod's capture rules.

The original destination *is* the pod's own address and app port, so there is nothing to
balance: the proxy connects to ``<pod IP>:<port>`` (not 127.0.0.1: apps may bind the pod IP
only, as Istio ≥1.10 assumes) with its marked socket. Retries are the client side's job
(Istio habit); only a refused connect is tried again. Metrics report as the destination:
the source is the peer pod found by its IP, the destination is this pod.
"""

from __future__ import annotations

from collections.abc import Collection

from hybridmesh.proxy.context import ProxyContext
from hybridmesh.proxy.discovery import Tables
from hybridmesh.proxy.peer_identity import HeaderFields, VerifiedPeer, with_principal
from hybridmesh.proxy.plan import NO_RETRY, Plan
from hybridmesh.proxy.policy_hook import Verdict
from hybridmesh.proxy.protocols.http1 import Request
from hybridmesh.proxy.upstream import EndpointKey
from hybridmesh.telemetry.proxy_metrics import REPORTER_DESTINATION, Peer

__all__ = ["InboundRoute"]


class InboundRoute:
    """Routing facts for one inbound connection (see :class:`~hybridmesh.proxy.plan.ConnRoute`).

    ``verified`` is set by ``mtls_server`` once an mTLS handshake proved the client proxy's
    identity: it becomes the principals of the metric labels, the identity headers the app
    receives (client-sent ones are always removed: ``identity_headers``) and the peer the
    policy hook judges.
    """

    reporter = REPORTER_DESTINATION

    def __init__(
        self, ctx: ProxyContext, tables: Tables, orig: tuple[str, int], remote_ip: str
    ) -> None:
        self._ctx = ctx
        self._remote_ip = remote_ip
        self._target = orig
        self.verified: VerifiedPeer | None = None
        self.identity_headers: HeaderFields | None = ()
        self._use(tables)

    @property
    def port(self) -> int:
        return self._target[1]

    def authenticated(self, verified: VerifiedPeer) -> None:
        """The client proved its identity (mTLS): relabel and set its identity headers."""
        self.verified = verified
        self.identity_headers = verified.header_fields()
        self._use(self._tables)

    def _use(self, tables: Tables) -> None:
        """Take (newer) tables: labels follow snapshot changes on keep-alive connections."""
        self._tables = tables
        orig, remote_ip = self._target, self._remote_ip
        port = tables.inbound.get(orig[1])
        self.service = port.service_fqdn if port is not None else f"{orig[0]}:{orig[1]}"
        self.destination = f"{tables.pod.namespace}/{tables.pod.name} port {orig[1]}"
        self.authority = f"{orig[0]}:{orig[1]}"
        self.opaque = port is not None and port.app_protocol in ("tcp", "opaque")
        self.source = tables.peer_of(remote_ip)
        self._self_peer = tables.pod.peer
        verified = self.verified
        if verified is not None:
            self.source = with_principal(self.source, verified.peer)
            self._self_peer = with_principal(self._self_peer, verified.local)
        self._plan = Plan(
            service=self.service, destination=self.destination, route=None, retry=NO_RETRY,
            request_timeout_s=None, backend_timeout_s=None, fixed=orig,
            fixed_peer=self._self_peer, app_protocol=port.app_protocol if port else None,
        )  # fmt: skip

    def pick_tcp(self, tried: Collection[EndpointKey]) -> tuple[EndpointKey, Peer] | None:
        return self._target, self._self_peer

    def finish_tcp(self, key: EndpointKey, started: float, ok: bool) -> None:
        return None

    def admit(self, request: Request) -> tuple[Request, Verdict | None]:
        """Normalize the path and apply this pod's AuthorizationPolicies (policy_hook): the
        verified mTLS peer, or none for plaintext. Raises the proxy's 400 or 403."""
        policy = self._ctx.policy
        if policy is None:
            return request, None
        peer = self.verified.peer if self.verified is not None else None
        return policy.admit_request(peer, self._target[1], request, self.destination)

    def plan(self, request: Request) -> Plan:
        tables = self._ctx.tables
        if tables is not self._tables and tables is not None:
            self._use(tables)
        return self._plan
