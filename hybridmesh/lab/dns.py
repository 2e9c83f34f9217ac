"""Kubernetes-style service names inside pods, from a hosts file (no DNS server to run).

``ip netns exec <netns>`` bind-mounts every file of /etc/netns/<netns>/ over its /etc twin in
the process's private mount namespace, so a pod process reads the lab's hosts file as
/etc/hosts. Kubernetes DNS answers ``web``, ``web.shop``, ``web.shop.svc`` and
``web.shop.svc.cluster.local`` (the first ones via the pod's search path, which starts with its
own namespace); the hosts file lists exactly those aliases, the bare name only for services of
the pod's own namespace.

The file must exist before a process starts (the bind mount is made at exec) and is rewritten
in place afterwards: a bind mount pins the inode, so replacing the file (write + rename) would
leave running processes reading the old one forever.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from hybridmesh.control.model import PodInfo, ServiceInfo

__all__ = [
    "CLUSTER_DOMAIN",
    "ETC_NETNS",
    "RESOLV_CONF",
    "netns_etc",
    "remove_files",
    "render_hosts",
    "write_hosts",
]

CLUSTER_DOMAIN = "cluster.local"
ETC_NETNS = Path("/etc/netns")
"""Per-netns files that ``ip netns exec`` bind-mounts over /etc (hosts, resolv.conf)."""

RESOLV_CONF = """\
# hybridmesh lab: names resolve from /etc/hosts only (see hybridmesh/lab/dns.py).
nameserver 127.0.0.1
options timeout:1 attempts:1
"""
"""The pod's resolv.conf: a resolver that fails fast, on purpose.

Lab names (services, pods) are all in the hosts file. Anything else must not leak out to the
host's resolver: it is unreachable from inside a pod (there is no route out of the lab), so
every miss would wait out the full timeout-and-retry cycle (5 s x 2 by default) — a typo'd
service name would look like a hang. 127.0.0.1 inside the pod's own netns has nothing on port
53, so a query is answered at once by ICMP port-unreachable and the lookup fails
immediately (``getent hosts nosuch`` returns in milliseconds). No ``search`` line: glibc only
applies search domains to DNS, never to /etc/hosts, so it would only add failing queries.
"""


def netns_etc(netns: str) -> Path:
    """``/etc/netns/<netns>``: the files ``ip netns exec`` shows as /etc/<file>."""
    return ETC_NETNS / netns


def _aliases(service: ServiceInfo, pod_namespace: str, domain: str) -> list[str]:
    name, ns = service.name, service.namespace
    aliases = [f"{name}.{ns}.svc.{domain}", f"{name}.{ns}.svc", f"{name}.{ns}"]
    if ns == pod_namespace:
        aliases.append(name)
    return aliases


def render_hosts(
    pod: PodInfo, services: Sequence[ServiceInfo], cluster_domain: str = CLUSTER_DOMAIN
) -> str:
    """The pod's /etc/hosts: localhost, its own hostname, and every service's names."""
    lines = [
        "# hybridmesh lab: Kubernetes-style names for this pod (rewritten as services change)",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{pod.ip}\t{pod.name}",
    ]
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        if svc.cluster_ip and svc.cluster_ip != "None":
            aliases = _aliases(svc, pod.namespace, cluster_domain)
            lines.append(f"{svc.cluster_ip}\t{' '.join(aliases)}")
    return "\n".join(lines) + "\n"


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Replace ``path``'s content keeping its inode (so bind mounts of it see the change).

    Write first, truncate after: a reader racing us may briefly see the new text followed by
    the old tail, but never an empty file.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def write_hosts(netns: str, text: str) -> None:
    """Install (or update, in place) the hosts file and the fail-fast resolv.conf of
    ``netns``. Call it before the first process of the pod starts."""
    etc = netns_etc(netns)
    etc.mkdir(parents=True, exist_ok=True)
    _rewrite_in_place(etc / "hosts", text.encode())
    resolv = etc / "resolv.conf"
    if not resolv.exists() or resolv.read_text() != RESOLV_CONF:
        _rewrite_in_place(resolv, RESOLV_CONF.encode())


def remove_files(netns: str) -> None:
    """Forget ``netns``'s /etc files (when its pod or node is deleted)."""
    shutil.rmtree(netns_etc(netns), ignore_errors=True)
