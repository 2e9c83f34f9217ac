"""The `hybridmesh` command (typer + rich).

Each command group lives in its own module and registers itself on the root app; this module
only wires them together so that ``hybridmesh --help`` lists everything.
"""

from __future__ import annotations

import typer

from hybridmesh.cli import agent, authz, bench, check, demo, ebpf, lab, observe, stat, validate
from hybridmesh.cli import identity as identity_cli
from hybridmesh.cli import node as node_cli

__all__ = ["app", "main"]

app = typer.Typer(
    name="hybridmesh",
    help="A service mesh for Linux: sidecar, eBPF and node placements, chosen per workload.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (check, validate, lab, demo, stat, authz, bench):
    module.register(app)
ebpf.register(app)
agent.register(app)
identity_cli.register(app)
observe.register(app)
node_cli.register(app)


def main() -> None:
    app()
