"""NodeState → the contents of l4policy.bpf.c's maps (pure; no kernel, no privileges).

The semantics are the policy engine's, not re-derived here: each destination identity gets an
:class:`~hybridmesh.policy.engine.Evaluator` over the policies projected to L4
(:func:`~hybridmesh.policy.l4.l4_policy`), and that evaluator *decides* every (source identity,
port) pair that can make a difference. This module only turns the resulting decision table into
as few map entries as the kernel's lookup order needs:

    (src, dst, port) -> (src, dst, ANY port) -> (ANY src, dst, ANY port) -> allow

Ports: only the ports some policy names (``ports``/``notPorts``) can decide differently from any
other port, so each source row is "the verdict on an unnamed port" plus exceptions.

Sources: a pod address is its pod's identity (namespace + service account + labels). In the
``kernel`` placement there is no mTLS, so the engine sees the source as that identity's SPIFFE
ID in the mesh's trust domain (proven by its address, the lab's only source of truth). An
address the ipcache does not know is WORLD: a plaintext peer to the engine — ``principals: ["*"]``
excludes it, and a DENY naming principals/namespaces/service accounts drops it (fail-closed).

The node itself (``host_ips``: where kubelet-style probes come from) is always allowed to reach
its pods, as Cilium's ``allow-localhost``: a default-deny must not make a pod fail its probes.

Destinations are reached by pod IP (socket LB rewrote the connect), so a ``targetRefs`` ALLOW
only closes its workloads (``Target.via`` is unknown, see ``policy.l4``). Default-deny drops
name the first ALLOW policy that selects the destination, since the engine names none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from hybridmesh.agent.datapath import NodeState, PodView
from hybridmesh.control.model import ServiceInfo
from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId
from hybridmesh.policy import Decision, RequestAttributes, Target, compile_policies
from hybridmesh.policy.engine import Evaluator, load_policies
from hybridmesh.policy.l4 import l4_policy
from hybridmesh.resources.models import AuthorizationPolicy

__all__ = [
    "ALLOW",
    "DEFAULT_DENY",
    "DROP",
    "ENFORCED_PLACEMENTS",
    "FIRST_POD_ID",
    "ID_ANY",
    "ID_HOST",
    "ID_WORLD",
    "NO_POLICY",
    "PORT_ANY",
    "IdentityLabels",
    "L4Plan",
    "RuleKey",
    "Verdict",
    "allocate",
    "compile_state",
]

T = TypeVar("T", bound=Hashable)

ID_ANY = 0  # HM_L4_ID_ANY
ID_HOST = 1  # HM_L4_ID_HOST
ID_WORLD = 2  # HM_L4_ID_WORLD
FIRST_POD_ID = 256
ID_LIMIT = 1 << 24
POLICY_ID_LIMIT = 1 << 31
PORT_ANY = 0  # HM_L4_PORT_ANY
ALLOW = 1  # HM_L4_ALLOW
DROP = 2  # HM_L4_DROP
DEFAULT_DENY = 1  # HM_L4_DEFAULT_DENY
ENFORCED_PLACEMENTS = ("kernel",)


@dataclass(frozen=True, order=True, slots=True)
class IdentityLabels:
    """What an identity stands for: every pod with these values shares one number."""

    namespace: str
    service_account: str
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, pod: PodView) -> IdentityLabels:
        return cls(pod.namespace, pod.service_account, tuple(sorted(pod.labels.items())))

    def principal(self, trust_domain: str) -> SpiffeId | None:
        """The SPIFFE ID the engine sees; None (plaintext) if the names cannot form one."""
        try:
            return SpiffeId.for_workload(trust_domain, self.namespace, self.service_account)
        except InvalidSpiffeId:
            return None

    def __str__(self) -> str:
        labels = ",".join(f"{k}={v}" for k, v in self.labels)
        return f"{self.namespace}/{self.service_account}{{{labels}}}"


@dataclass(frozen=True, order=True, slots=True)
class RuleKey:
    src: int
    dst: int
    port: int  # PORT_ANY: every port without its own entry


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: int  # ALLOW / DROP
    flags: int = 0  # DEFAULT_DENY
    policy: int = 0  # policy id; 0: no policy

    @property
    def allowed(self) -> bool:
        return self.verdict != DROP


NO_POLICY = Verdict(ALLOW)
"""What the kernel does without an entry: allow, no policy involved."""


@dataclass(frozen=True)
class L4Plan:
    """Everything the maps must hold, plus the names userspace needs to read them back."""

    ipcache: Mapping[str, int]  # pod IP -> identity
    identities: Mapping[int, IdentityLabels]
    rules: Mapping[RuleKey, Verdict]
    policies: Mapping[int, str]  # policy id -> "ns/name"
    enforced: frozenset[int] = frozenset()  # destination identities with local enforced pods

    def identity_of(self, ip: str) -> int:
        return self.ipcache.get(ip, ID_WORLD)

    def decide(self, src_ip: str, dst_ip: str, port: int) -> Verdict:
        """What l4policy.bpf.c decides for a SYN src_ip -> dst_ip:port (same lookup order)."""
        dst = self.identity_of(dst_ip)
        if dst == ID_WORLD:
            return NO_POLICY
        src = self.identity_of(src_ip)
        for key in (RuleKey(src, dst, port), RuleKey(src, dst, PORT_ANY)):
            if key in self.rules:
                return self.rules[key]
        return self.rules.get(RuleKey(ID_ANY, dst, PORT_ANY), NO_POLICY)

    def policy_name(self, policy_id: int) -> str | None:
        return self.policies.get(policy_id) if policy_id else None


def allocate(
    items: Iterable[T], first: int, limit: int, digest: Callable[[T], bytes]
) -> dict[T, int]:
    """Stable numbers: a hash of each item, probing upwards on a collision.

    The same item gets the same number in every agent run as long as nothing new collides with
    it, so a restarted agent rewrites the maps with the numbers already in them (no window
    where the ipcache and the policy entries disagree).
    """
    span = limit - first
    hashed = sorted((int.from_bytes(digest(item)[:8], "big") % span, repr(item), item)
                    for item in set(items))
    if len(hashed) > span:
        raise ValueError(f"{len(hashed)} items do not fit in {span} numbers")
    taken: set[int] = set()
    out: dict[T, int] = {}
    for start, _, item in hashed:
        slot = start
        while first + slot in taken:
            slot = (slot + 1) % span
        taken.add(first + slot)
        out[item] = first + slot
    return out


def _digest(item: Hashable) -> bytes:
    return hashlib.blake2b(repr(item).encode(), digest_size=8).digest()


def compile_state(
    state: NodeState,
    placements: tuple[str, ...] = ENFORCED_PLACEMENTS,
    host_ips: Iterable[str] = (),
) -> L4Plan:
    """The maps for ``state``: identities of every pod, rules for this node's enforced pods.

    Raises ``PolicyError`` (from the engine) when a policy is invalid.
    """
    pods = [p for p in state.pods if p.ip]
    labels_of = {p.ip: IdentityLabels.of(p) for p in sorted(pods, key=lambda p: p.key)}
    numbers = allocate(labels_of.values(), FIRST_POD_ID, ID_LIMIT, _digest)
    identities = {number: labels for labels, number in numbers.items()}
    ipcache = {ip: ID_HOST for ip in host_ips} | {
        ip: numbers[labels] for ip, labels in labels_of.items()
    }
    policies = tuple(l4_policy(p) for p in load_policies(state.policies))
    policy_ids = allocate((_name(p) for p in policies), 1, POLICY_ID_LIMIT, _digest)
    enforced = frozenset(ipcache[p.ip] for p in state.local(*placements) if p.ip)
    table = _Table(state, policies, policy_ids, identities)
    rules: dict[RuleKey, Verdict] = {}
    for dst in sorted(enforced):
        rules.update(table.rules_for(dst))
    return L4Plan(
        ipcache=ipcache,
        identities=identities,
        rules=rules,
        policies={number: name for name, number in policy_ids.items()},
        enforced=enforced,
    )


def _name(policy: AuthorizationPolicy) -> str:
    return f"{policy.metadata.namespace}/{policy.metadata.name}"


def _selected_by(service: ServiceInfo, labels: IdentityLabels) -> bool:
    have = dict(labels.labels)
    return bool(service.selector) and all(have.get(k) == v for k, v in service.selector.items())


def _ports(policies: Iterable[AuthorizationPolicy]) -> list[int]:
    """Every port a policy names: the only ports decided differently from the rest."""
    named: set[int] = set()
    for policy in policies:
        for rule in policy.spec.rules:
            for item in rule.to:
                named.update(int(p) for p in (*item.operation.ports, *item.operation.not_ports))
    return sorted(named)


class _Table:
    """The decision table of one node's policies, compressed into rules per destination."""

    def __init__(
        self,
        state: NodeState,
        policies: tuple[AuthorizationPolicy, ...],
        policy_ids: Mapping[str, int],
        identities: Mapping[int, IdentityLabels],
    ) -> None:
        self._state = state
        self._policies = policies
        self._ids = policy_ids
        self._actions = {_name(p): p.spec.action for p in policies}
        self._identities = identities
        self._ports = _ports(policies)
        named = set(self._ports)
        self._other = next(p for p in range(1, 65536) if p not in named)
        # the engine only sees a source's principal: one row per distinct principal
        self._sources: dict[int, SpiffeId | None] = {ID_WORLD: None}
        for number, labels in identities.items():
            self._sources[number] = labels.principal(state.trust_domain)

    def _target(self, labels: IdentityLabels) -> Target:
        services = frozenset(
            s.key for s in self._state.services
            if s.namespace == labels.namespace and _selected_by(s, labels)
        )
        return Target(labels.namespace, dict(labels.labels), services, via=None)

    def rules_for(self, dst: int) -> dict[RuleKey, Verdict]:
        evaluator = compile_policies(
            self._policies, self._target(self._identities[dst]),
            trust_domain=self._state.trust_domain,
        )
        if not evaluator.policies:
            return {}
        host = {RuleKey(ID_HOST, dst, PORT_ANY): Verdict(ALLOW)}
        verdict = self._verdict_maker(evaluator)
        rows: dict[int, tuple[Verdict, dict[int, Verdict]]] = {}
        memo: dict[SpiffeId | None, tuple[Verdict, dict[int, Verdict]]] = {}
        for src, principal in self._sources.items():
            if principal not in memo:
                memo[principal] = (
                    verdict(principal, self._other),
                    {port: verdict(principal, port) for port in self._ports},
                )
            rows[src] = memo[principal]
        return host | _compress(dst, rows)

    def _verdict_maker(self, evaluator: Evaluator) -> Callable[[SpiffeId | None, int], Verdict]:
        allows = [n for n in evaluator.policies if self._actions.get(n) == "ALLOW"]
        closer = self._ids[allows[0]] if allows else 0

        def verdict(principal: SpiffeId | None, port: int) -> Verdict:
            decision = evaluator.decide(RequestAttributes.tcp(principal, port))
            return self._to_verdict(decision, closer)

        return verdict

    def _to_verdict(self, decision: Decision, closer: int) -> Verdict:
        policy = self._ids[decision.policy] if decision.policy else 0
        if decision.allowed:
            return Verdict(ALLOW, 0, policy)
        if decision.policy is None:
            return Verdict(DROP, DEFAULT_DENY, closer)
        return Verdict(DROP, 0, policy)


def _compress(
    dst: int, rows: Mapping[int, tuple[Verdict, dict[int, Verdict]]]
) -> dict[RuleKey, Verdict]:
    """Fewest entries for the lookup order; WORLD's unnamed-port verdict is the default."""
    default = rows[ID_WORLD][0]
    rules: dict[RuleKey, Verdict] = {}
    if default != NO_POLICY:
        rules[RuleKey(ID_ANY, dst, PORT_ANY)] = default
    for src, (other, per_port) in sorted(rows.items()):
        effective = default
        if other != default:
            rules[RuleKey(src, dst, PORT_ANY)] = effective = other
        for port, value in per_port.items():
            if value != effective:
                rules[RuleKey(src, dst, port)] = value
    return rules
