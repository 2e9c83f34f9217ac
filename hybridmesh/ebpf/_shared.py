"""The maps this node's eBPF objects share, pinned under ``<bpffs>/hm-<node>-shared``.

* ``hm_policy_epoch`` (array, u32 0 -> u64): l4policy bumps it after every policy change;
  sockmap sends an accelerated socket back through TCP once it moved.
* ``hm_sock_bytes`` (LRU hash, sockhash key -> ``struct hm_sock_bytes``, bpf/sock_bytes.h):
  the bytes sockmap's sk_msg carried past TCP per socket; flows adds them at close.

Each object declares them identically and pins them with :func:`pin_shared`, so whichever loads
first creates them and the others reuse them. :func:`shared_fd` checks them by size, never by
BTF: a reused map reports the BTF type ids of the object that created it — ids into *another*
object's BTF, meaningless against ours.
"""

from __future__ import annotations

from pathlib import Path

from hybridmesh.ebpf._libbpf import BpfObject
from hybridmesh.ebpf.errors import BtfLayoutError

__all__ = ["BYTES_MAP", "EPOCH_MAP", "SHAPES", "pin_shared", "shared_fd"]

EPOCH_MAP = "hm_policy_epoch"
BYTES_MAP = "hm_sock_bytes"
SHAPES: dict[str, tuple[int, int, str]] = {
    EPOCH_MAP: (4, 8, "u32 -> u64"),
    BYTES_MAP: (24, 16, "struct hm_sock_key -> {u64 sent, u64 received}"),
}


def pin_shared(obj: BpfObject, shared_dir: Path, *names: str) -> None:
    """Before load: reuse (or create) ``names`` at their shared pins."""
    for name in names:
        obj.map(name).set_pin_path(shared_dir / name)


def shared_fd(obj: BpfObject, name: str) -> int:
    """After load: the fd of shared map ``name``, once its key and value sizes are the
    agreement's (:class:`BtfLayoutError` otherwise)."""
    key_size, value_size, shape = SHAPES[name]
    bpf_map = obj.map(name)
    if (bpf_map.key_size, bpf_map.value_size) != (key_size, value_size):
        raise BtfLayoutError(
            f"{name}: key/value are {bpf_map.key_size}/{bpf_map.value_size} bytes, "
            f"the shared agreement is {shape}",
            "declare it identically in every .bpf.c that shares it",
        )
    return bpf_map.fd
