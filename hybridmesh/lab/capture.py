"""Traffic capture for a ``sidecar`` pod: iptables REDIRECT rules in the pod's own netns.

(``sidecar+ebpf`` pods are captured by eBPF instead — ebpf/capture.py — and get none of this.)

Istio's shape, in the ``nat`` table of the pod netns::

    OUTPUT     -> HM-PROXY-OUTPUT   (first rule)
    HM-PROXY-OUTPUT   RETURN  -m mark --mark 0x539          the proxy's own sockets (SO_MARK)
                      RETURN  -m owner --uid-owner 1337     a proxy running as its own uid
                      RETURN  -o lo -d 127.0.0.0/8          loopback stays loopback
                      REDIRECT -p tcp --to-ports 15001      every other outbound connection
    PREROUTING -> HM-PROXY-INBOUND  (first rule)
    HM-PROXY-INBOUND  RETURN  -p tcp --dports 15020,15021,15008,15001,15006   proxy ports
                      REDIRECT -p tcp --to-ports 15006      every other inbound connection

REDIRECT keeps the original destination in conntrack, where the proxy reads it back with
``SO_ORIGINAL_DST``. Every rule carries an ``hm: ...`` comment (the sweep finds them by it).

:func:`render_rules` and :func:`plan_apply` / :func:`plan_remove` are pure (tested without
privileges); :func:`apply_capture` and :func:`remove_capture` run one ``iptables-save`` and one
``iptables-restore --noflush`` transaction each, so a re-apply is a no-op for the jumps and
atomically rebuilds the two chains, and a remove of nothing is a no-op.

For the lead wiring this in: servicelb.py also wants its ``HM-SERVICES`` jump first in nat
``OUTPUT``. In a sidecar pod the capture jump must come before any service DNAT (or the pod
should get no HM-SERVICES rules): a DNAT that runs first hides the clusterIP from the proxy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hybridmesh.lab import _sh

__all__ = [
    "INBOUND_CHAIN",
    "OUTPUT_CHAIN",
    "CaptureSpec",
    "apply_capture",
    "plan_apply",
    "plan_remove",
    "remove_capture",
    "render_rules",
]

OUTPUT_CHAIN = "HM-PROXY-OUTPUT"
INBOUND_CHAIN = "HM-PROXY-INBOUND"
_JUMPS = {"OUTPUT": OUTPUT_CHAIN, "PREROUTING": INBOUND_CHAIN}


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """Ports and identities of the pod's proxy (the defaults are Istio's habits)."""

    outbound_port: int = 15001
    inbound_port: int = 15006
    mark: int = 0x539
    uid: int | None = 1337
    excluded_inbound_ports: tuple[int, ...] = (15020, 15021, 15008, 15001, 15006)

    def __post_init__(self) -> None:
        ports = (self.outbound_port, self.inbound_port, *self.excluded_inbound_ports)
        if not all(0 < p < 65536 for p in ports) or not self.excluded_inbound_ports:
            raise ValueError(f"capture ports must be TCP ports (1..65535), got {ports}")
        if len(self.excluded_inbound_ports) > 15:
            raise ValueError("multiport matches at most 15 ports")
        if self.outbound_port not in self.excluded_inbound_ports or (
            self.inbound_port not in self.excluded_inbound_ports
        ):
            raise ValueError("the proxy's own listener ports must be excluded from inbound capture")


def _c(text: str) -> str:
    return f'-m comment --comment "hm: {text}"'


def render_rules(spec: CaptureSpec = CaptureSpec()) -> str:
    """The two chains as an ``iptables-restore --noflush`` payload (declaring a chain there
    creates or flushes it, so applying rebuilds both from scratch, atomically)."""
    out = OUTPUT_CHAIN
    dports = ",".join(str(p) for p in spec.excluded_inbound_ports)
    rules = [
        f"-A {out} -m mark --mark {spec.mark:#x} {_c('proxy traffic (SO_MARK)')} -j RETURN",
    ]
    if spec.uid is not None:
        rules.append(f"-A {out} -m owner --uid-owner {spec.uid} {_c('proxy traffic (uid)')} "
                     "-j RETURN")
    rules += [
        f"-A {out} -o lo -d 127.0.0.0/8 {_c('loopback')} -j RETURN",
        f"-A {out} -p tcp {_c('outbound capture')} -j REDIRECT --to-ports {spec.outbound_port}",
        f"-A {INBOUND_CHAIN} -p tcp -m multiport --dports {dports} {_c('proxy ports')} -j RETURN",
        f"-A {INBOUND_CHAIN} -p tcp {_c('inbound capture')} -j REDIRECT "
        f"--to-ports {spec.inbound_port}",
    ]
    return "\n".join(["*nat", f":{OUTPUT_CHAIN} - [0:0]", f":{INBOUND_CHAIN} - [0:0]", *rules,
                      "COMMIT", ""])


def _jump(hook: str) -> str:
    return f"-A {hook} {_c('proxy capture')} -j {_JUMPS[hook]}"


def _nat_lines(saved: str) -> list[str]:
    """The lines of the nat table in an ``iptables-save`` dump."""
    lines: list[str] = []
    inside = False
    for line in saved.splitlines():
        if line.startswith("*"):
            inside = line == "*nat"
        elif inside:
            lines.append(line)
    return lines


def _our_jumps(nat: Iterable[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {hook: [] for hook in _JUMPS}
    for line in nat:
        for hook, chain in _JUMPS.items():
            if re.match(rf"^-A {hook}\b.* -j {chain}$", line):
                found[hook].append(line)
    return found


def plan_apply(saved: str, spec: CaptureSpec = CaptureSpec()) -> str:
    """The payload that makes capture exactly ``spec`` given the current ``saved`` rules:
    both chains rebuilt, each jump present once (inserted first in its hook if missing)."""
    payload = render_rules(spec).splitlines()
    fixes: list[str] = []
    for hook, jumps in _our_jumps(_nat_lines(saved)).items():
        wanted = _jump(hook)
        if jumps == [wanted]:
            continue
        fixes += ["-D" + j[2:] for j in jumps]
        fixes.append(f"-I {hook} 1" + wanted[len(f"-A {hook}"):])
    commit = payload.index("COMMIT")
    return "\n".join([*payload[:commit], *fixes, *payload[commit:]]) + "\n"


def plan_remove(saved: str) -> str | None:
    """The payload removing capture (jumps, then chains); None when there is nothing."""
    nat = _nat_lines(saved)
    lines = ["-D" + j[2:] for jumps in _our_jumps(nat).values() for j in jumps]
    declared = {line[1:].split()[0] for line in nat if line.startswith(":")}
    for chain in (OUTPUT_CHAIN, INBOUND_CHAIN):
        if chain in declared:
            lines += [f"-F {chain}", f"-X {chain}"]
    if not lines:
        return None
    return "\n".join(["*nat", *lines, "COMMIT", ""])


def apply_capture(netns: str, spec: CaptureSpec = CaptureSpec()) -> None:
    """Install (or re-assert) capture in ``netns``: one save, one atomic restore."""
    _sh.iptables_restore(netns, plan_apply(_sh.iptables_save(netns), spec))


def remove_capture(netns: str) -> None:
    """Remove capture from ``netns`` (a no-op when there is none)."""
    payload = plan_remove(_sh.iptables_save(netns))
    if payload is not None:
        _sh.iptables_restore(netns, payload)
