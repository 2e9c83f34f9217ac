"""Realize the lab topology from network namespaces, veth pairs and bridges.

Nothing is created in the host's root namespace::

    hm-fabric (netns)            hm-node-<n> (netns)                     hm-pod-<ns>-<pod> (netns)
      hm-fab0 (bridge) ── veth ── hm-uplink  <fabric_ip>/24
                                  hm-br0 (bridge) <gateway>/<len> ── veth ── eth0 <pod ip>
                                  ip_forward=1, routes: other pod CIDRs via their fabric_ip

Veth pairs are created with each end directly in its namespace (``ip -n A link add X type
veth peer name Y netns B``), so even a crash between steps leaves nothing in the root netns.

Every function is a reconcile: it looks at what exists (only when the namespace already
existed — a fresh namespace is known to be empty) and issues just the missing changes, in one
``ip -batch`` per namespace. Re-running after a partial failure converges; re-running on a live
lab does not disturb working links.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from hybridmesh.control.model import NodeInfo, PodInfo
from hybridmesh.lab import _sh
from hybridmesh.lab._sh import LabError
from hybridmesh.lab.dns import remove_files
from hybridmesh.lab.names import (
    FABRIC_BRIDGE,
    FABRIC_NETNS,
    NODE_BRIDGE,
    NODE_UPLINK,
    POD_IFNAME,
    node_netns,
    node_veth,
    pod_netns,
    pod_veth,
)

__all__ = [
    "FABRIC_PREFIX_LEN",
    "LabError",
    "create_fabric",
    "create_node",
    "create_pod",
    "delete_fabric",
    "delete_node",
    "delete_pod",
    "sync_node_routes",
]

FABRIC_PREFIX_LEN = 24
"""Prefix length of node addresses on the fabric (e.g. 172.31.255.0/24)."""

_NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    # The node's default route points back onto its bridge (see _node_lines): don't teach pods
    # shortcuts with ICMP redirects for traffic that has nowhere better to go.
    "net.ipv4.conf.all.send_redirects": "0",
}


def _ensure_netns(name: str) -> bool:
    """Create netns ``name`` if missing; True when it was just created (hence empty)."""
    if _sh.netns_exists(name):
        return False
    _sh.ip(None, "netns", "add", name)
    return True


def _links(netns: str) -> set[str]:
    return {str(link["ifname"]) for link in _sh.ip_json(netns, "link", "show")}


def _require_netns(name: str, what: str) -> None:
    if not _sh.netns_exists(name):
        raise LabError(f"{what} netns {name} does not exist", f"create the {what} first")


def create_fabric() -> None:
    """The fabric netns and its bridge: the wire every node's uplink plugs into."""
    fresh = _ensure_netns(FABRIC_NETNS)
    lines = ["link set lo up"]
    if fresh or FABRIC_BRIDGE not in _links(FABRIC_NETNS):
        lines.append(f"link add {FABRIC_BRIDGE} type bridge")
    lines.append(f"link set {FABRIC_BRIDGE} up")
    _sh.ip_batch(FABRIC_NETNS, lines)


def _bridge_mac(index: int) -> str:
    """A fixed, locally administered MAC for a node's bridge.

    A bridge without one takes the lowest MAC of its ports and changes it as pods come and go,
    which leaves stale ARP entries for the gateway in every pod.
    """
    return f"02:68:6d:{(index >> 8) & 0xFF:02x}:{index & 0xFF:02x}:01"


def create_node(node: NodeInfo) -> None:
    """The node netns: uplink into the fabric, pod bridge with the gateway, forwarding on."""
    _require_netns(FABRIC_NETNS, "fabric")
    ns = node_netns(node.name)
    fresh = _ensure_netns(ns)
    present = set() if fresh else _links(ns)
    if NODE_UPLINK not in present:
        veth = node_veth(node.name)
        _sh.ip_batch(
            FABRIC_NETNS,
            [
                f"link del {veth}",  # stale end left by a node netns that was deleted in use
                f"link add {veth} type veth peer name {NODE_UPLINK} netns {ns}",
                f"link set {veth} master {FABRIC_BRIDGE} up",
            ],
            tolerate={0},
        )
    _sh.ip_batch(ns, _node_lines(node, has_bridge=NODE_BRIDGE in present))
    _sh.sysctl(ns, _NODE_SYSCTLS)


def _node_lines(node: NodeInfo, *, has_bridge: bool) -> list[str]:
    prefix = ipaddress.ip_network(node.pod_cidr, strict=False).prefixlen
    lines = ["link set lo up"]
    if not has_bridge:
        lines.append(f"link add {NODE_BRIDGE} address {_bridge_mac(node.index)} type bridge")
    return [
        *lines,
        f"addr replace {node.gateway}/{prefix} dev {NODE_BRIDGE}",
        f"link set {NODE_BRIDGE} up",
        f"addr replace {node.fabric_ip}/{FABRIC_PREFIX_LEN} dev {NODE_UPLINK}",
        f"link set {NODE_UPLINK} up",
        # A route for any destination, so a connect() from the node to a ClusterIP gets as far
        # as the nat OUTPUT hook where the service DNAT happens (no route: ENETUNREACH first).
        f"route replace default dev {NODE_BRIDGE}",
    ]


def sync_node_routes(nodes: Sequence[NodeInfo]) -> None:
    """In every node of ``nodes``: a route to each other node's pod CIDR via its fabric IP,
    and no route to nodes that are gone. Idempotent; existing routes are replaced in place."""
    for node in nodes:
        ns = node_netns(node.name)
        wanted = {o.pod_cidr: o.fabric_ip for o in nodes if o.name != node.name}
        wanted = {str(ipaddress.ip_network(c, strict=False)): gw for c, gw in wanted.items()}
        lines = [f"route del {dst}" for dst in _uplink_routes(ns) if dst not in wanted]
        lines += [f"route replace {c} via {gw} dev {NODE_UPLINK}" for c, gw in wanted.items()]
        _sh.ip_batch(ns, lines)


def _uplink_routes(netns: str) -> set[str]:
    """Destinations of the gatewayed routes on the uplink: the ones sync_node_routes owns."""
    routes = _sh.ip_json(netns, "route", "show", "dev", NODE_UPLINK)
    return {str(r["dst"]) for r in routes if "gateway" in r and r.get("dst") != "default"}


def create_pod(pod: PodInfo, node: NodeInfo) -> None:
    """The pod netns with ``eth0`` (its peer on the node bridge), its IP, default route, lo."""
    node_ns = node_netns(node.name)
    _require_netns(node_ns, f"node {node.name}")
    ns = pod_netns(pod.namespace, pod.name)
    fresh = _ensure_netns(ns)
    host = pod_veth(pod.namespace, pod.name)
    node_lines = [f"link set {host} master {NODE_BRIDGE} up"]
    if fresh or POD_IFNAME not in _links(ns):
        node_lines[:0] = [
            f"link del {host}",  # stale end left by a pod netns that was deleted in use
            f"link add {host} type veth peer name {POD_IFNAME} netns {ns}",
        ]
    _sh.ip_batch(node_ns, node_lines, tolerate={0} if len(node_lines) > 1 else ())
    prefix = ipaddress.ip_network(node.pod_cidr, strict=False).prefixlen
    _sh.ip_batch(
        ns,
        [
            "link set lo up",
            f"addr replace {pod.ip}/{prefix} dev {POD_IFNAME}",
            f"link set {POD_IFNAME} up",
            f"route replace default via {node.gateway} dev {POD_IFNAME}",
        ],
    )


def _delete_netns(name: str, link: str | None) -> None:
    """Remove ``link`` first (so its peer goes even if a process still pins the netns), then
    the netns name and its /etc/netns files."""
    if _sh.netns_exists(name):
        if link:
            _sh.ip(name, "link", "del", link, check=False)
        _sh.ip(None, "netns", "del", name, check=False)
    remove_files(name)
    if _sh.netns_exists(name):
        raise LabError(f"could not delete netns {name}", "`hybridmesh lab down` sweeps leftovers")


def delete_pod(namespace: str, pod: str) -> None:
    """Remove the pod's netns and veth. Processes in it should be stopped first."""
    _delete_netns(pod_netns(namespace, pod), POD_IFNAME)


def delete_node(node: NodeInfo | str) -> None:
    """Remove the node's netns (with its bridge and its pods' node-side veths) and uplink."""
    name = node.name if isinstance(node, NodeInfo) else node
    _delete_netns(node_netns(name), NODE_UPLINK)


def delete_fabric() -> None:
    _delete_netns(FABRIC_NETNS, None)
