"""Just enough DER to read the X.509 facts a proxy needs, without `cryptography` (private).

Why: `cryptography` (its Rust extension and OpenSSL bindings) costs a proxy worker ~10 MB of
RSS, yet the long-lived proxy only needs to *read* a few fields of certificates that OpenSSL
has already verified (its own SVID from the CA, its peer's leaf after the handshake): validity,
serial, issuer, the three extensions that make a leaf an SVID, and the public key. Signatures
and chain building stay with OpenSSL (`ssl`) and, on the CA side, with `cryptography`.

The reader is strict where it matters and refuses rather than guesses: definite lengths only,
no duplicate extensions, exactly the tag it expects at each position. Every malformed input
raises `DerError` (a ValueError), never IndexError or UnicodeError.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

__all__ = [
    "CertFacts",
    "DerError",
    "csr_public_key",
    "parse_certificate",
    "pem_blocks",
]

_SEQUENCE: Final = 0x30
_SET: Final = 0x31
_INTEGER: Final = 0x02
_BIT_STRING: Final = 0x03
_OCTET_STRING: Final = 0x04
_OID: Final = 0x06
_BOOLEAN: Final = 0x01
_UTC_TIME: Final = 0x17
_GENERALIZED_TIME: Final = 0x18
_URI: Final = 0x86  # GeneralName [6] IMPLICIT IA5String
_BASIC_CONSTRAINTS: Final = bytes.fromhex("551d13")
_KEY_USAGE: Final = bytes.fromhex("551d0f")
_SUBJECT_ALT_NAME: Final = bytes.fromhex("551d11")
_EC_PUBLIC_KEY: Final = bytes.fromhex("2a8648ce3d0201")
_RSA: Final = bytes.fromhex("2a864886f70d010101")
_CURVES: Final = {bytes.fromhex("2a8648ce3d030107"): "P-256", bytes.fromhex("2b81040022"): "P-384",
                  bytes.fromhex("2b81040023"): "P-521"}
_NAME_KEYS: Final = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
                     "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.9": "STREET",
                     "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID"}
_STRING_CODECS: Final = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1",
                         0x1E: "utf-16-be", 0x1C: "utf-32-be"}
_PEM: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)


class DerError(ValueError):
    """The bytes are not the DER structure expected."""


@dataclass(frozen=True, slots=True)
class _Tlv:
    tag: int
    header: int  # where the TLV starts
    start: int  # where its content starts
    end: int


def _tlv(data: bytes, pos: int, limit: int) -> _Tlv:
    if pos + 2 > limit:
        raise DerError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise DerError("high tag numbers are not used in certificates")
    start = pos + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > limit:
            raise DerError("bad DER length")
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    if start + length > limit:
        raise DerError("DER length runs past its container")
    return _Tlv(tag, pos, start, start + length)


def _children(data: bytes, outer: _Tlv) -> list[_Tlv]:
    out, pos = [], outer.start
    while pos < outer.end:
        child = _tlv(data, pos, outer.end)
        out.append(child)
        pos = child.end
    return out


def _expect(tlv: _Tlv, tag: int, what: str) -> _Tlv:
    if tlv.tag != tag:
        raise DerError(f"{what}: expected tag 0x{tag:02x}, got 0x{tlv.tag:02x}")
    return tlv


def _top(data: bytes, what: str) -> _Tlv:
    outer = _expect(_tlv(data, 0, len(data)), _SEQUENCE, what)
    if outer.end != len(data):
        raise DerError(f"{what}: trailing bytes")
    return outer


def _oid_text(raw: bytes) -> str:
    if not raw:
        raise DerError("empty OID")
    arcs, value = [], 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def _time(data: bytes, tlv: _Tlv) -> datetime:
    """A validity time: ``YYMMDDHHMMSSZ`` (UTCTime; RFC 5280's pivot: 50-99 are 19xx) or
    ``YYYYMMDDHHMMSSZ`` (GeneralizedTime). Parsed by hand, not ``datetime.strptime``,
    which imports ``_strptime`` and ``calendar`` and compiles a regex (~70 KB of RSS in
    every mTLS proxy, for one call per certificate), and stricter than it (exact digits)."""
    text = data[tlv.start:tlv.end].decode("ascii", "replace")
    if tlv.tag not in (_UTC_TIME, _GENERALIZED_TIME):
        raise DerError("validity is not a UTCTime or GeneralizedTime")
    digits = text[:-1]
    wanted = 12 if tlv.tag == _UTC_TIME else 14
    if len(digits) != wanted or not text.endswith("Z") or not (
            digits.isascii() and digits.isdigit()):
        raise DerError(f"bad certificate time {text!r}")
    if tlv.tag == _UTC_TIME:
        year = int(digits[:2])
        digits = str(1900 + year if year >= 50 else 2000 + year) + digits[2:]
    month, day, hour, minute, second = (int(digits[i:i + 2]) for i in range(4, 14, 2))
    try:
        return datetime(int(digits[:4]), month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise DerError(f"bad certificate time {text!r}") from None


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What the mesh reads from one certificate; `der` is the certificate itself."""

    der: bytes
    serial: int
    not_before: datetime
    not_after: datetime
    issuer: str  # RFC 4514, as cryptography's ``Name.rfc4514_string()`` spells it
    spki: bytes  # SubjectPublicKeyInfo DER: what "the key" of the certificate is
    is_ca: bool | None  # basicConstraints cA; None without the extension
    key_usage: frozenset[str] | None  # None without the extension
    uri_sans: tuple[str, ...]

    @property
    def key_type(self) -> str:
        """``EC P-256``, ``RSA 2048``...: public information only."""
        return _describe_spki(self.spki)

    @property
    def spki_sha256(self) -> str:
        return hashlib.sha256(self.spki).hexdigest()


def parse_certificate(der: bytes) -> CertFacts:
    """The facts of one DER certificate, or `DerError`. Verifies nothing cryptographic."""
    try:
        return _parse_certificate(bytes(der))
    except DerError:
        raise
    except (IndexError, ValueError) as exc:  # a short field list, a bad string encoding
        raise DerError(f"malformed certificate: {exc}") from None


def _parse_certificate(der: bytes) -> CertFacts:
    cert = _children(der, _top(der, "certificate"))
    if len(cert) != 3:
        raise DerError("certificate: expected tbsCertificate, algorithm, signature")
    tbs = _children(der, _expect(cert[0], _SEQUENCE, "tbsCertificate"))
    if tbs and tbs[0].tag == 0xA0:  # [0] EXPLICIT version
        tbs = tbs[1:]
    if len(tbs) < 6:
        raise DerError("tbsCertificate: too few fields")
    serial_tlv = _expect(tbs[0], _INTEGER, "serial")
    validity = _children(der, _expect(tbs[3], _SEQUENCE, "validity"))
    if len(validity) != 2:
        raise DerError("validity: expected notBefore and notAfter")
    spki = _expect(tbs[5], _SEQUENCE, "subjectPublicKeyInfo")
    extensions = _extensions(der, [t for t in tbs[6:] if t.tag == 0xA3])
    return CertFacts(
        der=der,
        serial=int.from_bytes(der[serial_tlv.start:serial_tlv.end], "big", signed=True),
        not_before=_time(der, validity[0]), not_after=_time(der, validity[1]),
        issuer=_rfc4514(der, _expect(tbs[2], _SEQUENCE, "issuer")),
        spki=der[spki.header:spki.end],
        is_ca=_basic_ca(der, extensions.get(_BASIC_CONSTRAINTS)),
        key_usage=_key_usage(der, extensions.get(_KEY_USAGE)),
        uri_sans=_uris(der, extensions.get(_SUBJECT_ALT_NAME)))


def _extensions(der: bytes, wrappers: list[_Tlv]) -> dict[bytes, _Tlv]:
    """OID -> the extension's OCTET STRING; a repeated extension is refused (RFC 5280)."""
    if len(wrappers) > 1:
        raise DerError("more than one extensions field")
    found: dict[bytes, _Tlv] = {}
    for wrapper in wrappers:
        seq = _expect(_children(der, wrapper)[0], _SEQUENCE, "extensions")
        for ext in _children(der, seq):
            parts = _children(der, _expect(ext, _SEQUENCE, "extension"))
            oid = der[_expect(parts[0], _OID, "extension id").start:parts[0].end]
            if oid in found:
                raise DerError(f"duplicate extension {_oid_text(oid)}")
            found[oid] = _expect(parts[-1], _OCTET_STRING, "extension value")
    return found


def _basic_ca(der: bytes, value: _Tlv | None) -> bool | None:
    if value is None:
        return None
    fields = _children(der, _expect(_tlv(der, value.start, value.end), _SEQUENCE,
                                    "basicConstraints"))
    if fields and fields[0].tag == _BOOLEAN:
        return der[fields[0].start:fields[0].end] != b"\x00"
    return False


_USAGE_BITS: Final = ("digital_signature", "content_commitment", "key_encipherment",
                      "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                      "encipher_only", "decipher_only")


def _key_usage(der: bytes, value: _Tlv | None) -> frozenset[str] | None:
    if value is None:
        return None
    bits = _expect(_tlv(der, value.start, value.end), _BIT_STRING, "keyUsage")
    raw = der[bits.start + 1:bits.end]  # first content byte: unused-bit count
    return frozenset(name for i, name in enumerate(_USAGE_BITS)
                     if i // 8 < len(raw) and raw[i // 8] & (0x80 >> (i % 8)))


def _uris(der: bytes, value: _Tlv | None) -> tuple[str, ...]:
    if value is None:
        return ()
    names = _expect(_tlv(der, value.start, value.end), _SEQUENCE, "subjectAltName")
    return tuple(der[n.start:n.end].decode("ascii") for n in _children(der, names)
                 if n.tag == _URI)


def _rfc4514(der: bytes, name: _Tlv) -> str:
    """RFC 4514 text: RDNs last to first, multi-valued ones joined by ``+``."""
    rdns = []
    for rdn in _children(der, name):
        parts = []
        for atv in _children(der, _expect(rdn, _SET, "RDN")):
            oid_tlv, value = _children(der, _expect(atv, _SEQUENCE, "attribute"))[:2]
            oid = _oid_text(der[oid_tlv.start:oid_tlv.end])
            parts.append(f"{_NAME_KEYS.get(oid, oid)}={_escape(_string(der, value))}")
        rdns.append("+".join(parts))
    return ",".join(reversed(rdns))


def _string(der: bytes, tlv: _Tlv) -> str:
    codec = _STRING_CODECS.get(tlv.tag)
    raw = der[tlv.start:tlv.end]
    return raw.decode(codec) if codec else "#" + der[tlv.header:tlv.end].hex()


def _escape(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    return out[:-1] + "\\ " if out.endswith(" ") and len(out) > 1 else out


def _describe_spki(spki: bytes) -> str:
    outer = _children(spki, _top(spki, "subjectPublicKeyInfo"))
    algorithm = _children(spki, _expect(outer[0], _SEQUENCE, "algorithm"))
    oid = spki[algorithm[0].start:algorithm[0].end]
    if oid == _EC_PUBLIC_KEY and len(algorithm) > 1:
        curve = spki[algorithm[1].start:algorithm[1].end]
        return f"EC {_CURVES.get(curve, _oid_text(curve))}"
    if oid == _RSA:
        key = spki[outer[1].start + 1:outer[1].end]
        modulus = _children(key, _top(key, "RSA key"))[0]
        return f"RSA {int.from_bytes(key[modulus.start:modulus.end], 'big').bit_length()}"
    return _oid_text(oid)


def csr_public_key(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo DER of a PKCS#10 CSR (what the CA will certify)."""
    try:
        info = _children(der, _top(der, "CSR"))[0]
        spki = _children(der, _expect(info, _SEQUENCE, "certificationRequestInfo"))[2]
        _expect(spki, _SEQUENCE, "subjectPublicKeyInfo")
    except DerError:
        raise
    except (IndexError, ValueError):
        raise DerError("malformed CSR") from None
    return der[spki.header:spki.end]


def pem_blocks(pem: bytes, label: str) -> list[bytes]:
    """The DER of every ``-----BEGIN <label>-----`` block, in order; `DerError` on bad base64."""
    out = []
    for match in _PEM.finditer(pem):
        if match.group(1).decode() != label:
            continue
        try:
            out.append(binascii.a2b_base64(b"".join(match.group(2).split()), strict_mode=True))
        except binascii.Error as exc:
            raise DerError(f"{label}: bad base64 ({exc})") from None
    return out
