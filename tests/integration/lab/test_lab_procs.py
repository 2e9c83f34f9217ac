"""Processes in pods: same PID as the app, in the pod's cgroups and netns from the start."""

from __future__ import annotations

import os
import time

import pytest
from minilab import MiniLab

from hybridmesh.lab import _sh, procs

pytestmark = pytest.mark.privileged


def wait_comm(pid: int, expected: str = "sleep") -> str:
    deadline = time.monotonic() + 3
    while True:
        with open(f"/proc/{pid}/comm") as comm:
            name = comm.read().strip()
        if name == expected or time.monotonic() > deadline:
            return name
        time.sleep(0.01)


def test_spawned_pid_is_the_apps_and_lives_in_the_pod(mini_lab: MiniLab) -> None:
    proc = mini_lab.spawn("web-0", ["sleep", "30"])
    cg = mini_lab.cgroups["web-0"]
    assert proc.pid in cg.pids()  # joined before exec: tracked from the first instruction
    assert wait_comm(proc.pid) == "sleep"  # ip netns exec exec'd the app: no wrapper left
    netns = os.stat(_sh.NETNS_DIR / mini_lab.netns("web-0"))
    own = os.stat(f"/proc/{proc.pid}/ns/net")
    assert (own.st_dev, own.st_ino) == (netns.st_dev, netns.st_ino)
    with open(f"/proc/{proc.pid}/cgroup") as groups:
        assert all(line.endswith("/hm-lab/hm-pod-shop.web-0/app") for line in groups.read()
                   .splitlines() if line.split(":")[1] in ("", "memory", "cpu", "pids"))
    assert os.getsid(proc.pid) == proc.pid  # its own session: our signals don't reach it


def test_log_is_appended(mini_lab: MiniLab) -> None:
    for word in ("one", "two"):
        assert mini_lab.spawn("web-0", ["sh", "-c", f"echo {word}; echo err >&2"]).wait(5) == 0
    assert (mini_lab.log_dir / "web-0.log").read_text() == "one\nerr\ntwo\nerr\n"


def test_run_in_pod_passes_exit_codes_through(mini_lab: MiniLab) -> None:
    netns, files = mini_lab.netns("client-0"), mini_lab.cgroups["client-0"].procs_files("app")
    assert procs.run_in_pod(netns, files, ["sh", "-c", "exit 7"]) == 7
    assert procs.run_in_pod(netns, files, ["sh", "-c", "kill -TERM $$"]) == 128 + 15
    assert procs.run_in_pod(netns, files, ["true"]) == 0


def test_run_in_pod_as_another_user(mini_lab: MiniLab, capfd: pytest.CaptureFixture[str]) -> None:
    netns, files = mini_lab.netns("client-0"), mini_lab.cgroups["client-0"].procs_files("app")
    assert procs.run_in_pod(netns, files, ["sh", "-c", "id -u; ip -br addr show eth0"],
                            uid=65534) == 0
    out = capfd.readouterr().out.splitlines()
    assert out[0] == "65534"
    assert mini_lab.pods["client-0"].ip in out[1]


def test_spawning_into_a_missing_pod_is_a_clear_error(mini_lab: MiniLab) -> None:
    files = mini_lab.cgroups["web-0"].procs_files("app")
    with pytest.raises(procs.LabError, match="does not exist"):
        procs.spawn_in_pod("hm-pod-shop.nope", files, ["true"], None, mini_lab.log_dir / "x")
    with pytest.raises(procs.LabError, match="cgroup"):
        procs.spawn_in_pod(mini_lab.netns("web-0"), [mini_lab.log_dir / "nope" / "cgroup.procs"],
                           ["true"], None, mini_lab.log_dir / "x")
