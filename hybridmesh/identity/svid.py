"""The proxy's SVID as PEM: what a long-lived proxy holds, without importing `cryptography`.

`workload.Svid` keeps a `cryptography` key object and parses with `cryptography`; that library
costs every proxy worker ~10 MB of RSS for facts it only reads. Here the certificates are read
by the small DER reader (`_der`) and the key stays PEM bytes in memory, handed to OpenSSL
through a memfd (`tls.py`) and never shown: repr, str and `describe()` carry public facts
only, and pickling is refused. The key itself is made by a short-lived child (`keygen`).

Construction checks what `workload.Svid` checks — one valid URI SAN in the roots' trust
domain, a leaf and not a CA, the key is the one the CSR asked for — but not the time: an
expired SVID can still be loaded, described and renewed. Chain signatures are OpenSSL's job
when the contexts are built (`load_verify_locations`) and at every handshake.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hybridmesh.identity._der import CertFacts, DerError, parse_certificate, pem_blocks
from hybridmesh.identity._leaf import PeerIdentityError, leaf_identity
from hybridmesh.identity.spiffe import SpiffeId, validate_trust_domain

__all__ = ["InvalidPemSvid", "PemSvid", "TrustRoots"]

_CERTIFICATE = "CERTIFICATE"


class InvalidPemSvid(ValueError):
    """A chain, key and roots do not form a usable SVID (the message has no key material)."""


def _certificates(pem: bytes, what: str) -> list[CertFacts]:
    try:
        certs = [parse_certificate(der) for der in pem_blocks(pem, _CERTIFICATE)]
    except DerError as exc:
        raise InvalidPemSvid(f"{what}: not PEM certificates ({exc})") from None
    if not certs:
        raise InvalidPemSvid(f"{what}: no certificates")
    return certs


class TrustRoots:
    """The root certificates (PEM) of one trust domain, as OpenSSL will load them."""

    __slots__ = ("count", "pem", "trust_domain")

    def __init__(self, trust_domain: str, pem: bytes) -> None:
        validate_trust_domain(trust_domain)
        certs = _certificates(pem, "trust bundle")
        for cert in certs:
            if not cert.is_ca:
                raise InvalidPemSvid(f"trust bundle: {cert.issuer!r}-issued certificate "
                                     f"{cert.serial:x} is not a CA certificate")
        self.trust_domain, self.pem, self.count = trust_domain, pem, len(certs)

    @property
    def pem_text(self) -> str:
        """The roots as text, the form `ssl.SSLContext.load_verify_locations` takes."""
        return self.pem.decode("ascii")

    def __repr__(self) -> str:
        return f"TrustRoots({self.trust_domain!r}, {self.count} certificate(s))"


class PemSvid:
    """An X509-SVID: chain and key as PEM, and the roots to verify peers with."""

    __slots__ = ("_bundle", "_chain", "_chain_pem", "_identity", "_key_pem", "_leaf")

    def __init__(self, chain_pem: bytes, key_pem: bytes, bundle: TrustRoots, *,
                 public_key: bytes) -> None:
        """`public_key` is the SubjectPublicKeyInfo DER of `key_pem` (from the CSR that
        asked for this certificate): the leaf must certify exactly that key."""
        chain = _certificates(chain_pem, "SVID chain")
        try:
            identity = leaf_identity(chain[0], bundle.trust_domain)
        except PeerIdentityError as exc:
            raise InvalidPemSvid(str(exc)) from None
        if chain[0].spki != public_key:
            raise InvalidPemSvid("private key does not match the SVID's certificate")
        self._chain_pem, self._key_pem, self._bundle = chain_pem, key_pem, bundle
        self._chain, self._leaf, self._identity = chain, chain[0], identity

    @property
    def identity(self) -> SpiffeId:
        return self._identity

    @property
    def serial(self) -> int:
        return self._leaf.serial

    @property
    def not_before(self) -> datetime:
        return self._leaf.not_before

    @property
    def not_after(self) -> datetime:
        return self._leaf.not_after

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before

    @property
    def chain_pem(self) -> bytes:
        """Leaf then intermediates: public, what the proxy presents in the handshake."""
        return self._chain_pem

    @property
    def bundle(self) -> TrustRoots:
        return self._bundle

    def private_key_pem(self) -> bytes:
        """The key (PKCS#8 PEM) for OpenSSL only; the caller must not log or persist it."""
        return self._key_pem

    def describe(self) -> dict[str, Any]:
        """Public facts for status output and logs; never key material."""
        return {
            "identity": str(self._identity),
            "trust_domain": self._identity.trust_domain,
            "serial": f"{self.serial:x}",
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "issuer": self._leaf.issuer,
            "chain_length": len(self._chain),
            "key_type": self._leaf.key_type,
            "public_key_sha256": self._leaf.spki_sha256,
        }

    def __repr__(self) -> str:
        return (f"PemSvid(identity={str(self._identity)!r}, serial={self.serial:x}, "
                f"not_after={self.not_after:%FT%TZ})")

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("an SVID holds a private key and cannot be pickled or copied")
