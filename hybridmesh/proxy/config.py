"""The proxy's process configuration: one frozen value built from the command line.

Everything a worker needs to start is here, so ``server.py`` can fork workers from it and tests
can build a proxy on loopback (port 0, a fake control plane) without touching argv.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ADMIN_PORT",
    "INBOUND_PORT",
    "OUTBOUND_PORT",
    "PROXY_MARK",
    "PROXY_UID",
    "TUNNEL_PORT",
    "ConfigError",
    "ProxyConfig",
    "build_parser",
    "parse_args",
    "parse_command",
    "to_argv",
]

OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
TUNNEL_PORT = 15008
ADMIN_PORT = 15020
PROXY_MARK = 0x539
"""SO_MARK on the proxy's own upstream sockets (1337): capture RETURNs marked packets."""
PROXY_UID = 1337
"""The uid capture exempts (Istio's habit), for a proxy started under its own user."""


class ConfigError(ValueError):
    """A command-line value the proxy cannot run with (the message says which and why)."""


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """What one proxy process (and each of its workers) runs with.

    ``bind_host`` is where the traffic listeners bind: ``0.0.0.0`` in a pod (REDIRECT
    rewrites the destination to the primary address of the incoming interface), loopback in
    unprivileged tests. Port 0 asks the kernel for a free port (tests).
    """

    namespace: str
    pod: str
    control_socket: str
    workers: int = 1
    access_log: bool = False
    admin_port: int = ADMIN_PORT
    outbound_port: int = OUTBOUND_PORT
    inbound_port: int = INBOUND_PORT
    detect_timeout_s: float = 0.020
    connect_timeout_s: float = 5.0
    """TCP connect plus, to a meshed peer, the mTLS handshake. Envoy's default cluster
    connect_timeout (Istio sets 10 s): 1 s closed redis-benchmark's connections when 50 mTLS
    handshakes met a saturated 2-core machine; a refused connect fails at once anyway."""
    drain_grace_s: float = 10.0
    bind_host: str = "0.0.0.0"
    admin_host: str = "0.0.0.0"
    mark: int | None = PROXY_MARK
    watch_timeout_s: float = 30.0
    uid: int | None = None
    upgrade_h2: bool = False
    token_file: str | None = None

    def __post_init__(self) -> None:
        if not self.namespace or not self.pod or "/" in self.namespace + self.pod:
            raise ConfigError(f"--pod must be NAMESPACE/NAME, got {self.namespace}/{self.pod}")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"--workers must be within 1..64, got {self.workers}")
        for name in ("admin_port", "outbound_port", "inbound_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"--{name.replace('_', '-')} must be a TCP port, got {port}")
        if not 0 < self.detect_timeout_s <= 10:
            raise ConfigError("--detect-timeout-ms must be within (0, 10000]")
        if self.connect_timeout_s <= 0 or self.drain_grace_s < 0:
            raise ConfigError("--connect-timeout-ms must be > 0 and --drain-grace-s >= 0")

    @property
    def pod_key(self) -> str:
        """``namespace/name``, as the control plane addresses pods."""
        return f"{self.namespace}/{self.pod}"

    @property
    def excluded_inbound_ports(self) -> frozenset[int]:
        """Ports capture never redirects (the proxy's own): a redirect there would loop."""
        return frozenset((self.admin_port, 15021, TUNNEL_PORT, self.outbound_port,
                          self.inbound_port))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m hybridmesh.proxy",
        description="hybridmesh sidecar proxy (runs inside the pod's network namespace)",
        # A fixed width: the default formatter asks shutil for the terminal size, and shutil
        # drags bz2/lzma (~0.4 MB RSS) into every proxy worker for a help text nobody reads.
        formatter_class=functools.partial(argparse.HelpFormatter, width=100),
    )
    p.add_argument("--pod", required=True, metavar="NS/NAME", help="the pod this proxy serves")
    p.add_argument("--control", required=True, metavar="SOCKET",
                   help="control-plane API unix socket (e.g. /run/hm-lab/api.sock)")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the listeners")
    p.add_argument("--access-log", action="store_true", help="JSON access log on stdout")
    p.add_argument("--admin-port", type=int, default=ADMIN_PORT)
    p.add_argument("--outbound-port", type=int, default=OUTBOUND_PORT)
    p.add_argument("--inbound-port", type=int, default=INBOUND_PORT)
    p.add_argument("--detect-timeout-ms", type=float, default=20.0,
                   help="protocol detection window; silent clients are opaque TCP after it")
    p.add_argument("--connect-timeout-ms", type=float, default=5000.0)
    p.add_argument("--drain-grace-s", type=float, default=10.0,
                   help="how long SIGTERM waits for in-flight requests and connections")
    p.add_argument("--bind", default="0.0.0.0", help="address the traffic listeners bind")
    p.add_argument("--uid", type=int, default=None, metavar="UID",
                   help="the uid capture exempts; the launcher starts the proxy as that user "
                        "(the proxy never changes uid itself). Recorded for /config_dump")
    p.add_argument("--no-mark", action="store_true",
                   help="do not set SO_MARK on upstream sockets (unprivileged runs)")
    p.add_argument("--upgrade-h2", action="store_true",
                   help="carry HTTP/1.1 requests to sidecar endpoints as HTTP/2 streams "
                        "(Linkerd's transparent upgrade; costs CPU until mTLS needs it)")
    p.add_argument("--token-file", metavar="PATH", default=None,
                   help="bootstrap token proving this pod's service account: enables mTLS "
                        "with meshed peers (SVIDs from the control plane's CA)")
    p.add_argument("--worker-admin", metavar="PATH", help=argparse.SUPPRESS)
    return p


def parse_args(argv: Sequence[str] | None = None) -> ProxyConfig:
    """argv → ProxyConfig; bad values exit with argparse's usage message (status 2)."""
    return parse_command(argv)[0]


def parse_command(argv: Sequence[str] | None = None) -> tuple[ProxyConfig, str | None]:
    """argv → (config, the hidden ``--worker-admin`` path of a supervised worker)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    namespace, _, pod = str(args.pod).partition("/")
    try:
        return ProxyConfig(
            namespace=namespace,
            pod=pod,
            control_socket=args.control,
            workers=args.workers,
            access_log=args.access_log,
            admin_port=args.admin_port,
            outbound_port=args.outbound_port,
            inbound_port=args.inbound_port,
            detect_timeout_s=args.detect_timeout_ms / 1000.0,
            connect_timeout_s=args.connect_timeout_ms / 1000.0,
            drain_grace_s=args.drain_grace_s,
            bind_host=args.bind,
            mark=None if args.no_mark else PROXY_MARK,
            uid=args.uid,
            upgrade_h2=args.upgrade_h2,
            token_file=args.token_file,
        ), args.worker_admin
    except ConfigError as exc:
        parser.error(str(exc))


def to_argv(config: ProxyConfig) -> list[str]:
    """The command line that rebuilds ``config`` (how a supervisor starts its workers)."""
    argv = [
        "--pod", config.pod_key, "--control", config.control_socket,
        "--workers", str(config.workers),
        "--admin-port", str(config.admin_port),
        "--outbound-port", str(config.outbound_port),
        "--inbound-port", str(config.inbound_port),
        "--detect-timeout-ms", repr(config.detect_timeout_s * 1000.0),
        "--connect-timeout-ms", repr(config.connect_timeout_s * 1000.0),
        "--drain-grace-s", repr(config.drain_grace_s),
        "--bind", config.bind_host,
    ]  # fmt: skip
    if config.access_log:
        argv.append("--access-log")
    if config.mark is None:
        argv.append("--no-mark")
    if config.uid is not None:
        argv += ["--uid", str(config.uid)]
    if config.upgrade_h2:
        argv.append("--upgrade-h2")
    if config.token_file is not None:
        argv += ["--token-file", config.token_file]
    return argv
