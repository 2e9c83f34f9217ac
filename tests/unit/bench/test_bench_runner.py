"""What a bench invocation resolves to before anything is created."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from hybridmesh.bench import runner
from hybridmesh.bench.runner import BenchOptions, resolve
from hybridmesh.bench.scenarios import BenchConfigError, Contender


@pytest.fixture
def sidecar_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(contenders: Sequence[Contender]) -> dict[str, str]:
        return {c.name: "not in this build" for c in contenders if c.name == "sidecar"}

    monkeypatch.setattr(runner, "unavailable_contenders", unavailable)


def test_quick_profile_with_overrides(tmp_path: Path, sidecar_unavailable: None) -> None:
    plan = resolve(BenchOptions(out=tmp_path, quick=True, repeats=2, rates=[300]))
    assert plan.profile.name == "quick" and plan.profile.repeats == 2
    assert plan.profile.rates == (300,) and plan.profile.duration_s == 2.0
    # --quick leaves the disruptive scenarios out unless they are named
    assert plan.scenarios == ["http-latency", "http-throughput", "tcp-rr", "tcp-stream", "grpc"]


def test_default_contenders_skip_what_cannot_run_and_say_so(
    tmp_path: Path, sidecar_unavailable: None
) -> None:
    plan = resolve(BenchOptions(out=tmp_path))
    assert "sidecar" not in [c.name for c in plan.contenders]
    assert plan.contenders[0].name == "none"
    assert "envoy-sidecar" in [c.name for c in plan.contenders]
    assert plan.notes == ["contender sidecar skipped: not in this build"]
    assert "scale" in plan.scenarios and "upgrade" in plan.scenarios  # full: every one
    assert plan.profile.name == "full" and plan.profile.repeats >= 3


def test_an_explicitly_requested_contender_that_cannot_run_is_an_error(
    tmp_path: Path, sidecar_unavailable: None
) -> None:
    with pytest.raises(BenchConfigError, match="'sidecar' cannot run here: not in this build"):
        resolve(BenchOptions(out=tmp_path, contenders=["sidecar"]))


@pytest.mark.parametrize(
    "opts",
    [
        {"duration_s": 0.0},
        {"repeats": 0},
        {"warmup_s": -0.5},
        {"rates": [100, 0]},
        {"scenarios": ["grcp"]},
    ],
)
def test_bad_options_are_refused_before_anything_runs(
    tmp_path: Path, sidecar_unavailable: None, opts: dict[str, object]
) -> None:
    with pytest.raises(BenchConfigError):
        resolve(BenchOptions(out=tmp_path, **opts))  # type: ignore[arg-type]


def test_tls_handshake_runs_only_for_contenders_with_mtls_listeners(tmp_path: Path) -> None:
    names = "sidecar,sidecar-plaintext,sidecar+ebpf,envoy-sidecar,envoy-sidecar-mtls"
    opts = BenchOptions(out=tmp_path, scenarios=["http-latency,tls-handshake"],
                        contenders=[names], repeats=2, rates=[1000])  # fmt: skip
    runs = runner._plan(resolve(opts))
    by_scenario: dict[str, set[str]] = {}
    for run in runs:
        by_scenario.setdefault(run.cell.scenario, set()).add(run.contender)
    assert by_scenario["tls-handshake"] == {"sidecar", "envoy-sidecar-mtls"}
    assert by_scenario["http-latency"] == {"none", *names.split(",")}
    assert [r.order for r in runs] == list(range(len(runs)))  # one order over the whole plan
    handshake = [r for r in runs if r.cell.scenario == "tls-handshake"]
    assert [r.contender for r in handshake] == ["sidecar", "envoy-sidecar-mtls"] * 2  # alternate
    assert {r.cell.variant for r in handshake} == {"same-node"}


def test_quick_leaves_the_new_contenders_to_be_named(tmp_path: Path) -> None:
    quick = [c.name for c in resolve(BenchOptions(out=tmp_path, quick=True)).contenders]
    assert "sidecar-plaintext" not in quick and "envoy-sidecar-mtls" not in quick
    named = resolve(BenchOptions(out=tmp_path, quick=True, contenders=["sidecar-plaintext"]))
    assert [c.name for c in named.contenders] == ["none", "sidecar-plaintext"]
    full = [c.name for c in resolve(BenchOptions(out=tmp_path)).contenders]
    assert {"sidecar-plaintext", "envoy-sidecar-mtls"} <= set(full)
