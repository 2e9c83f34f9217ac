"""A fresh private key and its CSR, made in a short-lived child process of the proxy.

``python -m hybridmesh.identity.keygen SPIFFE_ID`` writes to its stdout (a pipe to its
parent) the new key as PKCS#8 PEM, then a CSR for ``SPIFFE_ID`` signed with it, and exits.

Why a child: generating a key and signing a CSR needs `cryptography`, which costs ~10 MB of
RSS in every long-lived proxy worker for work done once per rotation. The child pays that for
a fraction of a second. The key's security properties (issue #4) do not change: it is made by
the proxy's own side of the pod (a child of the proxy: same uid, namespaces and cgroup), it
crosses only a pipe between the two (never a file, an argument, the environment or a log),
and the parent keeps it in memory. Errors from the child are reported by exit status and a
message on stderr that never contains the key (the child writes the key last-but-one and only
to stdout).

`generate` is the parent's side; it does not import `cryptography`. `generate_here` makes
the same pair in the calling process, for one that is not per pod and holds many identities
(the node proxy): there a child per issuance would only add latency (a takeover waits for its
pods' SVIDs) to save memory that one process per node does not need to save.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Final, NamedTuple

from hybridmesh.identity._der import DerError, csr_public_key, pem_blocks
from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId

__all__ = ["KeyAndCsr", "KeygenError", "generate", "generate_here", "main"]

MODULE: Final = "hybridmesh.identity.keygen"
TIMEOUT_S: Final = 30.0
_KEY_LABEL: Final = "PRIVATE KEY"
_CSR_LABEL: Final = "CERTIFICATE REQUEST"
_STDERR_SHOWN: Final = 300


class KeygenError(Exception):
    """The key generator failed; the message is safe to log (it never holds key material)."""


class KeyAndCsr(NamedTuple):
    """A key and its CSR; `public_key` is the CSR's SubjectPublicKeyInfo DER."""

    key_pem: bytes
    csr_pem: bytes
    public_key: bytes

    def __repr__(self) -> str:  # the tuple's default repr would print the key
        return f"KeyAndCsr(csr={len(self.csr_pem)} bytes, key=<hidden>)"


async def generate(identity: SpiffeId, *, python: str = sys.executable,
                   timeout: float = TIMEOUT_S) -> KeyAndCsr:
    """Run the child for `identity` and return what it made, or raise `KeygenError`."""
    proc = await _spawn(python, str(identity))
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise KeygenError(f"key generator timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        detail = err.decode("utf-8", "replace").strip()[-_STDERR_SHOWN:] or "no message"
        raise KeygenError(f"key generator exited with {proc.returncode}: {detail}")
    return _parse(out)


async def _spawn(python: str, identity: str) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            python, "-m", MODULE, identity, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise KeygenError(f"cannot start the key generator {python}: {exc.strerror}") from None


def _parse(out: bytes) -> KeyAndCsr:
    """Split the child's output; each block exactly once, the CSR well-formed."""
    try:
        keys, csrs = pem_blocks(out, _KEY_LABEL), pem_blocks(out, _CSR_LABEL)
        if len(keys) != 1 or len(csrs) != 1:
            raise KeygenError("key generator output is not one key and one CSR")
        public_key = csr_public_key(csrs[0])
    except DerError as exc:
        raise KeygenError(f"key generator output is malformed: {exc}") from None
    return KeyAndCsr(_block(out, _KEY_LABEL), _block(out, _CSR_LABEL), public_key)


def _block(out: bytes, label: str) -> bytes:
    """The one PEM block named `label`, verbatim with its END line."""
    end = f"-----END {label}-----".encode()
    start = out.index(f"-----BEGIN {label}-----".encode())
    return out[start:out.index(end, start) + len(end)] + b"\n"


async def generate_here(identity: SpiffeId) -> KeyAndCsr:
    """The same pair as `generate`, made in this process (imports `cryptography`)."""
    return _parse(_make(identity))


def _make(identity: SpiffeId) -> bytes:
    """A new key (PKCS#8 PEM) followed by its CSR for `identity` (PEM)."""
    from hybridmesh.identity.workload import make_csr, new_key, private_key_pem

    key = new_key()
    return private_key_pem(key) + make_csr(key, identity)


def main(argv: list[str] | None = None) -> int:
    """The child: key and CSR to stdout; a bad argument is exit 2 with a message."""
    args = sys.argv[1:] if argv is None else argv
    try:
        (text,) = args
        identity = SpiffeId.parse(text)
    except (ValueError, InvalidSpiffeId) as exc:
        print(f"usage: python -m hybridmesh.identity.keygen SPIFFE_ID ({exc})", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(_make(identity))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
