"""The control plane: applied resources → versioned snapshots, watched by proxies and agents.

Versioning follows the xDS habit: one monotonically increasing version for the whole plane, and
each subscriber's snapshot remembers the version at which *its content* last changed. A watcher
asks "anything newer than v?" and is woken only when its own snapshot changed, so a pod becoming
ready on node-2 does not wake every proxy whose view does not include it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from hybridmesh._aio import TaskSet
from hybridmesh.control.model import Endpoint, PodInfo, ServiceInfo
from hybridmesh.control.planner import Plan, PlanDiff, Planner, diff
from hybridmesh.control.routes import compile_routes
from hybridmesh.control.waypoints import node_policies
from hybridmesh.resources import Resource, Topology, build_topology

__all__ = ["ControlPlane", "Snapshot", "SnapshotKey"]

SnapshotKey = tuple[str, str]
"""``("pod", "ns/name")`` or ``("node", "name")``."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    content: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, **self.content}


class ControlPlane:
    """Holds the applied topology, the plan derived from it and pod readiness."""

    def __init__(self, topology: Topology) -> None:
        self._planner = Planner()
        self._topology = topology
        self._plan = self._planner.plan(topology)
        self._ready: set[str] = set()
        self._version = 0
        self._snapshots: dict[SnapshotKey, tuple[str, Snapshot]] = {}
        self._changed = asyncio.Condition()
        self._tasks = TaskSet()
        self._recompute()

    # -- reads -------------------------------------------------------------------------
    @property
    def topology(self) -> Topology:
        return self._topology

    @property
    def plan(self) -> Plan:
        return self._plan

    @property
    def version(self) -> int:
        return self._version

    def services(self) -> tuple[ServiceInfo, ...]:
        """Services with their endpoints: the ready pods their selector matches."""
        return tuple(self._with_endpoints(s) for s in self._plan.services)

    def is_ready(self, pod_key: str) -> bool:
        return pod_key in self._ready

    def snapshot(self, key: SnapshotKey) -> Snapshot | None:
        entry = self._snapshots.get(key)
        return entry[1] if entry else None

    # -- writes ------------------------------------------------------------------------
    def apply(self, resources: list[Resource]) -> PlanDiff:
        """Replace the desired state (already merged by the caller); return what changed."""
        topology = build_topology(resources)
        old = self._plan
        self._topology = topology
        self._plan = self._planner.plan(topology)
        change = diff(old, self._plan)
        for pod in change.pods_removed:
            self._ready.discard(pod.key)
        self._recompute()
        return change

    def set_ready(self, pod_key: str, ready: bool) -> None:
        before = pod_key in self._ready
        if ready:
            self._ready.add(pod_key)
        else:
            self._ready.discard(pod_key)
        if before != ready:
            self._recompute()

    # -- watch -------------------------------------------------------------------------
    async def watch(self, key: SnapshotKey, after: int, timeout: float) -> Snapshot | None:
        """Return the snapshot once its version is newer than ``after`` (or at timeout).

        Returns None if the subscriber does not exist (a deleted pod): the caller answers 404
        so the proxy knows to stop rather than poll forever.
        """
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._newer(key, after)), timeout
                )
        return self.snapshot(key)

    def _newer(self, key: SnapshotKey, after: int) -> bool:
        snap = self.snapshot(key)
        return snap is None or snap.version > after

    # -- internals ---------------------------------------------------------------------
    def _with_endpoints(self, svc: ServiceInfo) -> ServiceInfo:
        endpoints = tuple(
            Endpoint(p.name, p.namespace, p.ip, p.node, p.service_account, p.placement, p.workload)
            for p in self._plan.pods
            if p.namespace == svc.namespace
            and p.key in self._ready
            and all(p.labels.get(k) == v for k, v in svc.selector.items())
        )
        return replace(svc, endpoints=endpoints)

    def _recompute(self) -> None:
        """Rebuild every subscriber's view; bump the version of those whose content changed."""
        services = [s.to_json() for s in self.services()]
        routes = compile_routes(self._topology)
        policies = [
            p.model_dump(mode="json", by_alias=True, exclude_none=True)
            for p in self._topology.authorization_policies
        ]
        mesh = self._mesh_json()
        fresh: dict[SnapshotKey, dict[str, Any]] = {}
        all_pods = [self._pod_json(p) for p in self._plan.pods]
        # who is behind each pod IP, for the source labels of a caller that backs no Service
        # (a load generator, a Job): Istio learns it by peer metadata exchange, we from here
        peers = [{"ip": p.ip, "workload": p.workload, "namespace": p.namespace}
                 for p in self._plan.pods if p.ip]
        nodes = [
            {"name": n.name, "fabricIP": n.fabric_ip, "podCIDR": n.pod_cidr, "gateway": n.gateway}
            for n in self._plan.nodes
        ]
        for pod in self._plan.pods:
            fresh[("pod", pod.key)] = {
                "kind": "pod",
                "pod": pod.to_json(),
                "mesh": mesh,
                "services": services,
                "routes": routes,
                "policies": policies,
                "nodes": nodes,  # sidecars reach node pods through these node proxies (HBONE)
                "peers": peers,
            }
        node_side = node_policies(self._topology, policies)
        for node in self._plan.nodes:
            fresh[("node", node.name)] = {
                "kind": "node",
                "node": {"name": node.name, "podCIDR": node.pod_cidr, "fabricIP": node.fabric_ip,
                         "gateway": node.gateway},
                # every pod, not only this node's: identity-based policy and flow records
                # need the labels and service accounts of remote peers too (each has "node")
                "pods": all_pods,
                "nodes": nodes,  # node proxies find each other's tunnel address here
                "mesh": mesh,
                "services": services,
                "routes": routes,
                "policies": node_side,  # the waypoints admitted (control/waypoints.py)
            }
        self._version += 1
        snapshots: dict[SnapshotKey, tuple[str, Snapshot]] = {}
        for key, content in fresh.items():
            digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
            old = self._snapshots.get(key)
            if old and old[0] == digest:
                snapshots[key] = old
            else:
                snapshots[key] = (digest, Snapshot(self._version, content))
        self._snapshots = snapshots
        self._notify()

    def _pod_json(self, pod: PodInfo) -> dict[str, Any]:
        return {**pod.to_json(), "ready": pod.key in self._ready}

    def _mesh_json(self) -> dict[str, Any]:
        spec = self._topology.mesh.spec
        return {
            "trustDomain": spec.trust_domain,
            "mtlsMode": spec.mtls.mode,
            "defaultPlacement": spec.default_placement,
            "h2UpgradePolicy": spec.h2_upgrade_policy,
            "certificateTTLSeconds": int(spec.certificate_ttl.total_seconds()),
        }

    def _notify(self) -> None:
        """Wake watchers; a no-op without a running loop (start-up, synchronous tests)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return

        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        self._tasks.spawn(wake(), name="control-notify")
