"""The control plane's CA: token + CSR in, exactly the pod's SPIFFE identity out; clear 4xx."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hybridmesh._http.message import Headers, Request, Response
from hybridmesh._http.router import Router
from hybridmesh.control.identity import (
    IdentityAuthority,
    IdentityError,
    load_ca,
    register_identity_routes,
)
from hybridmesh.control.plane import ControlPlane
from hybridmesh.identity.ca import CaError, MeshCA
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.workload import Svid, make_csr, new_key
from hybridmesh.resources import load_documents, load_text

TOPO = """
apiVersion: hybridmesh.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: corp.example, certificateTTL: 2m}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  serviceAccount: web-sa
  replicas: 2
  command: ["srv"]
"""
WEB_ID = SpiffeId.for_workload("corp.example", "shop", "web-sa")


def authority(topo: str = TOPO) -> tuple[IdentityAuthority, ControlPlane]:
    control = ControlPlane(load_text(topo, "t.yaml"))
    return IdentityAuthority(MeshCA.create_root("corp.example"), control), control


def token_for(auth: IdentityAuthority, control: ControlPlane, key: str = "shop/web-0") -> str:
    pod = control.plan.pod(key)
    assert pod is not None
    return auth.issue_token(pod)


def call(router: Router, method: str, path: str, body: Any = None,
         raw: bytes | None = None) -> tuple[int, Any, bytes]:
    payload = raw if raw is not None else json.dumps(body).encode()
    req = Request(method, path, headers=Headers(), body=payload)
    handler, params = router.resolve(method, path)

    async def run() -> Response:
        return await handler(req, params)

    resp = asyncio.run(run())
    data = resp.body
    is_json = dict(resp.headers).get("Content-Type") == "application/json"
    return resp.status, json.loads(data) if is_json else None, data


def routed() -> tuple[Router, IdentityAuthority, ControlPlane]:
    auth, control = authority()
    router = Router()
    register_identity_routes(router, auth)
    return router, auth, control


def test_sign_issues_exactly_the_pods_service_account_identity_with_the_mesh_ttl() -> None:
    router, auth, control = routed()
    key = new_key()
    csr = make_csr(key, WEB_ID).decode()
    status, body, _ = call(router, "POST", "/v1/identity/sign",
                           {"token": token_for(auth, control), "csr": csr})
    assert status == 200, body
    assert body["identity"] == "spiffe://corp.example/ns/shop/sa/web-sa"
    svid = Svid(body["certificateChain"].encode(), key, auth_bundle(body))
    assert svid.identity == WEB_ID
    issued = datetime.fromisoformat(body["notAfter"]) - datetime.now(UTC)
    assert timedelta(seconds=100) < issued <= timedelta(minutes=2)  # certificateTTL: 2m
    assert body["trustBundle"].encode() == auth.bundle_pem
    assert auth.issued == 1


def auth_bundle(body: dict[str, Any]) -> Any:
    from hybridmesh.identity.bundle import TrustBundle

    return TrustBundle("corp.example", body["trustBundle"].encode())


def test_a_csr_asking_for_another_identity_is_refused() -> None:
    router, auth, control = routed()
    other = SpiffeId.for_workload("corp.example", "kube-system", "admin")
    status, body, _ = call(router, "POST", "/v1/identity/sign",
                           {"token": token_for(auth, control),
                            "csr": make_csr(new_key(), other).decode()})
    assert status == 400 and body["error"] == "csr-rejected"
    assert "spiffe://corp.example/ns/shop/sa/web-sa" in body["message"]
    assert auth.refused == 1 and auth.issued == 0


@pytest.mark.parametrize("token", ["", "garbage", "hmb1.e30.AAAA"])
def test_bad_tokens_get_401_or_400(token: str) -> None:
    router, _, _ = routed()
    status, body, _ = call(router, "POST", "/v1/identity/sign",
                           {"token": token, "csr": make_csr(new_key(), WEB_ID).decode()})
    assert status in (400, 401), body
    assert body["error"] in ("invalid-token", "bad-request")


def test_a_token_from_another_ca_is_refused() -> None:
    router, _, control = routed()
    pod = control.plan.pod("shop/web-0")
    assert pod is not None
    forged = MeshCA.create_root("corp.example").issue_bootstrap_token("shop", "web-sa", "web-0")
    status, body, _ = call(router, "POST", "/v1/identity/sign",
                           {"token": forged, "csr": make_csr(new_key(), WEB_ID).decode()})
    assert (status, body["error"]) == (401, "invalid-token")
    assert "forged or other CA" in body["message"]


def test_an_expired_token_is_refused() -> None:
    control = ControlPlane(load_text(TOPO, "t.yaml"))
    ca = MeshCA.create_root("corp.example")
    pod = control.plan.pod("shop/web-0")
    assert pod is not None
    old = IdentityAuthority(ca, control).issue_token(pod, ttl=timedelta(seconds=1))
    later = IdentityAuthority(ca, control,
                              clock=lambda: datetime.now(UTC) + timedelta(seconds=5))
    with pytest.raises(IdentityError) as err:
        later.sign(old, make_csr(new_key(), WEB_ID))
    assert (err.value.status, err.value.code) == (401, "invalid-token")
    assert "expired" in err.value.message


def test_a_deleted_pod_or_a_changed_service_account_gets_no_certificate() -> None:
    auth, control = authority()
    token = token_for(auth, control, "shop/web-1")
    control.apply(load_documents(TOPO.replace("replicas: 2", "replicas: 1"), "t.yaml"))
    with pytest.raises(IdentityError) as err:
        auth.sign(token, make_csr(new_key(), WEB_ID))
    assert (err.value.status, err.value.code) == (403, "pod-gone")
    token0 = token_for(auth, control, "shop/web-0")
    control.apply(load_documents(TOPO.replace("web-sa", "other-sa"), "t.yaml"))
    with pytest.raises(IdentityError) as err:
        auth.sign(token0, make_csr(new_key(), WEB_ID))
    assert (err.value.status, err.value.code) == (403, "service-account-changed")


def test_a_changed_trust_domain_is_a_clear_409() -> None:
    auth, control = authority()
    token = token_for(auth, control)
    control.apply(load_documents(TOPO.replace("corp.example", "other.example"), "t.yaml"))
    with pytest.raises(IdentityError) as err:
        auth.sign(token, make_csr(new_key(), WEB_ID))
    assert err.value.status == 409 and "lab down" in err.value.message


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"token": "x"}', b'{"csr": "x"}',
                                 b'{"token": 1, "csr": "x"}', b'{"token": "t", "csr": "\xc3\xa9"}'])
def test_malformed_sign_requests_are_400_json(raw: bytes) -> None:
    router, _, _ = routed()
    status, body, _ = call(router, "POST", "/v1/identity/sign", raw=raw)
    assert status == 400 and body["error"] == "bad-request", body


def test_oversized_requests_are_413() -> None:
    router, _, _ = routed()
    status, body, _ = call(router, "POST", "/v1/identity/sign",
                           {"token": "t", "csr": "A" * 20000})
    assert status == 413 and body["error"] == "too-large"


def test_bundle_route_serves_the_roots_as_pem() -> None:
    router, auth, _ = routed()
    status, _, data = call(router, "GET", "/v1/identity/bundle", raw=b"")
    assert status == 200 and data == auth.bundle_pem
    assert x509.load_pem_x509_certificates(data)[0].subject.rfc4514_string().startswith(
        "CN=corp.example root CA")


def test_describe_has_no_key_material() -> None:
    auth, _ = authority()
    text = json.dumps(auth.describe())
    assert "PRIVATE" not in text and auth.describe()["trustDomain"] == "corp.example"


def _root(tmp_path: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "user root")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "root.pem").write_bytes(pem)
    (tmp_path / "root.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return tmp_path / "root.pem", tmp_path / "root.key", pem


def test_load_ca_under_a_user_root_trusts_only_that_root(tmp_path: Path) -> None:
    cert, key, pem = _root(tmp_path)
    ca = load_ca("corp.example", root_cert=cert, root_key=key)
    assert ca.bundle_pem == pem
    assert load_ca("corp.example").bundle_pem != pem
    with pytest.raises(CaError, match="both"):
        load_ca("corp.example", root_cert=cert)
    with pytest.raises(CaError, match="cannot read"):
        load_ca("corp.example", root_cert=tmp_path / "nope", root_key=key)
