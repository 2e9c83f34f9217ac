"""Desired state → concrete plan: which pods exist, on which node, with which address and env.

Pure and deterministic: the same topology and the same previous plan give the same result, so
the lab, the tests and ``lab apply`` all agree on what a change means. The only memory carried
across plans is address stickiness (see :mod:`hybridmesh.control.ipam`) and pod templates, so a
pod is replaced only when its own Workload changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from hybridmesh.control.ipam import SERVICE_OFFSET, AddressError, Allocator, node_addresses
from hybridmesh.control.model import (
    Limits,
    NodeInfo,
    PodInfo,
    ServiceInfo,
    ServicePortInfo,
)
from hybridmesh.control.waypoints import with_waypoints
from hybridmesh.resources import Service, Topology, Workload

__all__ = ["Plan", "PlanDiff", "Planner"]

_PLACEHOLDER = re.compile(r"\{(port|pod|namespace|node|pod_ip)\}")


@dataclass(frozen=True)
class Plan:
    """Everything the lab needs to realize a topology; endpoints are filled in by readiness."""

    nodes: tuple[NodeInfo, ...]
    pods: tuple[PodInfo, ...]
    services: tuple[ServiceInfo, ...]
    templates: dict[str, str] = field(default_factory=dict)  # pod key -> workload template hash

    def pod(self, key: str) -> PodInfo | None:
        return next((p for p in self.pods if p.key == key), None)


@dataclass(frozen=True)
class PlanDiff:
    """What changed between two plans, in the order the lab must act on it."""

    nodes_added: tuple[NodeInfo, ...]
    nodes_removed: tuple[NodeInfo, ...]
    pods_added: tuple[PodInfo, ...]
    pods_removed: tuple[PodInfo, ...]
    services_changed: bool

    @property
    def empty(self) -> bool:
        return not (
            self.nodes_added
            or self.nodes_removed
            or self.pods_added
            or self.pods_removed
            or self.services_changed
        )


def diff(old: Plan, new: Plan) -> PlanDiff:
    """A replaced pod (its Workload changed) shows up as removed and added again."""
    old_nodes = {n.name: n for n in old.nodes}
    new_nodes = {n.name: n for n in new.nodes}
    old_pods = {p.key: p for p in old.pods}
    new_pods = {p.key: p for p in new.pods}
    changed = {
        k for k in old_pods.keys() & new_pods.keys() if old.templates.get(k) != new.templates.get(k)
    }
    return PlanDiff(
        nodes_added=tuple(n for k, n in new_nodes.items() if k not in old_nodes),
        nodes_removed=tuple(n for k, n in old_nodes.items() if k not in new_nodes),
        pods_added=tuple(p for k, p in new_pods.items() if k not in old_pods or k in changed),
        pods_removed=tuple(p for k, p in old_pods.items() if k not in new_pods or k in changed),
        services_changed=_service_shape(old.services) != _service_shape(new.services),
    )


def _service_shape(services: tuple[ServiceInfo, ...]) -> list[object]:
    return [(s.key, s.cluster_ip, s.ports, sorted(s.selector.items())) for s in services]


class Planner:
    """Turns successive topologies into plans, keeping addresses and nodes sticky."""

    def __init__(self) -> None:
        self._node_index: dict[str, int] = {}
        self._pod_ips: dict[str, Allocator] = {}  # per node
        self._service_ips: Allocator | None = None
        self._previous = Plan(nodes=(), pods=(), services=())

    @property
    def previous(self) -> Plan:
        return self._previous

    def plan(self, topology: Topology) -> Plan:
        topology = with_waypoints(topology)  # L7 for node pods: waypoint pods (waypoints.py)
        nodes = self._plan_nodes(topology)
        services = self._plan_services(topology)
        pods, templates = self._plan_pods(topology, nodes, services)
        self._previous = Plan(nodes=nodes, pods=pods, services=services, templates=templates)
        return self._previous

    # -- nodes -------------------------------------------------------------------------
    def _plan_nodes(self, topology: Topology) -> tuple[NodeInfo, ...]:
        names = [n.metadata.name for n in topology.nodes]
        self._node_index = {k: v for k, v in self._node_index.items() if k in names}
        for name in names:
            if name not in self._node_index:
                used = set(self._node_index.values())
                self._node_index[name] = next(i for i in range(1, 255) if i not in used)
        pod_cidr = topology.mesh.spec.pod_cidr
        result = []
        for name in names:
            index = self._node_index[name]
            cidr, gateway, fabric_ip = node_addresses(pod_cidr, index)
            result.append(NodeInfo(name, index, cidr, gateway, fabric_ip))
            self._pod_ips.setdefault(name, Allocator(cidr, 2, f"pod (node {name})"))
        for gone in set(self._pod_ips) - set(names):
            del self._pod_ips[gone]
        return tuple(result)

    # -- services ----------------------------------------------------------------------
    def _plan_services(self, topology: Topology) -> tuple[ServiceInfo, ...]:
        if self._service_ips is None:
            self._service_ips = Allocator(
                topology.mesh.spec.service_cidr, SERVICE_OFFSET, "service cluster IP"
            )
        ips = self._service_ips
        keys = [_key(s.metadata.namespace, s.metadata.name) for s in topology.services]
        ips.release_all_but(keys)
        holders = {ip: owner for owner, ip in ips.owners().items()}
        for svc, key in zip(topology.services, keys, strict=True):
            ip = svc.spec.cluster_ip
            if ip and holders.get(ip, key) != key:
                raise AddressError(
                    f"Service {key}: clusterIP {ip} is already allocated to Service "
                    f"{holders[ip]}; choose another address or leave clusterIP out"
                )
        for svc, key in zip(topology.services, keys, strict=True):
            if svc.spec.cluster_ip:
                ips.reserve(key, svc.spec.cluster_ip)
        return tuple(
            _service_info(topology, svc, ips.allocate(key))
            for svc, key in zip(topology.services, keys, strict=True)
        )

    # -- pods --------------------------------------------------------------------------
    def _plan_pods(
        self, topology: Topology, nodes: tuple[NodeInfo, ...], services: tuple[ServiceInfo, ...]
    ) -> tuple[tuple[PodInfo, ...], dict[str, str]]:
        previous = {p.key: p for p in self._previous.pods}
        node_names = [n.name for n in nodes]
        load = dict.fromkeys(node_names, 0)
        wanted: list[tuple[Workload, int, str]] = []
        for wl in topology.workloads:
            template = _template_hash(topology, wl)
            for i in range(wl.spec.replicas):
                key = _key(wl.metadata.namespace, f"{wl.metadata.name}-{i}")
                wanted.append((wl, i, template))
                old = previous.get(key)
                if old and old.node in load and self._previous.templates.get(key) == template:
                    load[old.node] += 1
        pods: list[PodInfo] = []
        templates: dict[str, str] = {}
        for wl, i, template in wanted:
            key = _key(wl.metadata.namespace, f"{wl.metadata.name}-{i}")
            old = previous.get(key)
            if old and old.node in load and self._previous.templates.get(key) == template:
                pods.append(old)
            else:
                node = wl.spec.node or min(node_names, key=lambda n: (load[n], node_names.index(n)))
                load[node] += 1
                ip = self._pod_ips[node].allocate(key)
                pods.append(_pod_info(topology, wl, i, node=node, ip=ip, services=services))
            templates[key] = template
        for node, alloc in self._pod_ips.items():
            alloc.release_all_but(p.key for p in pods if p.node == node)
        return tuple(pods), templates


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _template_hash(topology: Topology, wl: Workload) -> str:
    """Identity of what a pod runs: changing any of it replaces the workload's pods."""
    doc = wl.spec.model_dump(mode="json", exclude={"replicas"})
    doc["labels"] = dict(wl.metadata.labels)
    doc["placement"] = topology.placement_of(wl)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _service_info(topology: Topology, svc: Service, cluster_ip: str) -> ServiceInfo:
    selected = topology.workloads_selected_by(svc.metadata.namespace, svc.spec.selector)
    ports = []
    for p in svc.spec.ports:
        target = _resolve_target_port(p.target_port, p.port, selected)
        ports.append(ServicePortInfo(p.name or "", p.port, target, p.app_protocol))
    return ServiceInfo(
        name=svc.metadata.name,
        namespace=svc.metadata.namespace,
        cluster_ip=cluster_ip,
        ports=tuple(ports),
        selector=dict(svc.spec.selector),
    )


def _resolve_target_port(target: int | str | None, port: int, workloads: list[Workload]) -> int:
    if target is None:
        return port
    if isinstance(target, int):
        return target
    for wl in workloads:
        for cp in wl.spec.ports:
            if cp.name == target:
                return cp.container_port
    return port  # validation guarantees a match; keep the planner total anyway


def _pod_info(
    topology: Topology,
    wl: Workload,
    index: int,
    *,
    node: str,
    ip: str,
    services: tuple[ServiceInfo, ...],
) -> PodInfo:
    name = f"{wl.metadata.name}-{index}"
    ns = wl.metadata.namespace
    ports = tuple((cp.name or "", cp.container_port) for cp in wl.spec.ports)
    values = {
        "port": str(ports[0][1]) if ports else "0",
        "pod": name,
        "namespace": ns,
        "node": node,
        "pod_ip": ip,
    }
    command = tuple(_PLACEHOLDER.sub(lambda m: values[m.group(1)], a) for a in wl.spec.command)
    env = _service_env(ns, services)
    env.update(
        POD_NAME=name,
        POD_NAMESPACE=ns,
        POD_IP=ip,
        NODE_NAME=node,
        HM_SERVICE_ACCOUNT=wl.spec.service_account,
    )
    env.update({e.name: e.value for e in wl.spec.env})
    limits = wl.spec.resources.limits if wl.spec.resources else None
    return PodInfo(
        name=name,
        namespace=ns,
        workload=wl.metadata.name,
        index=index,
        node=node,
        ip=ip,
        service_account=wl.spec.service_account,
        placement=topology.placement_of(wl),
        labels=dict(wl.metadata.labels),
        ports=ports,
        command=command,
        env=env,
        limits=Limits(
            cpu_millis=limits.cpu_millis if limits else None,
            memory_bytes=limits.memory_bytes if limits else None,
        ),
    )


def _service_env(namespace: str, services: tuple[ServiceInfo, ...]) -> dict[str, str]:
    """Kubernetes' docker-links style variables for services in the pod's namespace."""
    env: dict[str, str] = {}
    for svc in services:
        if svc.namespace != namespace or not svc.ports:
            continue
        prefix = svc.name.upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = svc.cluster_ip
        env[f"{prefix}_SERVICE_PORT"] = str(svc.ports[0].port)
        for p in svc.ports:
            if p.name:
                env[f"{prefix}_SERVICE_PORT_{p.name.upper().replace('-', '_')}"] = str(p.port)
    return env
