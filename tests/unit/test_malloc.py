"""The proxies' malloc settings: a process started without them re-executes itself once with
them, keeping its PID and interpreter flags (the lab tracks proxies by PID and runs them -OO)."""

from __future__ import annotations

import os
import subprocess
import sys

from hybridmesh._malloc import MALLOC_ENV

_PROBE = (
    "import os, sys\n"
    "from hybridmesh._malloc import reexec_with_malloc_env\n"
    "print('start', os.getpid(), flush=True)\n"
    "reexec_with_malloc_env()\n"
    "print('tuned', os.getpid(), sys.flags.optimize,"
    " os.environ['MALLOC_MMAP_THRESHOLD_'], os.environ['MALLOC_TRIM_THRESHOLD_'])\n"
)


def _run(env: dict[str, str]) -> list[list[str]]:
    out = subprocess.run([sys.executable, "-OO", "-c", _PROBE], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return [line.split() for line in out.splitlines()]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}


def test_reexecs_once_with_the_settings_same_pid_same_flags() -> None:
    lines = _run(_clean_env())
    starts = [line for line in lines if line[0] == "start"]
    tuned = [line for line in lines if line[0] == "tuned"]
    assert len(starts) == 2, lines  # the original run and the re-executed one, no more
    assert len(tuned) == 1
    assert starts[0][1] == starts[1][1] == tuned[0][1]  # exec, not a child
    assert tuned[0][2:] == ["2", MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"],
                            MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]]


def test_no_reexec_when_already_set() -> None:
    lines = _run({**_clean_env(), **MALLOC_ENV})
    assert [line[0] for line in lines] == ["start", "tuned"]


def test_threshold_is_above_uvloops_tls_read_buffer() -> None:
    # uvloop's sslproto reads with SSL_READ_MAX_SIZE = 256 KiB; below it glibc mmaps each read
    assert int(MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]) > 256 * 1024 + 4096
    assert int(MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]) > 256 * 1024 + 4096
