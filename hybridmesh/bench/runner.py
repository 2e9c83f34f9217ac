"""``hybridmesh bench`` end to end: options in, a validated results document out.

Order of work: resolve what was asked (unknown names and not-yet scenarios are refused
before anything is created), bring the test bed up, measure the plan run by run (results.json
is rewritten after every run, so an interrupted bench still leaves its samples), calibrate
the load generator, take the lab down (always), aggregate.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from hybridmesh.bench import machine
from hybridmesh.bench.accounting import bpf_stats_enabled
from hybridmesh.bench.bed import BedError, TestBed, unavailable_contenders
from hybridmesh.bench.calibrate import calibrate
from hybridmesh.bench.disrupt import Disruption
from hybridmesh.bench.envoy_sidecar import envoy_binary, envoy_uid, envoy_version
from hybridmesh.bench.handshakes import HandshakeRunner
from hybridmesh.bench.measure import Executor, RunError, Special
from hybridmesh.bench.metrics import op_unit
from hybridmesh.bench.model import (
    ConfigDoc,
    ContenderDoc,
    FailureDoc,
    Results,
    SampleDoc,
    ScenarioDoc,
)
from hybridmesh.bench.scale import ScaleRunner
from hybridmesh.bench.scenarios import (
    FULL,
    QUICK,
    SCENARIOS,
    BenchConfigError,
    Contender,
    Profile,
    levels_for,
    measures,
    select_contenders,
    select_scenarios,
    variants_for,
)
from hybridmesh.bench.schedule import Run, cells, plan_runs
from hybridmesh.bench.stats import aggregate

__all__ = ["BenchOptions", "Progress", "Resolved", "resolve", "run_bench"]

CALIBRATION_RATE = 1000
MAX_REBUILDS = 5
_REBUILT = "the lab was taken down by another lab user; it was rebuilt (and the run redone)"


class Progress(Protocol):
    def phase(self, message: str) -> None: ...
    def planned(self, total: int) -> None: ...
    def run_started(self, run: Run) -> None: ...
    def run_done(self, run: Run, sample: SampleDoc) -> None: ...
    def run_failed(self, run: Run, error: str) -> None: ...


class _Silent:
    def phase(self, message: str) -> None:
        pass

    def planned(self, total: int) -> None:
        pass

    def run_started(self, run: Run) -> None:
        pass

    def run_done(self, run: Run, sample: SampleDoc) -> None:
        pass

    def run_failed(self, run: Run, error: str) -> None:
        pass


@dataclass
class BenchOptions:
    out: Path
    scenarios: Sequence[str] = ()
    contenders: Sequence[str] = ()
    quick: bool = False
    repeats: int | None = None
    duration_s: float | None = None
    warmup_s: float | None = None
    rates: Sequence[int] = ()
    envoy_concurrency: int = 2
    loadgen_concurrency: int = 64
    calibrate: bool = True
    wait_s: float = 0.0  # how long to wait for another lab to leave the machine first
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Resolved:
    profile: Profile
    scenarios: list[str]
    contenders: list[Contender]
    notes: list[str]


def resolve(opts: BenchOptions) -> Resolved:
    """What will run; raises BenchConfigError for anything that cannot."""
    scenarios = [s.name for s in select_scenarios(opts.scenarios, quick=opts.quick)]
    contenders = select_contenders(opts.contenders, quick=opts.quick)
    notes: list[str] = []
    missing = unavailable_contenders(contenders)
    if missing and opts.contenders:
        name, why = next(iter(missing.items()))
        raise BenchConfigError(f"contender {name!r} cannot run here: {why}")
    for name, why in missing.items():
        notes.append(f"contender {name} skipped: {why}")
    contenders = [c for c in contenders if c.name not in missing]
    base = QUICK if opts.quick else FULL
    profile = dataclasses.replace(
        base,
        repeats=base.repeats if opts.repeats is None else opts.repeats,
        duration_s=base.duration_s if opts.duration_s is None else opts.duration_s,
        warmup_s=base.warmup_s if opts.warmup_s is None else opts.warmup_s,
        rates=tuple(opts.rates) or base.rates,
    )
    if profile.repeats < 1 or profile.duration_s <= 0 or profile.warmup_s < 0:
        raise BenchConfigError("--repeats must be >= 1, --duration > 0 and --warmup >= 0")
    if any(r <= 0 for r in profile.rates):
        raise BenchConfigError(f"rates must be positive, got {list(profile.rates)}")
    return Resolved(profile, scenarios, contenders, notes)


def _header(opts: BenchOptions, plan: Resolved) -> Results:
    envoy = None
    details: dict[str, dict[str, str]] = {}
    for c in plan.contenders:
        if c.proxy != "envoy":
            continue
        binary = envoy_binary()
        envoy = envoy_version(binary)
        uid = envoy_uid(binary)
        details[c.name] = {
            "envoy": envoy,
            "concurrency": str(opts.envoy_concurrency),
            "runs_as": f"uid {uid}" if uid is not None else "root with SO_MARK 0x539",
            "protocol": "HTTP/1.1 over mTLS (TLS 1.3, SVIDs from a bench-local CA)"
            if c.mtls
            else "HTTP/1.1 between sidecars, no mTLS",
        }
    p = plan.profile
    return Results(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine.machine(),
        versions=machine.versions(envoy),
        config=ConfigDoc(
            profile="quick" if opts.quick else "full",
            duration_s=p.duration_s,
            warmup_s=p.warmup_s,
            repeats=p.repeats,
            rates=list(p.rates),
            concurrency=list(p.concurrency),
            variants=list(p.variants),
            loadgen_concurrency=opts.loadgen_concurrency,
            command=shlex.join(["hybridmesh", *sys.argv[1:]]),
            scale_pods=list(p.scale_pods) if "scale" in plan.scenarios else [],
            grpc_streams=p.streams if "grpc" in plan.scenarios else None,
            disruption_s=p.disruption_s
            if {"blast-radius", "upgrade"} & set(plan.scenarios)
            else None,
        ),
        scenarios=[
            ScenarioDoc(
                name=s.name,
                summary=s.summary,
                description=s.description,
                implemented=s.implemented,
                measured=s.name in plan.scenarios,
                level_unit=s.level_unit,
                op_unit=op_unit(s.name),
            )
            for s in SCENARIOS.values()
        ],
        contenders=[
            ContenderDoc(
                name=c.name,
                description=c.description,
                placement=c.placement,
                details=details.get(c.name, {}),
            )
            for c in plan.contenders
        ],
        notes=[*plan.notes, *opts.notes],
    )


def run_bench(opts: BenchOptions, progress: Progress | None = None) -> Results:
    """Measure everything ``opts`` asks for; results.json is kept current in ``opts.out``."""
    progress = progress or _Silent()
    plan = resolve(opts)
    p = plan.profile
    if os.geteuid() != 0:
        raise BenchConfigError(
            "the bench builds a lab (network namespaces, cgroups, iptables): it needs root",
            "run it as root, e.g. sudo hybridmesh bench ...",
        )
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchConfigError(f"cannot create {opts.out}: {exc.strerror}") from None
    results = _header(opts, plan)
    names = [c.name for c in plan.contenders]
    runs = _plan(plan)
    progress.planned(len(runs))
    bed = TestBed(
        plan.contenders,
        opts.out,
        envoy_concurrency=opts.envoy_concurrency,
        scenarios=plan.scenarios,
    )
    with bpf_stats_enabled():
        progress.phase("bringing the lab up")
        try:
            _up_surviving(bed, progress, results, opts.wait_s)
            executor = Executor(bed, opts.loadgen_concurrency, _specials(bed, p))
            for run in runs:
                progress.run_started(run)
                try:
                    sample = _measure_surviving(bed, executor, run, progress, results)
                except RunError as exc:  # this run only: the others still tell their story
                    results.failures.append(_failure(run, exc))
                    _save(results, opts.out)
                    progress.run_failed(run, exc.message)
                    continue
                results.samples.append(sample)
                _save(results, opts.out)
                progress.run_done(run, sample)
            if opts.calibrate and "http-latency" in plan.scenarios:
                progress.phase("calibrating the load generator (h2load vs loadgen on none)")
                rate = max([r for r in p.rates if r <= CALIBRATION_RATE] or [min(p.rates)])
                try:
                    results.calibration = calibrate(
                        bed,
                        executor,
                        list(p.variants),
                        rate=rate,
                        warmup=p.warmup_s,
                        seconds=p.duration_s,
                    )
                except RunError as exc:
                    if bed.intact():
                        raise
                    results.notes.append(f"calibration skipped: {exc.message}")
        finally:
            progress.phase("taking the lab down")
            bed.down()
    results.cells = aggregate(results.samples, names)
    results.machine.loadavg_end = machine.loadavg()
    results.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    _save(results, opts.out)
    return results


def _plan(plan: Resolved) -> list[Run]:
    """Every run, scenario by scenario, each with the contenders it measures (measures())."""
    p, runs = plan.profile, []
    for s in plan.scenarios:
        keys = cells([s], variants_for(s, p), {s: levels_for(s, p)})
        names = [c.name for c in plan.contenders if measures(s, c)]
        if names:
            runs += plan_runs(keys, names, p.repeats, warmup_s=p.warmup_s, duration_s=p.duration_s)
    return [dataclasses.replace(run, order=i) for i, run in enumerate(runs)]


def _specials(bed: TestBed, p: Profile) -> dict[str, Special]:
    """The executors of the scenarios that are not one client/server pair."""
    return {
        "scale": ScaleRunner(bed),
        "blast-radius": Disruption(bed, "blast-radius", p.disruption_s),
        "upgrade": Disruption(bed, "upgrade", p.disruption_s),
        "tls-handshake": HandshakeRunner(bed),
    }


def _up_surviving(bed: TestBed, progress: Progress, results: Results, wait_s: float) -> None:
    """Bring the bed up; wait up to ``wait_s`` for another lab to leave the machine, and
    retry if another lab user stops ours while it starts."""
    while True:
        try:
            bed.up(progress.phase)
            return
        except BedError as exc:
            if exc.busy and wait_s > 0:
                bed.rebuild(progress.phase, wait_s=wait_s)
                return
            if not exc.interrupted or results.notes.count(_REBUILT) >= MAX_REBUILDS:
                raise
        results.notes.append(_REBUILT)
        bed.rebuild(progress.phase)


def _measure_surviving(
    bed: TestBed, executor: Executor, run: Run, progress: Progress, results: Results
) -> SampleDoc:
    """Measure ``run``; if another lab user took our lab down meanwhile, rebuild and redo it
    (at most MAX_REBUILDS times over the whole bench)."""
    while True:
        try:
            return executor.measure(run)
        except RunError:
            if bed.intact():
                raise  # this run failed on a working lab: a finding, not an accident
            if results.notes.count(_REBUILT) >= MAX_REBUILDS:
                raise BedError(
                    f"our lab was taken down by other lab users {MAX_REBUILDS} times",
                    "run the bench when no other lab or lab test runs on this machine",
                ) from None
        results.notes.append(_REBUILT)
        bed.rebuild(progress.phase)


def _failure(run: Run, exc: RunError) -> FailureDoc:
    cell = run.cell
    return FailureDoc(
        scenario=cell.scenario,
        variant=cell.variant,
        level=cell.level,
        contender=run.contender,
        repeat=run.repeat,
        error=exc.message,
    )


def _save(results: Results, out: Path) -> None:
    tmp = out / "results.json.tmp"
    tmp.write_text(results.model_dump_json(indent=1))
    tmp.replace(out / "results.json")
