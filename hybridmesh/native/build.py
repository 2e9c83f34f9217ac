"""Build the compiled modules: ``python -m hybridmesh.native.build [--force] [--check]``.

Run by ``./run setup`` after the virtualenv is ready (mypy, which brings mypyc, is in the
``test`` extra it installs; the C compiler and Python headers are Debian packages there).
Nothing happens when the stamp in ``hybridmesh/native/_build`` matches the sources.

The build runs in a temporary directory (setuptools would otherwise read the project's own
``pyproject.toml`` and write ``build/`` into the work tree), compiles :data:`MODULES` as one
mypyc group, and only then swaps the new directory in with a rename and writes the stamp:
a proxy that already mapped the old extensions keeps running on them, and a failed build
leaves the previous (or no) build, never a half-written one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hybridmesh.native import (
    BUILD_DIR,
    GROUP,
    MODULES,
    STAMP_FILE,
    artifacts,
    source_files,
    stamp,
    status,
)

__all__ = ["build", "main"]


def _mypy_version() -> str:
    from mypy.version import __version__

    return str(__version__)


def _up_to_date(version: str) -> bool:
    try:
        recorded = (BUILD_DIR / STAMP_FILE).read_text().split()
    except OSError:
        return False
    return recorded == [version, stamp(version)] and artifacts() is not None


def _compile(into: Path, work: Path, quiet: bool) -> None:
    """mypyc + setuptools, in ``work``, extensions written below ``into``."""
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]

    paths = [str(p) for p in source_files()]
    previous = Path.cwd()
    os.chdir(work)  # setuptools reads ./setup.cfg, ./pyproject.toml; mypyc writes ./build
    try:
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(os.devnull, "w")) if quiet else sys.stderr
            stack.enter_context(contextlib.redirect_stdout(out))
            setup(
                name=GROUP,
                ext_modules=mypycify(paths, opt_level="3", debug_level="0", group_name=GROUP,
                                     target_dir=str(work / "c")),
                script_args=["-q", "build_ext", "--build-lib", str(into),
                             "--build-temp", str(work / "obj")],
            )
    finally:
        os.chdir(previous)


def build(*, force: bool = False, quiet: bool = False) -> bool:
    """Compile if the sources changed since the last build; True if it compiled."""
    version = _mypy_version()
    if not force and _up_to_date(version):
        return False
    BUILD_DIR.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hm-native-") as tmp:
        work = Path(tmp)
        fresh = Path(tempfile.mkdtemp(prefix="_build-", dir=BUILD_DIR.parent))
        try:
            _compile(fresh, work, quiet)
            (fresh / STAMP_FILE).write_text(f"{version} {stamp(version)}\n")
            os.chmod(fresh, 0o755)  # mkdtemp makes 0700; proxies run under their own uid
            old = BUILD_DIR.with_name(f"_build-old-{os.getpid()}")
            if BUILD_DIR.exists():
                BUILD_DIR.rename(old)
            fresh.rename(BUILD_DIR)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybridmesh.native.build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--check", action="store_true",
                   help="only say whether the build is current (exit 1 if not)")
    p.add_argument("-q", "--quiet", action="store_true", help="no compiler output")
    args = p.parse_args(argv)
    if args.check:
        state = status()
        print(f"native: {state.reason}")
        return 0 if state.active else 1
    started = time.monotonic()
    try:
        built = build(force=args.force, quiet=args.quiet)
    except (SystemExit, Exception) as exc:  # setuptools reports compiler errors as SystemExit
        print(f"native: build failed: {exc}", file=sys.stderr)
        return 1
    if built:
        print(f"native: compiled {len(MODULES)} modules in {time.monotonic() - started:.1f} s")
    elif not args.quiet:
        print(f"native: up to date ({len(MODULES)} modules)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
