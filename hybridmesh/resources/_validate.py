"""Cross-reference checks: what no single document can know on its own.

Each check is a generator of :class:`Problem` over an :class:`Index` of the resources, so
adding a check is adding a function to :data:`CHECKS`; every problem points at the line of
the field that refers to something missing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from hybridmesh.env import ROOT_NAMESPACE
from hybridmesh.resources._mesh import MeshConfig
from hybridmesh.resources._messages import format_path
from hybridmesh.resources._meta import Resource
from hybridmesh.resources._names import DNS_1035_LABEL, did_you_mean, one_of
from hybridmesh.resources._policy import AuthorizationPolicy
from hybridmesh.resources._route import BackendRef, HTTPRoute, ParentRef
from hybridmesh.resources._service import Service
from hybridmesh.resources._workload import Workload
from hybridmesh.resources.errors import Problem

__all__ = ["CHECKS", "Index", "problem", "selects", "show_selector"]


@dataclass
class Index:
    """The resources grouped the way the checks look them up."""

    resources: Sequence[Resource]
    mesh: MeshConfig
    node_names: list[str]
    workloads: dict[str, list[Workload]] = field(default_factory=lambda: defaultdict(list))
    services: dict[tuple[str, str], Service] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for resource in self.resources:
            if isinstance(resource, Workload):
                self.workloads[resource.namespace].append(resource)
            elif isinstance(resource, Service):
                self.services.setdefault((resource.namespace, resource.name), resource)


def problem(resource: Resource, path: tuple[str | int, ...], message: str) -> Problem:
    """A problem about ``resource``, on the line of the field at ``path``."""
    return Problem(resource.source, resource.line_of(*path), f"{resource.display}: {message}")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Kubernetes equality-based selection: every selector pair is among the labels."""
    return all(labels.get(key) == value for key, value in selector.items())


def show_selector(selector: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in selector.items()) + "}"


def _no_match(index: Index, namespace: str, selector: dict[str, str]) -> str | None:
    """Why ``selector`` selects nothing in ``namespace`` (None if it selects something).

    In the root namespace a policy's selector applies mesh-wide, so it is matched against
    every namespace's Workloads.
    """
    if namespace == ROOT_NAMESPACE:
        workloads = [w for ws in index.workloads.values() for w in ws]
        if any(selects(selector, w.labels) for w in workloads):
            return None
        pairs = sorted({f"{k}={v}" for w in workloads for k, v in w.labels.items()})
        return (f"{show_selector(selector)} matches no Workload in any namespace (a policy in "
                f'the root namespace "{ROOT_NAMESPACE}" applies mesh-wide); labels in the mesh '
                f"are: {one_of(pairs) if pairs else '(none)'}")
    workloads = index.workloads.get(namespace, [])
    if any(selects(selector, w.labels) for w in workloads):
        return None
    text = f'{show_selector(selector)} matches no Workload in namespace "{namespace}"'
    pairs = sorted({f"{k}={v}" for w in workloads for k, v in w.labels.items()})
    if not workloads:
        return f"{text}; there are no Workloads in that namespace"
    return f"{text}; labels there are: {one_of(pairs) if pairs else '(none)'}"


def _missing_service(index: Index, namespace: str, name: str) -> str | None:
    if (namespace, name) in index.services:
        return None
    names = sorted(n for ns, n in index.services if ns == namespace)
    guess = did_you_mean(name, names)
    hint = (
        f'did you mean "{guess}"?'
        if guess
        else (f"Services there: {one_of(names)}" if names else "there are no Services there")
    )
    return f'Service "{name}" does not exist in namespace "{namespace}"; {hint}'


def _ports_of(service: Service) -> str:
    return one_of(f"{p.port} ({p.name})" if p.name else str(p.port) for p in service.spec.ports)


def check_duplicates(index: Index) -> Iterator[Problem]:
    first: dict[tuple[str, str, str], Resource] = {}
    for resource in index.resources:
        earlier = first.setdefault(resource.key, resource)
        if earlier is not resource:
            yield problem(resource, ("metadata", "name"), (
                f"already defined at {earlier.source}:{earlier.line}; rename or remove one of them"
            ))


def check_single_mesh(index: Index) -> Iterator[Problem]:
    for resource in index.resources:
        if isinstance(resource, MeshConfig) and resource is not index.mesh:
            yield problem(resource, ("metadata", "name"), (
                f"only one MeshConfig is allowed and MeshConfig {index.mesh.name} is already "
                f"defined at {index.mesh.source}:{index.mesh.line}; merge the two"
            ))


def check_names(index: Index) -> Iterator[Problem]:
    for resource in index.resources:
        name = resource.name
        if isinstance(resource, Service) and not DNS_1035_LABEL.fullmatch(name):
            yield problem(resource, ("metadata", "name"), (
                f'metadata.name: "{name}" must start with a letter: Service names are '
                "DNS-1035 labels because they become DNS names"
            ))
        if isinstance(resource, Workload):
            longest = len(f"{name}-{max(resource.spec.replicas - 1, 0)}")
            if longest > 63:
                yield problem(resource, ("metadata", "name"), (
                    f'metadata.name: "{name}" is too long: pod names "{name}-<i>" must fit in '
                    f"63 characters; shorten it by {longest - 63}"
                ))


def check_workloads(index: Index) -> Iterator[Problem]:
    for workloads in index.workloads.values():
        for workload in workloads:
            node = workload.spec.node
            if node is not None and node not in index.node_names:
                guess = did_you_mean(node, index.node_names)
                hint = f'did you mean "{guess}"?' if guess else "declare a Node with that name"
                yield problem(workload, ("spec", "node"), (
                    f'spec.node: Node "{node}" is not declared (nodes: '
                    f"{one_of(index.node_names)}); {hint}"
                ))
            uses_port = any("{port}" in argument for argument in workload.spec.command)
            if uses_port and not workload.spec.ports:
                yield problem(workload, ("spec", "command"), (
                    "spec.command uses {port} but spec.ports is empty; declare a containerPort"
                ))


def check_services(index: Index) -> Iterator[Problem]:
    for service in index.services.values():
        reason = _no_match(index, service.namespace, service.spec.selector)
        if reason:
            yield problem(service, ("spec", "selector"), f"selector {reason}")
            continue
        selected = [
            w for w in index.workloads[service.namespace]
            if selects(service.spec.selector, w.labels)
        ]
        for i, port in enumerate(service.spec.ports):
            for workload in selected:
                if port.target_port_for(workload) is None:
                    names = one_of(
                        f"{p.name} ({p.container_port})" for p in workload.spec.ports if p.name
                    )
                    yield problem(service, ("spec", "ports", i, "targetPort"), (
                        f"spec.ports[{i}].targetPort: Workload {workload.ref} has no port named "
                        f'"{port.target_port}"; '
                        + (f"its named ports are: {names}" if names else "it names no ports")
                    ))


def check_policies(index: Index) -> Iterator[Problem]:
    for policy in index.resources:
        if not isinstance(policy, AuthorizationPolicy):
            continue
        if policy.spec.selector is not None:
            reason = _no_match(index, policy.namespace, policy.spec.selector.match_labels)
            if reason:
                path = ("spec", "selector", "matchLabels")
                yield problem(policy, path, f"spec.selector.matchLabels {reason}")
        for i, ref in enumerate(policy.spec.target_refs):
            missing = _missing_service(index, policy.namespace, ref.name)
            if missing:
                yield problem(policy, ("spec", "targetRefs", i), f"spec.targetRefs[{i}]: {missing}")


def _check_ref(
    index: Index, route: HTTPRoute, path: tuple[str | int, ...], ref: ParentRef | BackendRef
) -> Iterator[Problem]:
    """A parentRef or backendRef: the Service must exist and have the port it names."""
    where, namespace = format_path(path), ref.namespace or route.namespace
    missing = _missing_service(index, namespace, ref.name)
    if missing:
        yield problem(route, path, f"{where}: {missing}")
        return
    service = index.services[(namespace, ref.name)]
    if ref.port is not None and service.spec.port_numbered(ref.port) is None:
        yield problem(route, (*path, "port"), (
            f"{where}.port: Service {service.ref} has no port {ref.port}; "
            f"its ports are: {_ports_of(service)}"
        ))
    elif ref.port is None and isinstance(ref, BackendRef) and len(service.spec.ports) > 1:
        yield problem(route, path, (
            f"{where}: port is required because Service {service.ref} has "
            f"{len(service.spec.ports)} ports: {_ports_of(service)}"
        ))


def check_routes(index: Index) -> Iterator[Problem]:
    for route in index.resources:
        if not isinstance(route, HTTPRoute):
            continue
        for i, parent in enumerate(route.spec.parent_refs):
            yield from _check_ref(index, route, ("spec", "parentRefs", i), parent)
        for r, rule in enumerate(route.spec.rules):
            for b, backend in enumerate(rule.backend_refs):
                yield from _check_ref(index, route, ("spec", "rules", r, "backendRefs", b), backend)


def check_addresses(index: Index) -> Iterator[Problem]:
    """podCIDR room for the nodes, no overlap with serviceCIDR, clusterIPs inside and unique."""
    mesh, spec = index.mesh, index.mesh.spec
    pods, services = spec.pod_network, spec.service_network
    room = 2 ** (24 - pods.prefixlen) - 1  # /24 number 0 is left unused
    if len(index.node_names) > room:
        yield problem(mesh, ("spec", "podCIDR"), (
            f"spec.podCIDR: {spec.pod_cidr} has room for {room} nodes (a /24 each, the first "
            f"left unused) but {len(index.node_names)} are declared; use a larger podCIDR"
        ))
    if pods.overlaps(services):
        yield problem(mesh, ("spec", "podCIDR"), (
            f"spec.podCIDR: {spec.pod_cidr} overlaps serviceCIDR {spec.service_cidr}; "
            "use separate ranges"
        ))
    taken: dict[IPv4Address, Service] = {}
    for service in index.services.values():
        path = ("spec", "clusterIP")
        if service.spec.cluster_ip is None:
            continue
        address = IPv4Address(service.spec.cluster_ip)
        usable = address in services and address not in (
            services.network_address, services.broadcast_address
        )
        if not usable:
            yield problem(service, path, (
                f"spec.clusterIP: {address} is not a usable address of serviceCIDR "
                f"{spec.service_cidr}; pick one inside it, or leave clusterIP out to get one"
            ))
        elif address in taken:
            other = taken[address]
            yield problem(service, path, (
                f"spec.clusterIP: {address} is already used by Service {other.ref} "
                f"({other.source}:{other.line_of(*path)}); pick another or leave it out"
            ))
        taken.setdefault(address, service)


CHECKS: tuple[Callable[[Index], Iterator[Problem]], ...] = (
    check_duplicates,
    check_single_mesh,
    check_names,
    check_workloads,
    check_services,
    check_policies,
    check_routes,
    check_addresses,
)
