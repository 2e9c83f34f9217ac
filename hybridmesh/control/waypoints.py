"""L7 on demand for ``node`` pods: which Services get a waypoint, and what that changes.

A Service *needs L7* when an HTTPRoute names it as a parentRef, or when an
AuthorizationPolicy that binds its pods has an HTTP-only field (methods, paths, hosts: what
``policy.l4`` cannot project without widening a DENY or dropping an ALLOW). Such a Service
whose pods all run with ``placement: node`` gets a **waypoint**: one extra pod,
``waypoint-<svc>-0`` in the Service's namespace, running the sidecar engine (placement
``sidecar``) under the service account ``waypoint`` and labelled
``hybridmesh.io/waypoint-for: <svc>``, and a Service ``waypoint-<svc>`` (port 15008) selecting
it. It is planned like any pod (an address, a bootstrap token, an SVID from the CA,
readiness), so the lab needs nothing of its own for it; node proxies find it as the endpoint
of that Service in their snapshot and send the Service's traffic there.
Services whose pods have sidecars apply L7 themselves; L4-only Services never get one.

The waypoint enforces the Service's policies with the caller's identity, then connects to the
pods through their node proxies *as itself*. Istio's rule follows: the destination must admit
the waypoint. :func:`node_policies` applies it to the policies node snapshots carry, for the
policies the waypoint enforces (those binding the Service's pods as the Service's selector
describes them): a DENY no longer matches the waypoint's identity, and pods closed by an ALLOW
get one more ALLOW for it. Policies the waypoint does not enforce (selecting labels beyond the
Service's selector, the root namespace's) keep judging the waypoint as they are.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from hybridmesh.control.model import WAYPOINT_LABEL, WAYPOINT_SERVICE_ACCOUNT
from hybridmesh.policy import Target
from hybridmesh.policy._rules import http_fields
from hybridmesh.policy._scope import Binding, binding
from hybridmesh.resources import Topology
from hybridmesh.resources.models import AuthorizationPolicy, Service, Workload

__all__ = [
    "WAYPOINT_PREFIX",
    "Waypoint",
    "needs_l7",
    "node_policies",
    "waypoints",
    "with_waypoints",
]

WAYPOINT_PREFIX: Final = "waypoint-"
TUNNEL_PORT: Final = 15008
_API: Final = "hybridmesh.io/v1alpha1"


@dataclass(frozen=True, slots=True)
class Waypoint:
    """One Service's waypoint, as the plan and the node snapshots see it."""

    namespace: str
    service: str  # the Service's name
    selector: Mapping[str, str]
    principal: str  # spiffe://<td>/ns/<ns>/sa/waypoint

    @property
    def workload(self) -> str:
        return f"{WAYPOINT_PREFIX}{self.service}"

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.service}"


def _target(svc: Service, *, via: bool) -> Target:
    key = f"{svc.namespace}/{svc.name}"
    return Target(svc.namespace, dict(svc.spec.selector), frozenset({key}), key if via else None)


def _is_l7(policy: AuthorizationPolicy) -> bool:
    return any(http_fields(to.operation) for rule in policy.spec.rules for to in rule.to)


def needs_l7(topology: Topology, svc: Service) -> bool:
    """An HTTPRoute has ``svc`` as parent, or a policy binding its pods has HTTP fields."""
    for route in topology.http_routes:
        for ref in route.spec.parent_refs:
            if (ref.namespace or route.namespace, ref.name) == (svc.namespace, svc.name):
                return True
    target = _target(svc, via=True)
    return any(_is_l7(p) and binding(p, target) is not Binding.NONE
               for p in topology.authorization_policies)


def _all_node(topology: Topology, svc: Service) -> bool:
    selected = topology.workloads_selected_by(svc.namespace, dict(svc.spec.selector))
    return bool(selected) and all(topology.placement_of(w) == "node" for w in selected)


def waypoints(topology: Topology) -> tuple[Waypoint, ...]:
    """The Services that get a waypoint (L7 needed, every pod a ``node`` pod)."""
    domain = topology.mesh.spec.trust_domain
    return tuple(
        Waypoint(s.namespace, s.name, dict(s.spec.selector),
                 f"spiffe://{domain}/ns/{s.namespace}/sa/{WAYPOINT_SERVICE_ACCOUNT}")
        for s in topology.services
        if s.spec.selector and _all_node(topology, s) and needs_l7(topology, s)
    )


def _workload(wp: Waypoint) -> Workload:
    return Workload.model_validate({
        "apiVersion": _API, "kind": "Workload",
        "metadata": {"name": wp.workload, "namespace": wp.namespace,
                     "labels": {WAYPOINT_LABEL: wp.service}},
        "spec": {"serviceAccount": WAYPOINT_SERVICE_ACCOUNT, "placement": "sidecar",
                 "command": ["sleep", "infinity"]},
    })  # fmt: skip


def _service(wp: Waypoint) -> Service:
    return Service.model_validate({
        "apiVersion": _API, "kind": "Service",
        "metadata": {"name": wp.workload, "namespace": wp.namespace},
        "spec": {"selector": {WAYPOINT_LABEL: wp.service},
                 "ports": [{"name": "hbone", "port": TUNNEL_PORT, "targetPort": TUNNEL_PORT,
                            "appProtocol": "tcp"}]},
    })  # fmt: skip


def with_waypoints(topology: Topology) -> Topology:
    """``topology`` plus, per Service that needs one, the waypoint's Workload and a Service
    ``waypoint-<svc>`` (port 15008) selecting it, as Istio's waypoint Gateway has: node
    snapshots list Services with their *ready* endpoints, so node proxies learn where the
    waypoint is and whether it is ready from there. The planner's input only: the applied
    topology stays as the user wrote it. A Workload or Service of that name already there
    wins (the user's own)."""
    taken = {(w.namespace, w.name) for w in topology.workloads}
    taken |= {(s.namespace, s.name) for s in topology.services}
    wanted = [wp for wp in waypoints(topology) if (wp.namespace, wp.workload) not in taken]
    if not wanted:
        return topology
    return replace(topology, workloads=(*topology.workloads, *map(_workload, wanted)),
                   services=(*topology.services, *map(_service, wanted)))


# -- node snapshots: the destination admits the waypoint ---------------------------------------


def node_policies(topology: Topology, dumped: Iterable[Mapping[str, Any]]
                  ) -> list[dict[str, Any]]:
    """The policies for node snapshots: ``dumped`` (the snapshot JSON of
    ``topology.authorization_policies``, same order) with Istio's waypoint rule applied."""
    out = [dict(p) for p in dumped]
    wps = waypoints(topology)
    if not wps:
        return out
    services = {(s.namespace, s.name): s for s in topology.services}
    for wp in wps:
        target = _target(services[(wp.namespace, wp.service)], via=False)
        closed = False
        for i, policy in enumerate(topology.authorization_policies):
            if binding(policy, target) is Binding.NONE:
                continue
            if policy.spec.action != "DENY":
                closed = True
            elif policy.namespace == wp.namespace:  # not the root namespace's: the mesh's own
                out[i] = _spare(out[i], wp.principal)
        if closed:
            out.append(_admit(wp))
    return out


def _spare(policy: Mapping[str, Any], principal: str) -> dict[str, Any]:
    """A DENY policy that never matches ``principal``."""
    result = copy.deepcopy(dict(policy))
    for rule in result.get("spec", {}).get("rules") or ():  # no rules: matches nothing anyway
        sources = rule.get("from") or [{"source": {}}]
        for entry in sources:
            source = entry.setdefault("source", {})
            source["notPrincipals"] = [*source.get("notPrincipals", []), principal]
        rule["from"] = sources
    return result


def _admit(wp: Waypoint) -> dict[str, Any]:
    """An ALLOW for the waypoint on the Service's pods (they are closed by some ALLOW)."""
    return {
        "apiVersion": _API, "kind": "AuthorizationPolicy",
        "metadata": {"name": f"{wp.workload}-admit", "namespace": wp.namespace},
        "spec": {"selector": {"matchLabels": dict(wp.selector)}, "action": "ALLOW",
                 "rules": [{"from": [{"source": {"principals": [wp.principal]}}]}]},
    }  # fmt: skip
