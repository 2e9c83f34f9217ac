"""Pinned links and pin directories: the loader patterns every ``hybridmesh.ebpf`` loader shares.

State lives in bpffs pins, never only in the agent: a cgroup program's link is pinned as
``<pin_dir>/link-<hook>-<cgroup id>``, so an agent restart finds it, points it at the freshly
loaded program (``bpf_link__update_program``: atomic, no packet or connect runs unhooked) and
a cold start detaches what the pins name. :class:`CgroupLinks` is that pattern for one hook.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf._libbpf import BpfLink, BpfProgram, prog_info
from hybridmesh.ebpf.errors import BpfError

__all__ = [
    "TRACING_DETACH_ERRORS",
    "CgroupLinks",
    "ProgramStats",
    "cgroup_id",
    "detach_pin",
    "prepare_pin_dirs",
    "program_ids",
    "program_stats",
    "rebind_pinned_links",
    "remove_pins",
    "replace_program",
    "sum_per_cpu",
]

C = TypeVar("C")

# a tracepoint (raw_tp) link cannot be detached, only released: its pin going is the detach
TRACING_DETACH_ERRORS = (errno.ENOLINK, errno.EOPNOTSUPP, errno.EINVAL)


def cgroup_id(cgroup: Path) -> int:
    """The cgroup v2 id, which is the directory's inode number."""
    try:
        return os.stat(cgroup).st_ino
    except OSError as exc:
        raise BpfError(
            f"cannot stat cgroup {cgroup}: {exc.strerror}", errno=exc.errno or 0
        ) from exc


def replace_program(pin: Path, program: BpfProgram) -> bool:
    """Point a pinned link at ``program``. False, and the pin dropped, when the link was
    severed: its cgroup was removed (a pod that went away while the agent was down)."""
    link = BpfLink.open(pin)
    try:
        link.update_program(program)
        return True
    except BpfError as exc:
        if exc.errno != errno.ENOLINK:
            raise
        link.unpin()
        return False
    finally:
        link.destroy()


def detach_pin(pin: Path, tolerate: Iterable[int] = (errno.ENOLINK,)) -> None:
    """Detach a pinned link and unpin it. A link that is already severed (ENOLINK: its cgroup
    is gone) only has its pin left; ``tolerate`` adds the errnos of link kinds that cannot be
    detached at all (:data:`TRACING_DETACH_ERRORS`)."""
    link = BpfLink.open(pin)
    try:
        try:
            link.detach()
        except BpfError as exc:
            if exc.errno not in tuple(tolerate):
                raise
        link.unpin()
    finally:
        link.destroy()


def prepare_pin_dirs(*dirs: Path) -> None:
    """Mount bpffs if needed and make each pin dir (its name must carry the hm- prefix)."""
    bpffs.ensure_mounted()
    for d in dirs:
        bpffs.pin_dir(d.name, d.parent)  # validates the hm- prefix
        d.mkdir(mode=0o700, exist_ok=True)


def remove_pins(pin_dir: Path, tolerate: Iterable[int] = (errno.ENOLINK,)) -> None:
    """A cold start: detach every pinned link (``link-*``) and remove the pin dir."""
    if pin_dir.exists():
        for pin in sorted(pin_dir.glob("link-*")):
            detach_pin(pin, tolerate)
    bpffs.remove_pin_dir(pin_dir)


class CgroupLinks:
    """The pinned cgroup links of one hook: ``<pin_dir>/link-<hook>-<cgroup id>``."""

    def __init__(self, pin_dir: Path, hook: str) -> None:
        self.pin_dir = pin_dir
        self.prefix = f"link-{hook}-"

    def pin(self, cgroup: Path | int) -> Path:
        number = cgroup if isinstance(cgroup, int) else cgroup_id(cgroup)
        return self.pin_dir / f"{self.prefix}{number}"

    def pins(self) -> list[Path]:
        return sorted(self.pin_dir.glob(f"{self.prefix}*"))

    def attach(self, program: BpfProgram, cgroup: Path) -> None:
        """Run ``program`` on ``cgroup`` and its descendants. Idempotent: attaching again only
        refreshes the program on the existing pinned link."""
        pin = self.pin(cgroup)
        # a severed pin may carry the number of a since-removed cgroup: attach afresh then
        if pin.exists() and replace_program(pin, program):
            return
        link = program.attach_cgroup(cgroup)
        try:
            link.pin(pin)
        except BpfError:
            link.detach()
            raise
        finally:
            link.destroy()  # the pin holds the attachment now

    def rebind(self, program: BpfProgram) -> None:
        """After a reload: every pinned link gets ``program`` (severed ones are dropped)."""
        for pin in self.pins():
            replace_program(pin, program)

    def attached(self) -> list[int]:
        """Cgroup ids (inode numbers) with a pinned link."""
        return sorted(int(p.name.rsplit("-", 1)[1]) for p in self.pins())

    def detach(self, cgroup: Path | int | None = None) -> None:
        """Detach from ``cgroup`` (a directory or a cgroup id; every cgroup when None)."""
        pins = self.pins() if cgroup is None else [self.pin(cgroup)]
        for pin in pins:
            if pin.exists():
                detach_pin(pin)


@dataclass(frozen=True)
class ProgramStats:
    """Kernel run-time accounting of one program (counts only while stats are enabled)."""

    run_cnt: int
    run_time_ns: int

    @property
    def ns_per_run(self) -> float:
        return self.run_time_ns / self.run_cnt if self.run_cnt else 0.0


def program_stats(programs: Mapping[str, BpfProgram]) -> dict[str, ProgramStats]:
    """run_cnt / run_time_ns of each loaded program (see ``_libbpf.enable_run_stats``)."""
    infos = {name: prog_info(p.fd) for name, p in programs.items()}
    return {name: ProgramStats(i.run_cnt, i.run_time_ns) for name, i in infos.items()}


def program_ids(programs: Mapping[str, BpfProgram]) -> dict[str, int]:
    return {name: int(prog_info(p.fd).id) for name, p in programs.items()}


def sum_per_cpu(per_cpu: Iterable[Any] | None, counters: type[C]) -> C:
    """A per-CPU stats entry summed over CPUs into the ``counters`` dataclass, field by field
    (its field names are the C struct's)."""
    values = list(per_cpu or ())
    return counters(**{f.name: sum(getattr(v, f.name) for v in values)
                       for f in fields(counters)})  # type: ignore[arg-type]


def rebind_pinned_links(pin_dir: Path, programs: Mapping[str, BpfProgram]) -> None:
    """After a (re)load: point every pinned ``link-<hook>-*`` at the new ``programs[hook]``."""
    for hook, program in programs.items():
        for pin in sorted(pin_dir.glob(f"link-{hook}-*")):
            replace_program(pin, program)
