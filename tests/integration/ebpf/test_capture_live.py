"""eBPF capture (``sidecar+ebpf``) for real: meshnet's two pods, real proxies, no iptables.

Client app (client/app cgroup) → connect4 → client proxy :15001 (SO_ORIGINAL_DST answered by
cgroup/getsockopt) → marked socket → server netns → sk_lookup → server proxy :15006 → app.
One setup for the module; the tests that restart things come last.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from capnet import CapNet
from meshnet import (
    CLIENT_NS,
    SERVER_IPS,
    SERVER_NS,
    SMTP_VIP,
    WEB_PORT,
    WEB_VIP,
    http_get,
    metric,
    wait_ready,
)

from hybridmesh.agent.dp_capture import ListenerPending
from hybridmesh.lab import _sh

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CapNet]:
    if os.geteuid() != 0:
        pytest.fail("privileged tests need root (network namespaces, cgroups, eBPF)")
    mesh = CapNet(tmp_path_factory.mktemp("capnet"))
    try:
        mesh.up()
        mesh.start_backends()
        mesh.start_proxies()
        mesh.program()
        yield mesh
    finally:
        mesh.down()


def _inbound(net: CapNet) -> dict[str, int]:
    assert net.dp is not None
    steered: dict[str, int] = net.dp.status().detail["inbound"][SERVER_IPS[0]]
    return steered


def test_outbound_to_a_service_vip_goes_through_both_proxies(net: CapNet) -> None:
    labels = {"reporter": "source", "destination_service": "web.default.svc.cluster.local"}
    before = metric(CLIENT_NS, "request_total", **labels)
    server_before = metric(SERVER_NS, "request_total", reporter="destination",
                           source_workload="client")
    assert net.get(WEB_VIP, 80, "/a")["status"] == 200
    assert metric(CLIENT_NS, "request_total", **labels) - before == 1
    # web-0 (the one address with inbound capture) or web-1/2 (plain apps) answered
    assert metric(SERVER_NS, "request_total", reporter="destination",
                  source_workload="client") - server_before in (0, 1)


def test_outbound_to_a_pod_ip_keeps_its_original_destination(net: CapNet) -> None:
    server_before = metric(SERVER_NS, "request_total", reporter="destination",
                           source_workload="client")
    client_before = metric(CLIENT_NS, "request_total", reporter="source",
                           destination_workload="web")
    assert net.get(SERVER_IPS[0], WEB_PORT, "/pod-ip")["status"] == 200
    assert metric(CLIENT_NS, "request_total", reporter="source",
                  destination_workload="web") - client_before == 1
    assert metric(SERVER_NS, "request_total", reporter="destination",
                  source_workload="client") - server_before == 1
    assert _inbound(net)["steered"] >= 1  # the proxies' connection may be an older one
    assert net.dp is not None
    detail = net.dp.status().detail
    assert detail["originalDstAnswered"] >= 1
    assert detail["originalDstUnknown"] == 0


def test_inbound_from_an_unmeshed_client_reaches_the_app_through_the_proxy(net: CapNet) -> None:
    # the test process is in no pod cgroup: its connect is not captured, only sk_lookup acts
    before = _inbound(net)["steered"]
    server_before = metric(SERVER_NS, "request_total", reporter="destination")
    status, _, body = http_get(CLIENT_NS, SERVER_IPS[0], WEB_PORT, "/direct")
    assert status == 200 and body
    assert _inbound(net)["steered"] - before == 1
    assert metric(SERVER_NS, "request_total", reporter="destination") - server_before == 1


def test_the_proxy_ports_are_not_steered(net: CapNet) -> None:
    status, _, _ = http_get(CLIENT_NS, SERVER_IPS[0], 15020, "/ready")
    assert status == 200  # the admin port answers itself, not through 15006


def test_server_first_protocol(net: CapNet) -> None:
    assert net.banner(SMTP_VIP, 25) == "220 hm-smtp ready"


def test_the_proxy_is_never_captured_and_nothing_loops(net: CapNet) -> None:
    assert net.dp is not None
    for _ in range(3):
        assert net.get(WEB_VIP, 80)["status"] == 200
    detail = net.dp.status().detail
    assert detail["proxyConnectsLeftAlone"] >= 3  # the client proxy's upstream dials
    # every redirected connect was answered: none came back into 15001 unrecorded
    assert detail["originalDstUnknown"] == 0
    assert detail["outboundRedirected"] >= detail["originalDstAnswered"] >= 3


MARKED_GET = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x539)
s.settimeout(5)
s.connect((sys.argv[1], int(sys.argv[2])))
s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
print(s.recv(12).decode())
"""


def _counts(net: CapNet) -> tuple[int, int]:
    assert net.dp is not None
    detail = net.dp.status().detail
    return detail["outboundRedirected"], detail["proxyConnectsLeftAlone"]


def test_the_proxy_mark_is_excluded_even_in_the_app_cgroup(net: CapNet) -> None:
    redirected, left_alone = _counts(net)
    assert net.app(CLIENT_NS, MARKED_GET, SERVER_IPS[1], str(WEB_PORT)).strip() == "HTTP/1.1 200"
    assert _counts(net) == (redirected, left_alone + 1)


def test_the_proxy_uid_is_excluded_even_in_the_app_cgroup(net: CapNet) -> None:
    # a proxy running as 1337 (lab/sidecar.py proxy_uid) in a cgroup capture was not told about
    redirected, left_alone = _counts(net)
    argv = ["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", "curl", "-sS",
            "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}",
            f"http://{SERVER_IPS[1]}:{WEB_PORT}/"]
    out = subprocess.run(net.in_pod(CLIENT_NS, argv), capture_output=True, text=True,
                         timeout=20, check=True).stdout
    assert out == "200"
    assert _counts(net) == (redirected, left_alone + 1)


def test_no_iptables_rules_in_the_pods(net: CapNet) -> None:
    for ns in (CLIENT_NS, SERVER_NS):
        saved = subprocess.run(_sh.in_netns(ns, ["iptables-save"]), capture_output=True,
                               text=True, check=True).stdout
        assert [line for line in saved.splitlines() if line.startswith("-A")] == []


def test_loopback_is_not_captured(net: CapNet) -> None:
    # the client pod's own admin port over loopback: connect4 leaves 127/8 alone
    assert net.get("127.0.0.1", 15020, "/ready")["status"] == 200


def test_status_reports_programs_and_pods(net: CapNet) -> None:
    assert net.dp is not None
    status = net.dp.status()
    assert sorted(status.detail["programmed"]) == ["default/client-0", "default/web-0"]
    attach = {p.name: p.attach for p in status.programs}
    assert attach["hm_cap_connect4"] == "cgroup/connect4 on 2 cgroups"
    assert attach["hm_cap_connect6"] == "cgroup/connect6 on 2 cgroups"
    assert attach["hm_cap_lookup"] == "sk_lookup on 2 netns"
    assert attach["hm_cap_getpeername4"] == "cgroup/getpeername4 on 2 cgroups"
    assert attach["hm_cap_getpeername6"] == "cgroup/getpeername6 on 2 cgroups"
    listeners = next(m for m in status.maps if m.name == "listeners")
    assert listeners.entries == 2


MANY_GETS = """
import socket, sys
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    s = socket.create_connection((ip, port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    while s.recv(65536):
        pass
    s.close()
print("ok")
"""


def _orig_entries(net: CapNet) -> int:
    assert net.dp is not None
    entries = next(m.entries for m in net.dp.status().maps if m.name == "orig_by_addr")
    assert entries is not None  # a hash map: counted
    return entries


def test_closed_connections_leave_no_original_destination_behind(net: CapNet) -> None:
    before = _orig_entries(net)
    assert net.dp is not None
    answered = net.dp.status().detail["originalDstAnswered"]
    assert net.app(CLIENT_NS, MANY_GETS, WEB_VIP, "80", "60").strip() == "ok"
    assert net.dp.status().detail["originalDstAnswered"] - answered == 60
    deadline = time.monotonic() + 3  # the proxy's side reaches CLOSE after the last ACK
    while _orig_entries(net) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _orig_entries(net) <= before  # 60 connections came and went: the map did not grow


PEER = """
import json, socket, sys, time
family, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if family == "6":
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ip = "::ffff:" + ip
else:
    s = socket.socket()
s.settimeout(5)
s.connect((ip, port))
seen = {"open": list(s.getpeername()[:2])}
if len(sys.argv) > 4:  # a request: read the answer to EOF, the proxy closes its side first
    s.sendall(b"GET /peer HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    while s.recv(65536):
        pass
    time.sleep(0.1)  # the proxy's socket is gone by now: ours is in CLOSE_WAIT
    seen["eof"] = list(s.getpeername()[:2])
print(json.dumps(seen))
"""


def _peers(net: CapNet, family: str, ip: str, port: int, *request: str,
           leaf: str = "app") -> dict[str, list[Any]]:
    """What getpeername() told an app in the client pod's ``leaf`` cgroup."""
    argv = net.in_pod(CLIENT_NS, [sys.executable, "-c", PEER, family, ip, str(port), *request],
                      leaf)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    assert out.returncode == 0, out.stderr
    seen: dict[str, list[Any]] = json.loads(out.stdout)
    return seen


@pytest.mark.parametrize(("ip", "port"), [(WEB_VIP, 80), (SERVER_IPS[0], WEB_PORT)])
def test_getpeername_reports_the_dialled_address_while_the_socket_lives(
    net: CapNet, ip: str, port: int
) -> None:
    redirected, _ = _counts(net)
    seen = _peers(net, "4", ip, port, "request")
    assert _counts(net)[0] == redirected + 1  # captured: the peer really is 127.0.0.1:15001
    # as under iptables REDIRECT, also once the proxy closed first (the app in CLOSE_WAIT)
    assert seen == {"open": [ip, port], "eof": [ip, port]}


def test_getpeername_of_a_v4_mapped_dual_stack_socket(net: CapNet) -> None:
    redirected, _ = _counts(net)
    seen = _peers(net, "6", WEB_VIP, 80, "request")
    assert _counts(net)[0] == redirected + 1
    mapped = [f"::ffff:{WEB_VIP}", 80]
    assert seen == {"open": mapped, "eof": mapped}


def test_getpeername_of_uncaptured_sockets_is_their_real_peer(net: CapNet) -> None:
    redirected, _ = _counts(net)
    # the app dialling the proxy's own port over loopback: the very peer the hook rewrites,
    # but not a captured socket
    assert _peers(net, "4", "127.0.0.1", 15001) == {"open": ["127.0.0.1", 15001]}
    assert _peers(net, "6", "127.0.0.1", 15001) == {"open": ["::ffff:127.0.0.1", 15001]}
    # the proxy's own sockets: never captured, so their peer is where they went
    proxy_seen = _peers(net, "4", SERVER_IPS[1], WEB_PORT, "request", leaf="proxy")
    assert proxy_seen == {"open": [SERVER_IPS[1], WEB_PORT], "eof": [SERVER_IPS[1], WEB_PORT]}
    assert _peers(net, "4", "127.0.0.1", 15001, leaf="proxy") == {"open": ["127.0.0.1", 15001]}
    assert _counts(net)[0] == redirected  # none of them was captured


V4_MAPPED_GET = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(("::ffff:" + sys.argv[1], int(sys.argv[2])))
s.sendall(b"GET /v6 HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
print(s.recv(12).decode())
"""


def test_a_dual_stack_socket_dialling_a_v4_mapped_address_is_captured(net: CapNet) -> None:
    labels = {"reporter": "source", "destination_service": "web.default.svc.cluster.local"}
    before = metric(CLIENT_NS, "request_total", **labels)
    redirected, _ = _counts(net)
    out = net.app(CLIENT_NS, V4_MAPPED_GET, WEB_VIP, "80").strip()
    assert out == "HTTP/1.1 200"
    assert _counts(net)[0] == redirected + 1  # connect6 sent it to the proxy
    assert metric(CLIENT_NS, "request_total", **labels) - before == 1  # which routed it


def test_agent_restart_keeps_capturing(net: CapNet) -> None:
    from hybridmesh.agent.dp_capture import CaptureDatapath

    assert net.dp is not None
    net.dp.close()  # an agent exits: pins stay, capture goes on
    assert net.get(WEB_VIP, 80)["status"] == 200
    net.dp = CaptureDatapath(net.dp.node)
    net.program()  # the next agent reloads and rebinds the pinned links
    assert net.get(WEB_VIP, 80)["status"] == 200
    assert net.dp.status().detail["programmed"] == ["default/client-0", "default/web-0"]


def test_a_restarted_proxy_gets_inbound_back_at_once_and_capture_fails_closed_meanwhile(
    net: CapNet,
) -> None:
    assert net.dp is not None
    net.stop("proxy-server")
    with pytest.raises(ListenerPending, match="default/web-0"):
        net.dp.sync(net.state(2))
    assert list(net.dp.pending) == ["default/web-0"]  # its listener left the sockhash with it
    with pytest.raises(OSError):  # inbound is dropped, not handed to the app unproxied
        http_get(CLIENT_NS, SERVER_IPS[0], WEB_PORT, "/", timeout=1.0)
    assert _inbound(net)["refused"] >= 1
    assert net.cp is not None
    net.python("proxy-server", SERVER_NS, "-m", "hybridmesh.proxy", "--pod", "default/web-0",
               "--control", net.cp.path)
    wait_ready(SERVER_NS)  # the admin port answers: the inbound listener listens too
    # no sync in between: the sockops program put the new listener in the sockhash at listen()
    ready = time.monotonic()
    while True:
        with contextlib.suppress(OSError):
            if http_get(CLIENT_NS, SERVER_IPS[0], WEB_PORT, "/back", timeout=0.5)[0] == 200:
                break
        assert time.monotonic() - ready < 1.0, "inbound still dropped 1 s after the proxy listened"
    assert time.monotonic() - ready < 1.0
    net.dp.sync(net.state(3))  # the next sync only reports it
    assert not net.dp.pending
