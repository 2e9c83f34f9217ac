"""Fixtures shared by every privileged test (netns, cgroups, iptables, eBPF).

They need root and never skip: on a machine without a kernel feature they fail loudly, as
the project's CI promises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hybridmesh.lab import cleanup


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("privileged tests need root (network namespaces, cgroups, iptables)")


@pytest.fixture
def clean_lab() -> Iterator[None]:
    """Sweep every hm- object before the test and after it, then insist nothing is left.

    Tests using it own the machine's hm- namespace while they run: don't run two such test
    sessions at once.
    """
    require_root()
    cleanup.sweep()
    yield
    report = cleanup.sweep()
    left = cleanup.leftovers()
    assert not left, f"the sweep left {left} (report: {report})"
