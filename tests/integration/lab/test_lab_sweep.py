"""The sweep reclaims every hm- object — including after a SIGKILL in mid-creation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from minilab import MiniLab

from hybridmesh import env
from hybridmesh.lab import _sh, cleanup, dns, procs
from hybridmesh.lab.cgroups import daemon_procs_files, detect_layout

pytestmark = pytest.mark.privileged

PIN = env.BPFFS / "hm-test-map"


def plant_extras() -> None:
    """Objects the lab normally leaves to others: a pin, a root iptables rule, state files."""
    _sh.run(["bpftool", "map", "create", str(PIN), "type", "array", "key", "4", "value", "4",
             "entries", "1", "name", "hm_test"])
    _sh.iptables_restore(None, "*filter\n:HM-TEST - [0:0]\n-A HM-TEST -j RETURN\n"
                         '-A OUTPUT -d 192.0.2.1/32 -m comment --comment "hm: test" -j HM-TEST\n'
                         "COMMIT\n")
    (env.STATE_DIR / "logs").mkdir(parents=True, exist_ok=True)
    dns.write_hosts("hm-pod-orphan", "")  # an /etc/netns entry without its netns


def test_sweep_removes_everything_and_a_second_sweep_finds_nothing(mini_lab: MiniLab) -> None:
    for name in ("web-0", "web-1"):
        mini_lab.start_echo(name)
    stubborn = mini_lab.spawn("client-0", ["sh", "-c", "trap '' TERM; sleep 60 & wait"])
    plant_extras()
    found = cleanup.leftovers()
    assert found.processes and found.bpf_pins == [str(PIN)] and len(found.iptables) == 2
    report = cleanup.sweep()
    print(f"\nsweep: {report.to_json()}")
    assert not report.errors
    assert report.processes >= 4 and report.netns == 9 and report.iptables == 2
    assert report.bpf_pins == 1 and report.cgroups > 0
    assert stubborn.wait(1) == -signal.SIGKILL  # it ignored SIGTERM
    assert not cleanup.leftovers()
    again = cleanup.sweep()
    assert again.total == 0 and not again.errors


BUILDER = """
import sys
from pathlib import Path
from hybridmesh.control.model import NodeInfo, PodInfo, Limits
from hybridmesh.lab import network, procs, dns
from hybridmesh.lab.cgroups import PodCgroup, detect_layout
layout = detect_layout()
nodes = [NodeInfo(f"n{i}", i, f"10.244.{i}.0/24", f"10.244.{i}.1", f"172.31.255.{i}")
         for i in (1, 2)]
network.create_fabric()
for n in nodes:
    network.create_node(n)
network.sync_node_routes(nodes)
for i in range(200):
    node = nodes[i % 2]
    pod = PodInfo(f"p-{i}", "shop", "p", i, node.name, f"10.244.{i % 2 + 1}.{i // 2 + 10}",
                  "sa", "none")
    network.create_pod(pod, node)
    cg = PodCgroup("shop", pod.name, layout)
    cg.create(Limits(cpu_millis=100))
    dns.write_hosts(f"hm-pod-shop.{pod.name}", "")
    procs.spawn_in_pod(f"hm-pod-shop.{pod.name}", cg.procs_files("app"), ["sleep", "60"], None,
                       Path(sys.argv[1]))
    print(i, flush=True)
"""


@pytest.mark.parametrize("pods_before_kill", [0, 3, 9])
def test_sweep_after_sigkill_in_the_middle_of_creation(clean_lab: None, tmp_path: Path,
                                                       pods_before_kill: int) -> None:
    builder = subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path / "log")],
                               stdout=subprocess.PIPE, text=True)
    assert builder.stdout is not None
    for _ in range(pods_before_kill):
        assert builder.stdout.readline()
    if pods_before_kill == 0:
        time.sleep(0.25)  # somewhere in the fabric/node set-up or the first pod
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    assert cleanup.leftovers()
    report = cleanup.sweep()
    assert not report.errors
    assert not cleanup.leftovers()


SWEEPER = """
import json
from hybridmesh.lab import cleanup
print(json.dumps(cleanup.sweep().to_json()), flush=True)
"""


def test_the_sweeping_process_spares_itself_inside_a_lab_cgroup(clean_lab: None,
                                                                tmp_path: Path) -> None:
    log = tmp_path / "sweeper.log"
    sweeper = procs.spawn_in_cgroup(daemon_procs_files(detect_layout()),
                                    [sys.executable, "-c", SWEEPER], None, log)
    assert sweeper.wait(30) == 0, log.read_text()
    report = json.loads(log.read_text())
    assert not report["errors"] and report["cgroups"] > 0
    assert not cleanup.leftovers()


def test_leftovers_sees_a_lone_cgroup(clean_lab: None) -> None:
    files = daemon_procs_files(detect_layout())
    assert {str(Path(f).parents[1]) for f in files} <= set(cleanup.leftovers().cgroups)
