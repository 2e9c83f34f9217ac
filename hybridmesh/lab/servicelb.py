"""ClusterIP load balancing for pods without a mesh data plane: kube-proxy's iptables mode.

Unlike kube-proxy (which works on the node), the DNAT goes in each pod's own ``nat OUTPUT``
chain — a per-pod kube-proxy. The pod's conntrack then un-NATs the replies itself, so there is
no need for br_netfilter, hairpin masquerade or a route for the service range on the nodes,
and the backend sees the client's real pod IP. Node namespaces get the same rules for
processes that run there.

Shape of the rules (as kube-proxy's, minus the per-endpoint chains)::

    nat    OUTPUT      -> HM-SERVICES (first rule)
    nat    HM-SERVICES -d <clusterIP> --dport <port> -> HM-SVC-<hash>   (one chain per port)
    nat    HM-SVC-x    -m statistic --probability 1/n -> DNAT <ep1>:<targetPort>, 1/(n-1) ...
    filter OUTPUT      -> HM-SERVICES (first rule)
    filter HM-SERVICES -d <clusterIP> --dport <port> -> REJECT   (ports with no endpoints)

:func:`render_rules` is pure; :func:`apply_rules` adds what depends on the namespace's current
state (the jump from OUTPUT, deleting chains of services that are gone) and applies the
whole thing in one ``iptables-restore --noflush`` transaction.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from hybridmesh.control.model import Endpoint, ServiceInfo, ServicePortInfo
from hybridmesh.lab import _sh
from hybridmesh.lab.names import short_hash

__all__ = ["SERVICES_CHAIN", "apply_rules", "finalize", "render_rules", "service_chain"]

SERVICES_CHAIN = "HM-SERVICES"
_SVC_PREFIX = "HM-SVC-"
_JUMP_COMMENT = "hm: services"
_REJECT = "-j REJECT --reject-with icmp-port-unreachable"


def service_chain(service: ServiceInfo, port: ServicePortInfo) -> str:
    """``HM-SVC-<16 hex>``: stable per service port, within iptables' 28-char chain limit."""
    return (
        _SVC_PREFIX
        + short_hash(service.namespace, service.name, str(port.port), "tcp", length=16).upper()
    )


def _comment(service: ServiceInfo, port: ServicePortInfo) -> str:
    return f'-m comment --comment "hm: {service.namespace}/{service.name}:{port.port}"'


def _is_ipv4(address: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address)
    except ValueError:
        return False


def _dnat_rules(chain: str, comment: str, endpoints: Sequence[Endpoint], port: int) -> list[str]:
    """Equal-probability choice: rule i of n matches with 1/(n-i); the last always does."""
    rules = []
    for i, ep in enumerate(endpoints):
        left = len(endpoints) - i
        pick = f"-m statistic --mode random --probability {1 / left:0.10f} " if left > 1 else ""
        rules.append(f"-A {chain} -p tcp {comment} {pick}-j DNAT --to-destination {ep.ip}:{port}")
    return rules


def _endpoints(service: ServiceInfo) -> list[Endpoint]:
    unique = {ep.ip: ep for ep in service.endpoints if _is_ipv4(ep.ip)}
    return sorted(unique.values(), key=lambda ep: ipaddress.ip_address(ep.ip))


def render_rules(services: Sequence[ServiceInfo]) -> str:
    """The ``iptables-restore --noflush`` payload for ``services`` (deterministic order).

    Declaring a chain in a --noflush payload creates or flushes it, so every apply rebuilds
    ``HM-SERVICES`` and each ``HM-SVC-*`` chain from scratch, atomically.
    """
    chains: list[str] = []
    nat: list[str] = []
    reject: list[str] = []
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        if not _is_ipv4(svc.cluster_ip):
            continue  # headless or IPv6: nothing for iptables (IPv4) to do
        endpoints = _endpoints(svc)
        for port in sorted(svc.ports, key=lambda p: p.port):
            comment = _comment(svc, port)
            match = f"-d {svc.cluster_ip}/32 -p tcp -m tcp --dport {port.port} {comment}"
            if not endpoints:
                reject.append(f"-A {SERVICES_CHAIN} {match} {_REJECT}")
                continue
            chain = service_chain(svc, port)
            chains.append(f":{chain} - [0:0]")
            nat.append(f"-A {SERVICES_CHAIN} {match} -j {chain}")
            nat += _dnat_rules(chain, comment, endpoints, port.target_port)
    return "\n".join(
        [
            "*nat",
            f":{SERVICES_CHAIN} - [0:0]",
            *chains,
            *nat,
            "COMMIT",
            "*filter",
            f":{SERVICES_CHAIN} - [0:0]",
            *reject,
            "COMMIT",
            "",
        ]
    )


_TABLE = re.compile(r"^\*(\w+)$")
_JUMP_RULE = re.compile(rf"^-A OUTPUT\b.*-j {SERVICES_CHAIN}$")
_WANTED_JUMP = f'-A OUTPUT -m comment --comment "{_JUMP_COMMENT}" -j {SERVICES_CHAIN}'


@dataclass
class _TableState:
    """What an iptables-save dump says about one table."""

    first_output: str | None = None  # the first rule of OUTPUT
    jumps: list[str] = field(default_factory=list)  # OUTPUT rules jumping to HM-SERVICES
    chains: list[str] = field(default_factory=list)  # our HM-SVC-* chains


def _saved_state(saved: str) -> dict[str, _TableState]:
    tables: dict[str, _TableState] = {}
    state = _TableState()
    for line in saved.splitlines():
        if m := _TABLE.match(line):
            state = tables.setdefault(m.group(1), _TableState())
        elif line.startswith("-A OUTPUT "):
            state.first_output = state.first_output or line
            if _JUMP_RULE.match(line):
                state.jumps.append(line)
        elif line.startswith(f":{_SVC_PREFIX}"):
            state.chains.append(line[1:].split()[0])
    return tables


def _fixups(state: _TableState, declared: set[str]) -> list[str]:
    lines = []
    if state.jumps != [_WANTED_JUMP] or state.first_output != _WANTED_JUMP:
        lines += ["-D" + rule[2:] for rule in state.jumps]
        lines.append("-I OUTPUT 1" + _WANTED_JUMP[len("-A OUTPUT") :])
    for stale in sorted(set(state.chains) - declared):
        lines += [f"-F {stale}", f"-X {stale}"]
    return lines


def finalize(payload: str, saved: str) -> str:
    """``payload`` plus the lines that depend on the namespace's current rules (``saved``,
    an iptables-save dump): our jump made the first rule of OUTPUT, exactly once, in each
    table, and the chains of service ports that no longer exist deleted."""
    tables = _saved_state(saved)
    out: list[str] = []
    table, declared = "", set[str]()
    for line in payload.splitlines():
        if m := _TABLE.match(line):
            table, declared = m.group(1), set()
        elif line.startswith(":"):
            declared.add(line[1:].split()[0])
        elif line == "COMMIT":
            out += _fixups(tables.get(table, _TableState()), declared)
        out.append(line)
    return "\n".join(out) + "\n"


def apply_rules(netns: str, payload: str) -> None:
    """Make ``payload`` (from :func:`render_rules`) the service rules of ``netns``, atomically.

    Two execs: iptables-save to see the current state, then one iptables-restore transaction
    (a failing payload changes nothing)."""
    _sh.iptables_restore(netns, finalize(payload, _sh.iptables_save(netns)))
