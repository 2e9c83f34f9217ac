"""Choosing scenarios and contenders: defaults, the baseline always in, stubs refused."""

from __future__ import annotations

import pytest

from hybridmesh.bench import scenarios
from hybridmesh.bench.scenarios import (
    CONTENDERS,
    FULL,
    QUICK,
    SCENARIOS,
    BenchConfigError,
    Scenario,
    levels_for,
    select_contenders,
    select_scenarios,
    variants_for,
)

BASE = ["http-latency", "http-throughput", "tcp-rr", "tcp-stream", "grpc"]


def test_default_scenarios_are_the_implemented_ones() -> None:
    names = [s.name for s in select_scenarios([])]
    assert names == [*BASE, "tls-handshake", "blast-radius", "upgrade", "scale"]  # scale last


def test_quick_default_leaves_the_disruptive_scenarios_to_be_named() -> None:
    assert [s.name for s in select_scenarios([], quick=True)] == BASE
    assert [s.name for s in select_scenarios(["scale"], quick=True)] == ["scale"]


def test_comma_lists_and_repeats_are_accepted_in_order() -> None:
    names = [s.name for s in select_scenarios(["tcp-rr,http-latency", "tcp-rr"])]
    assert names == ["tcp-rr", "http-latency"]


def test_stub_scenarios_say_not_yet_instead_of_running(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = Scenario("mtls-handshake", "handshakes/s", "not yet", implemented=False)
    monkeypatch.setitem(scenarios.SCENARIOS, stub.name, stub)
    with pytest.raises(BenchConfigError, match="not implemented yet") as err:
        select_scenarios([stub.name])
    assert err.value.hint is not None and "http-latency" in err.value.hint


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(BenchConfigError, match="unknown scenario 'http-latncy'") as err:
        select_scenarios(["http-latncy"])
    assert "http-latency" in (err.value.hint or "")


def test_none_is_always_first_and_always_included() -> None:
    assert [c.name for c in select_contenders(["envoy-sidecar"])] == ["none", "envoy-sidecar"]
    assert [c.name for c in select_contenders(["envoy-sidecar,none"])] == ["none", "envoy-sidecar"]
    assert select_contenders([])[0].name == "none"


def test_unknown_contender_is_refused() -> None:
    with pytest.raises(BenchConfigError, match="'istio'"):
        select_contenders(["istio"])


def test_envoy_runs_on_placement_none_pods_and_sidecar_on_sidecar_pods() -> None:
    placements = {c.name: c.placement for c in select_contenders([])}
    assert placements["envoy-sidecar"] == "none" and placements["sidecar"] == "sidecar"
    assert placements["sidecar+ebpf"] == "sidecar+ebpf" and placements["kernel"] == "kernel"


def test_the_contender_table_says_how_to_verify_kill_and_upgrade_each() -> None:
    rows = {c.name: (c.proxy, c.kill, c.upgrade) for c in CONTENDERS.values()}
    assert rows["none"] == ("none", "none", "none")
    assert rows["sidecar"] == ("hybridmesh", "sidecar", "restart-pods")
    assert rows["envoy-sidecar"] == ("envoy", "envoy", "restart-pods")
    assert rows["kernel"][0] == "none"  # no per-pod proxy: no bypass check, no proxy CPU


def test_scale_and_disruption_scenarios_run_in_one_variant() -> None:
    assert variants_for("http-latency", FULL) == ("same-node", "cross-node")
    for name in ("scale", "blast-radius", "upgrade"):
        assert variants_for(name, FULL) == ("same-node",)
        assert not SCENARIOS[name].in_quick


def test_levels_per_scenario_and_profile() -> None:
    assert levels_for("http-latency", FULL) == (100, 500, 1000, 2000)
    assert levels_for("http-throughput", FULL) == (16,)
    assert levels_for("tcp-rr", QUICK) == (None,)
    assert levels_for("scale", FULL) == (2, 8, 32) and levels_for("scale", QUICK) == (2, 8)
    assert levels_for("grpc", FULL) == (16,)
    assert len(QUICK.rates) < len(FULL.rates) and QUICK.repeats == 1
