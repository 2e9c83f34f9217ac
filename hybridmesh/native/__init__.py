"""Compiled hot paths: the proxy's per-request modules built with mypyc, loaded only when current.

Why: a request through a sidecar is interpreted Python from the first byte parsed to the last
byte written, and the interpreter, not the kernel, dominated its cost (issue #3: one worker
had to beat Envoy per core). mypyc compiles these modules — already strictly typed — to C
extensions with native classes and calls; the same source stays the reference and the
fallback, so the proxy behaves identically either way (CI runs the HTTP/1 tests both ways).

Why not extensions next to the sources (``mypyc --inplace``): Python's import system prefers
an extension module to a ``.py`` file of the same name, so an edited source would silently
run its stale compiled twin. Here the build (``python -m hybridmesh.native.build``, part of
``./run setup``) writes into ``hybridmesh/native/_build/`` together with a stamp — the SHA-256
of every compiled source, the interpreter and mypyc's version — and :func:`install` puts a
finder for those modules in front of the import system only when the stamp still matches the
sources on disk. A stale, missing or partial build costs speed, never correctness.
``HM_NATIVE=0`` keeps everything interpreted (A/B runs, debugging with pdb).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import os
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

__all__ = [
    "BUILD_DIR",
    "GROUP",
    "MODULES",
    "NativeStatus",
    "artifacts",
    "install",
    "source_files",
    "stamp",
    "status",
]

MODULES: tuple[str, ...] = (
    "hybridmesh.proxy.protocols._h1events",
    "hybridmesh.proxy.protocols._h1fast",
    "hybridmesh.proxy.protocols._h1framing",
    "hybridmesh.proxy.protocols._h1grammar",
    "hybridmesh.proxy.protocols._h1reader",
    "hybridmesh.proxy.protocols._h1request",
    "hybridmesh.proxy.protocols._h1response",
    "hybridmesh.proxy.protocols._h1writer",
    "hybridmesh.proxy.exchange",
    "hybridmesh.proxy.attempt",
    "hybridmesh.proxy.upstream",
    "hybridmesh.proxy.h1session",
    "hybridmesh.proxy.lb",
    "hybridmesh.proxy.balance",
    "hybridmesh.proxy.outlier",
    "hybridmesh.proxy.retry",
    "hybridmesh.proxy.routing",
    "hybridmesh.proxy.plan",
)
"""Compiled together as one group (calls between them stay native). A module belongs here
when a benchmark showed it pays (see docs/proxy.md) and it runs per request. Left out on
purpose: ``telemetry.proxy_metrics`` (slower compiled: its 8-tuple key is converted at every
call and its counters live in interpreted objects), ``_tlsread`` (~17 ns per read)."""

GROUP = "hybridmesh_native"
"""mypyc group name: the shared library is the top-level module ``hybridmesh_native__mypyc``."""

BUILD_DIR = Path(__file__).resolve().parent / "_build"
STAMP_FILE = "STAMP"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding hybridmesh/


def source_files() -> list[Path]:
    """The ``.py`` file of every module in :data:`MODULES`."""
    return [_PACKAGE_ROOT.joinpath(*name.split(".")).with_suffix(".py") for name in MODULES]


def stamp(mypyc_version: str) -> str:
    """What a build is valid for: sources, interpreter ABI, mypyc version, module list."""
    digest = hashlib.sha256()
    digest.update(sys.implementation.cache_tag.encode())
    digest.update(mypyc_version.encode())
    for name, path in zip(MODULES, source_files(), strict=True):
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


class NativeStatus(NamedTuple):
    """Whether the compiled modules are in use, and if not, why."""

    active: bool
    reason: str  # "compiled", "disabled (HM_NATIVE=0)", "not built", "stale: ..."
    modules: tuple[str, ...]


def artifacts() -> dict[str, Path] | None:
    """Module name -> extension file in the build, or None if any is missing."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    found: dict[str, Path] = {}
    for name in (*MODULES, f"{GROUP}__mypyc"):
        path = BUILD_DIR.joinpath(*name.split(".")).with_name(name.rsplit(".", 1)[-1] + suffix)
        if not path.is_file():
            return None
        found[name] = path
    return found


def status() -> NativeStatus:
    """Is the build there and current? Nothing is imported (mypy takes ~100 ms): the stamp
    file holds the mypy version the build used, then the digest of :func:`stamp`."""
    return _check()[0]


def _check() -> tuple[NativeStatus, dict[str, Path] | None]:
    """:func:`status`, with the extension files when the build is usable."""
    if os.environ.get("HM_NATIVE", "1") == "0":
        return NativeStatus(False, "disabled (HM_NATIVE=0)", ()), None
    not_built = NativeStatus(False, "not built (run ./run setup)", ())
    try:
        recorded = (BUILD_DIR / STAMP_FILE).read_text().split()
    except OSError:
        return not_built, None
    files = artifacts()
    if len(recorded) != 2 or files is None:
        return not_built, None
    try:
        current = stamp(recorded[0])
    except OSError as exc:
        return NativeStatus(False, f"sources unreadable: {exc}", ()), None
    if recorded[1] != current:
        stale = "stale: sources changed since the build (run ./run setup)"
        return NativeStatus(False, stale, ()), None
    return NativeStatus(True, "compiled", MODULES), files


class _Finder:
    """Serves the compiled modules (and their shared library) from the build directory.

    A plain class with ``find_spec`` (all the import system asks of a meta path finder):
    ``importlib.abc``/``importlib.util`` would pull ``importlib.resources`` and ``tempfile``
    into every proxy (tests/unit/proxy/test_proxy_footprint.py)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: object = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        spec = ModuleSpec(fullname, loader, origin=str(file))
        spec.has_location = True
        return spec


@functools.cache
def install() -> NativeStatus:
    """Put the compiled modules in front of the import system if the build is current.

    Idempotent; must run before the first import of any module in :data:`MODULES` (the
    package ``hybridmesh`` calls it on import, before anything else): compiled modules of one
    group expect each other's native classes, so the group must never mix with interpreted
    copies already in ``sys.modules``."""
    result, files = _check()
    if files is not None:
        sys.meta_path.insert(0, _Finder(files))
    return result
