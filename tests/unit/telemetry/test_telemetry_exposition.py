"""TextRenderer: byte-for-byte generate_latest (minus *_created), whatever the label values."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hybridmesh.telemetry._exposition import TextRenderer
from hybridmesh.telemetry.scrape import parse

_NAME = re.compile(r"^(?:# (?:HELP|TYPE) )?([a-zA-Z_:][a-zA-Z0-9_:]*)")


def _reference(registry: CollectorRegistry) -> bytes:
    lines = generate_latest(registry).decode().split("\n")  # not splitlines: "\r" stays raw
    kept = [ln for ln in lines if not _created(ln)]
    return "\n".join(kept).encode()


def _created(line: str) -> bool:
    match = _NAME.match(line)
    return match is not None and match.group(1).endswith("_created")


def _registry(values: list[str], amount: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("req_total", 'Doc with \\ and "quotes"\nand a newline.', ["a", "b"],
                      registry=registry)  # fmt: skip
    hist = Histogram("lat_ms", "Latency.", ["a"], buckets=(0.1, 1, 30000), registry=registry)
    gauge = Gauge("up", "Up.", registry=registry)
    gauge.set(1)
    for i, value in enumerate(values):
        counter.labels(value, str(i)).inc(amount)
        hist.labels(value).observe(amount)
    return registry


@given(st.lists(st.text(max_size=20), max_size=5), st.floats(0, 1e12))
@settings(max_examples=200)
def test_same_bytes_as_generate_latest(values: list[str], amount: float) -> None:
    registry = _registry(values, amount)
    renderer = TextRenderer(registry)
    assert renderer.render() == _reference(registry)
    assert renderer.render() == _reference(registry)  # cached label strings too


def test_escapes_parse_back_and_values_update() -> None:
    registry = _registry(['q"uo\\te\nnl', "ünï"], 12345678.0)
    renderer = TextRenderer(registry)
    samples = parse(renderer.render().decode())
    labels = {dict(lb)["a"] for (name, lb) in samples if name == "req_total"}
    assert labels == {'q"uo\\te\nnl', "ünï"}
    assert "1.2345678e+07" in renderer.render().decode()
    Counter("late_total", "Added later.", registry=registry).inc(2)
    assert "late_total 2.0" in renderer.render().decode()
