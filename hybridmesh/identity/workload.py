"""Proxy side of identity: the private key, the CSR, the SVID it gets back, and when to
renew it.

The private key is generated in the proxy and never leaves it: it is only serialized on
explicit request (`private_key_pem`, for handing to OpenSSL through memory, or
`write_private_key`, to a 0600 file). `Svid` keeps the key but never shows it: its repr,
str and `describe()` carry public facts only, and it refuses to be pickled.
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hybridmesh.identity import _x509
from hybridmesh.identity._peer import (
    Expected,
    PeerIdentityError,
    leaf_identity,
    validate_peer_certificate,
)
from hybridmesh.identity.bundle import InvalidBundle, TrustBundle, load_pem_chain
from hybridmesh.identity.spiffe import SpiffeId

__all__ = [
    "RENEW_JITTER",
    "Expected",
    "InvalidSvid",
    "PeerIdentityError",
    "Svid",
    "make_csr",
    "new_key",
    "private_key_pem",
    "renew_at",
    "validate_peer_certificate",
    "write_private_key",
]

RENEW_JITTER: Final = 0.1  # ± fraction of the half-life, so a fleet does not renew in step
_SAFETY_FRACTION: Final = 0.1  # never plan a renewal inside the last 10% of the lifetime


class InvalidSvid(ValueError):
    """A certificate chain, key and bundle do not form a usable SVID."""


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key: the curve every TLS 1.3 stack accelerates."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM, *in memory*; the caller must not log or persist it."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """Write the key to `path` with mode 0600, atomically (temp file + rename).

    The temporary file is created 0600 with O_EXCL, so the key is never readable by
    others, not even for an instant, and a symlink planted at the temp name is refused.
    """
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_key_pem(key))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_csr(key: ec.EllipticCurvePrivateKey, identity: SpiffeId) -> bytes:
    """A PEM CSR with an empty subject and exactly one URI SAN: `identity`.

    The CA checks it asks for the identity the control plane decided; the CSR's real job
    is proof of possession (it is signed with `key`).
    """
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(identity))])
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(san, critical=True)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


class Svid:
    """An X509-SVID: leaf + chain (PEM), its private key, and the bundle to verify peers.

    Construction checks the pieces fit (one valid URI SAN in the bundle's trust domain,
    a leaf and not a CA, the key matches) but not the time: an expired SVID can still be
    loaded, described and renewed.
    """

    __slots__ = ("_bundle", "_chain_pem", "_identity", "_key", "_leaf")

    def __init__(self, chain_pem: bytes, key: ec.EllipticCurvePrivateKey,
                 bundle: TrustBundle) -> None:
        try:
            leaf = load_pem_chain(chain_pem, "SVID chain")[0]
            identity = leaf_identity(leaf, bundle.trust_domain)
        except (InvalidBundle, PeerIdentityError) as exc:
            raise InvalidSvid(str(exc)) from None
        if not _x509.keys_match(leaf, key):
            raise InvalidSvid("private key does not match the SVID's certificate")
        self._chain_pem, self._key, self._bundle = chain_pem, key, bundle
        self._leaf, self._identity = leaf, identity

    @property
    def identity(self) -> SpiffeId:
        return self._identity

    @property
    def serial(self) -> int:
        return self._leaf.serial_number

    @property
    def not_before(self) -> datetime:
        return self._leaf.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self._leaf.not_valid_after_utc

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before

    @property
    def chain_pem(self) -> bytes:
        """Leaf then intermediates: public, what the proxy presents in the handshake."""
        return self._chain_pem

    @property
    def bundle(self) -> TrustBundle:
        return self._bundle

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The key object (its repr shows no material); serialize only via `private_key_pem`."""
        return self._key

    def private_key_pem(self) -> bytes:
        """The key as PEM for OpenSSL (`tls.SvidLike`); the caller must not log or persist it."""
        return private_key_pem(self._key)

    def describe(self) -> dict[str, Any]:
        """Public facts for status output and logs; never key material."""
        return {
            "identity": str(self._identity),
            "trust_domain": self._identity.trust_domain,
            "serial": f"{self.serial:x}",
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "issuer": self._leaf.issuer.rfc4514_string(),
            "chain_length": len(load_pem_chain(self._chain_pem)),
            "key_type": _x509.describe_public_key(self._leaf.public_key()),
            "public_key_sha256": _x509.spki_sha256(self._leaf.public_key()),
        }

    def __repr__(self) -> str:
        return (f"Svid(identity={str(self._identity)!r}, serial={self.serial:x}, "
                f"not_after={self.not_after:%FT%TZ})")

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("an Svid holds a private key and cannot be pickled or copied")


def renew_at(svid: Svid, now: datetime, rng: random.Random, *, issued: datetime) -> datetime:
    """When to start renewing: half the *actual* lifetime after ``issued`` (when the SVID was
    received) ± `RENEW_JITTER` of it, never earlier than `now`, and never later than expiry
    minus 10% of that lifetime.

    Measured from ``issued``, not ``not_before``: the CA backdates ``not_before`` by
    ``CLOCK_SKEW`` (2 min) for peers' clock drift, so a 2-minute certificate measured from
    ``not_before`` would be "half-way" the moment it arrives and renew at once, in a loop.
    If `now` is already past the last point the result is in the past: renew at once.
    """
    start = min(max(issued, svid.not_before), svid.not_after)
    life = svid.not_after - start
    half = life / 2
    jitter = half * (RENEW_JITTER * (2 * rng.random() - 1))
    planned = start + half + jitter
    deadline = svid.not_after - life * _SAFETY_FRACTION
    return min(max(planned, now), deadline)
