"""Datapath discovery: every ``hybridmesh/agent/dp_*.py`` module is one eBPF feature.

Each module exposes ``create(node: str) -> Datapath``. Discovery is by file name so that a
feature is added by dropping in its module — nobody edits a central list — and a module that
fails to import or to create its datapath is reported, not fatal: the other features still run
(the agent logs it and shows it in ``/v1/status``).

``HM_AGENT_DATAPATHS`` (comma-separated feature names, e.g. ``socklb,flows``) restricts which
modules are used: for tests and for isolating a misbehaving feature on a live node.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from hybridmesh.agent.datapath import Datapath

__all__ = ["ENV_SELECT", "Broken", "Discovered", "discover", "module_names", "selected"]

log = logging.getLogger(__name__)

ENV_SELECT = "HM_AGENT_DATAPATHS"
PACKAGE = "hybridmesh.agent"
_PREFIX = "dp_"


@dataclass(frozen=True, slots=True)
class Broken:
    """A datapath module that could not be imported or whose ``create`` failed."""

    module: str
    error: str


@dataclass(frozen=True, slots=True)
class Discovered:
    datapaths: tuple[tuple[str, Datapath], ...]  # (module feature name, datapath)
    broken: tuple[Broken, ...]


def module_names(directory: Path | None = None) -> list[str]:
    """Feature names (``dp_`` stripped) of the datapath modules in ``directory``, sorted."""
    where = directory or Path(__file__).parent
    found = (m.name for m in pkgutil.iter_modules([str(where)]))
    return sorted(name[len(_PREFIX):] for name in found if name.startswith(_PREFIX))


def selected(names: Sequence[str], env_value: str | None) -> list[str]:
    """``names`` restricted to those listed in ``env_value`` (all of them when unset/empty)."""
    if not env_value or not env_value.strip():
        return list(names)
    wanted = {w.strip().removeprefix(_PREFIX) for w in env_value.split(",") if w.strip()}
    return [n for n in names if n in wanted]


def discover(
    node: str,
    names: Sequence[str] | None = None,
    importer: Callable[[str], ModuleType] = importlib.import_module,
) -> Discovered:
    """Import each datapath module and call its ``create(node)``; failures are collected."""
    chosen = names if names is not None else selected(module_names(), os.environ.get(ENV_SELECT))
    datapaths: list[tuple[str, Datapath]] = []
    broken: list[Broken] = []
    for name in chosen:
        try:
            module = importer(f"{PACKAGE}.{_PREFIX}{name}")
            datapath = module.create(node)
            if not isinstance(datapath, Datapath):
                raise TypeError(f"create() returned {type(datapath).__name__}, not a Datapath")
        except Exception as exc:
            log.exception("datapath %s: cannot create", name)
            broken.append(Broken(name, f"{type(exc).__name__}: {exc}"))
            continue
        datapaths.append((name, datapath))
    return Discovered(tuple(datapaths), tuple(broken))
