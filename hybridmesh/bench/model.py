"""The results document (results.json): typed, versioned, validated on read.

Everything a report shows is derived from this document, so a report can be re-rendered (or
two runs compared) from the JSON alone. ``samples`` are the raw runs; ``cells`` aggregate the
repeats of one (scenario, variant, level, contender) as median with min–max, and carry the
ratio and the difference to ``none`` for every metric.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA_VERSION",
    "CalibrationDoc",
    "CellDoc",
    "ConfigDoc",
    "ContenderDoc",
    "FailureDoc",
    "MachineDoc",
    "Results",
    "SampleDoc",
    "ScenarioDoc",
    "Stat",
    "VersionsDoc",
]

SCHEMA_VERSION = 1


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Stat(_Doc):
    """One metric over the repeats of a cell."""

    median: float
    min: float
    max: float
    n: int = Field(ge=1)


class SampleDoc(_Doc):
    """One measured run."""

    scenario: str
    variant: str
    level: int | None
    contender: str
    repeat: int
    order: int
    started_at: float  # unix time
    wall_s: float  # the measured window
    metrics: dict[str, float]
    checks: dict[str, float] = Field(default_factory=dict)  # e.g. share of ops the proxy saw
    histogram: dict[str, Any] | None = None  # latency histogram JSON (µs), for the CDF


class FailureDoc(_Doc):
    """A run that could not be measured (the bench went on with the others)."""

    scenario: str
    variant: str
    level: int | None
    contender: str
    repeat: int
    error: str


class CellDoc(_Doc):
    scenario: str
    variant: str
    level: int | None
    contender: str
    metrics: dict[str, Stat]
    ratio: dict[str, float | None]  # median / none's median; None where none's is 0
    delta: dict[str, float]  # median - none's median
    histogram: dict[str, Any] | None = None  # the repeats merged


class CalibrationDoc(_Doc):
    """The same load measured by two generators on ``none``: what the bench's choice costs."""

    tool: str  # "loadgen" | "h2load"
    variant: str
    rate: int
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    send_lag_p50_ms: float | None = None  # loadgen only: how late it sent (its own cost)
    send_lag_p99_ms: float | None = None
    service_p50_ms: float | None = None  # loadgen only: send -> response (closed-loop view)
    service_p99_ms: float | None = None


class ScenarioDoc(_Doc):
    name: str
    summary: str
    description: str
    implemented: bool
    measured: bool
    level_unit: str = ""
    op_unit: str = "req"


class ContenderDoc(_Doc):
    name: str
    description: str
    placement: str
    details: dict[str, str] = Field(default_factory=dict)


class MachineDoc(_Doc):
    kernel: str
    os: str
    cpu_model: str
    cores: int
    memory_bytes: int
    loadavg_start: list[float]
    loadavg_end: list[float] = Field(default_factory=list)


class VersionsDoc(_Doc):
    python: str
    hybridmesh: str
    envoy: str | None
    git_commit: str | None
    git_dirty: bool | None
    wrk: str | None
    h2load: str | None


class ConfigDoc(_Doc):
    profile: Literal["full", "quick"]
    duration_s: float
    warmup_s: float
    repeats: int
    rates: list[int]
    concurrency: list[int]
    variants: list[str]
    loadgen_concurrency: int
    command: str
    scale_pods: list[int] = Field(default_factory=list)
    grpc_streams: int | None = None
    disruption_s: float | None = None


class Results(_Doc):
    schema_version: Literal[1] = 1
    created_at: str
    finished_at: str | None = None
    machine: MachineDoc
    versions: VersionsDoc
    config: ConfigDoc
    scenarios: list[ScenarioDoc]
    contenders: list[ContenderDoc]
    samples: list[SampleDoc] = Field(default_factory=list)
    cells: list[CellDoc] = Field(default_factory=list)
    calibration: list[CalibrationDoc] = Field(default_factory=list)
    failures: list[FailureDoc] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
