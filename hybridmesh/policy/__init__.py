"""AuthorizationPolicy evaluation, sans-IO: path normalization, decisions, the L4 projection."""

from hybridmesh.policy._scope import ROOT_NAMESPACE, Target
from hybridmesh.policy.engine import (
    Action,
    Decision,
    Evaluator,
    PolicyError,
    RequestAttributes,
    compile_policies,
    load_policies,
    read_policies,
)
from hybridmesh.policy.l4 import L4Ports, L4Rule, L4Source, l4_policy, l4_rules
from hybridmesh.policy.normalize import (
    BadHost,
    BadPath,
    BadRequest,
    NormalizedPath,
    normalize_host,
    normalize_path,
)

__all__ = [
    "ROOT_NAMESPACE",
    "Action",
    "BadHost",
    "BadPath",
    "BadRequest",
    "Decision",
    "Evaluator",
    "L4Ports",
    "L4Rule",
    "L4Source",
    "NormalizedPath",
    "PolicyError",
    "RequestAttributes",
    "Target",
    "compile_policies",
    "l4_policy",
    "l4_rules",
    "load_policies",
    "normalize_host",
    "normalize_path",
    "read_policies",
]
