"""Probes for the lab's networking: namespaces, veth pairs, and iptables nat inside a namespace.

Each one does for real, in a throwaway ``hm-check-<pid>`` namespace, the smallest version of
what ``lab up`` and sidecar capture will do — so a pass means the real thing works, not just
that a binary exists. Deleting the namespace removes every link and rule made inside it.
"""

from __future__ import annotations

from hybridmesh.doctor.host import Session
from hybridmesh.doctor.model import Outcome

__all__ = ["NAT_PROBE_RULES", "probe_iptables_nat", "probe_netns", "probe_veth"]

_VETH = ("hm-ck-a", "hm-ck-b")  # ≤ 15 characters, the kernel's IFNAMSIZ limit

NAT_PROBE_RULES = (
    "*nat\n-A OUTPUT -p tcp -d 127.0.0.1 --dport 9 -j REDIRECT --to-ports 15001\nCOMMIT\n"
)
"""A sidecar-capture-shaped rule (REDIRECT to the outbound port) loaded the way the lab loads
rules: through iptables-restore, without flushing."""


def probe_netns(session: Session) -> Outcome:
    """Create a namespace, bring its loopback up, delete it — the full life of a lab pod's."""
    name = session.netns_name
    made = session.ip("netns", "add", name)
    if not made.ok:
        return Outcome.failed(f"ip netns add {name}: {made.why()}")
    used = session.ip("-n", name, "link", "set", "lo", "up")
    gone = session.ip("netns", "del", name)
    if not used.ok:
        return Outcome.failed(f"cannot configure loopback in {name}: {used.why()}")
    if not gone.ok:
        return Outcome.failed(f"created {name} but cannot delete it: {gone.why()}")
    return Outcome.passed(f"created, used and deleted {name}")


def probe_veth(session: Session) -> Outcome:
    netns = session.scratch_netns()
    left, right = _VETH
    made = session.ip("-n", netns, "link", "add", left, "type", "veth", "peer", "name", right)
    if not made.ok:
        return Outcome.failed(f"cannot create a veth pair in {netns}: {made.why()}")
    session.ip("-n", netns, "link", "del", left)  # deleting one end deletes the pair
    return Outcome.passed(f"{left} <-> {right} in {netns}")


def probe_iptables_nat(session: Session) -> Outcome:
    netns = session.scratch_netns()
    restore = [session.binary("iptables-restore"), "--noflush"]
    loaded = session.ip("netns", "exec", netns, *restore, stdin=NAT_PROBE_RULES)
    if not loaded.ok:
        return Outcome.failed(f"iptables-restore of a nat rule in {netns}: {loaded.why()}")
    listing = [session.binary("iptables"), "-w", "-t", "nat", "-S", "OUTPUT"]
    listed = session.ip("netns", "exec", netns, *listing)
    if not listed.ok:
        return Outcome.failed(f"iptables -t nat -S in {netns}: {listed.why()}")
    if "REDIRECT" not in listed.stdout:
        return Outcome.failed(f"the REDIRECT rule loaded into {netns} is not listed back")
    return Outcome.passed(f"REDIRECT rule loaded and listed in {netns} ({_backend(session)})")


def _backend(session: Session) -> str:
    """``iptables v1.8.9 (nf_tables)`` → ``nf_tables``; useful when legacy and nft disagree."""
    version = session.host.run([session.binary("iptables"), "--version"], None)
    text = version.stdout.strip()
    if version.ok and text.endswith(")") and "(" in text:
        return text[text.rindex("(") + 1 : -1]
    return "legacy" if version.ok else "backend unknown"
