"""Real clients through the sidecar mesh in the real lab, driven through the CLI.

curl (HTTP/1.1 keep-alive), h2load (h2c to an HTTP/1.1 service, and gRPC-shaped to a gRPC
one), a grpcio client and server (unary and server streaming), redis-cli/redis-benchmark
against a real redis-server (``appProtocol: tcp``), and a server-speaks-first service declared
with no appProtocol, whose banner must arrive within 50 ms of the direct path although the
proxies first wait for the client to speak (protocol detection).

"Direct" is the same topology brought up again with ``placement: none``: same client program,
pods, nodes, veths and service DNAT, only the proxies (and capture) gone, so the difference is
the mesh and nothing else. (A capture-excluded port was the other option: it needs the app on
one of the proxy's own ports and a client socket carrying the proxy's mark, which redis-benchmark
cannot set, and it skips the service VIP, so it would not compare like for like.)

Root, real namespaces, iptables capture and proxies; never skipped in CI. The lab is one
global instance: the module takes it (``lab down`` first) for all its tests, switches placement
with ``lab apply`` so it is never free meanwhile, and takes it down at the end only if it is
still the one it started (another run may have replaced it: then the tests fail, saying so).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hmcli import hm
from prometheus_client.parser import text_string_to_metric_families

from hybridmesh.lab import cleanup, names

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

NS = "mc"
GRPC_UNARY, GRPC_STREAM = 100, 1000
BANNER_CONNECTS = 20
BANNER_BUDGET_MS = 50.0

TOPOLOGY = """
apiVersion: hybridmesh.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {defaultPlacement: PLACEMENT}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: node-1}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: node-2}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: client, namespace: mc, labels: {app: client}}
spec: {node: node-1, command: ["sleep", "infinity"]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: web, namespace: mc, labels: {app: web}}
spec:
  node: node-2
  command: ["python3", "-m", "hybridmesh.lab.workloads.httpsvc", "--port", "8080"]
  ports: [{name: http, containerPort: 8080}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: grpc, namespace: mc, labels: {app: grpc}}
spec:
  node: node-2
  command: ["python3", "-m", "hybridmesh.lab.workloads.grpcsvc", "serve", "--port", "50051"]
  ports: [{name: grpc, containerPort: 50051}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: redis, namespace: mc, labels: {app: redis}}
spec:
  node: node-2
  command: ["redis-server", "--port", "6379", "--save", "", "--appendonly", "no",
            "--protected-mode", "no"]
  ports: [{name: redis, containerPort: 6379}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: banner, namespace: mc, labels: {app: banner}}
spec:
  node: node-2
  command: ["python3", "-m", "hybridmesh.lab.workloads.banner", "serve", "--port", "2525"]
  ports: [{name: smtp, containerPort: 2525}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: mc}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, appProtocol: http}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: grpc, namespace: mc}
spec:
  selector: {app: grpc}
  ports: [{name: grpc, port: 50051, targetPort: grpc, appProtocol: grpc}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: redis, namespace: mc}
spec:
  selector: {app: redis}
  ports: [{name: redis, port: 6379, targetPort: redis, appProtocol: tcp}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: banner, namespace: mc}
spec:
  selector: {app: banner}
  ports: [{name: smtp, port: 25, targetPort: smtp}]
"""


def client(*cmd: str) -> str:
    """Run ``cmd`` in client-0 (through its sidecar when meshed); its stdout."""
    return hm("lab", "exec", f"{NS}/client-0", "--", *cmd, timeout=120).stdout


def svc(name: str) -> str:
    return f"{name}.{NS}.svc.cluster.local"


@dataclass
class Lab:
    """The module's lab; ``ensure`` re-creates it when another placement is wanted."""

    workdir: Path
    placement: str | None = None
    started_at: float | None = None
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)

    def ensure(self, placement: str) -> None:
        """Our lab with ``placement`` everywhere. A switch is a ``lab apply`` (pods replaced
        in place), so the global lab is never free for another run to take meanwhile."""
        if self.placement == placement:
            return
        topo = self.workdir / f"mesh-clients-{placement}.yaml"
        topo.write_text(TOPOLOGY.replace("PLACEMENT", placement))
        if self.placement is None:
            hm("lab", "down")
            self.started_at = json.loads(hm("lab", "up", str(topo), "-o", "json").stdout)[
                "startedAt"
            ]
        else:
            assert self.ours(), "the lab was replaced by another run meanwhile"
            hm("lab", "apply", str(topo), "-o", "json")
        self.placement = None  # until it is known to be right
        now = json.loads(hm("lab", "status", "-o", "json").stdout)
        assert now["phase"] == "Ready" and all(p["ready"] for p in now["pods"]), now
        assert {p["placement"] for p in now["pods"]} == {placement}, now["pods"]
        self.pods = {p["name"]: p for p in now["pods"]}
        self.placement = placement

    def ours(self) -> bool:
        """Is the running lab still the one we started? (One global lab: another run may
        have taken it down and started its own.)"""
        now = hm("lab", "status", "-o", "json", check=False)
        return now.returncode == 0 and json.loads(now.stdout).get("startedAt") == self.started_at

    def context(self, pod: str, name: str) -> str:
        """For failure messages: the pod's samples of ``name``, and whether the lab is still
        ours (it is one global instance: another test run may have replaced it)."""
        ours = self.ours()
        samples = self.metrics(pod).get(name, []) if ours else "(not scraped)"
        return f"lab still ours: {ours}; {pod} {name}: {samples}"

    def metrics(self, pod: str) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The pod's proxy /metrics, scraped from its node (admin port is not captured)."""
        p = self.pods[pod]
        text = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                names.node_netns(p["node"]),
                "curl",
                "-sS",
                "--max-time",
                "5",
                f"http://{p['ip']}:15020/metrics",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.setdefault(s.name, []).append((s.labels, s.value))
        return out

    def metric(self, pod: str, name: str, **labels: str) -> float:
        return sum(
            v
            for lab, v in self.metrics(pod).get(name, [])
            if all(lab.get(k) == want for k, want in labels.items())
        )

    def wait_metric(self, pod: str, name: str, at_least: float, **labels: str) -> float:
        """Poll briefly: a proxy records a request as it forwards the end of the response."""
        deadline = time.monotonic() + 3
        while (value := self.metric(pod, name, **labels)) < at_least:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return value


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    hm("lab", "down")
    the_lab = Lab(tmp_path_factory.mktemp("mesh-clients"))
    try:
        yield the_lab
    finally:
        if the_lab.figures:
            print("\nmesh clients:", json.dumps(the_lab.figures, sort_keys=True))
        # never someone else's lab: only the one we started, if it still runs (or, when our
        # start failed and nothing runs, whatever that failed start left behind)
        if the_lab.started_at is not None:
            ours = the_lab.ours()
        else:
            ours = hm("lab", "status", check=False).returncode != 0
        if ours:
            hm("lab", "down")
    if ours:
        assert not cleanup.leftovers()


@pytest.fixture
def meshed(lab: Lab) -> Lab:
    lab.ensure("sidecar")
    return lab


def test_curl_http1_keep_alive_through_the_mesh(meshed: Lab) -> None:
    out = client(
        "curl",
        "-sS",
        "-w",
        "%{http_code} %{num_connects} %{http_version}\n",
        *(["-o", "/dev/null", "http://web/"] * 3),
    )
    # one connection for the three requests: the outbound proxy keeps it alive
    assert out.split("\n")[:3] == ["200 1 1.1", "200 0 1.1", "200 0 1.1"], out
    assert (
        meshed.wait_metric(
            "client-0",
            "request_total",
            3,
            reporter="source",
            destination_service=svc("web"),
            response_code="200",
        )
        >= 3
    )


def h2load_counts(out: str) -> dict[str, int]:
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        out,
    )
    assert m is not None, out
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    return dict(zip(keys, map(int, m.groups()), strict=True))


def test_h2load_h2c_to_an_http1_service(meshed: Lab) -> None:
    """httpsvc speaks only HTTP/1.1: the proxies translate the h2c client's streams."""
    counts = h2load_counts(client("h2load", "-n", "200", "-c", "2", "-m", "10", "http://web/"))
    assert counts["succeeded"] == 200 and counts["failed"] == counts["errored"] == 0, counts


def test_h2load_grpc_shaped_requests(meshed: Lab) -> None:
    body = meshed.workdir / "grpc-request.bin"
    body.write_bytes(b"\x00\x00\x00\x00\x05hello")  # one uncompressed gRPC message
    before = meshed.metric(
        "client-0", "request_total", request_protocol="grpc", grpc_response_status="0"
    )
    counts = h2load_counts(
        client(
            "h2load",
            "-n",
            "200",
            "-c",
            "2",
            "-m",
            "10",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "http://grpc:50051/hybridmesh.lab.Echo/Unary",
        )
    )
    assert counts["succeeded"] == 200 and counts["failed"] == counts["errored"] == 0, counts
    after = meshed.wait_metric(
        "client-0", "request_total", before + 200, request_protocol="grpc", grpc_response_status="0"
    )
    assert after - before == 200  # the echo answered grpc-status 0 to every one


def test_grpcio_unary_and_streaming(meshed: Lab) -> None:
    labels = {"destination_service": svc("grpc"), "request_protocol": "grpc"}
    src0 = meshed.metric("client-0", "request_total", reporter="source", **labels)
    dst0 = meshed.metric("grpc-0", "request_total", reporter="destination", **labels)
    report = json.loads(
        client(
            "python3",
            "-m",
            "hybridmesh.lab.workloads.grpcsvc",
            "call",
            "--target",
            "grpc:50051",
            "--unary",
            str(GRPC_UNARY),
            "--stream",
            str(GRPC_STREAM),
        )
    )
    assert report["ok"], report
    assert report["unary"]["ok"] == GRPC_UNARY
    assert report["stream"]["received"] == GRPC_STREAM and report["stream"]["inOrder"]
    meshed.figures["grpcUnaryCallsPerSecondMesh"] = report["unary"]["callsPerSecond"]
    meshed.figures["grpcStreamMessagesPerSecondMesh"] = report["stream"]["messagesPerSecond"]

    # both proxies saw every call (100 unary + 1 stream) as gRPC, all grpc-status 0
    calls = GRPC_UNARY + 1
    src = meshed.wait_metric(
        "client-0",
        "request_total",
        src0 + calls,
        reporter="source",
        grpc_response_status="0",
        **labels,
    )
    dst = meshed.wait_metric(
        "grpc-0",
        "request_total",
        dst0 + calls,
        reporter="destination",
        grpc_response_status="0",
        **labels,
    )
    assert (src - src0, dst - dst0) == (calls, calls), meshed.context("grpc-0", "request_total")
    others = [
        lab
        for lab, v in meshed.metrics("grpc-0")["request_total"]
        if lab["request_protocol"] == "grpc" and lab["grpc_response_status"] != "0" and v
    ]
    assert not others, others


def redis_benchmark(lab: Lab) -> dict[str, float]:
    """SET and GET req/s; the server's own command counters prove none failed."""
    client("redis-cli", "-h", "redis", "config", "resetstat")
    out = client("redis-benchmark", "-h", "redis", "-q", "-n", "2000", "-t", "set,get")
    assert "error" not in out.lower(), out
    rates = {m[0]: float(m[1]) for m in re.findall(r"(SET|GET): ([\d.]+) requests per second", out)}
    assert set(rates) == {"SET", "GET"}, out
    stats = client("redis-cli", "-h", "redis", "info", "commandstats")
    for cmd in ("set", "get"):
        m = re.search(
            rf"cmdstat_{cmd}:calls=(\d+),.*rejected_calls=(\d+),failed_calls=(\d+)", stats
        )
        assert m is not None and m.groups() == ("2000", "0", "0"), stats
    return rates


def test_redis_through_the_mesh_as_opaque_tcp(meshed: Lab) -> None:
    opened = {"destination_service": svc("redis")}
    src0 = meshed.metric("client-0", "tcp_open_total", reporter="source", **opened)
    dst0 = meshed.metric("redis-0", "tcp_open_total", reporter="destination", **opened)
    assert client("redis-cli", "-h", "redis", "ping").strip() == "PONG"
    rates = redis_benchmark(meshed)
    meshed.figures["redisSetPerSecondMesh"] = rates["SET"]
    meshed.figures["redisGetPerSecondMesh"] = rates["GET"]
    # redis-benchmark's 50 clients per test and each redis-cli: every one a relayed connection
    src = meshed.wait_metric("client-0", "tcp_open_total", src0 + 103, reporter="source", **opened)
    dst = meshed.wait_metric(
        "redis-0", "tcp_open_total", dst0 + 103, reporter="destination", **opened
    )
    assert src - src0 >= 103 and dst - dst0 >= 103, meshed.context("redis-0", "tcp_open_total")
    # opaque: no request was ever parsed on that port
    assert not meshed.metric("client-0", "request_total", destination_service=svc("redis"))


def banner_probe() -> dict[str, Any]:
    report: dict[str, Any] = json.loads(
        client(
            "python3",
            "-m",
            "hybridmesh.lab.workloads.banner",
            "probe",
            "--target",
            "banner:25",
            "--count",
            str(BANNER_CONNECTS),
        )
    )
    assert report["ok"] and report["count"] == BANNER_CONNECTS, report
    assert re.fullmatch(r"220 banner-0 hm-banner ready", report["banner"]), report
    return report


def test_server_speaks_first_within_50ms_of_direct(lab: Lab) -> None:
    """Runs last: it switches the lab to placement none for the direct figures."""
    lab.ensure("sidecar")
    before = lab.metric(
        "client-0", "tcp_open_total", reporter="source", destination_service=svc("banner")
    )
    mesh = banner_probe()
    relayed = lab.wait_metric(
        "client-0",
        "tcp_open_total",
        before + BANNER_CONNECTS,
        reporter="source",
        destination_service=svc("banner"),
    )
    assert relayed - before == BANNER_CONNECTS  # through the proxy, not around it

    lab.ensure("none")
    direct = banner_probe()
    rates = redis_benchmark(lab)
    grpc_direct = json.loads(
        client(
            "python3",
            "-m",
            "hybridmesh.lab.workloads.grpcsvc",
            "call",
            "--target",
            "grpc:50051",
            "--unary",
            str(GRPC_UNARY),
            "--stream",
            str(GRPC_STREAM),
        )
    )
    assert grpc_direct["ok"], grpc_direct
    lab.figures.update(
        {
            "bannerMedianMsMesh": mesh["medianMs"],
            "bannerMaxMsMesh": mesh["maxMs"],
            "bannerMedianMsDirect": direct["medianMs"],
            "bannerMaxMsDirect": direct["maxMs"],
            "redisSetPerSecondDirect": rates["SET"],
            "redisGetPerSecondDirect": rates["GET"],
            "grpcUnaryCallsPerSecondDirect": grpc_direct["unary"]["callsPerSecond"],
            "grpcStreamMessagesPerSecondDirect": grpc_direct["stream"]["messagesPerSecond"],
        }
    )
    assert mesh["medianMs"] - direct["medianMs"] <= BANNER_BUDGET_MS, (mesh, direct)
