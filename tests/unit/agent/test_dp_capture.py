"""The capture datapath's decisions, with the kernel replaced by a recording fake."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hybridmesh.agent import dp_capture
from hybridmesh.agent.datapath import NodeState, PodView
from hybridmesh.agent.dp_capture import CaptureDatapath, ListenerPending, create


class FakeCapture:
    """Records what the datapath asks of the loader; listeners by pod IP."""

    loads = 0

    def __init__(self) -> None:
        self.cgroups: list[Path] = []
        self.netns: list[Path] = []
        self.excluded: list[Path] = []
        self.listeners: dict[str, int] = {}
        self.netns_pods: dict[Path, str] = {}
        self.steered: set[str] = set()
        self.kept_links: set[int] = set()
        self.kept_ips: list[str] = []

    @classmethod
    def load(cls, pin_dir: Path, config: Any) -> FakeCapture:
        cls.loads += 1
        return cls()

    def attach_cgroup(self, cgroup: Path) -> int:
        self.cgroups.append(cgroup)
        return os.stat(cgroup).st_ino

    def attach_netns(self, netns: Path) -> int:
        self.netns.append(netns)
        return os.stat(netns).st_ino

    def exclude_cgroup(self, cgroup: Path) -> int:
        self.excluded.append(cgroup)
        return os.stat(cgroup).st_ino

    def set_netns_pod(self, netns: Path, ip: str) -> None:
        self.netns_pods[netns] = ip

    def steer_inbound(self, ip: str) -> None:
        self.steered.add(ip)

    def has_listener(self, ip: str) -> bool:
        return ip in self.listeners

    def set_listener(self, ip: str, fd: int) -> None:
        self.listeners[ip] = fd

    def detach(self, keep: set[int]) -> list[int]:
        self.kept_links = set(keep)
        return []

    def forget(self, keep_ips: list[str], keep_cgroups: set[int]) -> None:
        self.kept_ips = list(keep_ips)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """FakeCapture as the loader; pods whose IP is in ``listening`` have a proxy listening."""
    listening: set[str] = set()
    taken: list[list[int]] = []

    def take(pids: Any, port: int) -> int | None:
        taken.append(list(pids))
        return os.open(os.devnull, os.O_RDONLY) if listening else None

    FakeCapture.loads = 0
    monkeypatch.setattr(dp_capture, "Capture", FakeCapture)
    monkeypatch.setattr(dp_capture, "take_listener", take)
    return {"listening": listening, "taken": taken}


def pod(tmp: Path, name: str, ip: str, placement: str = "sidecar+ebpf") -> PodView:
    cgroup = tmp / "cg" / name
    (cgroup / "proxy").mkdir(parents=True)
    (cgroup / "app").mkdir()
    (cgroup / "proxy" / "cgroup.procs").write_text("4242\n")
    (cgroup / "app" / "cgroup.procs").write_text("77\n")
    netns = tmp / f"ns-{name}"
    netns.touch()
    return PodView("shop", name, ip, "n1", "sa", placement, cgroup=cgroup, netns=netns)


def state(*pods: PodView) -> NodeState:
    return NodeState("n1", 1, pods, (), ())


def test_a_node_without_sidecar_ebpf_pods_loads_nothing(fake: dict[str, Any],
                                                        tmp_path: Path) -> None:
    dp = CaptureDatapath("n1", pin_dir=tmp_path / "hm-n1-capture")
    dp.sync(state(pod(tmp_path, "k", "10.0.0.9", placement="kernel")))
    assert FakeCapture.loads == 0
    assert dp.status().detail == {"pods": 0, "loaded": False}


def test_a_pod_is_programmed_once_its_proxy_listens(fake: dict[str, Any], tmp_path: Path) -> None:
    dp = CaptureDatapath("n1", pin_dir=tmp_path / "hm-n1-capture")
    a = pod(tmp_path, "a", "10.0.0.2")
    with pytest.raises(ListenerPending, match="shop/a"):
        dp.sync(state(a))
    assert dp.pending == {"shop/a": "its proxy does not listen on 15006 yet"}
    assert fake["taken"] == [[4242, 77]]  # the proxy leaf's processes are searched first
    loaded: Any = dp._capture
    assert isinstance(loaded, FakeCapture)
    # the kernel is told the pod's netns (it inserts a listener that appears), but inbound
    # steering waits for a listener: no SYN is dropped for a pod whose proxy never started
    assert loaded.netns_pods == {a.netns: "10.0.0.2"} and loaded.steered == set()
    fake["listening"].add("10.0.0.2")
    dp.sync(state(a))
    assert dp.programmed == {"shop/a"} and dp.pending == {}
    assert loaded.steered == {"10.0.0.2"}
    assert loaded.cgroups[-1] == a.cgroup and loaded.netns[-1] == a.netns
    assert a.cgroup is not None and loaded.excluded[-1] == a.cgroup / "proxy"
    assert FakeCapture.loads == 1  # loaded once, reused by every sync


def test_pods_that_left_lose_their_links_and_entries(fake: dict[str, Any], tmp_path: Path) -> None:
    fake["listening"].add("any")
    dp = CaptureDatapath("n1", pin_dir=tmp_path / "hm-n1-capture")
    a, b = pod(tmp_path, "a", "10.0.0.2"), pod(tmp_path, "b", "10.0.0.3")
    dp.sync(state(a, b))
    dp.sync(state(a))
    loaded: Any = dp._capture
    assert isinstance(loaded, FakeCapture)
    assert a.cgroup is not None and a.netns is not None
    assert loaded.kept_links == {os.stat(a.cgroup).st_ino, os.stat(a.netns).st_ino}
    assert loaded.kept_ips == ["10.0.0.2"]
    assert dp.programmed == {"shop/a"}


def test_only_sidecar_ebpf_is_served() -> None:
    dp = create("n1")
    assert dp.serves("sidecar+ebpf")
    assert not dp.serves("sidecar") and not dp.serves("kernel")
    assert dp.name == "capture"
