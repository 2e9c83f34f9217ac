"""Every path, name prefix and environment variable hybridmesh uses, declared in one place.

Keeping them together is what lets ``lab down`` find and reclaim everything the lab made,
even after a crash: anything named here with the ``hm-`` prefix belongs to us.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BPFFS",
    "CA_CERT_ENV",
    "CA_KEY_ENV",
    "CGROUP_ROOT",
    "LAB_CGROUP",
    "PREFIX",
    "ROOT_NAMESPACE",
    "STATE_DIR",
    "api_socket",
    "control_socket",
    "state_dir",
]

PREFIX = "hm-"
"""Prefix of every kernel object and file the lab creates (netns, links, cgroups, pins)."""

ROOT_NAMESPACE = "hybridmesh-system"
"""The mesh's root namespace (Istio's ``istio-system`` habit): an AuthorizationPolicy there with
a selector, or with no target, applies in every namespace."""

CGROUP_ROOT = Path(os.environ.get("HM_CGROUP_ROOT", "/sys/fs/cgroup"))
"""Where cgroup hierarchies are mounted; the layout beneath it is detected, not assumed."""

LAB_CGROUP = "hm-lab"
"""Name of the cgroup (in every hierarchy) under which all lab processes live."""

BPFFS = Path(os.environ.get("HM_BPFFS", "/sys/fs/bpf"))

STATE_DIR = Path(os.environ.get("HM_STATE_DIR", "/run/hm-lab"))
"""Runtime state of the running lab: state file, API socket, logs. tmpfs, so a reboot clears it."""


CA_CERT_ENV = "HM_CA_CERT"
CA_KEY_ENV = "HM_CA_KEY"
"""Paths (read by the lab daemon) of a user-supplied root certificate and key: the mesh CA is
then an intermediate under that root. Unset: a fresh self-signed root per lab."""


def state_dir() -> Path:
    return STATE_DIR


def api_socket() -> Path:
    """The lab daemon's full API (root only): lab status, apply, shutdown, and snapshots.

    A filesystem unix socket, so it is reachable from every netns while bound to none.
    """
    return STATE_DIR / "api.sock"


def control_socket() -> Path:
    """The read-only control-plane API for proxies and agents (snapshots and watch only).

    Separate from :func:`api_socket` so the proxy uid can read its configuration without
    being able to change the lab.
    """
    return STATE_DIR / "control.sock"
