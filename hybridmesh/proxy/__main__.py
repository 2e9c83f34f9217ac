"""``python3 -m hybridmesh.proxy --pod NS/NAME --control SOCKET [--workers N] ...``

Runs the sidecar proxy inside the pod's network namespace (see docs/proxy.md).
"""

from __future__ import annotations

import logging
import sys

from hybridmesh.proxy.config import parse_command
from hybridmesh.proxy.server import run, run_worker


def main(argv: list[str] | None = None) -> int:
    config, worker_admin = parse_command(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="hm-proxy %(levelname)s %(name)s: %(message)s")
    if worker_admin is not None:
        return run_worker(config, worker_admin)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
