"""Node snapshot (JSON from the control plane) → :class:`~hybridmesh.agent.datapath.NodeState`.

Pure apart from one injected question — "do this pod's cgroup and netns exist yet?" — because
the control plane lists a pod as soon as it is planned, while the lab creates its namespace and
cgroup a moment later. A pod counts as *local* (``PodView.cgroup`` set) only once both exist:
a datapath then never tries to attach to a cgroup that is not there, and the agent simply
re-syncs shortly after (see :attr:`BuiltState.pending`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hybridmesh.agent.datapath import NodeState, PodView
from hybridmesh.control.model import Endpoint, ServiceInfo, ServicePortInfo
from hybridmesh.env import LAB_CGROUP
from hybridmesh.lab.names import pod_cgroup, pod_netns
from hybridmesh.resources.models import AuthorizationPolicy

__all__ = ["NETNS_DIR", "BuiltState", "PodPaths", "SnapshotError", "build_state", "pod_paths"]

NETNS_DIR = Path("/run/netns")


class SnapshotError(ValueError):
    """The control plane sent a node snapshot the agent cannot use (the old state stays)."""


@dataclass(frozen=True, slots=True)
class PodPaths:
    cgroup: Path
    netns: Path


@dataclass(frozen=True, slots=True)
class BuiltState:
    state: NodeState
    pending: tuple[str, ...]
    """Keys of this node's pods whose cgroup or netns does not exist yet (retry soon)."""


def pod_paths(cgroup_v2: Path, namespace: str, name: str, netns_dir: Path = NETNS_DIR) -> PodPaths:
    """Where the lab puts a pod's cgroup v2 directory and its netns file."""
    return PodPaths(
        cgroup_v2 / LAB_CGROUP / pod_cgroup(namespace, name), netns_dir / pod_netns(namespace, name)
    )


def _exists(paths: PodPaths) -> bool:
    return paths.cgroup.is_dir() and paths.netns.exists()


def _pod(raw: Mapping[str, Any], node: str, cgroup_v2: Path, netns_dir: Path,
         present: Callable[[PodPaths], bool]) -> tuple[PodView, bool]:
    """A PodView, and whether it is one of ours still waiting for its cgroup/netns."""
    ns, name = str(raw["namespace"]), str(raw["name"])
    mine = str(raw.get("node") or "") == node
    paths = pod_paths(cgroup_v2, ns, name, netns_dir) if mine else None
    here = paths is not None and present(paths)
    view = PodView(
        namespace=ns, name=name, ip=str(raw["ip"]), node=str(raw.get("node") or ""),
        service_account=str(raw.get("serviceAccount") or "default"),
        placement=str(raw.get("placement") or "none"),
        labels={str(k): str(v) for k, v in (raw.get("labels") or {}).items()},
        ready=bool(raw.get("ready", False)),
        cgroup=paths.cgroup if here and paths else None,
        netns=paths.netns if here and paths else None,
    )  # fmt: skip
    return view, mine and not here


def _service(raw: Mapping[str, Any]) -> ServiceInfo:
    ports = tuple(
        ServicePortInfo(str(p.get("name") or ""), int(p["port"]),
                        int(p.get("targetPort") or p["port"]), p.get("appProtocol"))
        for p in raw.get("ports") or ()
    )  # fmt: skip
    endpoints = tuple(
        Endpoint(str(e["pod"]), str(e["namespace"]), str(e["ip"]), str(e.get("node") or ""),
                 str(e.get("serviceAccount") or ""), str(e.get("placement") or "none"),
                 str(e.get("workload") or ""))
        for e in raw.get("endpoints") or ()
    )  # fmt: skip
    return ServiceInfo(
        str(raw["name"]), str(raw["namespace"]), str(raw.get("clusterIP") or ""), ports,
        {str(k): str(v) for k, v in (raw.get("selector") or {}).items()}, endpoints,
    )  # fmt: skip


def build_state(
    snapshot: Mapping[str, Any],
    node: str,
    cgroup_v2: Path,
    present: Callable[[PodPaths], bool] = _exists,
    netns_dir: Path = NETNS_DIR,
) -> BuiltState:
    """Every pod of the lab (the node snapshot lists them all, each with its node), services
    with their endpoints, and the parsed AuthorizationPolicies.

    :class:`SnapshotError` when the document is malformed.
    """
    try:
        version = int(snapshot["version"])
        services = tuple(_service(s) for s in snapshot.get("services") or ())
        built = [_pod(p, node, cgroup_v2, netns_dir, present) for p in snapshot.get("pods") or ()]
        policies = tuple(AuthorizationPolicy.model_validate(p)
                         for p in snapshot.get("policies") or ())  # fmt: skip
        mesh = snapshot.get("mesh") or {}
        info = snapshot.get("node") or {}
    except (KeyError, TypeError, ValueError, AttributeError, ValidationError) as exc:
        raise SnapshotError(f"unusable node snapshot: {type(exc).__name__}: {exc}") from None
    pods = [view for view, _ in built]
    state = NodeState(
        node=node, version=version, pods=tuple(pods), services=services, policies=policies,
        trust_domain=str(mesh.get("trustDomain") or "cluster.local"),
        mtls_mode=str(mesh.get("mtlsMode") or "PERMISSIVE"),
        pod_cidr=info.get("podCIDR"), gateway=info.get("gateway"),
    )  # fmt: skip
    pending = tuple(f"{v.namespace}/{v.name}" for v, waiting in built if waiting)
    return BuiltState(state, pending)
