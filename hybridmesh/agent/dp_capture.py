"""The ``capture`` datapath: eBPF traffic capture for the node's ``sidecar+ebpf`` pods.

Per pod (ebpf/capture.py does the kernel work):

- the capture programs attach to the pod's cgroup v2 directory and its netns (pinned links);
- the pod's ``proxy`` leaf cgroup is excluded from capture (the proxy's own connects);
- the proxy's inbound listener (15006) goes into the ``listeners`` sockhash: the kernel puts
  it there itself when the proxy listens (the pod's netns is named in ``netns_pods``), and a
  listener that was already listening is found in the pod's processes through /proc and
  duplicated with ``pidfd_getfd`` (ebpf/_pidfd.py).

A pod counts as *programmed* once all three are done. Until its proxy listens, a pod stays
*pending* (``status().detail``) and :meth:`sync` raises :class:`ListenerPending` (the agent
then retries soon and keeps the app waiting); every sync tries again. A proxy that restarts
closes its listener, which leaves the sockhash by itself (meanwhile sk_lookup drops inbound
SYNs for the pod: capture fails closed); its new listener joins the sockhash from the sockops
program the moment it listens, with no agent involved, so inbound comes back within
milliseconds of the new proxy listening.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from hybridmesh.agent.datapath import (
    Datapath,
    DatapathStatus,
    MapStatus,
    NodeState,
    PodView,
    ProgramStatus,
)
from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf._pidfd import take_listener
from hybridmesh.ebpf.capture import CGROUP_HOOKS, Capture, CaptureConfig
from hybridmesh.ebpf.errors import BpfError

__all__ = ["PLACEMENT", "PROXY_LEAF", "CaptureDatapath", "ListenerPending", "create"]

log = logging.getLogger(__name__)

PLACEMENT = "sidecar+ebpf"
DEFAULT_CONFIG = CaptureConfig()
PROXY_LEAF = "proxy"  # lab/cgroups.py LEAVES: the pod's proxy runs in <pod cgroup>/proxy
_KINDS = {"orig_by_addr": "lru_hash", "proxy_cgroups": "hash",
          "pods": "hash", "netns_pods": "hash", "listeners": "sockhash"}


class ListenerPending(Exception):
    """Some pods are attached but their proxy does not listen yet: the sync is not complete.

    Raised at the end of :meth:`CaptureDatapath.sync` (after every other pod was programmed)
    so the agent neither reports those pods programmed — their app must not start with
    inbound unsteered — nor waits the full resync period before trying again."""


def _pids(cgroup: Path) -> Iterator[int]:
    """Processes in ``cgroup`` and below, the proxy leaf first (it holds the listener)."""
    dirs = [cgroup / PROXY_LEAF, *(p for p in sorted(cgroup.rglob("*")) if p.is_dir()), cgroup]
    seen: set[Path] = set()
    for d in dirs:
        if d in seen:
            continue
        seen.add(d)
        try:
            text = (d / "cgroup.procs").read_text()
        except OSError:
            continue
        yield from (int(pid) for pid in text.split())


def _kept_ids(pods: list[PodView]) -> tuple[set[int], set[int]]:
    """(cgroup ids and netns inodes, proxy cgroup ids) of the pods that still exist: the
    links and exclusions of everything else go (a pod whose attach failed keeps its own)."""
    links: set[int] = set()
    proxies: set[int] = set()
    for pod in pods:
        for path, into in ((pod.cgroup, links), (pod.netns, links),
                           (pod.cgroup and pod.cgroup / PROXY_LEAF, proxies)):
            with contextlib.suppress(OSError):
                if path is not None:
                    into.add(os.stat(path).st_ino)
    return links, proxies


class CaptureDatapath(Datapath):
    """Capture for one node; the object loads on the first sync that needs it."""

    name = "capture"
    placements = frozenset({PLACEMENT})

    def __init__(self, node: str, pin_dir: Path | None = None,
                 config: CaptureConfig = DEFAULT_CONFIG) -> None:
        self.node = node
        self.pin_dir = pin_dir or bpffs.pin_dir(f"hm-{node}-capture")
        self.config = config
        self._capture: Capture | None = None
        self.programmed: set[str] = set()
        self.pending: dict[str, str] = {}

    def _loaded(self) -> Capture:
        if self._capture is None:
            self._capture = Capture.load(self.pin_dir, self.config)
        return self._capture

    def sync(self, state: NodeState) -> None:
        pods = [p for p in state.local(PLACEMENT) if p.cgroup is not None and p.netns is not None]
        if not pods and self._capture is None and not self.pin_dir.exists():
            return  # nothing to capture on this node, and nothing left from before
        capture = self._loaded()
        programmed, pending = set(), {}
        for pod in pods:
            try:
                self._program(capture, pod)
            except (BpfError, OSError) as exc:
                pending[pod.key] = str(exc)
                continue
            if capture.has_listener(pod.ip):
                programmed.add(pod.key)
            else:
                pending[pod.key] = f"its proxy does not listen on {self.config.inbound_port} yet"
        links, proxies = _kept_ids(pods)
        capture.detach(links)
        capture.forget([p.ip for p in pods], proxies)
        self.programmed, self.pending = programmed, pending
        if pending:
            raise ListenerPending("; ".join(f"{k}: {v}" for k, v in sorted(pending.items())))

    def _program(self, capture: Capture, pod: PodView) -> None:
        """Attach to one pod and give its listener to sk_lookup (each step idempotent)."""
        assert pod.cgroup is not None and pod.netns is not None
        proxy_cgroup = pod.cgroup / PROXY_LEAF
        if proxy_cgroup.is_dir():
            capture.exclude_cgroup(proxy_cgroup)
        capture.attach_cgroup(pod.cgroup)
        capture.attach_netns(pod.netns)
        capture.set_netns_pod(pod.netns, pod.ip)
        if not capture.has_listener(pod.ip):
            self._insert_listener(capture, pod)
        if capture.has_listener(pod.ip):  # the kernel may have inserted it at listen()
            capture.steer_inbound(pod.ip)

    def _insert_listener(self, capture: Capture, pod: PodView) -> None:
        assert pod.cgroup is not None
        fd = take_listener(_pids(pod.cgroup), self.config.inbound_port)
        if fd is None:
            return
        try:
            capture.set_listener(pod.ip, fd)
        finally:
            os.close(fd)
        log.info("capture: %s inbound steered to its proxy's listener", pod.key)

    # -- reporting and lifetime ---------------------------------------------------------------
    def status(self) -> DatapathStatus:
        capture = self._capture
        if capture is None:
            return DatapathStatus(self.name, detail={"pods": 0, "loaded": False})
        attached = capture.attached()
        programs = []
        for hook, (prog_id, run_cnt, run_ns) in capture.program_ids().items():
            where = "netns" if hook not in CGROUP_HOOKS else "cgroups"
            programs.append(ProgramStatus(
                name=capture.programs[hook].name,
                attach=f"{_hook_title(hook)} on {len(attached[hook])} {where}",
                prog_id=prog_id, run_cnt=run_cnt, run_time_ns=run_ns,
            ))  # fmt: skip
        maps = [MapStatus(name, _KINDS[name], n, most,
                          capture.pin_dir / name)
                for name, n, most in capture.map_entries()]
        maps.append(MapStatus("peer_by_sock", "sk_storage", None, 0,
                              capture.pin_dir / "peer_by_sock"))
        counters = capture.counters()
        detail = {
            "programmed": sorted(self.programmed),
            "pending": dict(sorted(self.pending.items())),
            "outboundRedirected": counters.redirected,
            "proxyConnectsLeftAlone": counters.proxy,
            "originalDstAnswered": counters.answered,
            "originalDstUnknown": counters.unknown,
            "inbound": {str(ip): {"steered": c.steered, "refused": c.refused}
                        for ip, c in capture.pods().items()},
        }
        return DatapathStatus(self.name, tuple(programs), tuple(maps), detail)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.close()
            self._capture = None

    def remove(self) -> None:
        self.close()
        Capture.remove(self.pin_dir)
        self.programmed, self.pending = set(), {}


def _hook_title(hook: str) -> str:
    return hook if hook in {"sk_lookup", "sockops"} else f"cgroup/{hook}"


def create(node: str) -> Datapath:
    """The agent's entry point (it imports every ``hybridmesh/agent/dp_*.py``)."""
    return CaptureDatapath(node)
