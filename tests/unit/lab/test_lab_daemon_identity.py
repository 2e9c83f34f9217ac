"""The lab daemon's CA: the topology's trust domain, or an intermediate under a user root."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hybridmesh import env as hm_env
from hybridmesh.control.plane import ControlPlane
from hybridmesh.identity.ca import CaError
from hybridmesh.lab.daemon import make_authority
from hybridmesh.resources import load_text

TOPO = """
apiVersion: hybridmesh.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: corp.example}
"""


def _user_root(tmp_path: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp root")])
    now = datetime.now(UTC)
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=9))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True).sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "root.pem").write_bytes(pem)
    (tmp_path / "root.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return tmp_path / "root.pem", tmp_path / "root.key", pem


def test_the_daemon_ca_follows_the_topology_trust_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hm_env.CA_CERT_ENV, raising=False)
    monkeypatch.delenv(hm_env.CA_KEY_ENV, raising=False)
    authority = make_authority(ControlPlane(load_text(TOPO, "t.yaml")))
    assert authority.trust_domain == "corp.example"
    assert "corp.example root CA" in authority.describe()["caSubject"]


def test_a_user_root_from_the_environment_anchors_the_mesh(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key, pem = _user_root(tmp_path)
    monkeypatch.setenv(hm_env.CA_CERT_ENV, str(cert))
    monkeypatch.setenv(hm_env.CA_KEY_ENV, str(key))
    authority = make_authority(ControlPlane(load_text(TOPO, "t.yaml")))
    assert authority.bundle_pem == pem  # peers trust the user's root only
    assert "intermediate" in authority.describe()["caSubject"]
    monkeypatch.delenv(hm_env.CA_KEY_ENV)
    with pytest.raises(CaError, match="both"):
        make_authority(ControlPlane(load_text(TOPO, "t.yaml")))
