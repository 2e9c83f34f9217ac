"""Small, fast asyncio HTTP/1.1 server and pooled client (httptools, uvloop when available).

Used by the control-plane API, the lab daemon and the demo workloads; not a general web
framework. Sync callers (CLIs) use :func:`unix_request`.
"""

from __future__ import annotations

from .client import BadResponse, ConnectError, HttpClient, HttpClientError, HttpTimeout
from .message import Headers, HttpError, Request, Response
from .router import Handler, Router
from .server import App, HttpServer
from .sync import UnixRequestError, unix_request

__all__ = [
    "App",
    "BadResponse",
    "ConnectError",
    "Handler",
    "Headers",
    "HttpClient",
    "HttpClientError",
    "HttpError",
    "HttpServer",
    "HttpTimeout",
    "Request",
    "Response",
    "Router",
    "UnixRequestError",
    "install_uvloop",
    "unix_request",
]


def install_uvloop() -> bool:
    """Use uvloop's event loop policy if it is installed; returns whether it is now in use."""
    try:
        import uvloop
    except ImportError:
        return False
    uvloop.install()
    return True
