"""The node snapshot as the node proxy's lookup tables, derived once per snapshot, never mutated.

``GET /v1/snapshots/nodes/{name}`` carries every pod (with ``node`` and ``ready``; only this
node's become :class:`LocalPod`), the mesh's nodes (tunnel addresses), every service
with its endpoints, compiled routes, AuthorizationPolicies and the mesh settings. The proxy
needs: which local pods it serves (``placement: node``), where a destination address leads
(service VIP → endpoints, pod IP → pod), which node hosts a destination pod and how to reach
that node's tunnel port, and each local pod's compiled policies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId
from hybridmesh.policy import Evaluator, PolicyError, Target, compile_policies
from hybridmesh.telemetry.proxy_metrics import UNKNOWN, Peer

__all__ = [
    "TUNNEL_PORT",
    "Destination",
    "LocalPod",
    "NodeView",
    "Remote",
    "ViewError",
    "build_view",
]

TUNNEL_PORT: Final = 15008
_REPLICA = re.compile(r"-\d+$")


class ViewError(ValueError):
    """A node snapshot the proxy cannot use (it keeps the previous view)."""


@dataclass(frozen=True, slots=True)
class LocalPod:
    """A pod on this node; the node proxy serves it when ``placement`` is ``node``."""

    key: str
    namespace: str
    name: str
    workload: str
    ip: str
    service_account: str
    placement: str
    labels: Mapping[str, str]
    ready: bool
    peer: Peer

    def identity(self, trust_domain: str) -> SpiffeId | None:
        try:
            return SpiffeId.for_workload(trust_domain, self.namespace, self.service_account)
        except InvalidSpiffeId:
            return None


@dataclass(frozen=True, slots=True)
class Remote:
    """A pod known from service endpoints (anywhere in the mesh)."""

    ip: str
    namespace: str
    pod: str
    workload: str
    service_account: str
    placement: str
    node: str
    peer: Peer


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a steered connection goes: the pod chosen (None: not a mesh pod) and the port."""

    ip: str
    port: int
    pod: Remote | None
    service: str  # "ns/name" or "" when dialled by address


@dataclass(frozen=True)
class NodeView:
    node: str
    version: int
    trust_domain: str
    mtls_mode: str
    pods: Mapping[str, LocalPod]  # key -> pod (all local pods)
    local_by_ip: Mapping[str, LocalPod]
    vips: Mapping[tuple[str, int], tuple[str, int, tuple[Remote, ...]]]  # -> svc, target, eps
    by_ip: Mapping[str, Remote]
    nodes: Mapping[str, str]  # node name -> tunnel address (fabric IP) when the snapshot has it
    policies: tuple[Mapping[str, Any], ...]
    selecting: Mapping[str, frozenset[str]]  # local pod key -> services selecting it
    # (namespace, service account) -> its one workload, or "" when several share it
    accounts: Mapping[tuple[str, str], str] = field(default_factory=dict)
    _evaluators: dict[str, Evaluator] = field(default_factory=dict, repr=False, compare=False)
    _peers: dict[SpiffeId, Peer] = field(default_factory=dict, repr=False, compare=False)

    def served(self) -> tuple[LocalPod, ...]:
        """The local pods this proxy holds identities for."""
        return tuple(p for p in self.pods.values() if p.placement == "node")

    def destinations(self, ip: str, port: int) -> tuple[str, tuple[Destination, ...]]:
        """The service (or "") and the candidate destinations for an original destination."""
        entry = self.vips.get((ip, port))
        if entry is not None:
            service, target, endpoints = entry
            return service, tuple(Destination(e.ip, target, e, service) for e in endpoints)
        return "", (Destination(ip, port, self.by_ip.get(ip), ""),)

    def identities_on(self, node: str) -> frozenset[SpiffeId]:
        """Identities a node proxy of ``node`` may legitimately present (its node pods')."""
        out = set()
        for remote in self.by_ip.values():
            if remote.node == node and remote.placement == "node":
                try:
                    out.add(SpiffeId.for_workload(self.trust_domain, remote.namespace,
                                                  remote.service_account))
                except InvalidSpiffeId:
                    continue
        return frozenset(out)

    def peer_of(self, identity: SpiffeId | None) -> Peer:
        """Metric labels of a tunnel's verified client (``stat``'s destination-side edges):
        the workload running as that identity, as the source side labels it, when exactly
        one does; else the service account's name. The principal is the proof, the
        workload only a label: several workloads sharing an account cannot be told apart."""
        if identity is None or identity.namespace is None:
            return Peer.unknown()
        cached = self._peers.get(identity)
        if cached is None:
            account = identity.service_account or UNKNOWN
            workload = self.accounts.get((identity.namespace, account)) or account
            cached = self._peers[identity] = Peer(workload, identity.namespace, str(identity))
        return cached

    def evaluator(self, pod: LocalPod) -> Evaluator:
        """The policies bound to a local destination pod, compiled once per view.

        ``via`` is None: which Service the caller addressed is a claim of the source node, not
        proof, so targetRefs ALLOWs only close the workload (see ``policy._scope``).
        """
        cached = self._evaluators.get(pod.key)
        if cached is None:
            target = Target(pod.namespace, dict(pod.labels),
                            self.selecting.get(pod.key, frozenset()), None)
            cached = compile_policies(self.policies, target, trust_domain=self.trust_domain)
            self._evaluators[pod.key] = cached
        return cached


def _workload(name: str, given: object) -> str:
    return given if isinstance(given, str) and given else _REPLICA.sub("", name)


def _local(raw: Mapping[str, Any]) -> LocalPod:
    name, ns = str(raw["name"]), str(raw["namespace"])
    workload = _workload(name, raw.get("workload"))
    return LocalPod(f"{ns}/{name}", ns, name, workload, str(raw.get("ip") or ""),
                    str(raw.get("serviceAccount") or "default"),
                    str(raw.get("placement") or "none"), dict(raw.get("labels") or {}),
                    bool(raw.get("ready", False)), Peer(workload, ns, UNKNOWN))


def _remote(raw: Mapping[str, Any]) -> Remote:
    pod, ns = str(raw["pod"]), str(raw["namespace"])
    workload = _workload(pod, raw.get("workload"))
    return Remote(str(raw["ip"]), ns, pod, workload, str(raw.get("serviceAccount") or "default"),
                  str(raw.get("placement") or "none"), str(raw.get("node") or ""),
                  Peer(workload, ns, UNKNOWN))


def _on_node(raw: Mapping[str, Any], node: str) -> bool:
    """The control plane's node snapshot lists every pod of the mesh (agents need remote
    peers' labels); the proxy serves, asks SVIDs for and delivers locally to its own node's
    only. A pod without ``node`` is taken as local (test snapshots of one node)."""
    where = raw.get("node")
    return not where or where == node


def _selects(svc: Mapping[str, Any], pod: LocalPod) -> bool:
    selector = svc.get("selector") or {}
    return svc.get("namespace") == pod.namespace and bool(selector) and all(
        pod.labels.get(k) == v for k, v in selector.items())


def build_view(snapshot: Mapping[str, Any]) -> NodeView:
    """Derive the tables; :class:`ViewError` if the snapshot is malformed or a policy invalid."""
    try:
        view = _build(snapshot)
        for pod in view.served():
            view.evaluator(pod)  # compile now: a bad policy rejects the snapshot, not a request
    except PolicyError as exc:
        raise ViewError(f"unusable policies: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ViewError(f"unusable node snapshot: {type(exc).__name__}: {exc}") from None
    return view


def _build(snapshot: Mapping[str, Any]) -> NodeView:
    mesh = snapshot.get("mesh") or {}
    node = snapshot.get("node") or {}
    name = str(node.get("name") or "")
    pods = {p.key: p for p in (_local(raw) for raw in snapshot.get("pods") or ()
                               if _on_node(raw, name))}
    vips: dict[tuple[str, int], tuple[str, int, tuple[Remote, ...]]] = {}
    by_ip: dict[str, Remote] = {}
    services = list(snapshot.get("services") or ())
    for svc in services:
        key = f"{svc['namespace']}/{svc['name']}"
        endpoints = tuple(_remote(e) for e in svc.get("endpoints") or ())
        by_ip.update((e.ip, e) for e in endpoints)
        for port in svc.get("ports") or ():
            if svc.get("clusterIP"):
                target = int(port.get("targetPort") or port["port"])
                vips[(str(svc["clusterIP"]), int(port["port"]))] = (key, target, endpoints)
    selecting = {p.key: frozenset(f"{s['namespace']}/{s['name']}" for s in services
                                  if _selects(s, p)) for p in pods.values()}
    nodes = {str(n["name"]): str(n["fabricIP"]) for n in snapshot.get("nodes") or ()
             if n.get("fabricIP")}
    accounts = _accounts(snapshot.get("pods") or ())
    return NodeView(
        node=name, version=int(snapshot.get("version", 0)),
        trust_domain=str(mesh.get("trustDomain") or "cluster.local"),
        mtls_mode=str(mesh.get("mtlsMode") or "STRICT").upper(), pods=pods,
        local_by_ip={p.ip: p for p in pods.values() if p.placement == "node" and p.ip},
        vips=vips, by_ip=by_ip, nodes=nodes,
        policies=tuple(snapshot.get("policies") or ()), selecting=selecting,
        accounts=accounts)


def _accounts(pods: Any) -> dict[tuple[str, str], str]:
    """Every pod of the mesh (any node): (namespace, service account) -> workload, "" when
    the account runs several workloads."""
    out: dict[tuple[str, str], str] = {}
    for raw in pods:
        pod = _local(raw)
        key = (pod.namespace, pod.service_account)
        out[key] = pod.workload if out.get(key, pod.workload) == pod.workload else ""
    return out
