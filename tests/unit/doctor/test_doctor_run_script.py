"""The ``./run`` script's decisions, tested without touching apt, pip or the kernel.

``./run`` is what ``hybridmesh check`` hints point at, so its fresh-machine path matters even
though this machine already has everything: fake ``dpkg-query`` and ``apt-get`` on PATH stand
in for a fresh Debian, and sourcing the script gives access to its functions.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RUN = ROOT / "run"


def package_list() -> list[str]:
    """DEBIAN_PACKAGES as the script itself expands it."""
    out = bash(f"source {shlex.quote(str(RUN))}; printf '%s\\n' \"${{DEBIAN_PACKAGES[@]}}\"")
    return out.stdout.split()


def fake_tools(tmp_path: Path, installed: list[str], status: str = "installed") -> Path:
    """A bin dir whose dpkg-query knows only ``installed`` and whose apt-get logs its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    known = " ".join(installed)
    (bin_dir / "dpkg-query").write_text(
        "#!/bin/bash\n"
        'for p in "$@"; do case " ' + known + ' " in *" $p "*) '
        f'echo "$p {status}";; esac; done\n'
        "exit 1\n"  # like dpkg-query when any package is unknown
    )
    (bin_dir / "apt-get").write_text(f'#!/bin/bash\necho "$*" >> {tmp_path}/apt.log\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def bash(script: str, path_prefix: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def missing(tmp_path: Path, installed: list[str], status: str = "installed") -> list[str]:
    bin_dir = fake_tools(tmp_path, installed, status)
    done = bash(f"source {shlex.quote(str(RUN))}; missing_packages", bin_dir)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_package_list_holds_every_documented_package() -> None:
    assert set(package_list()) == {
        "python3", "python3-venv", "python3-dev", "gcc", "clang", "llvm", "libbpf-dev",
        "libbpf1", "bpftool", "iproute2", "iptables", "nghttp2-client", "wrk", "hey", "curl",
        "procps", "kmod", "ca-certificates", "git", "redis-server", "redis-tools",
    }  # fmt: skip


def test_a_fresh_machine_is_missing_everything(tmp_path: Path) -> None:
    assert missing(tmp_path, installed=[]) == package_list()


def test_only_packages_not_installed_are_missing(tmp_path: Path) -> None:
    everything = package_list()

    assert missing(tmp_path, installed=[p for p in everything if p not in ("kmod", "hey")]) == [
        "hey",
        "kmod",
    ]


def test_removed_packages_with_config_left_count_as_missing(tmp_path: Path) -> None:
    assert missing(tmp_path, package_list(), status="config-files") == package_list()


def test_dry_run_says_what_it_would_install_and_installs_nothing(tmp_path: Path) -> None:
    bin_dir = fake_tools(tmp_path, installed=["python3", "git"])

    done = bash(f"{shlex.quote(str(RUN))} setup --dry-run", bin_dir)

    assert done.returncode == 0, done.stderr
    expected = [p for p in package_list() if p not in ("python3", "git")]
    assert f"==> would install Debian packages: {' '.join(expected)}\n" in done.stdout
    assert not (tmp_path / "apt.log").exists()


def test_install_runs_one_update_then_one_install_of_exactly_the_missing(tmp_path: Path) -> None:
    bin_dir = fake_tools(tmp_path, installed=[p for p in package_list() if p != "kmod"])

    done = bash(f"source {shlex.quote(str(RUN))}; install_packages", bin_dir)

    if os.geteuid() != 0:
        assert done.returncode != 0
        assert "run ./run setup as root" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "apt.log").read_text().splitlines()
    assert log == ["update -q", "install -y -q --no-install-recommends kmod"]


def test_nothing_missing_means_no_apt_at_all(tmp_path: Path) -> None:
    bin_dir = fake_tools(tmp_path, installed=package_list())

    done = bash(f"source {shlex.quote(str(RUN))}; install_packages", bin_dir)

    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "apt.log").exists()


@pytest.mark.parametrize(("pytest_exit", "verdict"), [(0, "ok"), (1, "FAILED"), (5, "FAILED")])
def test_pytest_collecting_nothing_fails_the_run(
    tmp_path: Path, pytest_exit: int, verdict: str
) -> None:
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(f"#!/bin/bash\nexit {pytest_exit}\n")
    (venv_bin / "python").chmod(0o755)
    script = (
        f"source {shlex.quote(str(RUN))}; VENV={shlex.quote(str(tmp_path / 'venv'))}; "
        "run_pytest tests/nothing; print_summary"
    )

    done = bash(script)

    assert f"  {verdict}  " in done.stdout.split("==> summary")[1]
    assert (done.returncode == 0) is (pytest_exit == 0)
    assert ("collected no tests" in done.stderr) is (pytest_exit == 5)
