"""Probes for the software hybridmesh drives: command-line tools and Python packages."""

from __future__ import annotations

from dataclasses import dataclass

from hybridmesh.doctor.host import Session
from hybridmesh.doctor.model import Outcome, Probe

__all__ = [
    "COMMANDS",
    "PYTHON_MODULES",
    "Command",
    "command_probe",
    "probe_native_modules",
    "probe_python_modules",
]


@dataclass(frozen=True, slots=True)
class Command:
    """A tool on PATH: the Debian package that ships it and what hybridmesh uses it for."""

    name: str
    package: str
    purpose: str
    fatal: bool


COMMANDS = (
    Command("ip", "iproute2", "builds lab namespaces, links and routes", True),
    Command("iptables", "iptables", "sidecar traffic capture", True),
    Command("iptables-restore", "iptables", "loads capture rules atomically", True),
    Command("clang", "clang", "compiles the eBPF programs", True),
    Command("bpftool", "bpftool", "vmlinux.h from BTF; inspecting programs and maps", True),
    Command("h2load", "nghttp2-client", "bench: HTTP/2 load", False),
    Command("wrk", "wrk", "bench: HTTP/1.1 load", False),
    Command("hey", "hey", "bench: HTTP load with latency histograms", False),
    Command("curl", "curl", "demo and manual requests", False),
)

PYTHON_MODULES = (
    "pydantic",
    "yaml",
    "typer",
    "rich",
    "uvloop",
    "httptools",
    "h2",
    "cryptography.x509",  # not just "cryptography": this one loads the native (Rust) core
    "prometheus_client",
    "pyroute2",
)


def command_probe(command: Command) -> Probe:
    def probe(session: Session) -> Outcome:
        path = session.host.which(command.name)
        if path is None:
            return Outcome.failed(f"{command.name} not found on PATH or in /usr/sbin, /sbin")
        return Outcome.passed(path)

    return probe


def probe_python_modules(session: Session) -> Outcome:
    """Import each one: a package that is installed but whose native extension cannot load
    (wrong interpreter, missing shared library) fails here, not mid-demo."""
    broken: list[str] = []
    for module in PYTHON_MODULES:
        try:
            session.host.import_module(module)
        except Exception as exc:  # an import can fail in many ways; each is a finding
            broken.append(f"{module} ({type(exc).__name__}: {exc})")
    if broken:
        return Outcome.failed("cannot import " + "; ".join(broken))
    return Outcome.passed(f"{len(PYTHON_MODULES)} packages import")


def probe_native_modules(session: Session) -> Outcome:
    """The proxy's compiled per-request modules (hybridmesh/native). Without them every
    placement still works, interpreted and slower: a warning, not a failure."""
    from hybridmesh import native

    state = native.status()
    if not state.active:
        return Outcome.failed(state.reason)
    return Outcome.passed(f"{len(state.modules)} modules compiled with mypyc")
