"""The ``spawn`` fixture: workload processes that are always stopped by PID afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from workload_procs import Spawner


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.cleanup()
