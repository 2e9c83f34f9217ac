"""One SVID per served pod, held by the node proxy only while the pod is on this node.

Each pod gets the sidecar's :class:`~hybridmesh.proxy.identity.SvidManager` (key generated
here, in memory, per issuance; renewal at half the remaining life; fail closed at expiry), with
one difference: the credential is the *node* token plus the pod's name
(:func:`credentials.node_request_token`), which the CA accepts only for pods the plan places on
this node. A pod that leaves the node has its manager closed and its material dropped at once,
so the proxy stops being able to speak as it.

The tunnel server presents one of the held SVIDs: the one the client names in SNI
(``<sa>.<ns>.svid.hm``, see :func:`sni_name`) if held, else any (the client accepts any identity
the destination node legitimately hosts, see ``view.NodeView.identities_on``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hybridmesh.agent.nodeproxy.credentials import node_request_token
from hybridmesh.agent.nodeproxy.tunnel import sni_name
from hybridmesh.agent.nodeproxy.view import NodeView
from hybridmesh.identity.keygen import generate_here
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.proxy.identity import SvidManager, TlsMaterial

__all__ = ["NodeIdentities", "PodSvid", "sni_name"]

log = logging.getLogger(__name__)

Spawn = Callable[..., asyncio.Task[Any]]


class PodSvid(SvidManager):
    """The sidecar's SVID manager, authenticating with the node token for one pod."""

    def __init__(self, control_socket: str, token_file: Path, pod_key: str,
                 identity: SpiffeId, **kwargs: Any) -> None:
        kwargs.setdefault("key_maker", generate_here)  # one process per node: no keygen child
        super().__init__(control_socket, token_file, **kwargs)
        self.pod_key = pod_key
        self.want(identity)

    def want(self, identity: SpiffeId) -> None:
        """(Re)issue at once when the pod's identity changes (service account edited)."""
        if identity != self._wanted:
            self._wanted = identity
            self.renew_now()

    def _read_token(self) -> str:
        return node_request_token(super()._read_token(), self.pod_key)


class NodeIdentities:
    """The SVIDs of this node's served pods, kept in step with the node snapshot."""

    def __init__(self, control_socket: str, token_file: Path, spawn: Spawn,
                 **svid_options: Any) -> None:
        self._control = control_socket
        self._token_file = token_file
        self._spawn = spawn
        self._options = svid_options
        self._pods: dict[str, PodSvid] = {}
        self._sni: dict[str, str] = {}  # sni name -> pod key

    def sync(self, view: NodeView) -> list[asyncio.Task[None]]:
        """Start managers for new served pods, retarget changed ones, drop departed ones.
        Returns the close tasks of dropped managers (tests await them)."""
        wanted: dict[str, SpiffeId] = {}
        for pod in view.served():
            identity = pod.identity(view.trust_domain)
            if identity is not None:
                wanted[pod.key] = identity
        closing = [self._spawn(self._pods.pop(key).close(), name=f"hm-svid-drop-{key}")
                   for key in [k for k in self._pods if k not in wanted]]
        for key, identity in wanted.items():
            manager = self._pods.get(key)
            if manager is None:
                manager = self._pods[key] = PodSvid(self._control, self._token_file, key,
                                                    identity, **self._options)
                manager.start(self._spawn)
            else:
                manager.want(identity)
        self._sni = {sni_name(i): k for k, i in wanted.items()}
        return closing

    def material(self, pod_key: str) -> TlsMaterial | None:
        """The pod's current, unexpired material; None: fail closed."""
        manager = self._pods.get(pod_key)
        return manager.material if manager is not None else None

    def server_context(self) -> ssl.SSLContext | None:
        """A server context to start a tunnel handshake with (SNI may switch it)."""
        for manager in self._pods.values():
            material = manager.material
            if material is not None:
                material.server.sni_callback = self._pick
                return material.server
        return None

    def _pick(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        key = self._sni.get(name or "")
        material = self.material(key) if key else None
        if material is not None:
            material.server.sni_callback = self._pick
            sslobj.context = material.server

    @property
    def held(self) -> tuple[str, ...]:
        return tuple(k for k, m in self._pods.items() if m.material is not None)

    def describe(self) -> dict[str, Any]:
        return {key: manager.describe() for key, manager in sorted(self._pods.items())}

    async def close(self) -> None:
        managers, self._pods = list(self._pods.values()), {}
        for manager in managers:
            await manager.close()
