"""The proxy's workload identity: key, CSR, SVID from the control plane, rotation, fail-closed.

:class:`SvidManager` owns one X509-SVID at a time:

- the private key is generated for every issuance (a rotation is a new key, so a key leaked
  once stops being useful at the next rotation) by a short-lived child of this process
  (``identity/keygen.py``: `cryptography` loads there, never in the long-lived worker, where it
  would cost ~10 MB of RSS); it comes back through a pipe, stays in memory, reaches OpenSSL
  only through the memfd in ``identity/tls.py``, never a file, and never appears in logs,
  metrics or ``/config_dump`` (``describe()`` carries public facts only);
- it proves the pod's service account with the bootstrap token the lab put in the proxy's
  token file (re-read at every request: the lab refreshes it, like kubelet refreshes a
  projected service-account token), and ``POST /v1/identity/sign`` returns the chain and the
  trust bundle;
- it renews at half the certificate's remaining lifetime (± 10 % jitter, never inside the last
  10 %): ``identity.workload.renew_at`` measures from ``not_before``, which the CA backdates by
  two minutes for clock skew, so for minute-scale TTLs it would renew at once, forever; the
  schedule here is the same rule measured from when the certificate arrived;
- while the CA cannot be reached it retries with jittered exponential backoff and keeps
  serving with the certificate it has; once that expires :attr:`material` is None and callers
  fail closed (outbound 503 ``no-identity``, inbound TLS refused), never plaintext.

:class:`TlsMaterial` is what connections use: the SVID and its TLS contexts, built once per
SVID (a context costs ~1 ms: never per connection). The client contexts are per ALPN protocol
(``http/1.1`` and ``h2``) because the server picks by its own preference order, so a client
offering both would always get ``h2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from hybridmesh._http import HttpClient, HttpClientError
from hybridmesh.identity import keygen
from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId
from hybridmesh.identity.svid import InvalidPemSvid, PemSvid, TrustRoots
from hybridmesh.identity.tls import MeshSSLContext, client_context, server_context
from hybridmesh.proxy.discovery import Tables
from hybridmesh.proxy.identity_metrics import IdentityMetrics

__all__ = [
    "ALPN_H1",
    "ALPN_H2",
    "KeyMaker",
    "SvidManager",
    "TlsMaterial",
    "renewal_time",
    "wanted_identity",
]

log = logging.getLogger(__name__)

ALPN_H1: Final = "http/1.1"
ALPN_H2: Final = "h2"
SIGN_PATH: Final = "/v1/identity/sign"
_JITTER: Final = 0.1
KeyMaker = Callable[[SpiffeId], Awaitable[keygen.KeyAndCsr]]
"""Makes a fresh key and CSR: ``keygen.generate`` (a child process, the default) or
``keygen.generate_here`` (in process: the node proxy)."""
_LAST_FRACTION: Final = 0.1


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """One SVID and the contexts built from it (immutable: rotation swaps the whole value)."""

    svid: PemSvid
    server: MeshSSLContext
    client_h1: MeshSSLContext
    client_h2: MeshSSLContext
    client_opaque: MeshSSLContext
    not_after: float  # epoch seconds, for a cheap expiry check per connection
    generation: int

    @classmethod
    def build(cls, svid: PemSvid, generation: int) -> TlsMaterial:
        def client(alpn: list[str]) -> MeshSSLContext:
            ctx = client_context(svid)
            ctx.set_alpn_protocols(alpn)
            return ctx

        return cls(svid, server_context(svid), client([ALPN_H1]), client([ALPN_H2]),
                   client(["hm-tcp"]), svid.not_after.timestamp(), generation)

    def client(self, alpn: str | None) -> MeshSSLContext:
        """The cached client context offering exactly ``alpn`` (None: opaque TCP)."""
        if alpn == ALPN_H2:
            return self.client_h2
        return self.client_h1 if alpn == ALPN_H1 else self.client_opaque


def wanted_identity(tables: Tables) -> SpiffeId | None:
    """The identity this pod may hold per its snapshot (None if the snapshot cannot say)."""
    mesh = tables.snapshot.get("mesh") or {}
    try:
        return SpiffeId.for_workload(str(mesh.get("trustDomain") or ""), tables.pod.namespace,
                                     tables.pod.service_account)
    except InvalidSpiffeId:
        return None


def renewal_time(received: float, not_after: float, rng: random.Random) -> float:
    """When to renew (epoch s): half the remaining lifetime after ``received`` ± 10 % of it,
    never inside the last 10 %."""
    span = max(not_after - received, 0.0)
    half = span / 2
    planned = received + half + half * _JITTER * (2 * rng.random() - 1)
    return min(planned, not_after - span * _LAST_FRACTION)


class _SignFailed(Exception):
    """One issuance attempt failed; the message is safe to log (no token, no key)."""


class SvidManager:
    """Obtains, rotates and exposes the proxy's SVID (see the module docstring)."""

    def __init__(self, control_socket: str, token_file: Path, *,
                 metrics: IdentityMetrics | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 retry_initial_s: float = 0.5, retry_max_s: float = 30.0,
                 retry_max_expired_s: float = 2.0, key_maker: KeyMaker | None = None) -> None:
        self._client = HttpClient(unix_path=control_socket)
        self._token_file = token_file
        self.metrics = metrics or IdentityMetrics()
        self.metrics.expiry = self._expiry
        self._clock = clock
        self._rng = rng or random.Random()
        self._retry = (retry_initial_s, retry_max_s, retry_max_expired_s)
        self._keygen = key_maker
        self._spawn: Callable[..., asyncio.Task[Any]] | None = None
        self._spare: asyncio.Task[keygen.KeyAndCsr] | None = None  # the next issuance's key
        self._spare_for: SpiffeId | None = None
        self._material: TlsMaterial | None = None
        self._wanted: SpiffeId | None = None
        self._renew_at = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.renewals = 0
        self.failures = 0
        self.last_error = ""

    # -- what connections read --------------------------------------------------------------
    @property
    def material(self) -> TlsMaterial | None:
        """The current, unexpired TLS material; None means fail closed."""
        m = self._material
        if m is None or self._clock() >= m.not_after:
            return None
        return m

    def _expiry(self) -> float:
        m = self.material
        return m.not_after if m is not None else 0.0

    @property
    def identity(self) -> SpiffeId | None:
        m = self.material
        return m.svid.identity if m is not None else None

    # -- inputs ---------------------------------------------------------------------------------
    def set_tables(self, tables: Tables) -> None:
        """A new snapshot: (re)issue at once if the identity we should hold changed."""
        wanted = wanted_identity(tables)
        if wanted is None:
            log.error("snapshot names no valid workload identity; keeping the current SVID")
            return
        if wanted != self._wanted:
            self._wanted = wanted
            self.renew_now()

    def renew_now(self) -> None:
        """Start an issuance now (snapshot change, SIGUSR1, tests)."""
        self._renew_at = 0.0
        self._wake.set()

    def install_signal(self) -> None:
        """SIGUSR1 forces a renewal (an operator's and the tests' hook)."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.renew_now)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, spawn: Callable[..., asyncio.Task[Any]]) -> None:
        self._spawn = spawn
        self._task = spawn(self._run(), name="hm-proxy-identity")

    async def close(self) -> None:
        for task in (self._task, self._spare):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, keygen.KeygenError):
                    await task
        await self._client.close()

    async def _run(self) -> None:
        backoff = self._retry[0]
        while True:
            await self._sleep_until(self._renew_at)
            if self._wanted is None:
                continue
            try:
                await self._issue(self._wanted)
            except _SignFailed as exc:
                backoff = self._backoff(backoff)
                self._failed(str(exc))
                continue
            backoff = self._retry[0]

    async def _sleep_until(self, when: float) -> None:
        self._wake.clear()
        delay = when - self._clock()
        if delay > 0:  # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancel that
            with contextlib.suppress(TimeoutError):  # races the wake-up (close() then hung)
                async with asyncio.timeout(delay):
                    await self._wake.wait()
        if self._wanted is None:
            await self._wake.wait()

    def _backoff(self, current: float) -> float:
        """Schedule the next try (full jitter); the cap is short once we hold nothing valid."""
        cap = self._retry[1] if self.material is not None else self._retry[2]
        delay = min(current, cap)
        self._renew_at = self._clock() + delay * (0.5 + self._rng.random() / 2)
        return min(current * 2, cap)

    # -- one issuance ---------------------------------------------------------------------------
    async def _issue(self, identity: SpiffeId) -> None:
        token = self._read_token()
        made = await self._new_key(identity)
        body = {"token": token, "csr": made.csr_pem.decode("ascii")}
        answer = await self._post(body)
        svid = _svid_from(answer, made, identity)
        generation = self._material.generation + 1 if self._material else 1
        received = self._clock()
        try:
            self._material = TlsMaterial.build(svid, generation)
        except ssl.SSLError as exc:  # OpenSSL refused the chain or the key
            raise _SignFailed(f"unusable answer from the CA: {exc.reason or exc}") from None
        self._renew_at = renewal_time(received, svid.not_after.timestamp(), self._rng)
        self.renewals += 1
        self.last_error = ""
        self.metrics.renewal(True)
        log.info("SVID %s serial %x valid until %s; renewing at %s", svid.identity, svid.serial,
                 svid.not_after.isoformat(), _iso(self._renew_at))

    async def _new_key(self, identity: SpiffeId) -> keygen.KeyAndCsr:
        """A fresh key and CSR: the spare made after the last issuance when it is for
        `identity`, else one made now. Either way the next spare starts at once, so a renewal
        never waits for the key generator child (~0.2 s of CPU; seconds on a loaded machine,
        which a minute-scale certificate cannot afford at renewal time)."""
        spare, self._spare = self._spare, None
        if spare is not None and self._spare_for != identity:
            spare.cancel()
            spare = None
        try:
            made = await spare if spare is not None else await self._make_key(identity)
        except keygen.KeygenError as exc:
            raise _SignFailed(str(exc)) from None
        if self._spawn is not None:
            self._spare_for = identity
            self._spare = self._spawn(self._make_key(identity), name="hm-proxy-keygen")
        return made

    async def _make_key(self, identity: SpiffeId) -> keygen.KeyAndCsr:
        """``keygen.generate`` (looked up at each call) unless another maker was given."""
        return await (self._keygen or keygen.generate)(identity)

    def _read_token(self) -> str:
        try:
            token = self._token_file.read_text().strip()
        except OSError as exc:
            raise _SignFailed(f"cannot read the bootstrap token file {self._token_file}: "
                              f"{exc.strerror}") from None
        if not token:
            raise _SignFailed(f"bootstrap token file {self._token_file} is empty")
        return token

    async def _post(self, body: dict[str, str]) -> dict[str, Any]:
        try:
            resp = await self._client.request("POST", SIGN_PATH, body=json.dumps(body).encode(),
                                              headers={"Content-Type": "application/json"},
                                              timeout=10.0)
        except (HttpClientError, OSError) as exc:
            raise _SignFailed(f"CA unreachable: {exc}") from None
        try:
            answer = resp.json_body()
        except ValueError:
            answer = None
        if resp.status != 200 or not isinstance(answer, dict):
            reason = answer.get("message") if isinstance(answer, dict) else None
            raise _SignFailed(f"CA refused ({resp.status}): {reason or 'no reason given'}")
        return answer

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        self.metrics.renewal(False)
        state = "still valid" if self.material is not None else "NO VALID CERTIFICATE"
        log.warning("SVID issuance failed (%s); %s; retrying at %s", reason, state,
                    _iso(self._renew_at))

    # -- status ---------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """For ``/config_dump``: public facts only (``Svid.describe`` never has key material)."""
        current = self.material
        return {
            "wanted": str(self._wanted) if self._wanted else None,
            "state": "valid" if current else ("expired" if self._material else "pending"),
            "svid": self._material.svid.describe() if self._material else None,
            "generation": self._material.generation if self._material else 0,
            "renew_at": _iso(self._renew_at) if self._renew_at else None,
            "renewals": self.renewals,
            "failures": self.failures,
            "last_error": self.last_error or None,
            "token_file": str(self._token_file),
        }


def _svid_from(answer: dict[str, Any], made: keygen.KeyAndCsr, identity: SpiffeId) -> PemSvid:
    """Check the CA's answer: a chain for exactly our identity, with our key, and a bundle."""
    try:
        bundle = TrustRoots(identity.trust_domain, str(answer["trustBundle"]).encode("ascii"))
        svid = PemSvid(str(answer["certificateChain"]).encode("ascii"), made.key_pem, bundle,
                       public_key=made.public_key)
    except (KeyError, UnicodeEncodeError, InvalidPemSvid) as exc:
        raise _SignFailed(f"unusable answer from the CA: {exc}") from None
    if svid.identity != identity:
        raise _SignFailed(f"CA issued {svid.identity}, expected {identity}")
    return svid


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")

