"""The ``tls-handshake`` scenario: full mTLS handshakes against the server-side proxy.

The client pod runs ``hybridmesh.bench.tlsclient`` (full handshakes, a valid client SVID,
half-close and wait for the server, no resumption) to the server pod's HTTP port. Its
sockets carry SO_MARK 0x539, which the client pod's capture lets through, so they reach the
*server's* proxy directly (its inbound capture redirects them to 15006): what is measured is
one proxy accepting mTLS, not the client-side proxy too.

The client needs an SVID the server's proxy trusts, obtained the way each mesh issues them:

* hybridmesh sidecar: a key made here and a CSR signed by the lab's CA with the client pod's
  bootstrap token (``POST /v1/identity/sign`` on the lab API), exactly as its proxy does;
* ``envoy-sidecar-mtls``: the client pod's Envoy SVID from the bench CA (envoy_certs.py).

Reported per run: ``handshakes_per_s`` (wall, the measured window) and
``handshakes_per_core_s``: the handshakes of the whole process (warm-up included) divided by
the server proxy's CPU seconds over the same bracket (cgroup accounting), i.e. how many
handshakes one fully-used core of that proxy completes. The server's own counter (Envoy's
``ssl.handshake``, hybridmesh's ``identity_connections_total{mutual_tls}``) must have moved
by the client's count, or the run is refused: it would otherwise credit the proxy with
handshakes that something else answered.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hybridmesh.bench.accounting import Accountant, usage_metrics
from hybridmesh.bench.bed import BedError, TestBed
from hybridmesh.bench.envoy_sidecar import PROXY_MARK, tls_dir
from hybridmesh.bench.model import SampleDoc
from hybridmesh.bench.scenarios import CONTENDERS, Contender
from hybridmesh.bench.schedule import Run
from hybridmesh.bench.tools import last_json
from hybridmesh.bench.topology import HTTP_PORT, TRUST_DOMAIN, PodRole, client_pod, server_pod
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.workload import make_csr, new_key, private_key_pem
from hybridmesh.lab.client import LabClient
from hybridmesh.lab.tokens import token_path

__all__ = ["MIN_SERVER_SHARE", "ClientCredentials", "HandshakeRunner", "mutual_tls_connections"]

SIDECAR_ADMIN_PORT = 15020
MIN_SERVER_SHARE = 0.95


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    cert: Path
    key: Path
    bundle: Path


def mutual_tls_connections(metrics_text: str) -> int:
    """hybridmesh's admitted mTLS connections (every reporter) from its /metrics text."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("identity_connections_total{") and (
            'connection_security_policy="mutual_tls"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class HandshakeRunner:
    """A Special executor (measure.Executor hands it the tls-handshake runs)."""

    def __init__(self, bed: TestBed, procs: int = 2) -> None:
        self.bed = bed
        self.procs = procs
        self._creds: dict[str, ClientCredentials] = {}

    def measure(self, run: Run) -> SampleDoc:
        contender = CONTENDERS[run.contender]
        client = client_pod(run.contender, run.cell.variant)
        server = server_pod(run.contender, "http-latency")
        creds = self.credentials(contender, client)
        acct = Accountant(self.bed.layout, (client.namespace, client.name),
                          (server.namespace, server.name))  # fmt: skip
        argv = self._argv(creds, self.bed.pod(server)["ip"], run)
        started = time.time()
        counted = self._server_count(contender, server)
        acct.reset_peaks()
        begin = acct.snapshot()
        done = self.bed.run_tool(client, argv, f"tlsclient-{run.contender}", run.duration_s + 60)
        end, peaks = acct.snapshot(), acct.peaks()
        counted = self._server_count(contender, server) - counted
        if done.returncode != 0:
            raise BedError(
                f"tlsclient in {client.key} failed: {' '.join(done.output[-400:].split())}"
            )
        out = last_json(done.output)
        ops = float(out["handshakes"] + out["warmup_handshakes"])
        metrics = self._metrics(out, usage_metrics(begin, end, ops, peaks), ops)
        self._check(run, metrics, ops, counted)
        return SampleDoc(
            scenario=run.cell.scenario, variant=run.cell.variant, level=run.cell.level,
            contender=run.contender, repeat=run.repeat, order=run.order, started_at=started,
            wall_s=float(out["seconds"]), metrics=metrics,
            checks={"server_handshake_share": round(counted / ops, 4) if ops else 0.0},
        )  # fmt: skip

    def _argv(self, creds: ClientCredentials, ip: str, run: Run) -> list[str]:
        return [
            sys.executable, "-m", "hybridmesh.bench.tlsclient",
            "--connect", f"{ip}:{HTTP_PORT}", "--cert", str(creds.cert), "--key", str(creds.key),
            "--ca", str(creds.bundle), "--mark", hex(PROXY_MARK), "--procs", str(self.procs),
            "--warmup", f"{run.warmup_s:g}", "--duration", f"{run.duration_s:g}",
        ]  # fmt: skip

    @staticmethod
    def _metrics(out: dict[str, object], usage: dict[str, float], ops: float) -> dict[str, float]:
        server_us = usage["cpu_proxy_server_us_per_op"] * ops
        return {
            "handshakes_per_s": float(str(out["handshakes_per_s"])),
            "handshakes_per_core_s": round(ops / (server_us / 1e6), 1) if server_us > 0 else 0.0,
            "errors": float(str(out["failures"])),
            **usage,
        }

    def _check(self, run: Run, metrics: dict[str, float], ops: float, counted: int) -> None:
        if ops <= 0 or metrics["handshakes_per_core_s"] <= 0:
            raise BedError(f"{run.contender}: no handshake completed, or the server proxy used "
                           "no CPU (was the mTLS listener in the path?)")  # fmt: skip
        if counted < MIN_SERVER_SHARE * ops:
            raise BedError(
                f"{run.contender}: the server proxy counted {counted} mTLS handshakes for the "
                f"client's {ops:.0f}: something else answered them"
            )

    # -- the client's SVID and the server's count ----------------------------------------
    def credentials(self, contender: Contender, client: PodRole) -> ClientCredentials:
        """The client pod's SVID, as its mesh would issue it (cached per contender)."""
        if contender.name not in self._creds:
            if contender.proxy == "envoy" and contender.mtls:
                where = tls_dir(client.namespace, client.name)
                creds = ClientCredentials(
                    where / "cert.pem", where / "key.pem", where / "bundle.pem"
                )
            elif contender.proxy == "hybridmesh" and contender.identity:
                account = str(self.bed.pod(client).get("serviceAccount") or "default")
                where = tls_dir(client.namespace, f"{client.name}.tlsclient")  # not in --out
                creds = _lab_svid(client, account, where)
            else:
                raise BedError(f"{contender.name} has no mTLS listener to measure")
            self._creds[contender.name] = creds
        return self._creds[contender.name]

    def _server_count(self, contender: Contender, server: PodRole) -> int:
        envoy = self.bed.envoy(server)
        if envoy is not None:
            return envoy.inbound_handshakes()
        text = self.bed.http_text(server, SIDECAR_ADMIN_PORT, "/metrics")
        return mutual_tls_connections(text)


def _lab_svid(client: PodRole, service_account: str, where: Path) -> ClientCredentials:
    """A key and an SVID for the client pod's identity, signed by the lab CA on the pod's
    bootstrap token, as its own proxy gets one (the bench runs as root, as the lab does)."""
    try:
        token = token_path(client.namespace, client.name).read_text().strip()
    except OSError as exc:
        raise BedError(f"no bootstrap token for {client.key}: {exc.strerror}") from None
    key = new_key()
    identity = SpiffeId.for_workload(TRUST_DOMAIN, client.namespace, service_account)
    csr = make_csr(key, identity).decode("ascii")
    result = LabClient().call("POST", "/v1/identity/sign", {"token": token, "csr": csr})
    if result.status != 200 or not isinstance(result.body, dict):
        raise BedError(f"the lab CA refused {client.key}'s CSR: {result.status} {result.body}")
    where.mkdir(parents=True, exist_ok=True)
    files = {
        "cert.pem": result.body["certificateChain"].encode(),
        "key.pem": private_key_pem(key),
        "bundle.pem": result.body["trustBundle"].encode(),
    }
    for name, data in files.items():
        fd = os.open(where / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    return ClientCredentials(where / "cert.pem", where / "key.pem", where / "bundle.pem")
