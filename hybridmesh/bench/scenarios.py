"""The benchmark's named scenarios, variants and contenders, and the two run profiles.

A scenario is a documented workload; a *level* is its swept parameter (request rate for
``http-latency``, connections for ``http-throughput``, streams for ``grpc``, pods for
``scale``; the others have one level). A scenario not implemented yet is registered as a stub
so that ``--scenarios`` knows it and says "not yet" instead of pretending.

Contenders are a table: a placement the lab learns to realize becomes measurable by adding
one row (``Contender``); rows whose placement this build's lab cannot realize are skipped with
a note (bed.unavailable_contenders).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "CONTENDERS",
    "FULL",
    "QUICK",
    "SCENARIOS",
    "VARIANTS",
    "BenchConfigError",
    "Contender",
    "KillTarget",
    "Profile",
    "ProxyKind",
    "Scenario",
    "UpgradeKind",
    "levels_for",
    "measures",
    "select_contenders",
    "select_scenarios",
    "variants_for",
]


class BenchConfigError(ValueError):
    """The user asked for a scenario, variant or contender that does not exist (or not yet)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    description: str
    implemented: bool = True
    level_unit: str = ""  # what the swept level means ("req/s", "connections"), "" if none
    variants: tuple[str, ...] = ("same-node", "cross-node")  # those it is measured in
    in_quick: bool = True  # part of --quick's default set (the disruptive ones are not)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "http-latency",
            "open-loop HTTP/1.1 at fixed rates, latency percentiles",
            "HTTP/1.1 GET with keep-alive, 1 KiB responses, sent open-loop at fixed request "
            "rates by hybridmesh's loadgen: request i is due at start + i/rate and its latency "
            "is measured from that due time, so queueing is not hidden (coordinated omission "
            "handled). Percentiles come from the window after the warm-up only.",
            level_unit="req/s",
        ),
        Scenario(
            "http-throughput",
            "closed-loop HTTP/1.1, max req/s at fixed concurrency",
            "wrk -t1 -cN against the same 1 KiB endpoint: the highest request rate the path "
            "sustains with N keep-alive connections. Its latencies are closed-loop (they hide "
            "queueing) and are reported for reference only.",
            level_unit="connections",
        ),
        Scenario(
            "tcp-rr",
            "TCP request/response ping-pong (L4 only)",
            "One TCP connection, 64-byte request, 64-byte response, one transaction in flight "
            "(netperf TCP_RR's shape): transactions per second and round-trip percentiles. "
            "Proxies treat the port as opaque TCP (appProtocol: tcp).",
        ),
        Scenario(
            "tcp-stream",
            "bulk TCP throughput (L4 only)",
            "One TCP connection writing 64 KiB chunks for the duration; the receiver counts the "
            "bytes and acknowledges the total at EOF, so the rate is what arrived, not what "
            "was buffered.",
        ),
        Scenario(
            "grpc",
            "gRPC over HTTP/2 (h2c), multiplexed streams",
            "h2load -c4 -m16 (4 connections, 16 concurrent streams each) sends gRPC unary calls "
            "(POST /hybridmesh.lab.Echo/Unary, a 64-byte framed message) to the lab's grpcio "
            "echo service for the duration: the highest rate the path sustains with multiplexed "
            "streams, and the latency percentiles of every call from h2load's per-request log "
            "(closed loop: queueing is hidden, as for http-throughput).",
            level_unit="streams",
        ),
        Scenario(
            "tls-handshake",
            "full mTLS handshakes per second and per server-proxy core",
            "A Python client in the client pod (2 processes) makes full TLS 1.3 handshakes "
            "with a valid client SVID (issued as the contender's mesh issues it: the lab CA "
            "on the pod's bootstrap token for hybridmesh, the bench CA for Envoy), no "
            "resumption, to the server pod's HTTP port, bypassing its own proxy (SO_MARK), so "
            "the server-side proxy's inbound mTLS listener does every handshake; each one "
            "waits for the server to close, so only handshakes the server verified count. "
            "Reported: handshakes/s (wall) and handshakes per second of server-proxy CPU "
            "(cgroup accounting). Measured for contenders with mTLS between proxies "
            "(sidecar, envoy-sidecar-mtls).",
            variants=("same-node",),
            in_quick=False,
        ),
        Scenario(
            "blast-radius",
            "kill one proxy under load: who fails, for how long",
            "Two clients (same-node, cross-node) each call two services (blast-a, blast-b) "
            "open loop; one proxy is killed with SIGKILL (the server-side sidecar of blast-a-0; "
            "a node proxy for node placements) and restarted the way its platform does (the "
            "lab's supervisor for hybridmesh, the bench standing in for the kubelet for Envoy). "
            "Reported: the share of all requests in the lab that failed, the failures on the "
            "unaffected paths (should be 0), and the time to recover: from the kill to the "
            "first success of a request sent after it on an affected path.",
            variants=("same-node",),
            in_quick=False,
        ),
        Scenario(
            "upgrade",
            "upgrade the data plane under load",
            "The same load as blast-radius while the contender's data plane is upgraded the "
            "way its placement requires: sidecars by restarting every pod's proxy, one pod at "
            "a time, each waited for until ready again (the lab has no surge: a 1-replica "
            "service is down while its pod restarts, as with Kubernetes' Recreate strategy); "
            "none has nothing to upgrade. Reported: pod restarts needed, failed requests and "
            "their share, and how long the upgrade took.",
            variants=("same-node",),
            in_quick=False,
        ),
        Scenario(
            "scale",
            "N pods per node: mesh memory and CPU",
            "N replicas of a small HTTP service on node-1 under a light steady load "
            "(flowprobe, 100 req/s open loop, spread over the N pods by the service): the "
            "proportional memory (PSS) of every mesh process in the N pods' proxy cgroups plus "
            "the node's shared mesh processes (node-1's agent, whole, for the placements that "
            "need one), and their CPU plus the run time of every hm_* eBPF program on the "
            "machine, in total and per pod. Sidecars cost per pod; a node-level component is "
            "paid once per node.",
            level_unit="pods",
            variants=("same-node",),
            in_quick=False,
        ),
    )
}

VARIANTS = ("same-node", "cross-node")
"""same-node: client and server on node-1; cross-node: client on node-2, server on node-1."""

ProxyKind = Literal["none", "hybridmesh", "envoy", "node"]
KillTarget = Literal["none", "sidecar", "envoy", "agent", "node-proxy"]
UpgradeKind = Literal["none", "restart-pods", "agent-restart", "hitless"]


@dataclass(frozen=True, slots=True)
class Contender:
    """One row of the contender table: adding a placement to the bench is adding a row.

    ``proxy`` says which proxy runs per pod (so the bench can prove it carried the traffic
    and account its CPU and memory), ``kill`` what blast-radius kills (for ``kernel``, which
    has no proxy, the server node's agent: the datapath should not notice), ``upgrade`` how
    its data plane is upgraded under load."""

    name: str
    description: str
    placement: str  # the lab placement its pods get
    proxy: ProxyKind = "none"
    kill: KillTarget = "none"
    upgrade: UpgradeKind = "none"
    identity: bool = True  # False: its Workloads carry hybridmesh.io/identity: disabled
    mtls: bool = False  # envoy: mTLS between the injected Envoys
    in_quick: bool = True  # part of --quick's default set (when no -c is given)


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("none", "no data plane: the baseline every ratio is against", "none"),
        Contender(
            "sidecar",
            "hybridmesh's sidecar proxy (placement: sidecar)",
            "sidecar",
            proxy="hybridmesh",
            kill="sidecar",
            upgrade="restart-pods",
        ),
        Contender(
            "sidecar-plaintext",
            "hybridmesh's sidecar, no identity (hybridmesh.io/identity: disabled): plaintext",
            "sidecar",
            proxy="hybridmesh",
            kill="sidecar",
            upgrade="restart-pods",
            identity=False,
            in_quick=False,
        ),
        Contender(
            "sidecar+ebpf",
            "hybridmesh's sidecar with eBPF capture and app-proxy hop (placement: sidecar+ebpf)",
            "sidecar+ebpf",
            proxy="hybridmesh",
            kill="sidecar",
            upgrade="restart-pods",
        ),
        Contender(
            "kernel",
            "eBPF only: socket-level service LB and L4 policy (placement: kernel)",
            "kernel",
            kill="agent",
            upgrade="agent-restart",
        ),
        Contender(
            "node",
            "one proxy per node, eBPF steering (placement: node)",
            "node",
            proxy="node",
            kill="node-proxy",
            upgrade="hitless",
        ),
        Contender(
            "envoy-sidecar",
            "Envoy injected the Istio way (iptables capture, 15001/15006, L7 HTTP), plaintext",
            "none",
            proxy="envoy",
            kill="envoy",
            upgrade="restart-pods",
        ),
        Contender(
            "envoy-sidecar-mtls",
            "the same Envoys with Istio-style mTLS between them (SVIDs from a bench CA)",
            "none",
            proxy="envoy",
            kill="envoy",
            upgrade="restart-pods",
            mtls=True,
            in_quick=False,
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Profile:
    """How long and how often: ``--quick`` for CI, the full one for numbers worth quoting."""

    name: str
    duration_s: float
    warmup_s: float
    repeats: int
    rates: tuple[int, ...]
    concurrency: tuple[int, ...]
    variants: tuple[str, ...]
    scale_pods: tuple[int, ...] = (2, 8, 32)
    streams: int = 16  # grpc: concurrent streams per connection
    disruption_s: float = 10.0  # blast-radius: observed seconds after the kill


FULL = Profile(
    "full",
    duration_s=10.0,
    warmup_s=2.0,
    repeats=3,
    rates=(100, 500, 1000, 2000),
    concurrency=(16,),
    variants=VARIANTS,
    scale_pods=(2, 8, 32),
    disruption_s=10.0,
)
QUICK = Profile(
    "quick",
    duration_s=2.0,
    warmup_s=0.5,
    repeats=1,
    rates=(200, 1000),
    concurrency=(16,),
    variants=VARIANTS,
    scale_pods=(2, 8),
    disruption_s=5.0,
)


def levels_for(scenario: str, profile: Profile) -> tuple[int | None, ...]:
    """The swept levels of ``scenario`` under ``profile`` (``(None,)`` when it sweeps nothing)."""
    if scenario == "http-latency":
        return profile.rates
    if scenario == "http-throughput":
        return profile.concurrency
    if scenario == "scale":
        return profile.scale_pods
    if scenario == "grpc":
        return (profile.streams,)
    return (None,)


def variants_for(scenario: str, profile: Profile) -> tuple[str, ...]:
    """The profile's variants that ``scenario`` is measured in (scale and the disruption
    scenarios have one: what they measure is not a path length)."""
    own = SCENARIOS[scenario].variants if scenario in SCENARIOS else VARIANTS
    return tuple(v for v in profile.variants if v in own)


def _split(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for item in names:
        out += [n.strip() for n in item.split(",") if n.strip()]
    return list(dict.fromkeys(out))


def select_scenarios(names: Sequence[str], *, quick: bool = False) -> list[Scenario]:
    """The scenarios named (comma lists allowed); when none are named, every implemented one
    (``quick``: those marked ``in_quick``, so the CI profile stays under two minutes)."""
    wanted = _split(names)
    if not wanted:
        return [s for s in SCENARIOS.values() if s.implemented and (s.in_quick or not quick)]
    chosen = []
    for name in wanted:
        scenario = SCENARIOS.get(name)
        if scenario is None:
            raise BenchConfigError(
                f"unknown scenario {name!r}", f"choose from: {', '.join(SCENARIOS)}"
            )
        if not scenario.implemented:
            ready = ", ".join(s.name for s in SCENARIOS.values() if s.implemented)
            raise BenchConfigError(f"scenario {name!r} is not implemented yet", f"ready: {ready}")
        chosen.append(scenario)
    return chosen


SCALE_SKIPS: Final = frozenset({"sidecar-plaintext", "envoy-sidecar-mtls"})


def measures(scenario: str, contender: Contender) -> bool:
    """Whether ``scenario`` is measured for ``contender``: tls-handshake needs an mTLS
    listener in the server pod, reachable past the client pod's capture by SO_MARK (the
    iptables sidecars: hybridmesh's with identity, Envoy with mTLS). scale skips the two
    transport variants (``SCALE_SKIPS``): a level is applied for every contender at once on
    one node, whose pod block is a /24, and 8 x 32 pods do not fit; their memory is their
    sibling's (sidecar, envoy-sidecar) give or take the TLS contexts."""
    if scenario == "scale":
        return contender.name not in SCALE_SKIPS
    if scenario != "tls-handshake":
        return True
    if contender.proxy == "envoy":
        return contender.mtls
    return (
        contender.proxy == "hybridmesh"
        and contender.identity
        and (contender.placement == "sidecar")
    )


def select_contenders(names: Sequence[str], *, quick: bool = False) -> list[Contender]:
    """The contenders named, ``none`` first and always included (every ratio needs it);
    when none are named, every one (``quick``: those marked ``in_quick``)."""
    default = [c.name for c in CONTENDERS.values() if c.in_quick or not quick]
    wanted = _split(names) or default
    unknown = [n for n in wanted if n not in CONTENDERS]
    if unknown:
        raise BenchConfigError(
            f"unknown contender {', '.join(map(repr, unknown))}",
            f"choose from: {', '.join(CONTENDERS)}",
        )
    ordered = ["none", *(n for n in wanted if n != "none")]
    return [CONTENDERS[n] for n in ordered]
