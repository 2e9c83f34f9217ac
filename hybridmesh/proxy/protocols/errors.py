"""Typed protocol errors shared by every sans-IO core in this package.

The split follows h11: a :class:`RemoteProtocolError` means the *peer* sent bytes we refuse
(the proxy answers with :attr:`RemoteProtocolError.status` and closes the connection); a
:class:`LocalProtocolError` means *our* caller misused a core or asked it to emit something
invalid (a bug in the proxy, never the peer's fault). Parsers promise that bad input raises
``RemoteProtocolError`` and nothing else.

Every remote error carries an :class:`ErrorCode` so metrics and access logs can count the
exact reason (``code.value`` is a stable, lowercase, dash-separated name).
"""

from __future__ import annotations

import enum

__all__ = [
    "ErrorCode",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ErrorCode(enum.Enum):
    """Why a peer's bytes were refused; the value is the stable name used in logs/metrics.

    :attr:`request_status` is the HTTP status a server answers when a *client* (request side)
    commits this error. On the response side the proxy always answers ``502``.
    """

    BAD_REQUEST_LINE = "bad-request-line"
    BAD_STATUS_LINE = "bad-status-line"
    BAD_TARGET = "bad-target"
    UNSUPPORTED_VERSION = "unsupported-version"
    REQUEST_LINE_TOO_LONG = "request-line-too-long"
    HEADER_SECTION_TOO_LARGE = "header-section-too-large"
    TOO_MANY_HEADERS = "too-many-headers"
    BAD_LINE_ENDING = "bad-line-ending"
    OBS_FOLD = "obs-fold"
    BAD_HEADER_LINE = "bad-header-line"
    BAD_HEADER_NAME = "bad-header-name"
    WHITESPACE_BEFORE_COLON = "whitespace-before-colon"
    BAD_HEADER_VALUE = "bad-header-value"
    CONTENT_LENGTH_AND_TRANSFER_ENCODING = "content-length-and-transfer-encoding"
    DUPLICATE_CONTENT_LENGTH = "duplicate-content-length"
    BAD_CONTENT_LENGTH = "bad-content-length"
    BAD_TRANSFER_ENCODING = "bad-transfer-encoding"
    UNEXPECTED_BODY = "unexpected-body"
    BAD_CHUNK_SIZE = "bad-chunk-size"
    CHUNK_LINE_TOO_LONG = "chunk-line-too-long"
    BAD_CHUNK_FRAMING = "bad-chunk-framing"
    BAD_TRAILER = "bad-trailer"
    MISSING_HOST = "missing-host"
    BAD_HOST = "bad-host"
    INCOMPLETE_MESSAGE = "incomplete-message"
    UNEXPECTED_INTERIM = "unexpected-interim"
    UNSOLICITED_RESPONSE = "unsolicited-response"

    @property
    def request_status(self) -> int:
        """The status a server answers when a client's request commits this error."""
        return _REQUEST_STATUS.get(self, 400)


_REQUEST_STATUS: dict[ErrorCode, int] = {
    ErrorCode.REQUEST_LINE_TOO_LONG: 414,
    ErrorCode.HEADER_SECTION_TOO_LARGE: 431,
    ErrorCode.TOO_MANY_HEADERS: 431,
    ErrorCode.UNSUPPORTED_VERSION: 505,
}


class ProtocolError(Exception):
    """Base of every error raised by the protocol cores."""


class LocalProtocolError(ProtocolError):
    """Our own caller broke the rules (API misuse or an invalid event to serialize)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes we refuse; answer :attr:`status` (if still possible) and close.

    After raising one, a reader stays broken: every later call raises the same error, so a
    caller cannot accidentally keep parsing a connection whose framing is in doubt.
    """

    def __init__(self, code: ErrorCode, detail: str, *, status: int | None = None) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail
        self.status = code.request_status if status is None else status
