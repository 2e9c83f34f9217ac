"""Reclaim everything the lab made — the ``hm-`` prefix is the only record it needs.

``lab down`` ends with :func:`sweep`, and ``lab up`` runs it first when :func:`leftovers`
finds something: a lab that was SIGKILLed halfway through creating a pod leaves a netns
without its veth, a cgroup without a process, a hosts file without a netns... The sweep does
not need to know which step was interrupted; it removes, in dependency order:

1. processes in any ``hm-`` cgroup (any hierarchy) or any ``hm-`` netns — found by one scan
   of /proc, killed by PID (SIGTERM, a short grace, SIGKILL); never the caller or its
   ancestors (if they sit in an ``hm-`` cgroup they are moved to the hierarchy's root);
2. network namespaces ``/run/netns/hm-*`` (their links go with them);
3. links named ``hm-*`` in the root netns (the lab makes none; defence in depth);
4. cgroups ``hm-*`` at the top of every mounted hierarchy, deepest first, retrying while
   killed processes finish exiting;
5. ``/etc/netns/hm-*``, bpffs pins ``hm-*``, and the lab's state directory;
6. root-netns iptables rules whose comment starts with ``hm:``/``hm-`` or that jump to an ``HM-``/
   ``hm-`` chain, then those chains.

Every step tolerates what is already gone, so a second sweep reports zero.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hybridmesh import env
from hybridmesh.lab import _sh, dns
from hybridmesh.lab.cgroups import parse_mountinfo
from hybridmesh.lab.names import has_prefix

__all__ = ["Leftovers", "SweepReport", "iptables_cleanup", "leftovers", "sweep"]

_GRACE = 1.0  # SIGTERM to SIGKILL
_DEADLINE = 5.0  # for processes to disappear and cgroups to become removable


@dataclass
class Leftovers:
    """What of the lab still exists; falsy when nothing does."""

    processes: list[int] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # /etc/netns entries, state dir
    bpf_pins: list[str] = field(default_factory=list)
    iptables: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(asdict(self).values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SweepReport:
    """How many of each kind of object the sweep removed, and what it could not."""

    processes: int = 0
    netns: int = 0
    links: int = 0
    cgroups: int = 0
    files: int = 0
    bpf_pins: int = 0
    iptables: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return (
            self.processes
            + self.netns
            + self.links
            + self.cgroups
            + self.files
            + self.bpf_pins
            + self.iptables
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- root-netns iptables (pure) ----------------------------------------------------------

_HM_COMMENT = re.compile(r'--comment "?hm[-:]')  # "hm: ..." or "hm-...", not "hmm"
_HM_TARGET = re.compile(r" -[jg] (?:HM-|hm-)")
_TABLE = re.compile(r"^\*(\w+)$")


def _is_hm_chain(name: str) -> bool:
    return name.startswith(("HM-", "hm-"))


def _is_hm_rule(line: str) -> bool:
    """A rule of ours in someone else's chain (rules in our chains go with the chain)."""
    in_our_chain = _is_hm_chain(line.split()[1])
    return not in_our_chain and bool(_HM_COMMENT.search(line) or _HM_TARGET.search(line))


def _hm_rules(dump: str) -> dict[str, tuple[list[str], list[str]]]:
    """Per table of an iptables-save dump: (our rules in others' chains, our chains)."""
    tables: dict[str, tuple[list[str], list[str]]] = {}
    rules: list[str] = []
    chains: list[str] = []
    for line in dump.splitlines():
        if m := _TABLE.match(line):
            rules, chains = [], []
            tables[m.group(1)] = (rules, chains)
        elif line.startswith(":") and _is_hm_chain(line[1:]):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A ") and _is_hm_rule(line):
            rules.append(line)
    return tables


def iptables_cleanup(dump: str) -> tuple[str, list[str]]:
    """The ``iptables-restore --noflush`` payload removing every lab rule and chain from a
    dump, and a description of each item it removes (empty payload if there are none)."""
    lines: list[str] = []
    items: list[str] = []
    for table, (rules, chains) in _hm_rules(dump).items():
        if not rules and not chains:
            continue
        items += [f"{table}: {rule}" for rule in rules] + [f"{table}: chain {c}" for c in chains]
        lines += [f"*{table}", *("-D" + r[2:] for r in rules)]
        lines += [f"-F {c}" for c in chains] + [f"-X {c}" for c in chains] + ["COMMIT"]
    return ("\n".join(lines) + "\n" if lines else ""), items


# -- discovery -----------------------------------------------------------------------------


def _protected() -> set[int]:
    """The calling process and its ancestors: never killed, whatever cgroup they are in."""
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        pid = _ppid(pid)
    return pids | {1}


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the comm (which may contain spaces and parens)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rfind(")") + 2 :].split()


def _ppid(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[1]) if len(fields) > 1 else 0


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: it has left its cgroups, only its parent can reap it — the
    sweep leaves that to the parent rather than steal a Popen's exit status)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _netns_names() -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(p.name for p in _sh.NETNS_DIR.iterdir() if has_prefix(p.name))
    return []


def _netns_ids() -> set[tuple[int, int]]:
    ids = set()
    for name in _netns_names():
        with contextlib.suppress(OSError):
            st = os.stat(_sh.NETNS_DIR / name)
            ids.add((st.st_dev, st.st_ino))
    return ids


def _in_lab_cgroup(pid: int) -> bool:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return False
    return any(has_prefix(part) for line in lines for part in line.split(":", 2)[-1].split("/"))


def _in_lab_netns(pid: int, netns: set[tuple[int, int]]) -> bool:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) in netns


def _lab_pids() -> list[int]:
    """Live processes in an hm- cgroup or hm- netns (one pass over /proc)."""
    netns, found = _netns_ids(), []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            pid = int(entry.name)
            if (_in_lab_cgroup(pid) or _in_lab_netns(pid, netns)) and _alive(pid):
                found.append(pid)
    return sorted(found)


def _cgroup_mounts() -> list[Path]:
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    return list(dict.fromkeys(m.path for m in mounts))


def _lab_cgroup_tops() -> list[Path]:
    tops = []
    for mount in _cgroup_mounts():
        with contextlib.suppress(OSError):
            tops += [p for p in mount.iterdir() if p.is_dir() and has_prefix(p.name)]
    return sorted(tops)


def _globbed(directory: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return sorted(p for p in directory.iterdir() if has_prefix(p.name))
    return []


def _root_links() -> list[str]:
    return sorted(
        str(link["ifname"])
        for link in _sh.ip_json(None, "link", "show")
        if has_prefix(str(link.get("ifname", "")))
    )


def _iptables_dumps() -> Iterator[tuple[str, str]]:
    """(restore command, iptables-save dump) for IPv4 and IPv6 in the root netns."""
    for save, restore in (
        ("iptables-save", "iptables-restore"),
        ("ip6tables-save", "ip6tables-restore"),
    ):
        if shutil.which(save, path="/usr/sbin:/sbin:/usr/bin:/bin"):
            yield restore, _sh.run([save])


def leftovers() -> Leftovers:
    """Everything with the lab's prefix that exists right now (empty after a good sweep)."""
    mine = _protected()
    files = [*_globbed(dns.ETC_NETNS), *([env.STATE_DIR] if env.STATE_DIR.exists() else [])]
    return Leftovers(
        processes=[p for p in _lab_pids() if p not in mine],
        netns=_netns_names(),
        links=_root_links(),
        cgroups=[str(p) for p in _lab_cgroup_tops()],
        files=[str(p) for p in files],
        bpf_pins=[str(p) for p in _globbed(env.BPFFS)],
        iptables=[item for _, dump in _iptables_dumps() for item in iptables_cleanup(dump)[1]],
    )


# -- removal -------------------------------------------------------------------------------


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in pids if _alive(p)]
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(0.02)


def _kill_processes(report: SweepReport) -> None:
    mine = _protected()
    killed: set[int] = set()
    for _ in range(3):  # again, for anything forked while we were killing
        pids = [p for p in _lab_pids() if p not in mine]
        if not pids:
            break
        _signal_all(pids, signal.SIGTERM)
        left = _wait_gone(pids, _GRACE)
        _signal_all(left, signal.SIGKILL)
        left = _wait_gone(left, _DEADLINE)
        killed.update(pids)
        report.errors += [f"process {p} survived SIGKILL" for p in left]
    report.processes = len(killed)


def _delete_netns(report: SweepReport) -> None:
    names = _netns_names()
    with contextlib.suppress(_sh.LabError):
        _sh.ip_batch(None, [f"netns del {n}" for n in names], tolerate=range(len(names)))
    left = set(_netns_names())
    report.netns = len([n for n in names if n not in left])
    report.errors += [f"netns {n} could not be deleted" for n in sorted(left)]


def _delete_links(report: SweepReport) -> None:
    links = _root_links()
    with contextlib.suppress(_sh.LabError):
        _sh.ip_batch(None, [f"link del {name}" for name in links], tolerate=range(len(links)))
    left = set(_root_links())
    report.links = len([n for n in links if n not in left])
    report.errors += [f"link {n} could not be deleted" for n in sorted(left)]


def _evict_protected(top: Path, mount: Path) -> None:
    """Move the caller (and ancestors) out of a lab cgroup so the cgroup can go."""
    mine = _protected()
    # os.walk, unlike Path.rglob, ignores directories that vanish mid-walk (a concurrent
    # `lab down` removing the same cgroups)
    for directory, _, files in os.walk(top):
        if "cgroup.procs" not in files:
            continue
        procs = Path(directory) / "cgroup.procs"
        with contextlib.suppress(OSError):
            for pid in (int(x) for x in procs.read_text().split()):
                if pid in mine:
                    (mount / "cgroup.procs").write_text(str(pid))


def _remove_tree(top: Path, deadline: float) -> tuple[int, list[str]]:
    dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: -len(p.parts))
    removed = 0
    for d in dirs:
        while True:
            try:
                os.rmdir(d)
                removed += 1
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    return removed, [f"cgroup {d}: {exc.strerror}"]
                time.sleep(0.02)
    return removed, []


def _delete_cgroups(report: SweepReport) -> None:
    deadline = time.monotonic() + _DEADLINE
    for top in _lab_cgroup_tops():
        _evict_protected(top, top.parent)
        removed, errors = _remove_tree(top, deadline)
        report.cgroups += removed
        report.errors += errors


def _delete_paths(paths: Iterable[Path], report: SweepReport) -> int:
    count = 0
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            count += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            report.errors.append(f"{path}: {exc.strerror}")
    return count


def _delete_iptables(report: SweepReport) -> None:
    for restore, dump in _iptables_dumps():
        payload, items = iptables_cleanup(dump)
        if items:
            try:
                _sh.run([restore, "--noflush"], stdin=payload)
                report.iptables += len(items)
            except _sh.LabError as exc:
                report.errors.append(exc.message)


def sweep() -> SweepReport:
    """Remove every lab object (see the module docstring); safe to run at any time."""
    start = time.monotonic()
    report = SweepReport()
    _kill_processes(report)
    _delete_netns(report)
    _delete_links(report)
    _delete_cgroups(report)
    report.files = _delete_paths(_globbed(dns.ETC_NETNS), report)
    report.bpf_pins = _delete_paths(_globbed(env.BPFFS), report)
    report.files += _delete_paths([env.STATE_DIR], report)
    _delete_iptables(report)
    report.seconds = round(time.monotonic() - start, 3)
    return report
