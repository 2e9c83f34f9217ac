"""hybridmesh.native: the compiled modules are used only when their build matches the sources,
CI always runs compiled, and the interpreted fallback passes the same HTTP/1 tests."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybridmesh import native
from hybridmesh.proxy.protocols import _h1reader

ROOT = Path(__file__).resolve().parents[3]
COMPILED = not (_h1reader.__file__ or "").endswith(".py")


def test_ci_runs_the_compiled_modules() -> None:
    """./run setup builds them; a CI run on the interpreted proxy would measure the wrong thing."""
    state = native.install()
    assert COMPILED is state.active, state
    if os.environ.get("CI") == "true":
        assert state.active, f"native modules not in use in CI: {state.reason}"
        for name in native.MODULES:
            module = sys.modules.get(name) or __import__(name, fromlist=["_"])
            assert str(native.BUILD_DIR) in (module.__file__ or ""), name


def test_a_build_for_other_sources_is_not_used(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale build (an edited source) must never shadow the source: status says why."""
    monkeypatch.delenv("HM_NATIVE", raising=False)
    monkeypatch.setattr(native, "BUILD_DIR", tmp_path)
    assert native.status().reason.startswith("not built")
    for name in (*native.MODULES, f"{native.GROUP}__mypyc"):
        path = tmp_path.joinpath(*name.split(".")).with_name(
            name.rsplit(".", 1)[-1] + ".cpython-311-x86_64-linux-gnu.so")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    version = "9.9"
    (tmp_path / native.STAMP_FILE).write_text(f"{version} {native.stamp(version)}\n")
    monkeypatch.setattr(importlib.machinery, "EXTENSION_SUFFIXES",
                        [".cpython-311-x86_64-linux-gnu.so"])
    assert native.status() == native.NativeStatus(True, "compiled", native.MODULES)
    (tmp_path / native.STAMP_FILE).write_text(f"{version} {'0' * 64}\n")
    assert native.status().reason.startswith("stale")
    monkeypatch.setenv("HM_NATIVE", "0")
    assert native.status().reason == "disabled (HM_NATIVE=0)"


def test_the_stamp_covers_every_source_and_the_compiler() -> None:
    assert all(p.is_file() for p in native.source_files())
    assert native.stamp("1.0") != native.stamp("1.1")


def test_http1_tests_pass_on_the_interpreted_fallback() -> None:
    """Compiled here: the same protocol tests, interpreted (HM_NATIVE=0), must pass too."""
    if not COMPILED:  # this very run is the interpreted one; CI asserts it is compiled
        assert native.install().active is False
        return
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         str(ROOT / "tests/unit/proxy/protocols")],
        env={**os.environ, "HM_NATIVE": "0"}, cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout
