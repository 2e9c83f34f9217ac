"""Which policies apply to a destination: namespace, selector, targetRefs, root namespace.

Choices (Istio's habits, tightened where a bypass would otherwise exist):

- A policy with ``selector.matchLabels`` applies to the workloads of its namespace whose labels
  include every pair; with neither selector nor ``targetRefs`` to every workload of its
  namespace.
- Policies in :data:`ROOT_NAMESPACE` (``hybridmesh-system``, Istio's ``istio-system`` habit)
  with a selector or with neither apply in every namespace.
- ``targetRefs`` name Services of the policy's namespace. Such a policy applies in full when
  the request came through one of them. A workload *backing* one of them is also bound when
  reached another way (its pod IP, another Service selecting it): a DENY still applies, and an
  ALLOW makes the workload default-deny without granting anything. Otherwise dialling the pod
  directly, or through a second Service, would bypass the first Service's policy; and the
  destination proxy learns "which Service" from the client, which is not proof.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Final

from hybridmesh import env

if TYPE_CHECKING:
    from hybridmesh.policy._view import PolicyView
    from hybridmesh.resources import AuthorizationPolicy

__all__ = ["ROOT_NAMESPACE", "Binding", "Target", "binding"]

ROOT_NAMESPACE: Final = env.ROOT_NAMESPACE


@dataclass(frozen=True, slots=True)
class Target:
    """The destination of a request, as policies select it.

    ``services`` are the Services (``ns/name``) whose selector picks this workload; ``via`` is
    the Service the request was addressed to, None when it dialled the workload directly.
    """

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    services: frozenset[str] = frozenset()
    via: str | None = None


class Binding(Enum):
    NONE = "none"
    APPLIES = "applies"
    DEFAULT_DENY_ONLY = "default-deny only"  # an ALLOW that binds without granting


def binding(
    policy: AuthorizationPolicy | PolicyView, target: Target, root: str = ROOT_NAMESPACE
) -> Binding:
    """How ``policy`` bears on requests to ``target``."""
    namespace = policy.metadata.namespace
    spec = policy.spec
    if spec.target_refs:
        refs = {f"{namespace}/{ref.name}" for ref in spec.target_refs}
        if target.via in refs:
            return Binding.APPLIES
        if refs & target.services:
            return Binding.APPLIES if spec.action == "DENY" else Binding.DEFAULT_DENY_ONLY
        return Binding.NONE
    if namespace not in (target.namespace, root):
        return Binding.NONE
    if spec.selector is None:
        return Binding.APPLIES
    labels = spec.selector.match_labels
    if all(target.labels.get(key) == value for key, value in labels.items()):
        return Binding.APPLIES
    return Binding.NONE
