"""The control plane as node proxies see it: node credentials at the CA, and node snapshots.

Two things the node proxy (``hybridmesh.agent.nodeproxy``) needs that the shared control plane
does not give yet, done here on the lab side so the ``node`` placement works end to end:

- **The CA hook** (``docs/node.md`` §1). :class:`LabAuthority` accepts a node proxy's sign
  request (``hmn1.…`` token naming a pod) only for a ``placement: node`` pod that the plan puts
  on that node, then signs exactly as for a pod's bootstrap token — by minting a one-minute
  bootstrap token for the checked claims and going through the normal path, so every existing
  check (pod gone, service account changed, trust domain) still applies. When
  ``control/identity.py`` gains the hook itself, this subclass becomes a no-op wrapper.
- **Node snapshots scoped to the node.** The control plane's node snapshot lists *every* pod
  (agents need remote peers' labels), but the node proxy's view treats each listed pod as
  local: it would ask the CA for other nodes' pods and skip the tunnel to them. The node
  proxies' control socket (:func:`node_control_router`) serves the same long-poll watch with
  ``pods`` limited to the node's own pods and the ``nodes`` list (name, fabric IP) the proxy
  reads its tunnel peers from.

The socket is ``STATE_DIR/nodes/control.sock`` (0600, root: node proxies run as root).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from hybridmesh import env as hm_env
from hybridmesh._http.message import HttpError, Request, Response
from hybridmesh._http.router import Router
from hybridmesh.agent.nodeproxy.credentials import (
    NodeRequestRefused,
    NodeTokens,
    authorize_node_request,
    is_node_request,
)
from hybridmesh.control.identity import (
    IdentityAuthority,
    IdentityError,
    SignedSvid,
    register_identity_routes,
)
from hybridmesh.control.plane import ControlPlane
from hybridmesh.identity.ca import MeshCA

__all__ = ["LabAuthority", "node_control_router", "node_control_socket", "scope_snapshot"]

_HANDOVER_TTL: Final = timedelta(minutes=1)
MAX_WATCH_SECONDS: Final = 300.0


def node_control_socket() -> Path:
    return hm_env.STATE_DIR / "nodes" / "control.sock"


class LabAuthority(IdentityAuthority):
    """The mesh CA plus node credentials (see the module docstring)."""

    def __init__(self, ca: MeshCA, control: ControlPlane) -> None:
        super().__init__(ca, control)
        self._node_tokens = NodeTokens(ca.trust_domain)

    def issue_node_token(self, node: str) -> str:
        """The node proxy's credential (hand it to that node's proxy only)."""
        return self._node_tokens.issue(node, now=self._clock())

    def _sign(self, token: str, csr_pem: bytes) -> SignedSvid:
        if is_node_request(token):
            now = self._clock()
            try:
                claims = authorize_node_request(self._node_tokens, token, self._control.plan,
                                                now=now)
            except NodeRequestRefused as exc:
                raise IdentityError(exc.status, exc.code, exc.message) from None
            token = self._ca.issue_bootstrap_token(claims.namespace, claims.service_account,
                                                   claims.pod, ttl=_HANDOVER_TTL, now=now)
        return super()._sign(token, csr_pem)


def scope_snapshot(doc: dict[str, Any], control: ControlPlane) -> dict[str, Any]:
    """A node snapshot with only the node's own pods and the mesh's nodes (tunnel peers)."""
    node = str((doc.get("node") or {}).get("name") or "")
    pods = [p for p in doc.get("pods") or () if p.get("node") == node]
    nodes = [{"name": n.name, "fabricIP": n.fabric_ip} for n in control.plan.nodes]
    return {**doc, "pods": pods, "nodes": nodes}


def node_control_router(control: ControlPlane, authority: IdentityAuthority) -> Router:
    """Routes of the node proxies' control socket: scoped node watch, sign, bundle."""
    router = Router()

    async def node_snapshot(req: Request, p: dict[str, str]) -> Response:
        query = req.query_params()
        after = _number(query.get("after"), -1)
        timeout = min(_number(query.get("timeout"), 30), MAX_WATCH_SECONDS)
        snap = await control.watch(("node", p["name"]), int(after), timeout)
        if snap is None:
            raise HttpError(404, f"no node {p['name']} in the control plane")
        if snap.version <= after:
            return Response(304, {"X-Hm-Version": str(snap.version)})
        return Response.json(scope_snapshot(snap.to_json(), control))

    router.add("GET", "/v1/snapshots/nodes/{name}", node_snapshot)
    register_identity_routes(router, authority)
    return router


def _number(raw: str | None, default: float) -> float:
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise HttpError(400, f"query parameter must be a number, got {raw!r}") from None
