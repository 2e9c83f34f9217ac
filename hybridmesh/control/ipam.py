"""Address management: node pod CIDRs, pod IPs and service cluster IPs.

Addresses are sticky: a pod, node or service keeps its address for as long as it exists, across
any number of ``lab apply`` calls. Proxies and eBPF maps key on these addresses, so reshuffling
them on an unrelated change would turn a harmless scale-up into a data-plane-wide churn.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["FABRIC_CIDR", "AddressError", "Allocator", "node_addresses"]

FABRIC_CIDR = ipaddress.IPv4Network("172.31.255.0/24")
"""The inter-node fabric: lives only inside the lab's own fabric namespace."""

SERVICE_OFFSET = 10
"""First cluster IP handed out (``.10`` of the range), leaving the low addresses for the user."""


class AddressError(Exception):
    """An address range ran out; the message says which and how to grow it."""


def node_addresses(pod_cidr: str, index: int) -> tuple[str, str, str]:
    """``(node pod CIDR, bridge gateway, fabric IP)`` for the node with 1-based ``index``.

    Each node gets the index-th /24 of the mesh's pod CIDR, as kube-controller-manager's
    ``--node-cidr-mask-size=24`` would.
    """
    cluster = ipaddress.IPv4Network(pod_cidr)
    subnets = cluster.subnets(new_prefix=24) if cluster.prefixlen <= 24 else iter(())
    for i, subnet in enumerate(subnets):
        if i == index:
            return str(subnet), str(subnet.network_address + 1), str(FABRIC_CIDR[index])
    raise AddressError(
        f"pod CIDR {pod_cidr} has no /24 for node #{index}; "
        "give MeshConfig spec.podCIDR a shorter prefix (e.g. /16)"
    )


class Allocator:
    """Hands out addresses from a range, remembering who holds which.

    ``reserve`` pins user-chosen addresses (a Service's explicit ``clusterIP``); ``allocate``
    returns the owner's existing address or the lowest free one.
    """

    def __init__(self, cidr: str, first_offset: int, what: str) -> None:
        self._net = ipaddress.IPv4Network(cidr)
        self._first = first_offset
        self._what = what
        self._by_owner: dict[str, str] = {}

    def owners(self) -> dict[str, str]:
        return dict(self._by_owner)

    def reserve(self, owner: str, address: str) -> None:
        self._by_owner[owner] = address

    def allocate(self, owner: str) -> str:
        if owner in self._by_owner:
            return self._by_owner[owner]
        used = set(self._by_owner.values())
        last = self._net.num_addresses - 1  # broadcast
        for offset in range(self._first, last):
            candidate = str(self._net[offset])
            if candidate not in used:
                self._by_owner[owner] = candidate
                return candidate
        raise AddressError(f"no free {self._what} address left in {self._net}")

    def release_all_but(self, owners: Iterable[str]) -> None:
        keep = set(owners)
        self._by_owner = {o: a for o, a in self._by_owner.items() if o in keep}
