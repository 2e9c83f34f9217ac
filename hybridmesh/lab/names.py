"""Names of every kernel object the lab creates — pure functions, no I/O.

One module decides every name so that creation, lookup and the crash sweep agree. Every name
carries the ``hm-`` prefix (``hybridmesh.env.PREFIX``): that prefix is the only thing the sweep
needs to find what a crashed lab left behind.

Interface names are limited to 15 bytes (IFNAMSIZ - 1), so per-pod and per-node veth ends are
``hm-`` plus a short stable hash of the owner's identity rather than the owner's name.
"""

from __future__ import annotations

import hashlib

from hybridmesh.env import LAB_CGROUP, PREFIX

__all__ = [
    "DAEMON_CGROUP",
    "FABRIC_BRIDGE",
    "FABRIC_NETNS",
    "IFNAME_MAX",
    "LAB_CGROUP",
    "NODE_BRIDGE",
    "NODE_UPLINK",
    "POD_IFNAME",
    "PREFIX",
    "has_prefix",
    "node_netns",
    "node_veth",
    "pod_cgroup",
    "pod_netns",
    "pod_veth",
    "short_hash",
]

IFNAME_MAX = 15
"""Longest interface name the kernel accepts (IFNAMSIZ is 16 including the NUL)."""

FABRIC_NETNS = f"{PREFIX}fabric"
"""The netns whose bridge joins every node's uplink: the lab's 'physical network'."""

FABRIC_BRIDGE = f"{PREFIX}fab0"
"""The bridge inside ``FABRIC_NETNS``."""

NODE_BRIDGE = f"{PREFIX}br0"
"""The bridge inside each node netns; carries the node's pod-CIDR gateway address."""

NODE_UPLINK = f"{PREFIX}uplink"
"""The node end of the node↔fabric veth (inside the node netns)."""

POD_IFNAME = "eth0"
"""The pod end of the pod↔node veth, named like a Kubernetes pod's interface."""

DAEMON_CGROUP = f"{PREFIX}daemon"
"""Child of ``LAB_CGROUP`` (in every hierarchy) that holds the lab daemon process."""

_HASH_LEN = IFNAME_MAX - len(PREFIX)


def has_prefix(name: str) -> bool:
    """True for names the lab owns (and the sweep may remove)."""
    return name.startswith(PREFIX)


def short_hash(*parts: str, length: int = _HASH_LEN) -> str:
    """A stable lowercase hex digest of ``parts`` (joined unambiguously), ``length`` chars long."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return digest[:length]


def node_netns(node: str) -> str:
    """``hm-node-<node>``: the network namespace that is the node."""
    return f"{PREFIX}node-{node}"


def pod_netns(namespace: str, pod: str) -> str:
    """``hm-pod-<namespace>.<pod>``: the network namespace that is the pod.

    A dot separates namespace and pod because neither may contain one (DNS-1123 labels):
    with a dash, ``a-b/c`` and ``a/b-c`` would share a namespace.
    """
    return f"{PREFIX}pod-{namespace}.{pod}"


def pod_cgroup(namespace: str, pod: str) -> str:
    """``hm-pod-<namespace>.<pod>``: the pod's cgroup directory (below ``hm-lab``)."""
    return f"{PREFIX}pod-{namespace}.{pod}"


def pod_veth(namespace: str, pod: str) -> str:
    """The node end of a pod's veth (inside the node netns), ≤ 15 chars."""
    return PREFIX + short_hash("pod", namespace, pod)


def node_veth(node: str) -> str:
    """The fabric end of a node's uplink veth (inside the fabric netns), ≤ 15 chars."""
    return PREFIX + short_hash("node", node)
