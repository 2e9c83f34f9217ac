"""Prometheus text exposition (format 0.0.4) with each series' label string formatted once.

Why not ``prometheus_client.generate_latest``: it sorts, escapes and joins every label of every
sample on every scrape. Istio-style label sets make that ~12 µs per line, and a proxy with a
hundred request series (18 histogram lines each) stalls its event loop ~30 ms per scrape. The
label string of a series never changes, so it is cached, keyed by the label values in the order
the collector yields them; a scrape is then mostly string joins (~4x faster). The output is
byte-for-byte ``generate_latest``'s, minus the ``*_created`` series (a test holds it to that).
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

__all__ = ["TextRenderer"]

_MAX_CACHED = 200_000  # label strings; far above any sane proxy, bounds a label-value leak
_TYPE_NAMES = {"unknown": "untyped", "info": "gauge", "stateset": "gauge"}


def _go_float(value: float) -> str:
    """Go's float formatting, as prometheus-client's (untyped) ``floatToGoString`` does it."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_string(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _header(metric: Metric) -> str:
    """HELP and TYPE lines; counters gain ``_total`` as generate_latest does."""
    name = metric.name + "_total" if metric.type == "counter" else metric.name
    name = name + "_info" if metric.type == "info" else name
    kind = _TYPE_NAMES.get(metric.type, metric.type)
    doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


class TextRenderer:
    """Renders one registry; keep one per registry so the label-string cache pays off.

    Covers what ProxyMetrics exports (counters, histograms, gauges; no sample timestamps).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._labels: dict[tuple[tuple[str, str], ...], str] = {}

    def render(self) -> bytes:
        out: list[str] = []
        for metric in self._registry.collect():
            out.append(_header(metric))
            for sample in metric.samples:
                if sample.name.endswith("_created"):
                    continue
                out.append(
                    f"{sample.name}{self._label_string(sample.labels)} {_go_float(sample.value)}\n"
                )
        return "".join(out).encode("utf-8")

    def _label_string(self, labels: dict[str, str]) -> str:
        key = tuple(labels.items())
        text = self._labels.get(key)
        if text is None:
            if len(self._labels) >= _MAX_CACHED:
                self._labels.clear()
            text = self._labels[key] = _label_string(labels)
        return text
