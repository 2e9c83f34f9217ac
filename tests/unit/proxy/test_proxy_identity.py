"""The proxy's SVID manager: issuance, renewal schedule, rotation under load, CA outages,
fail-closed at expiry, and the fake control plane's CA routes it talks to."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvloop
from mtls_harness import CLIENT_POD, Pair, mesh_pair

from hybridmesh._http import HttpClient
from hybridmesh.identity import keygen
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.workload import make_csr, new_key
from hybridmesh.proxy.discovery import build_tables
from hybridmesh.proxy.identity import SvidManager, renewal_time, wanted_identity
from hybridmesh.proxy.identity_metrics import IdentityMetrics
from hybridmesh.proxy.testing import FakeControlPlane, pod_snapshot


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def test_renewal_is_half_the_remaining_life_with_bounded_jitter() -> None:
    rng = random.Random(7)
    times = [renewal_time(1000.0, 1120.0, rng) for _ in range(500)]
    assert min(times) >= 1000 + 60 - 6 and max(times) <= 1000 + 60 + 6
    assert max(times) - min(times) > 6  # jitter really spreads a fleet
    # a nearly expired certificate: never inside the last 10 %
    assert renewal_time(1000.0, 1001.0, random.Random(1)) <= 1000.9


def test_wanted_identity_comes_from_the_snapshot() -> None:
    snap = {**pod_snapshot("web-0", "10.0.0.1", service_account="web-sa",
                           trust_domain="corp.example"), "version": 1}
    assert wanted_identity(build_tables(snap)) == SpiffeId.for_workload("corp.example",
                                                                        "default", "web-sa")
    snap["mesh"] = {}
    assert wanted_identity(build_tables(snap)) is None


def test_fake_control_plane_signs_only_published_pods_with_their_sa(tmp_path: Path) -> None:
    async def main() -> None:
        cp = FakeControlPlane(tmp_path / "cp.sock")
        await cp.start()
        ca = cp.enable_identity()
        cp.set("default/web-0", pod_snapshot("web-0", "10.0.0.1"))
        ident = SpiffeId.for_workload("cluster.local", "default", "web")
        async with HttpClient(unix_path=cp.path) as client:
            async def sign(token: str) -> tuple[int, Any]:
                body = json.dumps({"token": token, "csr": make_csr(new_key(), ident).decode()})
                resp = await client.request("POST", "/v1/identity/sign", body=body.encode())
                return resp.status, resp.json_body()

            status, body = await sign(cp.issue_token("default/web-0"))
            assert status == 200 and body["identity"] == str(ident)
            assert (await sign(cp.issue_token("default/web-0", "admin")))[0] == 403
            assert (await sign("forged"))[0] == 401
            bundle = await client.request("GET", "/v1/identity/bundle")
            assert bundle.body == ca.bundle_pem
        await cp.close()

    run(main())


async def _load(pair: Pair, seconds: float, conns: int = 4) -> dict[str, int]:
    """Keep-alive GETs on ``conns`` connections, plus a fresh connection every 50 ms."""
    counts: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    def count(resp: bytes) -> None:
        key = resp.split(b"\r\n", 1)[0].decode(errors="replace")
        counts[key] = counts.get(key, 0) + 1

    async def keepalive() -> None:
        from proxy_harness import read_response

        reader, writer = await asyncio.open_connection("127.0.0.1", pair.client.outbound_port)
        while time.monotonic() < deadline:
            writer.write(b"GET /load HTTP/1.1\r\nHost: web\r\n\r\n")
            async with asyncio.timeout(5):
                count(await read_response(reader))
        writer.close()

    async def fresh() -> None:
        while time.monotonic() < deadline:
            count(await pair.get("/fresh", "Connection: close\r\n"))
            pair.client.ctx.mtls.close()  # type: ignore[union-attr]  # force handshakes
            await asyncio.sleep(0.05)

    await asyncio.gather(*(keepalive() for _ in range(conns)), fresh())
    return counts


@pytest.fixture
def keys_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """For 3-second certificates: the keygen child costs ~0.3 s of wall time (seconds on a
    loaded CI machine), and a certificate renewed every 1.5 s would then test the machine's
    load, not the renewal logic. The child path is covered by the key-leak tests and by the
    integration rotation test (2-minute certificates, forced renewals under load)."""
    monkeypatch.setattr(keygen, "generate", keygen.generate_here)


@pytest.mark.usefixtures("keys_in_process")
def test_rotation_under_load_drops_no_request(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, cert_ttl=timedelta(seconds=3)) as p:
            first = {w: w.ctx.mtls.identity.material.svid.serial  # type: ignore[union-attr]
                     for w in (p.client, p.server)}
            counts = await _load(p, 4.0)
            assert set(counts) == {"HTTP/1.1 200 OK"}, counts
            assert sum(counts.values()) > 200
            for w in (p.client, p.server):
                ident = w.ctx.mtls.identity  # type: ignore[union-attr]
                assert ident.material is not None and ident.material.generation >= 3
                assert ident.material.svid.serial != first[w]
                assert ident.failures == 0
            assert p.metric(p.client, "identity_renewals_total", result="success") >= 3
            # a forced renewal (SIGUSR1's handler) rotates at once
            ident = p.client.ctx.mtls.identity  # type: ignore[union-attr]
            gen = ident.material.generation  # type: ignore[union-attr]
            ident.renew_now()
            await p.wait_identity(p.client, generation=gen + 1)

    run(main())


@pytest.mark.usefixtures("keys_in_process")
def test_ca_outage_keeps_the_valid_certificate_then_fails_closed_then_recovers(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, cert_ttl=timedelta(seconds=3)) as p:
            p.cp.ca_available = False
            ident = p.client.ctx.mtls.identity  # type: ignore[union-attr]
            expiry = ident.material.not_after  # type: ignore[union-attr]
            while time.time() < expiry - 0.4:  # renewals fail, traffic flows
                assert (await p.get("/during")).startswith(b"HTTP/1.1 200 ")
                await asyncio.sleep(0.1)
            assert ident.failures >= 1 and ident.describe()["state"] == "valid"
            assert "CA refused (503)" in ident.describe()["last_error"]
            await asyncio.sleep(max(expiry - time.time(), 0) + 0.2)
            resp = await p.get("/after")
            assert resp.startswith(b"HTTP/1.1 503 ") and b"no-identity" in resp, resp
            assert ident.describe()["state"] == "expired"
            assert p.metric(p.client, "identity_cert_expiry_timestamp_seconds") == 0
            p.cp.ca_available = True  # retries (capped at 2 s once expired) recover
            await p.wait_identity(generation=2)
            assert (await p.get("/back")).startswith(b"HTTP/1.1 200 ")

    run(main())


@pytest.mark.parametrize("problem", ["missing", "empty", "wrong-sa"])
def test_token_problems_are_failures_with_a_reason_never_the_token(
        tmp_path: Path, problem: str, caplog: Any) -> None:
    async def main() -> None:
        cp = FakeControlPlane(tmp_path / "cp.sock")
        await cp.start()
        cp.enable_identity()
        cp.set(CLIENT_POD, pod_snapshot("client-0", "127.0.0.1"))
        token_file = tmp_path / "token"
        secret = cp.issue_token(CLIENT_POD, "admin")
        if problem == "empty":
            token_file.write_text("\n")
        elif problem == "wrong-sa":
            token_file.write_text(secret)
        metrics = IdentityMetrics()
        manager = SvidManager(cp.path, token_file, metrics=metrics, retry_initial_s=0.05)
        snap = {**pod_snapshot("client-0", "127.0.0.1"), "version": 1}
        manager.set_tables(build_tables(snap))
        manager.start(lambda coro, name: asyncio.get_running_loop().create_task(coro))
        async with asyncio.timeout(5):
            while metrics.renewals["failure"] < 2:
                await asyncio.sleep(0.01)
        await manager.close()
        await cp.close()
        assert manager.material is None
        reason = manager.describe()["last_error"]
        expected = {"missing": "cannot read", "empty": "is empty", "wrong-sa": "(403)"}
        assert expected[problem] in reason
        assert secret not in caplog.text and secret not in reason

    caplog.set_level("INFO")
    run(main())


def test_not_ready_until_a_certificate_is_held(tmp_path: Path) -> None:
    """With mTLS on, /ready waits for the SVID: otherwise the app's endpoint goes live while
    its proxy still refuses meshed peers (and answers its own calls with no-identity)."""

    async def main() -> None:
        async with mesh_pair(tmp_path, ca_up=False, wait=False) as p:
            assert p.client.ctx.tables is not None  # snapshot in, listeners bound...
            assert not p.client.ready  # ...but no certificate yet
            p.cp.ca_available = True
            await p.wait_identity()
            assert p.client.ready and p.server.ready

    run(main())


def test_renewal_uses_the_spare_key_made_after_the_last_issuance(tmp_path: Path) -> None:
    """The next key is made right after an issuance, so a renewal never waits for the key
    generator; a spare for an identity we no longer want is thrown away."""

    async def main() -> None:
        cp = FakeControlPlane(tmp_path / "cp.sock")
        await cp.start()
        cp.enable_identity()
        cp.set(CLIENT_POD, pod_snapshot("client-0", "127.0.0.1"))
        token_file = tmp_path / "token"
        token_file.write_text(cp.issue_token(CLIENT_POD))
        made: list[keygen.KeyAndCsr] = []

        async def maker(identity: SpiffeId) -> keygen.KeyAndCsr:
            made.append(await keygen.generate_here(identity))
            return made[-1]

        manager = SvidManager(cp.path, token_file, key_maker=maker)
        manager.set_tables(build_tables({**pod_snapshot("client-0", "127.0.0.1"), "version": 1}))
        manager.start(lambda coro, name: asyncio.get_running_loop().create_task(coro))
        try:
            for generation in (1, 2):
                async with asyncio.timeout(5):
                    while manager.material is None or manager.material.generation < generation:
                        await asyncio.sleep(0.01)
                    while len(made) < generation + 1:  # ...and the next key is made at once
                        await asyncio.sleep(0.01)
                spki = manager.material.svid.describe()["public_key_sha256"]
                assert spki == hashlib.sha256(made[generation - 1].public_key).hexdigest()
                manager.renew_now()
            assert len(made) == 3  # two issuances, one spare: no key made per renewal wait
        finally:
            await manager.close()
            await cp.close()

    run(main())
