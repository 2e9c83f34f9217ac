"""The comparisons the project's claims rest on, in sentences, from the cells alone (pure).

Each headline compares two contenders on one figure — sidecar against Envoy on added p99,
sidecar+ebpf against sidecar on latency and proxy CPU, kernel against none, mTLS against
plaintext (hybridmesh's sidecar and Envoy), full mTLS handshakes per server-proxy core, node
against sidecar on memory as pods grow — and is left out when either side was not measured, so a run
with fewer contenders simply says less.
"""

from __future__ import annotations

from collections.abc import Sequence

from hybridmesh.bench.model import CellDoc
from hybridmesh.bench.summary import summary_rate

__all__ = ["headlines"]


def _cell(
    cells: Sequence[CellDoc], scenario: str, variant: str, contender: str, level: int | None
) -> CellDoc | None:
    for c in cells:
        if (c.scenario, c.variant, c.contender, c.level) == (scenario, variant, contender, level):
            return c
    return None


def _med(cell: CellDoc | None, metric: str) -> float | None:
    return None if cell is None or metric not in cell.metrics else cell.metrics[metric].median


def _f(value: float) -> str:
    return f"{value:.3g}"


def _added_p99(cells: Sequence[CellDoc], variant: str, rate: int) -> str | None:
    side = _cell(cells, "http-latency", variant, "sidecar", rate)
    envoy = _cell(cells, "http-latency", variant, "envoy-sidecar", rate)
    if side is None or envoy is None or "p99_ms" not in side.delta or "p99_ms" not in envoy.delta:
        return None
    return (
        f"sidecar vs Envoy, {variant} at {rate} req/s: added p99 {_f(side.delta['p99_ms'])} ms "
        f"vs {_f(envoy.delta['p99_ms'])} ms; added p50 {_f(side.delta.get('p50_ms', 0.0))} ms "
        f"vs {_f(envoy.delta.get('p50_ms', 0.0))} ms"
    )


def _ebpf_vs_sidecar(cells: Sequence[CellDoc], variant: str, rate: int) -> str | None:
    """Issue #5's figure is the *added* p50 (contender minus none): what the eBPF datapath
    takes off what the mesh costs, not off the app's own latency. The kernel's eBPF CPU sits
    next to the proxies' userspace CPU, because moving work into the kernel must not hide it."""
    side = _cell(cells, "http-latency", variant, "sidecar", rate)
    ebpf = _cell(cells, "http-latency", variant, "sidecar+ebpf", rate)
    if side is None or ebpf is None:
        return None
    p50_side, p50_ebpf = _med(side, "p50_ms"), _med(ebpf, "p50_ms")
    cpu_side, cpu_ebpf = _med(side, "cpu_proxy_us_per_op"), _med(ebpf, "cpu_proxy_us_per_op")
    if not p50_side or not cpu_side or p50_ebpf is None or cpu_ebpf is None:
        return None
    added = ""
    add_side, add_ebpf = side.delta.get("p50_ms"), ebpf.delta.get("p50_ms")
    if add_side is not None and add_ebpf is not None and add_side > 0:
        added = (
            f"; added p50 {_f(add_ebpf)} vs {_f(add_side)} ms "
            f"({100 * (add_ebpf - add_side) / add_side:+.0f} %)"
        )
    kernel = _med(ebpf, "cpu_ebpf_us_per_op")
    in_kernel = f" µs + {_f(kernel)} µs kernel eBPF" if kernel else ""
    return (
        f"sidecar+ebpf vs sidecar, {variant} at {rate} req/s: p50 ×{p50_ebpf / p50_side:.2f} "
        f"({_f(p50_ebpf)} vs {_f(p50_side)} ms){added}; proxy CPU ×{cpu_ebpf / cpu_side:.2f} "
        f"per request ({_f(cpu_ebpf)}{in_kernel} vs {_f(cpu_side)} µs)"
    )


def _kernel_vs_none(cells: Sequence[CellDoc], variant: str, rate: int) -> str | None:
    lat = _cell(cells, "http-latency", variant, "kernel", rate)
    rr = _cell(cells, "tcp-rr", variant, "kernel", None)
    parts = []
    if lat is not None and lat.ratio.get("p50_ms") is not None:
        parts.append(f"p50 ×{lat.ratio['p50_ms']:.2f} at {rate} req/s")
    if rr is not None and rr.ratio.get("tps") is not None:
        parts.append(f"tcp-rr ×{rr.ratio['tps']:.2f}")
    return f"kernel vs none, {variant}: " + ", ".join(parts) if parts else None


def _mtls_cost(cells: Sequence[CellDoc], variant: str, rate: int) -> str | None:
    """What mTLS adds over the same proxy in plaintext, for hybridmesh and for Envoy."""
    parts = []
    for secure, plain in (
        ("sidecar", "sidecar-plaintext"),
        ("envoy-sidecar-mtls", "envoy-sidecar"),
    ):
        a = _cell(cells, "http-latency", variant, secure, rate)
        b = _cell(cells, "http-latency", variant, plain, rate)
        if a is None or b is None or "p99_ms" not in a.delta or "p99_ms" not in b.delta:
            continue
        parts.append(
            f"{secure} vs {plain}: added p50 {_f(a.delta.get('p50_ms', 0.0))} vs "
            f"{_f(b.delta.get('p50_ms', 0.0))} ms, added p99 {_f(a.delta['p99_ms'])} vs "
            f"{_f(b.delta['p99_ms'])} ms"
        )
    return f"mTLS vs plaintext, {variant} at {rate} req/s: " + "; ".join(parts) if parts else None


def _handshakes(cells: Sequence[CellDoc]) -> str | None:
    parts = [
        f"{c.contender} {c.metrics['handshakes_per_core_s'].median:.0f}/core-s "
        f"({c.metrics['handshakes_per_s'].median:.0f}/s wall)"
        for c in cells
        if c.scenario == "tls-handshake" and "handshakes_per_core_s" in c.metrics
    ]
    return "full mTLS handshakes per server-proxy core: " + "; ".join(parts) if parts else None


def _memory_scaling(cells: Sequence[CellDoc]) -> str | None:
    levels = sorted({c.level for c in cells if c.scenario == "scale" and c.level})
    if not levels:
        return None
    parts = []
    for contender in ("sidecar", "node", "envoy-sidecar", "kernel"):
        values = [_med(_cell(cells, "scale", "same-node", contender, n), "mesh_pss_mib")
                  for n in levels]  # fmt: skip
        if all(v is not None for v in values):
            shown = " → ".join(f"{_f(v or 0.0)}" for v in values)
            parts.append(f"{contender} {shown} MiB")
    if not parts:
        return None
    pods = " → ".join(str(n) for n in levels)
    return f"mesh memory (PSS) at {pods} pods per node: " + "; ".join(parts)


def headlines(cells: Sequence[CellDoc], variants: Sequence[str]) -> list[str]:
    """The sentences there are data for, in a fixed order."""
    rate = summary_rate(cells)
    out: list[str | None] = []
    for variant in variants:
        if rate is not None:
            out += [
                _added_p99(cells, variant, rate),
                _ebpf_vs_sidecar(cells, variant, rate),
                _kernel_vs_none(cells, variant, rate),
                _mtls_cost(cells, variant, rate),
            ]
    out += [_handshakes(cells), _memory_scaling(cells)]
    return [line for line in out if line]
