"""``hybridmesh identity``: which pod, which proxy, clear errors (sources faked)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer
from typer.testing import CliRunner

from hybridmesh.cli.identity import IdentitySources, describe_pod, register

PODS = [
    {"name": "web-0", "namespace": "shop", "placement": "sidecar", "node": "n1", "ip": "x"},
    {"name": "web-0", "namespace": "other", "placement": "sidecar", "node": "n1", "ip": "y"},
    {"name": "db-0", "namespace": "shop", "placement": "none", "node": "n1", "ip": "z"},
]
DUMP = {"pid": 42, "identity": {
    "state": "valid", "generation": 3, "renewals": 3, "failures": 0, "last_error": None,
    "renew_at": "2030-01-01T00:01:00+00:00",
    "svid": {"identity": "spiffe://cluster.local/ns/shop/sa/web", "serial": "ab12",
             "not_before": "2029-12-31T23:58:00+00:00", "not_after": "2030-01-01T00:02:00+00:00",
             "issuer": "O=hybridmesh,CN=cluster.local", "key_type": "EC P-256",
             "public_key_sha256": "00ff"}}}


def sources(dump: dict[str, Any] | None = None) -> IdentitySources:
    return IdentitySources(lambda: PODS, lambda _pod: dump if dump is not None else DUMP)


def invoke(*args: str, dump: dict[str, Any] | None = None) -> Any:
    app = typer.Typer()
    register(app, sources=lambda: sources(dump))
    return CliRunner().invoke(app, list(args))


def test_json_has_the_svid_facts_and_time_to_renewal() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    doc = describe_pod(sources(), "shop/web-0", now)
    [worker] = doc["workers"]
    assert worker["spiffeId"] == "spiffe://cluster.local/ns/shop/sa/web"
    assert worker["serial"] == "ab12" and worker["issuer"].endswith("CN=cluster.local")
    assert worker["secondsToRenewal"] == 60.0 and worker["secondsToExpiry"] == 120.0
    out = invoke("shop/web-0", "-o", "json")
    assert out.exit_code == 0 and json.loads(out.output)["pod"] == "shop/web-0"


def test_supervisor_dump_lists_each_worker() -> None:
    out = invoke("shop/web-0", "-o", "json", dump={"workers": [DUMP, {**DUMP, "pid": 43}]})
    assert [w["pid"] for w in json.loads(out.output)["workers"]] == [42, 43]


def test_errors_are_clear_and_non_zero() -> None:
    ambiguous = invoke("web-0")
    assert ambiguous.exit_code == 1 and "ambiguous" in ambiguous.output
    assert "shop/web-0" in ambiguous.output and "other/web-0" in ambiguous.output
    missing = invoke("nope-0")
    assert missing.exit_code == 1 and "no pod 'nope-0'" in missing.output
    unmeshed = invoke("shop/db-0")
    assert unmeshed.exit_code == 1 and "no proxy (placement none)" in unmeshed.output
    plain = invoke("shop/web-0", dump={"pid": 1, "identity": None})
    assert plain.exit_code == 1 and "without mTLS" in plain.output


def test_table_output_names_every_field() -> None:
    out = invoke("shop/web-0")
    assert out.exit_code == 0
    for label in ("SPIFFE ID", "serial", "not after", "issuer", "renewal in (s)"):
        assert label in out.output
