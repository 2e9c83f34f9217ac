"""The pod's private key appears in no log, metric, config dump, access log or CLI output.

Two real proxy workers talk mTLS (with rotation, a policy denial, a refused plaintext peer
and debug logging on, so every code path that prints something runs); the test knows each
worker's exact key and greps everything they produced for it in every form it could leak in:
PEM (whole, body, each base64 line), DER (raw, hex, base64), the private scalar (hex and
decimal) — case-insensitively.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from pathlib import Path

import pytest
import uvloop
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mtls_harness import SERVER_IP, Pair, mesh_pair
from typer.testing import CliRunner

from hybridmesh.cli.identity import IdentitySources, register
from hybridmesh.proxy.worker import Worker
from hybridmesh.telemetry.proxy_metrics import AccessLog


def key_forms(key: ec.EllipticCurvePrivateKey) -> list[str]:
    """Every spelling of the key worth grepping for (long enough never to match by chance)."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    body_lines = [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")]
    scalar = key.private_numbers().private_value
    return [pem, "".join(body_lines), *body_lines[:-1], der.hex(), base64.b64encode(der).decode(),
            f"{scalar:064x}", str(scalar), der.decode("latin-1")]


def keys_of(*workers: Worker) -> list[ec.EllipticCurvePrivateKey]:
    out = []
    for worker in workers:
        mesh = worker.ctx.mtls
        assert mesh is not None and mesh.identity.material is not None
        # the proxy holds its key as PEM (made by the keygen child); the test parses it to
        # know every spelling worth grepping for
        key = serialization.load_pem_private_key(
            mesh.identity.material.svid.private_key_pem(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        out.append(key)
    return out


def cli_output(worker: Worker) -> str:
    import typer

    app = typer.Typer()
    pod = {"name": "web-0", "namespace": "default", "placement": "sidecar"}
    register(app, sources=lambda: IdentitySources(lambda: [pod], lambda _p: worker.config_dump()))
    runner = CliRunner()
    table = runner.invoke(app, ["web-0"])
    as_json = runner.invoke(app, ["web-0", "-o", "json"])
    assert table.exit_code == 0 and as_json.exit_code == 0, (table.output, as_json.output)
    doc = json.loads(as_json.output)
    assert doc["workers"][0]["spiffeId"] == "spiffe://cluster.local/ns/default/sa/web"
    return table.output + as_json.output


DENY = {"metadata": {"name": "deny-x", "namespace": "default"},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]}}


def test_no_private_key_in_any_output(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    keys: list[ec.EllipticCurvePrivateKey] = []

    async def exercise(p: Pair) -> None:
        stream = io.StringIO()
        p.server.ctx.access_log = AccessLog(stream)
        assert (await p.get("/")).startswith(b"HTTP/1.1 200 ")
        assert (await p.get("/x")).startswith(b"HTTP/1.1 403 ")
        reader, writer = await asyncio.open_connection(SERVER_IP, p.inbound_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")  # plaintext: refused (STRICT)
        await reader.read()
        writer.close()
        p.server.ctx.access_log.close(timeout=1.0)
        texts.append(stream.getvalue())

    async def main() -> None:
        async with mesh_pair(tmp_path, publish={"policies": [DENY]}) as p:
            keys.extend(keys_of(p.client, p.server))
            await exercise(p)
            p.server.ctx.mtls.identity.renew_now()  # type: ignore[union-attr]
            await p.wait_identity(p.server, generation=2)
            keys.extend(keys_of(p.server))
            await exercise(p)
            for worker in (p.client, p.server):
                texts.append(worker.exposition().decode())
                texts.append(json.dumps(worker.config_dump()))
            texts.append(cli_output(p.server))

    uvloop.run(main())
    texts.append(caplog.text)
    texts.extend(str(r.args) for r in caplog.records)
    assert len(keys) == 3 and len({k.private_numbers().private_value for k in keys}) == 3
    haystack = "\n".join(texts).lower()
    assert "spiffe://cluster.local/ns/default/sa/web" in haystack  # we grep real output
    assert "private key" not in haystack
    for key in keys:
        for form in key_forms(key):
            assert form.lower() not in haystack, form[:40]
