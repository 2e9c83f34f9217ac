"""Trust bundles: the root certificates that anchor one trust domain.

A bundle is bound to the trust domain it speaks for. Peer validation checks the peer's
SPIFFE ID against *that* trust domain, so a certificate chaining to our roots but naming
another domain is still rejected (SPIFFE: an authority is only trusted for its own domain).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.verification import Store

from hybridmesh.identity.spiffe import validate_trust_domain

__all__ = ["InvalidBundle", "TrustBundle", "load_pem_chain"]


class InvalidBundle(ValueError):
    """A trust bundle (or certificate chain) could not be used."""


def load_pem_chain(pem: bytes, what: str = "certificate chain") -> list[x509.Certificate]:
    """Parse one or more PEM certificates; raise `InvalidBundle` on garbage or nothing."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise InvalidBundle(f"{what}: not PEM certificates ({exc})") from None
    if not certs:
        raise InvalidBundle(f"{what}: no certificates")
    return certs


@dataclass(frozen=True)
class TrustBundle:
    """Root CA certificates (PEM) for `trust_domain`; immutable, cheap to pass around."""

    trust_domain: str
    pem: bytes
    certificates: tuple[x509.Certificate, ...] = field(init=False, repr=False, compare=False)
    store: Store = field(init=False, repr=False, compare=False)  # built once, for verifiers

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        certs = load_pem_chain(self.pem, "trust bundle")
        for cert in certs:
            if not _is_ca(cert):
                raise InvalidBundle(
                    f"trust bundle: {cert.subject.rfc4514_string()!r} is not a CA certificate")
        object.__setattr__(self, "certificates", tuple(certs))
        object.__setattr__(self, "store", Store(certs))

    @property
    def pem_text(self) -> str:
        """The bundle as text, the form `ssl.SSLContext.load_verify_locations` takes."""
        return self.pem.decode("ascii")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
