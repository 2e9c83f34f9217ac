"""Per-pod bootstrap tokens for sidecar proxies: issued at pod creation, refreshed, removed.

A token proves "this proxy serves pod P of service account S" to the control plane's CA (it
is the lab's stand-in for a Kubernetes projected service-account token). The lab hands it to
the proxy *only*, as a file::

    /run/hm-lab/pods/<ns>_<pod>/          mode 0700, owner: the proxy uid (1337) or root
    /run/hm-lab/pods/<ns>_<pod>/token     mode 0400, same owner, written atomically

Why a file and not an environment variable or an inherited fd:

- the pod's environment is public in the lab: ``lab status``/the pod API show it, every child
  inherits it, and ``/proc/<pid>/environ`` outlives nothing; the app and the proxy are started
  with the same ``pod_environment``. The token never enters an environment or a command line
  (``--token-file`` carries the path only), and the proxy never logs it;
- tokens expire (1 h, like projected tokens) and are refreshed in place every 20 min (kubelet
  refreshes at 80 % of the TTL); a running proxy re-reads the file at each renewal. An env var
  or an fd cannot be refreshed in a running process.

What the lab can and cannot isolate, honestly: the directory and file are readable by the
proxy's uid only, which keeps the token from any *non-root* process. But lab apps run as root
in the same filesystem (``ip netns exec`` gives a private mount namespace, not a private
``/run``), so a root app can read any pod's token, the CA socket, and even the proxy's memory
(its private key). The lab demonstrates the mechanism; the isolation that makes it a security
boundary comes from Kubernetes (separate containers and mount namespaces, non-root apps).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from hybridmesh import env as hm_env
from hybridmesh.control.model import PodInfo

__all__ = ["REFRESH_INTERVAL_S", "PodTokens", "pod_secret_dir", "token_path"]

log = logging.getLogger(__name__)

REFRESH_INTERVAL_S: Final = 20 * 60.0
"""A third of the 1 h token TTL: a proxy restarting after a missed refresh still finds a
valid token."""


def pod_secret_dir(namespace: str, pod: str) -> Path:
    return hm_env.STATE_DIR / "pods" / f"{namespace}_{pod}"


def token_path(namespace: str, pod: str) -> Path:
    return pod_secret_dir(namespace, pod) / "token"


class PodTokens:
    """Writes each sidecar pod's token where only its proxy can read it."""

    def __init__(self, issue: Callable[[PodInfo], str],
                 owner_uid: Callable[[], int | None]) -> None:
        """``owner_uid``: the proxy's uid (None: root), asked at the first write (probing it
        starts a process, which labs without sidecars need not pay)."""
        self._issue = issue
        self._owner_uid = owner_uid

    def path(self, pod: PodInfo) -> Path:
        return token_path(pod.namespace, pod.name)

    def write(self, pod: PodInfo) -> Path:
        """Issue a fresh token and put it in place atomically (0400, the proxy's uid)."""
        directory = pod_secret_dir(pod.namespace, pod.name)
        directory.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        self._own(directory)
        target = directory / "token"
        tmp = directory / f".token.{os.urandom(6).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o400)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(self._issue(pod))
            self._own(tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def _own(self, path: Path) -> None:
        uid = self._owner_uid()
        if uid is not None:
            os.chown(path, uid, uid)

    def remove(self, pod: PodInfo) -> None:
        shutil.rmtree(pod_secret_dir(pod.namespace, pod.name), ignore_errors=True)

    async def refresh_forever(self, pods: Callable[[], Iterable[PodInfo]],
                              interval_s: float = REFRESH_INTERVAL_S) -> None:
        """Re-issue every listed pod's token each ``interval_s`` (kubelet's token refresh)."""
        while True:
            await asyncio.sleep(interval_s)
            for pod in list(pods()):
                if not pod_secret_dir(pod.namespace, pod.name).exists():
                    continue  # not created yet, or being deleted
                try:
                    await asyncio.to_thread(self.write, pod)
                except OSError as exc:  # the next pass retries; the old token is still valid
                    log.warning("token refresh for %s failed: %s", pod.key, exc)
