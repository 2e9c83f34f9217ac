"""Fixtures building a small real lab (2 nodes; pods on both) for the lab layer's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from minilab import MiniLab, make_nodes, make_pod

from hybridmesh.lab import network
from hybridmesh.lab.cgroups import detect_layout


@pytest.fixture
def fabric(clean_lab: None, tmp_path: Path) -> Iterator[MiniLab]:
    """Two nodes joined by the fabric, routes in place, no pods yet."""
    lab = MiniLab(detect_layout(), tmp_path, make_nodes(2))
    network.create_fabric()
    for node in lab.nodes:
        network.create_node(node)
    network.sync_node_routes(lab.nodes)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def mini_lab(fabric: MiniLab) -> MiniLab:
    """The fabric plus web-0..3 (two per node) and client-0 (on n1), client-1 (on n2)."""
    n1, n2 = fabric.nodes
    for i in range(4):
        fabric.add_pod(make_pod(f"web-{i}", n1 if i % 2 == 0 else n2, 10 + i))
    fabric.add_pod(make_pod("client-0", n1, 100))
    fabric.add_pod(make_pod("client-1", n2, 101))
    return fabric
