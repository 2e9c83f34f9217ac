"""The benchmark's named scenarios, variants and contenders, and the two run profiles.

A scenario is a documented workload; a *level* is its swept parameter (request rate for
``http-latency``, connections for ``http-throughput``; the TCP scenarios have one level). The
later scenarios are registered as stubs so that ``--scenarios`` knows them and says "not yet"
instead of pretending: the report lists them as not measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CONTENDERS",
    "FULL",
    "QUICK",
    "SCENARIOS",
    "VARIANTS",
    "BenchConfigError",
    "Contender",
    "Profile",
    "Scenario",
    "levels_for",
    "select_contenders",
    "select_scenarios",
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
        Scenario("scale", "many services and pods", "not yet", implemented=False),
        Scenario("blast-radius", "one noisy workload", "not yet", implemented=False),
        Scenario("upgrade", "proxy restart under load", "not yet", implemented=False),
        Scenario("grpc", "gRPC unary and streaming", "not yet", implemented=False),
    )
}

VARIANTS = ("same-node", "cross-node")
"""same-node: client and server on node-1; cross-node: client on node-2, server on node-1."""


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    description: str
    placement: str  # the lab placement its pods get


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("none", "no data plane: the baseline every ratio is against", "none"),
        Contender("sidecar", "hybridmesh's sidecar proxy (placement: sidecar)", "sidecar"),
        Contender(
            "envoy-sidecar",
            "Envoy injected the Istio way (iptables capture, 15001/15006, L7 HTTP)",
            "none",
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


FULL = Profile(
    "full",
    duration_s=10.0,
    warmup_s=2.0,
    repeats=3,
    rates=(100, 500, 1000, 2000),
    concurrency=(16,),
    variants=VARIANTS,
)
QUICK = Profile(
    "quick",
    duration_s=2.0,
    warmup_s=0.5,
    repeats=1,
    rates=(200, 1000),
    concurrency=(16,),
    variants=VARIANTS,
)


def levels_for(scenario: str, profile: Profile) -> tuple[int | None, ...]:
    """The swept levels of ``scenario`` under ``profile`` (``(None,)`` when it sweeps nothing)."""
    if scenario == "http-latency":
        return profile.rates
    if scenario == "http-throughput":
        return profile.concurrency
    return (None,)


def _split(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for item in names:
        out += [n.strip() for n in item.split(",") if n.strip()]
    return list(dict.fromkeys(out))


def select_scenarios(names: Sequence[str]) -> list[Scenario]:
    """The scenarios named (comma lists allowed); all implemented ones when none are named."""
    wanted = _split(names)
    if not wanted:
        return [s for s in SCENARIOS.values() if s.implemented]
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


def select_contenders(names: Sequence[str]) -> list[Contender]:
    """The contenders named, ``none`` first and always included (every ratio needs it)."""
    wanted = _split(names) or list(CONTENDERS)
    unknown = [n for n in wanted if n not in CONTENDERS]
    if unknown:
        raise BenchConfigError(
            f"unknown contender {', '.join(map(repr, unknown))}",
            f"choose from: {', '.join(CONTENDERS)}",
        )
    ordered = ["none", *(n for n in wanted if n != "none")]
    return [CONTENDERS[n] for n in ordered]
