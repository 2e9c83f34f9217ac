"""``hybridmesh.io/identity`` on a Workload: ``enabled``/``disabled`` or a clear error."""

from __future__ import annotations

import textwrap

import pytest

from hybridmesh.resources import ResourceError, load_text
from hybridmesh.resources.models import Workload


def _workload(annotations: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: hybridmesh.io/v1alpha1
        kind: Workload
        metadata:
          name: web
          namespace: shop
          annotations:
            {annotations}
        spec:
          placement: sidecar
          command: [sleep, infinity]
        """)


def _only_workload(text: str) -> Workload:
    return load_text(text, "t.yaml").workloads[0]


@pytest.mark.parametrize(("value", "disabled"), [("disabled", True), ("enabled", False)])
def test_valid_values(value: str, disabled: bool) -> None:
    assert (
        _only_workload(_workload(f"hybridmesh.io/identity: {value}")).identity_disabled is disabled
    )


def test_absent_means_identity() -> None:
    assert not _only_workload(_workload("example.com/other: x")).identity_disabled


@pytest.mark.parametrize("value", ['"no"', "Disabled", "none", '""', "disable"])
def test_bad_value_names_file_line_and_choices(value: str) -> None:
    with pytest.raises(ResourceError) as caught:
        load_text(_workload(f"hybridmesh.io/identity: {value}"), "t.yaml")
    text = str(caught.value)
    assert text.startswith("t.yaml:6: Workload shop/web: ")
    assert "hybridmesh.io/identity" in text
    assert '"enabled" or "disabled"' in text


def test_unquoted_boolean_is_refused_with_a_hint() -> None:
    with pytest.raises(ResourceError, match="quote the value"):
        load_text(_workload("hybridmesh.io/identity: off"), "t.yaml")


def test_other_kinds_keep_plain_annotations() -> None:
    text = _workload("example.com/other: x").replace(
        "name: web\n", "name: web\n  labels: {app: web}\n"
    ) + textwrap.dedent("""\
        ---
        apiVersion: hybridmesh.io/v1alpha1
        kind: Service
        metadata: {name: web, namespace: shop, annotations: {hybridmesh.io/identity: whatever}}
        spec:
          selector: {app: web}
          ports: [{name: http, port: 80, targetPort: 8080}]
        """)
    assert load_text(text, "t.yaml").services[0].metadata.annotations
