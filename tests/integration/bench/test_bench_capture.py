"""Capture stays ahead of the lab's kube-proxy rules, as Istio's does."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from hybridmesh.bench.envoy_sidecar import ensure_capture_first
from hybridmesh.lab import _sh, capture, servicelb

pytestmark = pytest.mark.privileged


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"hm-bench-t{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _output_jumps(netns: str) -> list[str]:
    nat = _sh.iptables_save(netns).split("*nat", 1)[1].split("COMMIT", 1)[0]
    return [line.rsplit("-j ", 1)[1] for line in nat.splitlines() if line.startswith("-A OUTPUT ")]


def test_capture_is_put_back_first_after_the_lab_rewrites_its_service_rules(netns: str) -> None:
    servicelb.apply_rules(netns, servicelb.render_rules([]))
    assert ensure_capture_first(netns) is True
    assert _output_jumps(netns) == [capture.OUTPUT_CHAIN, servicelb.SERVICES_CHAIN]
    assert ensure_capture_first(netns) is False  # already right: no change

    servicelb.apply_rules(netns, servicelb.render_rules([]))  # a lab sync takes first place
    assert _output_jumps(netns)[0] == servicelb.SERVICES_CHAIN
    assert ensure_capture_first(netns) is True
    assert _output_jumps(netns) == [capture.OUTPUT_CHAIN, servicelb.SERVICES_CHAIN]
