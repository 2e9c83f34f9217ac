"""The node proxies' control socket: the control plane's own routes, where only root connects.

Node proxies (root, in the node netns) watch ``GET /v1/snapshots/nodes/{name}`` and ask the CA
for their pods' SVIDs with a node token (``POST /v1/identity/sign``). Both are the control
plane's own now: :class:`~hybridmesh.control.identity.IdentityAuthority` accepts ``hmn1.``
node requests only for a ``placement: node`` pod the plan puts on that node, and the node
proxy's view (``agent/nodeproxy/view.py``) keeps only its own node's pods as local. This
module only gives them a socket of their own, ``STATE_DIR/nodes/control.sock`` (0600 in a 0700
directory): the pods' proxies' socket belongs to the proxy uid.
"""

from __future__ import annotations

from pathlib import Path

from hybridmesh import env as hm_env
from hybridmesh._http.router import Router
from hybridmesh.control.api import register_routes
from hybridmesh.control.identity import IdentityAuthority, register_identity_routes
from hybridmesh.control.plane import ControlPlane

__all__ = ["node_control_router", "node_control_socket"]


def node_control_socket() -> Path:
    return hm_env.STATE_DIR / "nodes" / "control.sock"


def node_control_router(control: ControlPlane, authority: IdentityAuthority) -> Router:
    """Routes of the node proxies' control socket: snapshots and watch, sign, bundle."""
    router = Router()
    register_routes(router, control)
    register_identity_routes(router, authority)
    return router
