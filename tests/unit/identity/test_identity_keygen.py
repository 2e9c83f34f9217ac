"""The key generator child: a fresh key and a CSR proving it, over a pipe; every failure is
a `KeygenError` whose message holds no key; the parent never imports `cryptography`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hybridmesh.identity import _x509, keygen
from hybridmesh.identity.keygen import KeygenError, generate, generate_here
from hybridmesh.identity.spiffe import SpiffeId

ID = SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/web")


def test_child_makes_a_key_and_a_csr_for_exactly_that_identity() -> None:
    first, second = asyncio.run(generate(ID)), asyncio.run(generate(ID))
    key = serialization.load_pem_private_key(first.key_pem, password=None)
    csr = x509.load_pem_x509_csr(first.csr_pem)
    assert csr.is_signature_valid
    assert _x509.spki_der(csr.public_key()) == _x509.spki_der(key.public_key()) \
        == first.public_key
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(ID)]
    assert first.public_key != second.public_key  # a new key every time
    assert "PRIVATE" not in repr(first) and first.key_pem.decode()[40:80] not in repr(first)


def test_in_process_generation_makes_the_same_kind_of_pair() -> None:
    made = asyncio.run(generate_here(ID))
    csr = x509.load_pem_x509_csr(made.csr_pem)
    key = serialization.load_pem_private_key(made.key_pem, password=None)
    assert csr.is_signature_valid
    assert _x509.spki_der(key.public_key()) == made.public_key


def _fake_python(tmp_path: Path, body: str) -> str:
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o700)
    return str(path)


@pytest.mark.parametrize(("body", "message"), [
    ("echo 'no such thing' >&2; exit 3", "exited with 3: no such thing"),
    ("echo garbage", "not one key and one CSR"),
    ("printf -- '-----BEGIN PRIVATE KEY-----\\n!!\\n-----END PRIVATE KEY-----\\n'", "malformed"),
])
def test_child_failures_are_typed_and_say_why(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(KeygenError, match=message):
        asyncio.run(generate(ID, python=_fake_python(tmp_path, body)))


def test_a_stuck_child_is_killed_at_the_timeout(tmp_path: Path) -> None:
    with pytest.raises(KeygenError, match="timed out"):
        asyncio.run(generate(ID, python=_fake_python(tmp_path, "exec sleep 30"), timeout=0.3))


def test_a_missing_interpreter_is_reported(tmp_path: Path) -> None:
    with pytest.raises(KeygenError, match="cannot start"):
        asyncio.run(generate(ID, python=str(tmp_path / "missing")))


def test_bad_arguments_exit_2_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert keygen.main(["not-an-id"]) == 2
    assert keygen.main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_the_long_lived_side_never_imports_cryptography() -> None:
    """Issue #3: the proxy's identity, TLS and mTLS modules stay free of `cryptography`."""
    code = ("import sys, hybridmesh.proxy.identity, hybridmesh.proxy.mtls, "
            "hybridmesh.proxy.mtls_server, hybridmesh.identity.tls; "
            "sys.exit('cryptography' in sys.modules or '_cffi_backend' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
