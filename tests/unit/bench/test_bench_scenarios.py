"""Choosing scenarios and contenders: defaults, the baseline always in, stubs refused."""

from __future__ import annotations

import pytest

from hybridmesh.bench.scenarios import (
    FULL,
    QUICK,
    BenchConfigError,
    levels_for,
    select_contenders,
    select_scenarios,
)


def test_default_scenarios_are_the_implemented_ones() -> None:
    names = [s.name for s in select_scenarios([])]
    assert names == ["http-latency", "http-throughput", "tcp-rr", "tcp-stream"]


def test_comma_lists_and_repeats_are_accepted_in_order() -> None:
    names = [s.name for s in select_scenarios(["tcp-rr,http-latency", "tcp-rr"])]
    assert names == ["tcp-rr", "http-latency"]


@pytest.mark.parametrize("stub", ["scale", "blast-radius", "upgrade", "grpc"])
def test_stub_scenarios_say_not_yet_instead_of_running(stub: str) -> None:
    with pytest.raises(BenchConfigError, match="not implemented yet") as err:
        select_scenarios([stub])
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
    assert placements == {"none": "none", "sidecar": "sidecar", "envoy-sidecar": "none"}


def test_levels_per_scenario_and_profile() -> None:
    assert levels_for("http-latency", FULL) == (100, 500, 1000, 2000)
    assert levels_for("http-throughput", FULL) == (16,)
    assert levels_for("tcp-rr", QUICK) == (None,)
    assert len(QUICK.rates) < len(FULL.rates) and QUICK.repeats == 1
