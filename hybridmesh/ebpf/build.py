"""Build the kernel programs: ``python -m hybridmesh.ebpf.build``.

Two steps, each skipped when its inputs did not change, so an up-to-date tree builds in
milliseconds (``./run setup`` calls this on every run):

1. ``bpf/vmlinux.h`` from the running kernel's BTF (``bpftool btf dump … format c``). Its first
   line records the SHA-256 of ``/sys/kernel/btf/vmlinux`` it came from: that line is the stamp,
   so a different kernel regenerates it and nothing else has to be remembered.
2. every ``bpf/*.bpf.c`` into ``bpf/*.bpf.o`` with clang (CO-RE: ``-g`` keeps the BTF libbpf
   relocates against). ``bpf/<x>.bpf.o.stamp`` holds the hash of the compiler command line, the
   source, the local headers and vmlinux.h's stamp; a different hash recompiles.

The plan (what to run) is pure and unit-tested; ``build()`` is the thin shell that runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hybridmesh.ebpf.errors import BuildError

__all__ = [
    "BPF_DIR",
    "KERNEL_BTF",
    "BuildResult",
    "build",
    "clang_command",
    "object_for",
    "object_stamp",
    "vmlinux_stamp_line",
]

log = logging.getLogger(__name__)

BPF_DIR = Path(__file__).resolve().parent / "bpf"
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
LIBBPF_INCLUDE = Path("/usr/include")
"""Holds libbpf-dev's ``bpf/bpf_helpers.h``; the sources include it as ``<bpf/...>``."""

_STAMP_PREFIX = "/* hybridmesh vmlinux.h: kernel BTF sha256="
_SETUP_HINT = "run ./run setup (it installs clang, llvm, bpftool and libbpf-dev)"


@dataclass(frozen=True)
class BuildResult:
    """What one build did, so callers (and the report) can say why it took what it took."""

    vmlinux_regenerated: bool
    compiled: tuple[Path, ...]
    up_to_date: tuple[Path, ...]
    seconds: float


def object_for(source: Path) -> Path:
    """``x.bpf.c`` → ``x.bpf.o``, beside it."""
    return source.with_suffix(".o")


def clang_command(clang: str, source: Path, include_dir: Path = LIBBPF_INCLUDE) -> list[str]:
    """The compiler command line for one program (libbpf-bootstrap's flags)."""
    return [
        clang,
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-D__TARGET_ARCH_x86",
        "-Wall",
        "-Werror",
        f"-I{source.parent}",
        f"-I{include_dir}",
        "-c",
        str(source),
        "-o",
        str(object_for(source)),
    ]


def vmlinux_stamp_line(btf_sha256: str) -> str:
    """First line of a generated vmlinux.h: records which kernel BTF it was dumped from."""
    return f"{_STAMP_PREFIX}{btf_sha256} */\n"


def object_stamp(command: Sequence[str], inputs: Iterable[tuple[str, bytes]]) -> str:
    """Hash of everything an object depends on: the command line and each (name, content)."""
    digest = hashlib.sha256("\0".join(command).encode())
    for name, content in sorted(inputs):
        digest.update(b"\0" + name.encode() + b"\0")
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BuildError(
            f"{name} not found on PATH (needed to build the eBPF programs)", _SETUP_HINT
        )
    return path


def _run(command: Sequence[str], what: str) -> bytes:
    proc = subprocess.run(command, capture_output=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{detail}", _SETUP_HINT)
    return proc.stdout


def _first_line(path: Path) -> str:
    try:
        with path.open() as f:
            return f.readline()
    except FileNotFoundError:
        return ""


def ensure_vmlinux_h(bpf_dir: Path = BPF_DIR, kernel_btf: Path = KERNEL_BTF) -> bool:
    """(Re)generate vmlinux.h unless its stamp names this kernel's BTF; True if it did."""
    try:
        btf = kernel_btf.read_bytes()
    except OSError as exc:
        raise BuildError(
            f"cannot read kernel BTF {kernel_btf}: {exc}",
            "the kernel must be built with CONFIG_DEBUG_INFO_BTF=y (see hybridmesh check)",
        ) from exc
    stamp = vmlinux_stamp_line(hashlib.sha256(btf).hexdigest())
    header = bpf_dir / "vmlinux.h"
    if _first_line(header) == stamp:
        return False
    dump = _run(
        [_tool("bpftool"), "btf", "dump", "file", str(kernel_btf), "format", "c"], "bpftool"
    )
    tmp = header.with_suffix(".h.tmp")
    tmp.write_bytes(stamp.encode() + dump)
    tmp.replace(header)
    return True


def _stamp_for(source: Path, command: Sequence[str]) -> str:
    """Local headers count whole, except vmlinux.h, which counts by its (BTF hash) stamp line."""
    inputs = [(source.name, source.read_bytes())]
    for header in sorted(source.parent.glob("*.h")):
        if header.name == "vmlinux.h":
            inputs.append((header.name, _first_line(header).encode()))
        else:
            inputs.append((header.name, header.read_bytes()))
    return object_stamp(command, inputs)


def compile_program(source: Path, clang: str) -> bool:
    """Compile one program unless its stamp matches; True if it compiled."""
    command = clang_command(clang, source)
    stamp = _stamp_for(source, command)
    obj = object_for(source)
    stamp_file = obj.with_name(obj.name + ".stamp")
    if obj.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return False
    _run(command, f"clang {source.name}")
    stamp_file.write_text(stamp)
    return True


def build(bpf_dir: Path = BPF_DIR, kernel_btf: Path = KERNEL_BTF) -> BuildResult:
    """Bring vmlinux.h and every object in ``bpf_dir`` up to date."""
    start = time.perf_counter()
    regenerated = ensure_vmlinux_h(bpf_dir, kernel_btf)
    clang = _tool("clang")
    compiled: list[Path] = []
    fresh: list[Path] = []
    for source in sorted(bpf_dir.glob("*.bpf.c")):
        (compiled if compile_program(source, clang) else fresh).append(object_for(source))
    return BuildResult(regenerated, tuple(compiled), tuple(fresh), time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridmesh.ebpf.build", description=__doc__)
    parser.add_argument("--bpf-dir", type=Path, default=BPF_DIR)
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when up to date")
    args = parser.parse_args(argv)
    try:
        result = build(args.bpf_dir)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result.compiled or result.vmlinux_regenerated or not args.quiet:
        names = ", ".join(p.name for p in result.compiled) or "nothing"
        vmlinux = "regenerated vmlinux.h, " if result.vmlinux_regenerated else ""
        print(f"ebpf build: {vmlinux}compiled {names} ({result.seconds * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
