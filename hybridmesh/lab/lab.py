"""The lab orchestrator: realizes control-plane plans as kernel objects and supervised processes.

It is the lab's kubelet + kube-proxy + CoreDNS rolled into one object that lives in the lab
daemon. Every kernel-facing step is delegated to a small module (network, cgroups, servicelb,
dns, procs); this class only decides *what* to do and *when*, from plan diffs and readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from hybridmesh import env as hm_env
from hybridmesh._aio import TaskSet
from hybridmesh.control.model import NodeInfo, PodInfo
from hybridmesh.control.plane import ControlPlane
from hybridmesh.control.planner import PlanDiff
from hybridmesh.lab import capture, dns, names, netns, network, procs, servicelb, sidecar
from hybridmesh.lab._sh import LabError
from hybridmesh.lab.agents import AgentSet, needs_agent
from hybridmesh.lab.cgroups import CgroupLayout, PodCgroup
from hybridmesh.lab.nodeproxies import NODE_PLACEMENT, NodeProxySet
from hybridmesh.lab.supervisor import PodPhase, PodRunner, RestartPolicy
from hybridmesh.lab.tokens import PodTokens
from hybridmesh.resources import Resource, Topology, build_topology

log = logging.getLogger("hybridmesh.lab")

Gate = Callable[[], Awaitable[object]]

__all__ = ["SUPPORTED_PLACEMENTS", "Lab", "PlacementError", "check_placements", "pod_log_path"]

SUPPORTED_PLACEMENTS = frozenset({"none", "sidecar", "sidecar+ebpf", "node", "kernel"})
"""Placements this build can realize; the others are refused with a clear message at apply."""

SYNC_PERIOD = 0.2
"""Minimum interval between service-rule syncs (kube-proxy's minSyncPeriod): readiness changes
arriving together are coalesced into one rewrite per namespace."""

REALIZE_CONCURRENCY = 4
SIDECAR_PLACEMENTS = frozenset({"sidecar", "sidecar+ebpf"})
IPTABLES_CAPTURE = frozenset({"sidecar"})
"""Placements whose pod netns gets iptables capture (sidecar+ebpf is captured by eBPF)."""
KUBE_PROXY_PLACEMENTS = frozenset({"none"})
"""Placements balanced by per-pod iptables rules; a sidecar's proxy balances by itself and a
``kernel`` pod's connects are rewritten by the node agent's socket LB (no iptables at all)."""
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PlacementError(Exception):
    """A workload asks for a placement this build cannot realize yet."""


class Lab:
    def __init__(self, control: ControlPlane, layout: CgroupLayout, *,
                 tokens: PodTokens | None = None,
                 node_token: Callable[[str], str] | None = None) -> None:
        self.control = control
        self._layout = layout
        self._tokens = tokens  # sidecar proxies' bootstrap tokens (mTLS); None: no identity
        self._runners: dict[str, PodRunner] = {}
        self._cgroups: dict[str, PodCgroup] = {}
        self._proxies: dict[str, PodRunner] = {}
        self._ready_parts: dict[str, dict[str, bool]] = {}
        self._tasks = TaskSet()
        self._services_dirty = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._rules_applied: dict[str, str] = {}
        self._hosts_dirty = True
        self._limit = asyncio.Semaphore(REALIZE_CONCURRENCY)
        self.agents = AgentSet(layout, lambda r: self._tasks.spawn(r.run(), name=r.key))
        self.node_proxies = NodeProxySet(
            layout, lambda r: self._tasks.spawn(r.run(), name=f"nodeproxy {r.node}"), node_token)
        self.phase = "Creating"
        self.message = ""
        self.started_at = time.time()
        self.ready_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def up(self) -> None:
        """Build the whole lab from the control plane's current plan."""
        check_placements(self.control.topology)
        plan = self.control.plan
        await asyncio.to_thread(network.create_fabric)
        await self._add_nodes(plan.nodes, plan.nodes)
        for node in plan.nodes:
            self.agents.start(node.name)
        self._tasks.spawn(self._sync_loop(), name="service-sync")
        if self._tokens is not None:
            self._tasks.spawn(self._tokens.refresh_forever(self._sidecar_pods), name="tokens")
        self._tasks.spawn(self.node_proxies.refresh_tokens(), name="node-tokens")
        await self._add_pods(plan.pods)
        await self.wait_settled()
        await self.sync_now()
        self.phase, self.ready_at = "Ready", time.time()

    async def apply(self, resources: list[Resource]) -> PlanDiff:
        """Move to a new desired state without tearing the lab down."""
        check_placements(build_topology(resources))
        change = self.control.apply(resources)
        await self._remove_pods(change.pods_removed)
        for node in change.nodes_removed:
            await self.node_proxies.stop(node.name)
            await self.agents.stop(node.name)
            await asyncio.to_thread(network.delete_node, node.name)
        await self._add_nodes(change.nodes_added, self.control.plan.nodes)
        for node in change.nodes_added:
            self.agents.start(node.name)
        if change.nodes_added or change.nodes_removed:
            await asyncio.to_thread(network.sync_node_routes, self.control.plan.nodes)
        self._hosts_dirty = self._hosts_dirty or change.services_changed
        await self._add_pods(change.pods_added)
        await self.wait_settled(keys=[p.key for p in change.pods_added])
        await self.sync_now()
        return change

    async def stop(self, grace: float = 5.0) -> None:
        """Stop every pod gracefully (SIGTERM, then SIGKILL after ``grace``)."""
        self.phase = "Terminating"
        await asyncio.gather(*(r.stop(grace) for r in self._runners.values()))
        await asyncio.gather(*(r.stop(grace) for r in self._proxies.values()))
        await self.node_proxies.stop()
        await self.agents.stop()  # last: pods' kernel state stays until the sweep removes pins
        await self._tasks.cancel_all()

    async def wait_settled(self, keys: Sequence[str] | None = None, timeout: float = 120) -> None:
        runners = [self._runners[k] for k in keys or self._runners if k in self._runners]
        await asyncio.wait_for(asyncio.gather(*(r.settled.wait() for r in runners)), timeout)

    # -- nodes and pods ----------------------------------------------------------------
    async def _add_nodes(self, added: Sequence[NodeInfo], everyone: Sequence[NodeInfo]) -> None:
        for node in added:
            await asyncio.to_thread(network.create_node, node)
        if added:
            await asyncio.to_thread(network.sync_node_routes, list(everyone))

    async def _add_pods(self, pods: Sequence[PodInfo]) -> None:
        nodes = {n.name: n for n in self.control.plan.nodes}
        await asyncio.gather(*(self._add_pod(p, nodes[p.node]) for p in pods))

    async def _add_pod(self, pod: PodInfo, node: NodeInfo) -> None:
        async with self._limit:
            cg = PodCgroup(pod.namespace, pod.name, self._layout)
            await asyncio.to_thread(self._create_pod_objects, pod, node, cg)
        self._cgroups[pod.key] = cg
        proxy = self._proxy_runner(pod, cg) if pod.placement in SIDECAR_PLACEMENTS else None
        runner = PodRunner(
            pod.key,
            launch=lambda: self._launch(pod, cg),
            probe=self._probe_for(pod, node),
            restart_policy=self._restart_policy(pod),
            on_ready=self._on_part_ready("app"),
            before_start=self._gate(pod, proxy),
        )
        self._runners[pod.key] = runner
        self._tasks.spawn(self._run_pod(runner, proxy), name=f"pod {pod.key}")

    def _gate(self, pod: PodInfo, proxy: PodRunner | None) -> Gate | None:
        """What the app waits for: its sidecar's first readiness, then (eBPF placements) its
        node agent having programmed the pod — so the app's first connect is already
        balanced/captured/steered and its first packet already under policy — and (``node``
        placement) its node proxy holding the pod's SVID, so the first steered connection
        already leaves with the pod's identity."""
        if not needs_agent(pod.placement):
            return proxy.settled.wait if proxy else None

        async def gate() -> None:
            if proxy is not None:
                await proxy.settled.wait()
            await self.agents.wait_programmed(pod, lambda: self._node_version(pod.node),
                                              lambda msg: self._pod_message(pod.key, msg))
            if pod.placement == NODE_PLACEMENT:
                await self.node_proxies.wait_serving(
                    pod, lambda msg: self._pod_message(pod.key, msg))

        return gate

    def _node_version(self, node: str) -> int:
        snap = self.control.snapshot(("node", node))
        return snap.version if snap is not None else 0

    def _pod_message(self, key: str, message: str) -> None:
        runner = self._runners.get(key)
        if runner is not None and runner.status.pid is None:
            runner.status.message = message

    async def restart_agent(self, node: str) -> dict[str, Any]:
        """Replace a node's agent process; returns its old and new pid once the new one is up."""
        return await self.agents.restart(node)

    async def upgrade_node_proxy(self, node: str) -> dict[str, Any]:
        """Hand a node proxy's listeners to a fresh process; the old one drains by itself."""
        return await self.node_proxies.upgrade(node)

    def _sidecar_pods(self) -> list[PodInfo]:
        """The sidecar pods that hold a bootstrap token (those whose tokens are refreshed)."""
        return [p for p in self.control.plan.pods
                if p.placement in SIDECAR_PLACEMENTS and self._has_identity(p)]

    def _has_identity(self, pod: PodInfo) -> bool:
        """False when tokens are off or the pod's Workload carries the annotation
        ``hybridmesh.io/identity: disabled``: no token, so its proxy has no SVID, no mTLS."""
        if self._tokens is None:
            return False
        return not any(w.identity_disabled for w in self.control.topology.workloads
                       if (w.namespace, w.name) == (pod.namespace, pod.workload))

    def _proxy_runner(self, pod: PodInfo, cg: PodCgroup) -> PodRunner:
        tokens = self._tokens if self._has_identity(pod) else None
        token = tokens.path(pod) if tokens is not None else None
        proxy = PodRunner(
            pod.key,
            launch=lambda: procs.spawn_in_pod(
                names.pod_netns(pod.namespace, pod.name),
                cg.procs_files("proxy"),
                sidecar.proxy_argv(pod, token_file=token),
                pod_environment(pod),
                proxy_log_path(pod.namespace, pod.name),
                uid=sidecar.proxy_uid(),
            ),
            probe=sidecar.proxy_probe(pod),
            restart_policy=RestartPolicy.ALWAYS,
            on_ready=self._on_part_ready("proxy"),
        )
        self._proxies[pod.key] = proxy
        return proxy

    async def _run_pod(self, app: PodRunner, proxy: PodRunner | None) -> None:
        """Run the app (after its sidecar); once the app completes for good, stop the sidecar
        so the pod completes too (a Job's pod must not hang on its proxy)."""
        if proxy is None:
            await app.run()
            return
        proxy_task = self._tasks.spawn(proxy.run(), name=f"proxy {app.key}")
        await app.run()
        await proxy.stop()
        await proxy_task

    def _on_part_ready(self, part: str) -> Callable[[str, bool], None]:
        def report(key: str, ready: bool) -> None:
            parts = self._ready_parts.setdefault(key, {})
            parts[part] = ready
            wanted = ("app", "proxy") if key in self._proxies else ("app",)
            self._on_ready(key, all(parts.get(p, False) for p in wanted))

        return report

    def _create_pod_objects(self, pod: PodInfo, node: NodeInfo, cg: PodCgroup) -> None:
        network.create_pod(pod, node)
        cg.create(pod.limits)
        netns = names.pod_netns(pod.namespace, pod.name)
        dns.write_hosts(netns, self._hosts_for(pod))
        if pod.placement in IPTABLES_CAPTURE:
            capture.apply_capture(netns)
        if pod.placement in SIDECAR_PLACEMENTS and self._tokens is not None and \
                self._has_identity(pod):
            self._tokens.write(pod)  # before the proxy starts: it asks for its SVID
        if pod.placement in KUBE_PROXY_PLACEMENTS:
            payload = servicelb.render_rules(self.control.services())
            servicelb.apply_rules(netns, payload)
            self._rules_applied[netns] = payload

    async def _remove_pods(self, pods: Sequence[PodInfo]) -> None:
        async def remove(pod: PodInfo) -> None:
            runner = self._runners.pop(pod.key, None)
            proxy = self._proxies.pop(pod.key, None)
            self._ready_parts.pop(pod.key, None)
            if runner:
                await runner.stop()
            if proxy:
                await proxy.stop()
            cg = self._cgroups.pop(pod.key, None)
            self._rules_applied.pop(names.pod_netns(pod.namespace, pod.name), None)
            await asyncio.to_thread(network.delete_pod, pod.namespace, pod.name)
            if self._tokens is not None:
                await asyncio.to_thread(self._tokens.remove, pod)
            if cg:
                await asyncio.to_thread(cg.remove)

        await asyncio.gather(*(remove(p) for p in pods))

    def _launch(self, pod: PodInfo, cg: PodCgroup) -> Any:
        log = pod_log_path(pod.namespace, pod.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        return procs.spawn_in_pod(
            names.pod_netns(pod.namespace, pod.name),
            cg.procs_files("app"),
            list(pod.command),
            pod_environment(pod),
            log,
        )

    def _probe_for(self, pod: PodInfo, node: NodeInfo) -> Any:
        if not pod.ports:
            return None
        port = pod.ports[0][1]
        # Kubernetes probes the app from the node. With a sidecar, that connection would be
        # captured and answered by the proxy, so the app would look ready before it listens
        # (Istio rewrites probes for the same reason): probe from inside the pod instead, with
        # the proxy's mark, which capture lets through to the app itself.
        sidecar_pod = pod.placement in SIDECAR_PLACEMENTS
        where = (
            names.pod_netns(pod.namespace, pod.name) if sidecar_pod else names.node_netns(node.name)
        )
        mark = sidecar.PROXY_MARK if sidecar_pod else None

        async def probe() -> bool:
            try:
                _, writer = await netns.open_connection(where, pod.ip, port, 1.0, mark=mark)
            except OSError:
                return False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True

        return probe

    def _restart_policy(self, pod: PodInfo) -> RestartPolicy:
        for wl in self.control.topology.workloads:
            if wl.metadata.namespace == pod.namespace and wl.metadata.name == pod.workload:
                return RestartPolicy(wl.spec.restart_policy)
        return RestartPolicy.ALWAYS

    def _on_ready(self, key: str, ready: bool) -> None:
        if key in self._runners:
            self.control.set_ready(key, ready)
            self._services_dirty.set()

    # -- services and DNS --------------------------------------------------------------
    def _hosts_for(self, pod: PodInfo) -> str:
        return dns.render_hosts(pod, self.control.services())

    async def _sync_loop(self) -> None:
        """Rewrite service rules (and hosts files when services changed), coalescing bursts."""
        while True:
            await self._services_dirty.wait()
            await asyncio.sleep(SYNC_PERIOD)
            await self.sync_now()

    async def sync_now(self) -> None:
        """One sync pass; ``up``/``apply`` call it so "ready" means reachable by service too."""
        async with self._sync_lock:
            self._services_dirty.clear()
            payload = servicelb.render_rules(self.control.services())
            for ns in self._service_rule_targets():
                if self._rules_applied.get(ns) == payload:
                    continue
                try:
                    await asyncio.to_thread(servicelb.apply_rules, ns, payload)
                    self._rules_applied[ns] = payload
                except LabError as exc:  # a pod being deleted right now; the next pass retries
                    log.warning("service rules for %s: %s", ns, exc)
            if self._hosts_dirty:
                self._hosts_dirty = False
                for pod in self.control.plan.pods:
                    ns = names.pod_netns(pod.namespace, pod.name)
                    await asyncio.to_thread(dns.write_hosts, ns, self._hosts_for(pod))

    def _service_rule_targets(self) -> list[str]:
        """Namespaces that get kube-proxy rules: node netns and pods with no data plane of
        their own (a sidecar's capture must see the ClusterIP and its proxy balances by itself;
        a ``kernel`` pod is balanced by socket LB, with no iptables rule for services)."""
        targets = [names.node_netns(n.name) for n in self.control.plan.nodes]
        targets += [
            names.pod_netns(p.namespace, p.name)
            for p in self.control.plan.pods
            if p.placement in KUBE_PROXY_PLACEMENTS
        ]
        return targets

    # -- status ------------------------------------------------------------------------
    def pod_status(self, pod: PodInfo) -> dict[str, Any]:
        runner = self._runners.get(pod.key)
        st = runner.status if runner else None
        usage = None
        cg = self._cgroups.get(pod.key)
        if cg is not None:
            with contextlib.suppress(OSError):
                u = cg.usage()
                usage = {"cpuUsec": u.cpu_usec, "memoryBytes": u.memory_bytes}
        return {
            **pod.to_json(),
            "phase": (st.phase if st else PodPhase.PENDING).value,
            "ready": self.control.is_ready(pod.key),
            "restarts": st.restarts if st else 0,
            "pid": st.pid if st else None,
            "lastExitCode": st.last_exit_code if st else None,
            "message": st.message if st else "",
            "usage": usage,
            "limits": {"cpuMillis": pod.limits.cpu_millis, "memoryBytes": pod.limits.memory_bytes},
            "proxy": self._proxy_status(pod),
        }

    def _proxy_status(self, pod: PodInfo) -> dict[str, Any] | None:
        proxy = self._proxies.get(pod.key)
        if proxy is None:
            return None
        st = proxy.status
        return {"phase": st.phase.value, "ready": st.ready, "restarts": st.restarts, "pid": st.pid}

    def status(self) -> dict[str, Any]:
        plan = self.control.plan
        return {
            "phase": self.phase,
            "message": self.message,
            "startedAt": self.started_at,
            "readyAt": self.ready_at,
            "version": self.control.version,
            "nodes": [
                {"name": n.name, "podCIDR": n.pod_cidr, "fabricIP": n.fabric_ip} for n in plan.nodes
            ],
            "pods": [self.pod_status(p) for p in plan.pods],
            "services": [s.to_json() for s in self.control.services()],
            "agents": self.agents.status(),
            "nodeProxies": self.node_proxies.status(),
        }


def check_placements(topology: Topology) -> None:
    """Refuse, before anything changes, a workload whose placement this build cannot realize."""
    wanted = {
        f"{w.metadata.namespace}/{w.metadata.name}": topology.placement_of(w)
        for w in topology.workloads
    }
    bad = sorted({p for p in wanted.values() if p not in SUPPORTED_PLACEMENTS})
    if bad:
        who = ", ".join(sorted(k for k, p in wanted.items() if p in bad))
        raise PlacementError(
            f"placement {', '.join(bad)} is not available in this build (workloads: {who}); "
            f"supported: {', '.join(sorted(SUPPORTED_PLACEMENTS))}. Set spec.placement or "
            "MeshConfig spec.defaultPlacement to one of those."
        )


def pod_log_path(namespace: str, pod: str) -> Path:
    return hm_env.STATE_DIR / "logs" / f"{namespace}_{pod}.log"


def proxy_log_path(namespace: str, pod: str) -> Path:
    return hm_env.STATE_DIR / "logs" / f"{namespace}_{pod}.proxy.log"


def pod_environment(pod: PodInfo) -> dict[str, str]:
    """The pod's env on top of a minimal base; the venv's bin first so ``python3`` is ours."""
    base = {
        "PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}",
        "HOME": "/tmp",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",
        "HOSTNAME": pod.name,
    }
    return {**base, **pod.env}
