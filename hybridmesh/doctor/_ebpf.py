"""Checks for every eBPF program type and map type hybridmesh loads, probed for real.

libbpf's feature probes load a minimal program / create a minimal map of the type, so a check
passes only if this very kernel (config, lockdown, LSM) accepts it. Each row names what needs
the type, so a failing row tells the user which placement will not work. They are warnings,
not fatal: the ``none`` and ``sidecar`` placements need no eBPF at all.

Not listed: ``tracing`` (the flows' tp_btf programs). libbpf cannot probe it without an
attach target, so its probe says "no" on kernels that load those programs fine; the kernel
BTF check covers what it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hybridmesh.doctor._kernel import load_libbpf
from hybridmesh.doctor.host import Session
from hybridmesh.doctor.model import Check, Outcome, ProbeError
from hybridmesh.ebpf._libbpf_agent import probe_map_type, probe_prog_type, prototype
from hybridmesh.ebpf.errors import BpfError

__all__ = ["CHECKS", "MAP_NEEDS", "PROG_NEEDS", "TypeNeed", "type_probe"]


@dataclass(frozen=True, slots=True)
class TypeNeed:
    name: str  # libbpf's name of the type, e.g. "cgroup_sock_addr"
    used_by: str  # what needs it, for the row and the failure
    config: str  # the kernel option that provides it


PROG_NEEDS: tuple[TypeNeed, ...] = (
    TypeNeed("cgroup_sock_addr", "socket LB (kernel), capture (sidecar+ebpf)", "CONFIG_CGROUP_BPF"),
    TypeNeed("sock_ops", "sockmap acceleration", "CONFIG_CGROUP_BPF"),
    TypeNeed("sk_msg", "sockmap acceleration", "CONFIG_BPF_STREAM_PARSER"),
    TypeNeed("sk_lookup", "capture (sidecar+ebpf)", "CONFIG_NET"),
    TypeNeed("cgroup_skb", "L4 policy (kernel)", "CONFIG_CGROUP_BPF"),
    TypeNeed("tracepoint", "flow visibility", "CONFIG_BPF_EVENTS"),
)
MAP_NEEDS: tuple[TypeNeed, ...] = (
    TypeNeed("hash", "every datapath", "CONFIG_BPF_SYSCALL"),
    TypeNeed("lru_hash", "socket LB, flows", "CONFIG_BPF_SYSCALL"),
    TypeNeed("lpm_trie", "L4 policy", "CONFIG_BPF_SYSCALL"),
    TypeNeed("array", "shared policy epoch", "CONFIG_BPF_SYSCALL"),
    TypeNeed("percpu_array", "counters", "CONFIG_BPF_SYSCALL"),
    TypeNeed("sockhash", "sockmap acceleration", "CONFIG_BPF_STREAM_PARSER"),
    TypeNeed("sockmap", "sockmap acceleration", "CONFIG_BPF_STREAM_PARSER"),
    TypeNeed("sk_storage", "capture, L4 policy, node steering (per-socket state)",
             "CONFIG_BPF_SYSCALL (kernel 5.2+)"),
    TypeNeed("ringbuf", "flow and drop events", "CONFIG_BPF_SYSCALL (kernel 5.8+)"),
)


def type_probe(kind: str, need: TypeNeed,
               probe: Callable[[str, Any], bool] | None = None) -> Callable[[Session], Outcome]:
    """A doctor probe for one type; ``probe`` defaults to libbpf's (faked in unit tests)."""
    run = probe or (probe_prog_type if kind == "program" else probe_map_type)

    def check(session: Session) -> Outcome:
        lib = prototype(load_libbpf(session))
        try:
            ok = run(need.name, lib)
        except BpfError as exc:
            raise ProbeError(f"cannot probe: {exc}") from None
        if ok:
            return Outcome.passed(f"used by {need.used_by}")
        return Outcome.failed(f"this kernel refuses {kind}s of type {need.name}: "
                              f"{need.used_by} cannot work")  # fmt: skip

    return check


def _check(kind: str, need: TypeNeed) -> Check:
    return Check(
        category="ebpf",
        name=f"{kind} type {need.name} is supported",
        hint=f"boot a kernel with {need.config}=y; until then use the none/sidecar placements",
        fatal=False,
        probe=type_probe(kind, need),
    )


CHECKS: tuple[Check, ...] = (
    *(_check("program", n) for n in PROG_NEEDS),
    *(_check("map", n) for n in MAP_NEEDS),
)
