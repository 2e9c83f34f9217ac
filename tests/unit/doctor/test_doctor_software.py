from __future__ import annotations

import dataclasses

from hybridmesh.doctor import CHECKS, Host, Session
from hybridmesh.doctor._software import (
    COMMANDS,
    PYTHON_MODULES,
    command_probe,
    probe_python_modules,
)


def test_a_command_on_path_passes_with_its_location(healthy_host: Host) -> None:
    outcome = command_probe(COMMANDS[0])(Session(healthy_host))

    assert outcome.ok
    assert outcome.detail == "/usr/sbin/ip"


def test_a_missing_command_fails(healthy_host: Host) -> None:
    session = Session(dataclasses.replace(healthy_host, which=lambda name: None))

    outcome = command_probe(COMMANDS[0])(session)

    assert not outcome.ok
    assert "ip not found" in outcome.detail


def test_every_required_tool_has_a_row_whose_hint_names_its_package() -> None:
    rows = {c.name.split()[0]: c for c in CHECKS if c.category == "tools"}

    assert set(rows) == {
        "ip", "iptables", "iptables-restore", "clang", "bpftool", "h2load", "wrk", "hey", "curl",
    }  # fmt: skip
    assert "nghttp2-client" in rows["h2load"].hint
    assert all(row.hint.startswith("./run setup") for row in rows.values())


def test_only_the_load_generators_and_curl_are_warnings() -> None:
    warnings = {c.name for c in COMMANDS if not c.fatal}

    assert warnings == {"h2load", "wrk", "hey", "curl"}


def test_python_modules_all_importable(healthy_host: Host) -> None:
    outcome = probe_python_modules(Session(healthy_host))

    assert outcome.ok
    assert outcome.detail == f"{len(PYTHON_MODULES)} packages import"


def test_a_module_that_fails_to_import_is_named_with_the_error(healthy_host: Host) -> None:
    def import_module(name: str) -> object:
        if name == "uvloop":
            raise ImportError("libuv.so: cannot open shared object file")
        return object()

    session = Session(dataclasses.replace(healthy_host, import_module=import_module))
    outcome = probe_python_modules(session)

    assert not outcome.ok
    error = "ImportError: libuv.so: cannot open shared object file"
    assert outcome.detail == f"cannot import uvloop ({error})"


def test_the_required_packages_are_all_checked() -> None:
    roots = {module.split(".")[0] for module in PYTHON_MODULES}

    assert roots == {
        "pydantic", "yaml", "typer", "rich", "uvloop", "httptools", "h2", "cryptography",
        "prometheus_client", "pyroute2",
    }  # fmt: skip
