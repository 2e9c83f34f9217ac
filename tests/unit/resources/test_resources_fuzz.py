"""The loader's promise (h11's fuzzer habit): any text loads or raises ResourceError.

Never another exception, and every problem names a line that exists in the input.
"""

from __future__ import annotations

import importlib.resources
import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridmesh.resources import KINDS, ResourceError, Topology, load_text

DEMO = (importlib.resources.files("hybridmesh.resources") / "topologies" / "demo.yaml").read_text()

FIELD_NAMES = [
    "apiVersion", "kind", "metadata", "name", "namespace", "labels", "spec", "selector",
    "ports", "port", "targetPort", "containerPort", "command", "replicas", "placement", "node",
    "matchLabels", "rules", "from", "to", "source", "operation", "principals", "parentRefs",
    "backendRefs", "timeouts", "request", "retry", "codes", "resources", "limits", "cpu",
    "memory", "certificateTTL", "serviceCIDR", "clusterIP", "app", "mtls", "mode",
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-70000, 70000), st.floats(allow_nan=False),
    st.sampled_from(["web", "shop", "hybridmesh.io/v1alpha1", "24h", "500m", "1Gi", "{port}",
                     "10.96.0.1", "10.96.0.0/16", "http", "STRICT", "sidecar", "*", "/api/*"]),
    st.sampled_from(list(KINDS)), st.text(max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(FIELD_NAMES), inner, max_size=4),
    max_leaves=25,
)


def _loads_or_explains(text: str) -> None:
    try:
        result = load_text(text, "f.yaml")
    except ResourceError as exc:
        assert exc.problems, "a ResourceError must carry at least one problem"
        last_line = len(re.findall("\r\n|[\n\r\x85\u2028\u2029]", text)) + 1  # YAML's breaks
        for problem in exc.problems:
            assert problem.source == "f.yaml"
            assert 1 <= problem.line <= last_line, (problem, last_line)
            assert problem.message.strip()
        return
    assert isinstance(result, Topology)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text(text: str) -> None:
    _loads_or_explains(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(FIELD_NAMES), VALUES, max_size=5), max_size=3))
def test_arbitrary_resource_shaped_documents(documents: list[dict[str, object]]) -> None:
    _loads_or_explains(yaml.safe_dump_all(documents))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_demo(data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(DEMO)))
    end = data.draw(st.integers(start, min(len(DEMO), start + 40)))
    insert = data.draw(st.text(alphabet=st.sampled_from(list(" :-[]{}\n\t#'\"&*!|>%,ax1")),
                               max_size=6))
    _loads_or_explains(DEMO[:start] + insert + DEMO[end:])
