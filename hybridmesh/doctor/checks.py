"""The table of checks behind ``hybridmesh check``, and the loop that runs it.

The table is data: reading it tells you every requirement, how to fix it and whether it is
fatal, without running anything. Order matters only for reading — each probe stands alone —
and categories appear in the order their first row does.
"""

from __future__ import annotations

from collections.abc import Iterable

from hybridmesh.doctor import _cgroups, _ebpf, _kernel, _network, _software
from hybridmesh.doctor.host import Host, Session
from hybridmesh.doctor.model import Check, CheckResult, Outcome, ProbeError, Report

__all__ = ["CHECKS", "run_check", "run_checks"]

_SETUP = "./run setup"


def _command_check(command: _software.Command) -> Check:
    return Check(
        category="tools",
        name=f"{command.name} is installed ({command.purpose})",
        hint=f"{_SETUP} (Debian package {command.package})",
        fatal=command.fatal,
        probe=_software.command_probe(command),
    )


CHECKS: tuple[Check, ...] = (
    Check(
        category="privileges",
        name="running as root",
        hint="run as root: the lab creates namespaces, cgroups, iptables rules and eBPF programs",
        fatal=True,
        probe=_kernel.probe_root,
    ),
    Check(
        category="kernel",
        name="kernel is 5.15 or newer",
        hint="boot Linux 5.15 or newer (Debian 12's 6.1 qualifies)",
        fatal=True,
        probe=_kernel.probe_kernel_version,
    ),
    Check(
        category="kernel",
        name="kernel BTF is available at /sys/kernel/btf/vmlinux",
        hint="boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's kernels are)",
        fatal=True,
        probe=_kernel.probe_btf,
    ),
    Check(
        category="kernel",
        name="the bpf() syscall works (array map created and closed)",
        hint="run as root on a kernel with CONFIG_BPF_SYSCALL=y; in a container, run it privileged",
        fatal=True,
        probe=_kernel.probe_bpf_syscall,
    ),
    Check(
        category="kernel",
        name="bpffs is mounted at /sys/fs/bpf",
        hint="mount -t bpf bpf /sys/fs/bpf (./run setup and hybridmesh lab up do it)",
        fatal=False,
        probe=_kernel.probe_bpffs,
    ),
    *_ebpf.CHECKS,
    Check(
        category="cgroups",
        name="cgroup v2 is mounted",
        hint=(
            "mount -t cgroup2 none /sys/fs/cgroup/unified (or boot with "
            "systemd.unified_cgroup_hierarchy=1)"
        ),
        fatal=True,
        probe=_cgroups.probe_cgroup2,
    ),
    Check(
        category="cgroups",
        name="cpu and memory controllers are available",
        hint=(
            "boot without cgroup_disable=cpu/memory; on a v1 host mount the hierarchy, e.g. "
            "mount -t cgroup -o memory none /sys/fs/cgroup/memory"
        ),
        fatal=True,
        probe=_cgroups.probe_controllers,
    ),
    Check(
        category="network",
        name="network namespaces can be created and deleted",
        hint="run as root with iproute2 installed (./run setup); in a container, run it privileged",
        fatal=True,
        probe=_network.probe_netns,
    ),
    Check(
        category="network",
        name="veth pairs can be created inside a namespace",
        hint="load the veth module: modprobe veth",
        fatal=True,
        probe=_network.probe_veth,
    ),
    Check(
        category="network",
        name="iptables nat rules work inside a namespace",
        hint=(
            "install iptables (./run setup); load the nat support: modprobe iptable_nat "
            "(legacy) or modprobe nft_chain_nat (nf_tables)"
        ),
        fatal=True,
        probe=_network.probe_iptables_nat,
    ),
    *(_command_check(command) for command in _software.COMMANDS),
    Check(
        category="libraries",
        name="libbpf can be loaded (libbpf.so.1)",
        hint=f"{_SETUP} (Debian package libbpf1)",
        fatal=True,
        probe=_kernel.probe_libbpf,
    ),
    Check(
        category="libraries",
        name="Python dependencies can be imported",
        hint=f"{_SETUP} (it runs pip install -e '.[test]' in .venv); run hybridmesh from .venv",
        fatal=True,
        probe=_software.probe_python_modules,
    ),
    Check(
        category="libraries",
        name="proxy hot path compiled (hybridmesh/native)",
        hint=f"{_SETUP} (it compiles them with mypyc; HM_NATIVE=0 disables them on purpose)",
        fatal=False,
        probe=_software.probe_native_modules,
    ),
)


def run_check(check: Check, session: Session) -> CheckResult:
    """Run one probe. A probe that raises is a failed check with the reason as its detail —
    the doctor's output is always the table, never a traceback."""
    try:
        outcome = check.probe(session)
    except ProbeError as exc:
        outcome = Outcome.failed(str(exc))
    except Exception as exc:  # a broken probe must not hide the other results
        outcome = Outcome.failed(f"the check itself failed: {type(exc).__name__}: {exc}")
    return CheckResult(check, outcome)


def run_checks(host: Host | None = None, checks: Iterable[Check] = CHECKS) -> Report:
    """Run every check in order against ``host`` (the real machine by default)."""
    with Session(host or Host()) as session:
        return Report(tuple(run_check(check, session) for check in checks))
