"""Output helpers: every read command takes ``-o json``; errors go to stderr with a hint."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Any, NoReturn

import typer
from rich.console import Console

__all__ = ["OutputFormat", "OutputOption", "console", "err_console", "fail", "print_json"]

# Piped output is read by scripts and people alike: don't squeeze tables into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


OutputOption = typer.Option(
    OutputFormat.table, "--output", "-o", help="Output format: table (for people) or json."
)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    """Print ``error: message`` (and a hint saying what to do) and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]hint:[/] {hint}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
