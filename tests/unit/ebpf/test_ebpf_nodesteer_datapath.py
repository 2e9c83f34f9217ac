"""The nodesteer datapath against a fake loader: which pods, which proxy, when to reload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hybridmesh.agent.datapath import NodeState, PodView
from hybridmesh.agent.dp_nodesteer import NodeSteerDatapath, proxy_address


class FakeSteer:
    def __init__(self, proxy: tuple[str, int]) -> None:
        self.proxy = proxy
        self.links: set[int] = set()
        self.pods: set[int] = set()
        self.closed = False

    def attach(self, cgroup: Path) -> None:
        cgid = os.stat(cgroup).st_ino
        self.links.add(cgid)
        self.pods.add(cgid)

    def attached(self) -> list[int]:
        return sorted(self.links)

    def detach(self, cgroup: Path | int | None = None) -> None:
        assert isinstance(cgroup, int)
        self.links.discard(cgroup)
        self.pods.discard(cgroup)

    def pod_cgroups(self) -> set[int]:
        return set(self.pods)

    def close(self) -> None:
        self.closed = True


class Loads:
    def __init__(self) -> None:
        self.made: list[FakeSteer] = []
        self.shared: FakeSteer | None = None  # what is "pinned": links survive a reload

    def __call__(self, pin_dir: Path, proxy: tuple[str, int]) -> FakeSteer:
        steer = FakeSteer(proxy)
        if self.shared is not None:
            steer.links, steer.pods = self.shared.links, self.shared.pods
        self.shared = steer
        self.made.append(steer)
        return steer


def _pod(tmp: Path, name: str, placement: str, local: bool = True) -> PodView:
    cgroup = tmp / name
    cgroup.mkdir(exist_ok=True)
    return PodView("shop", name, "10.244.1.9", "n1", "sa", placement,
                   cgroup=cgroup if local else None)  # fmt: skip


def _state(
    *pods: PodView, gateway: str | None = "10.244.1.1", cidr: str | None = None
) -> NodeState:
    return NodeState("n1", 1, pods, (), (), pod_cidr=cidr, gateway=gateway)


@pytest.mark.parametrize(
    ("gateway", "cidr", "expected"),
    [
        ("10.244.1.1", "10.244.1.0/24", ("10.244.1.1", 15001)),
        (None, "10.244.2.0/24", ("10.244.2.1", 15001)),
        (None, "10.244.3.7/24", ("10.244.3.1", 15001)),
        (None, None, None),
    ],
)
def test_proxy_address(gateway: str | None, cidr: str | None, expected: object) -> None:
    assert proxy_address(_state(gateway=gateway, cidr=cidr)) == expected


def test_only_local_node_pods_are_steered(tmp_path: Path) -> None:
    loads = Loads()
    dp = NodeSteerDatapath("n1", tmp_path / "hm-pins", loader=loads)
    node, kernel = _pod(tmp_path, "a", "node"), _pod(tmp_path, "b", "kernel")
    remote = _pod(tmp_path, "c", "node", local=False)
    dp.sync(_state(node, kernel, remote))
    assert loads.made[0].attached() == [os.stat(tmp_path / "a").st_ino]
    assert dp.status().detail["pods"] == ["shop/a"]
    assert dp.status().detail["proxy"] == "10.244.1.1:15001"


def test_a_pod_that_leaves_is_detached_and_unregistered(tmp_path: Path) -> None:
    loads = Loads()
    dp = NodeSteerDatapath("n1", tmp_path / "hm-pins", loader=loads)
    a, b = _pod(tmp_path, "a", "node"), _pod(tmp_path, "b", "node")
    dp.sync(_state(a, b))
    dp.sync(_state(a, _pod(tmp_path, "b", "sidecar")))  # b changed placement
    assert loads.made[0].attached() == [os.stat(tmp_path / "a").st_ino]
    assert loads.made[0].pod_cgroups() == {os.stat(tmp_path / "a").st_ino}
    assert len(loads.made) == 1  # same proxy: no reload


def test_a_new_gateway_reloads_and_keeps_the_links(tmp_path: Path) -> None:
    loads = Loads()
    dp = NodeSteerDatapath("n1", tmp_path / "hm-pins", loader=loads)
    a = _pod(tmp_path, "a", "node")
    dp.sync(_state(a))
    dp.sync(_state(a, gateway="10.244.9.1"))
    first, second = loads.made
    assert first.closed and not second.closed
    assert second.proxy == ("10.244.9.1", 15001)
    assert second.attached() == [os.stat(tmp_path / "a").st_ino]


def test_no_gateway_and_no_cidr_loads_nothing_and_says_why(tmp_path: Path) -> None:
    loads = Loads()
    dp = NodeSteerDatapath("n1", tmp_path / "hm-pins", loader=loads)
    dp.sync(_state(_pod(tmp_path, "a", "node"), gateway=None))
    assert loads.made == []
    status = dp.status()
    assert "neither gateway nor pod CIDR" in status.detail["error"]
    assert status.programs == ()
