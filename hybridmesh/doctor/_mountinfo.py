"""Parse ``/proc/self/mountinfo``: the one place the doctor learns what is mounted where.

mountinfo (not ``/proc/mounts``) because it separates per-mount options from the filesystem's
*super* options, and the super options are where a cgroup v1 hierarchy names its controllers
(``rw,cpu,cpuacct``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Mount", "parse_mountinfo"]

_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of mountinfo, reduced to what the checks need."""

    mount_point: str
    fstype: str
    source: str
    super_options: frozenset[str]


def _unescape(field: str) -> str:
    """The kernel escapes space, tab, newline and backslash in paths as ``\\ooo``."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def _parse_line(line: str) -> Mount | None:
    """Fields: id parent dev root mount-point options [optional...] - fstype source super."""
    fields = line.split()
    try:
        sep = fields.index("-", 6)
    except ValueError:
        return None
    if len(fields) < sep + 3:
        return None
    supers = fields[sep + 3] if len(fields) > sep + 3 else ""
    return Mount(
        mount_point=_unescape(fields[4]),
        fstype=fields[sep + 1],
        source=_unescape(fields[sep + 2]),
        super_options=frozenset(o for o in supers.split(",") if o),
    )


def parse_mountinfo(text: str) -> list[Mount]:
    """Every well-formed line of ``text``, in order; malformed lines are skipped, not fatal."""
    mounts = (_parse_line(line) for line in text.splitlines() if line.strip())
    return [m for m in mounts if m is not None]
