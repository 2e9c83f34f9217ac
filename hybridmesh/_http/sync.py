"""A blocking one-shot request over a unix socket, for CLI commands talking to the lab daemon.

CLIs are synchronous and short-lived; spinning an event loop for one request would be more
code and slower start-up than http.client over AF_UNIX.
"""

from __future__ import annotations

import socket

__all__ = ["UnixRequestError", "unix_request"]


class UnixRequestError(OSError):
    """The daemon could not be reached or did not answer in time (the message says which).

    An OSError, because to a caller it is one: the socket-level request failed.
    """


def _unix_socket(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def unix_request(
    sock_path: str,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 10.0,
    *,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send one request; returns (status, headers with lower-case names, body)."""
    # here: http.client pulls in email (~1.5 MB of RSS) that every proxy worker would carry
    # for a CLI-only helper (_http/__init__ re-exports this module)
    import http.client

    conn = http.client.HTTPConnection("localhost", timeout=timeout)
    try:
        conn.sock = _unix_socket(str(sock_path), timeout)  # set: request() will not connect
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        fields = {k.lower(): v for k, v in response.getheaders()}
        return response.status, fields, data
    except FileNotFoundError:
        raise UnixRequestError(f"no socket at {sock_path}") from None
    except ConnectionRefusedError:
        raise UnixRequestError(f"nothing is listening on {sock_path}") from None
    except TimeoutError:
        raise UnixRequestError(f"{sock_path}: no answer within {timeout}s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UnixRequestError(f"{sock_path}: {exc}") from None
    finally:
        conn.close()
