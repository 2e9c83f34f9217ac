"""Preflight checks for the host (``hybridmesh check``): can the lab, eBPF and proxies run here?

Shaped like ``linkerd check``: a declarative table of checks grouped by category, each with a
hint saying what to do when it fails and whether the failure is fatal.
"""

from hybridmesh.doctor.checks import CHECKS, run_check, run_checks
from hybridmesh.doctor.host import CommandResult, Host, Session
from hybridmesh.doctor.model import Check, CheckResult, Outcome, ProbeError, Report

__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "CommandResult",
    "Host",
    "Outcome",
    "ProbeError",
    "Report",
    "Session",
    "run_check",
    "run_checks",
]
