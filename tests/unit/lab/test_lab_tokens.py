"""Per-pod bootstrap token files: private to the proxy's uid, atomic, refreshed, removed."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from hybridmesh import env as hm_env
from hybridmesh.control.model import PodInfo
from hybridmesh.identity.ca import MeshCA
from hybridmesh.lab import sidecar
from hybridmesh.lab.tokens import PodTokens, pod_secret_dir, token_path

POD = PodInfo(name="web-0", namespace="shop", workload="web", index=0, node="n1",
              ip="10.244.1.2", service_account="web-sa", placement="sidecar")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(hm_env, "STATE_DIR", tmp_path)
    return tmp_path


def owner() -> int | None:
    return 1337 if os.geteuid() == 0 else None


def tokens(ca: MeshCA) -> PodTokens:
    return PodTokens(lambda p: ca.issue_bootstrap_token(p.namespace, p.service_account, p.name),
                     owner)


def test_token_file_is_private_to_the_proxy_uid_and_verifies(state: Path) -> None:
    ca = MeshCA.create_root("cluster.local")
    path = tokens(ca).write(POD)
    assert path == token_path("shop", "web-0") == state / "pods" / "shop_web-0" / "token"
    st, dst = path.stat(), path.parent.stat()
    assert stat.S_IMODE(st.st_mode) == 0o400 and stat.S_IMODE(dst.st_mode) == 0o700
    expected_uid = owner() if owner() is not None else os.geteuid()
    assert st.st_uid == dst.st_uid == expected_uid
    claims = ca.verify_bootstrap_token(path.read_text())
    assert tuple(claims) == ("shop", "web-sa", "web-0")
    assert [p.name for p in path.parent.iterdir()] == ["token"]  # no temp file left


def test_refresh_replaces_the_token_atomically_and_remove_deletes_it(state: Path) -> None:
    ca = MeshCA.create_root("cluster.local")
    pod_tokens = tokens(ca)
    first = pod_tokens.write(POD).read_text()

    async def refresh_once() -> None:
        task = asyncio.get_running_loop().create_task(
            pod_tokens.refresh_forever(lambda: [POD], interval_s=0.01))
        path = token_path("shop", "web-0")
        async with asyncio.timeout(5):
            while path.read_text() == first:
                await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(refresh_once())
    assert ca.verify_bootstrap_token(token_path("shop", "web-0").read_text()).pod == "web-0"
    pod_tokens.remove(POD)
    assert not pod_secret_dir("shop", "web-0").exists()


def test_refresh_skips_pods_without_a_token_dir(state: Path) -> None:
    ca = MeshCA.create_root("cluster.local")

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(
            tokens(ca).refresh_forever(lambda: [POD], interval_s=0.01))
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(main())
    assert not pod_secret_dir("shop", "web-0").exists()  # a deleted pod is not resurrected


def test_proxy_argv_carries_the_path_never_the_token(state: Path) -> None:
    argv = sidecar.proxy_argv(POD, token_file=token_path("shop", "web-0"))
    assert argv[-2:] == ["--token-file", str(state / "pods" / "shop_web-0" / "token")]
    assert "--token-file" not in sidecar.proxy_argv(POD)
