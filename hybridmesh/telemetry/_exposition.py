"""Prometheus text exposition (format 0.0.4): plain counters/histograms, and a renderer.

The proxy's metrics are :class:`CounterFamily` / :class:`HistogramFamily` here, not
prometheus-client objects. Why:

- memory: importing prometheus_client pulls in http.server, urllib, email, wsgiref, gzip... —
  ~2-3 MB of a sidecar worker's ~25 MB, for one text format;
- speed: a prometheus-client child takes a lock on every ``inc``/``observe``; a proxy worker is
  one asyncio thread, so a child here is a plain float (counters) or a list of bucket counts
  (histograms) and the hot path updates them in place;
- scrapes: each series' exposition prefix (name + sorted, escaped labels, and for histograms
  one per bucket) is formatted once, when the series is created, instead of on every scrape.

The output is byte-for-byte prometheus-client's ``generate_latest`` for the same metrics and
calls, minus the ``*_created`` series (tests hold both to that, with prometheus-client as the
reference). :class:`TextRenderer` renders a prometheus-client registry the same way (label
strings cached per series), for code that does use prometheus-client;
:func:`prometheus_collector` exposes plain families to a prometheus-client registry.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # prometheus-client stays out of the proxy process
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = [
    "CounterChild",
    "CounterFamily",
    "Family",
    "HistogramChild",
    "HistogramFamily",
    "TextRenderer",
    "prometheus_collector",
    "render_families",
]

_MAX_CACHED = 200_000  # label strings; far above any sane proxy, bounds a label-value leak
_TYPE_NAMES = {"unknown": "untyped", "info": "gauge", "stateset": "gauge"}
_INF = float("inf")


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


def _help_type(name: str, documentation: str, kind: str) -> str:
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


# -- plain metrics ---------------------------------------------------------------------------
class CounterChild:
    """One counter series: ``value`` may be bumped in place by hot paths (never decreased)."""

    __slots__ = ("prefix", "value")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # "name{labels} "
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount

    def lines(self, out: list[str]) -> None:
        out.append(f"{self.prefix}{_go_float(self.value)}\n")


class HistogramChild:
    """One histogram series: per-bucket counts (non-cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "prefixes", "sum")

    def __init__(self, bounds: tuple[float, ...], prefixes: tuple[str, ...]) -> None:
        self.bounds = bounds
        self.prefixes = prefixes  # one per bucket, then _count, then _sum
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """As prometheus-client: the sum always moves, the first bucket ``>= amount`` counts
        (NaN lands in none)."""
        self.sum += amount
        if amount <= _INF:  # False only for NaN
            self.counts[bisect_left(self.bounds, amount)] += 1

    def lines(self, out: list[str]) -> None:
        acc = 0
        prefixes = self.prefixes
        for i, count in enumerate(self.counts):
            acc += count
            out.append(f"{prefixes[i]}{_go_float(acc)}\n")
        out.append(f"{prefixes[-2]}{_go_float(acc)}\n")
        out.append(f"{prefixes[-1]}{_go_float(self.sum)}\n")


class Family:
    """A labelled metric: children per label-value tuple, in creation order (as
    prometheus-client orders them)."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], Any] = {}
        self.header = _help_type(name, documentation, self.kind)

    def _labels(self, values: tuple[str, ...], extra: dict[str, str] | None = None) -> str:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected, "
                             f"got {len(values)}")
        labels = dict(zip(self.labelnames, values, strict=True))
        if extra:
            labels.update(extra)
        return _label_string(labels)

    def render(self, out: list[str]) -> None:
        out.append(self.header)
        for child in self.children.values():
            child.lines(out)


class CounterFamily(Family):
    """A counter; ``name`` is the exposed name (with ``_total``)."""

    kind = "counter"

    def labels(self, *values: str) -> CounterChild:
        values = tuple(map(str, values))
        child: CounterChild | None = self.children.get(values)
        if child is None:
            child = self.children[values] = CounterChild(f"{self.name}{self._labels(values)} ")
        return child

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        for values, child in self.children.items():
            yield self.name, dict(zip(self.labelnames, values, strict=True)), child.value


class HistogramFamily(Family):
    """A histogram with fixed upper bounds (``+Inf`` appended when missing)."""

    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float]) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if not bounds or bounds[-1] != _INF:
            bounds.append(_INF)
        self.bounds = tuple(bounds)

    def labels(self, *values: str) -> HistogramChild:
        values = tuple(map(str, values))
        child: HistogramChild | None = self.children.get(values)
        if child is None:
            name = self.name
            prefixes = [f"{name}_bucket{self._labels(values, {'le': _go_float(b)})} "
                        for b in self.bounds]
            plain = self._labels(values)
            prefixes += [f"{name}_count{plain} ", f"{name}_sum{plain} "]
            child = self.children[values] = HistogramChild(self.bounds, tuple(prefixes))
        return child

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        for values, child in self.children.items():
            labels = dict(zip(self.labelnames, values, strict=True))
            acc = 0
            for bound, count in zip(self.bounds, child.counts, strict=True):
                acc += count
                yield f"{self.name}_bucket", {**labels, "le": _go_float(bound)}, float(acc)
            yield f"{self.name}_count", labels, float(acc)
            yield f"{self.name}_sum", labels, child.sum


def render_families(families: Sequence[Family]) -> bytes:
    """The exposition text of ``families``, in order."""
    out: list[str] = []
    for family in families:
        family.render(out)
    return "".join(out).encode("utf-8")


def prometheus_collector(families: Sequence[CounterFamily | HistogramFamily]) -> Any:
    """A prometheus-client collector over plain families (for a caller that hands in a
    ``CollectorRegistry``); imports prometheus-client only when called."""
    from prometheus_client.metrics_core import Metric

    class _Collector:
        def collect(self) -> Iterator[Metric]:
            for family in families:
                name = family.name
                if family.kind == "counter":
                    name = name.removesuffix("_total")
                metric = Metric(name, family.documentation, family.kind)
                for sample, labels, value in family.samples():
                    metric.add_sample(sample, labels, value)
                yield metric

        describe = collect

    return _Collector()


# -- prometheus-client registries ------------------------------------------------------------
def _header(metric: Metric) -> str:
    """HELP and TYPE lines; counters gain ``_total`` as generate_latest does."""
    name = metric.name + "_total" if metric.type == "counter" else metric.name
    name = name + "_info" if metric.type == "info" else name
    return _help_type(name, metric.documentation, _TYPE_NAMES.get(metric.type, metric.type))


class TextRenderer:
    """Renders one prometheus-client registry; keep one per registry so the label-string
    cache pays off (``generate_latest`` re-formats every label on every scrape, ~4x slower).

    Covers counters, histograms, gauges; no sample timestamps.
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
