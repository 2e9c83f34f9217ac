"""Sans-IO HTTP/1.1 for the proxy: strict readers, canonical writers (the public surface).

Usage, server side (a client connected to the proxy)::

    reader = RequestReader()
    reader.receive_data(chunk)           # b"" when the client closed
    while (event := reader.next_event()) is not NEED_DATA:
        ...                              # Request, Data, EndOfMessage, ConnectionClosed

Client side (the proxy talking to an upstream): ``ResponseReader.expect(method)`` for every
request written, then the same loop yields InformationalResponse, Response, Data,
EndOfMessage. Bad input raises :class:`RemoteProtocolError` whose ``status`` is the answer
(400/414/431/505 for requests, 502 for responses); the reader then refuses further use.
Readers buffer whatever they are given: back-pressure is the caller's (stop reading the socket
while events are pending, so pipelined requests wait in the kernel, not in our buffer).

Writers (:func:`serialize_request`, :func:`serialize_response`, :func:`frame_data`,
:func:`frame_end`) rebuild every message canonically; raw peer bytes are never forwarded, so
a framing ambiguity cannot survive the proxy. See the private modules for the details:
``_h1grammar`` (what is accepted), ``_h1framing`` (smuggling rules), ``_h1reader`` (state
table), ``_h1fast`` (llhttp fast path), ``_h1writer`` (serialization).
"""

from __future__ import annotations

from hybridmesh.proxy.protocols._h1events import (
    END_OF_MESSAGE,
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Framing,
    Headers,
    InformationalResponse,
    Limits,
    NeedData,
    Request,
    Response,
)
from hybridmesh.proxy.protocols._h1reader import TRANSITIONS, ReaderState, Step
from hybridmesh.proxy.protocols._h1request import RequestReader
from hybridmesh.proxy.protocols._h1response import ResponseReader
from hybridmesh.proxy.protocols._h1writer import (
    HOP_BY_HOP,
    frame_data,
    frame_end,
    request_framing,
    response_framing,
    serialize_informational,
    serialize_request,
    serialize_response,
)
from hybridmesh.proxy.protocols.errors import (
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)

__all__ = [
    "END_OF_MESSAGE",
    "HOP_BY_HOP",
    "NEED_DATA",
    "TRANSITIONS",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "ErrorCode",
    "Event",
    "Framing",
    "Headers",
    "InformationalResponse",
    "Limits",
    "LocalProtocolError",
    "NeedData",
    "ProtocolError",
    "ReaderState",
    "RemoteProtocolError",
    "Request",
    "RequestReader",
    "Response",
    "ResponseReader",
    "Step",
    "frame_data",
    "frame_end",
    "request_framing",
    "response_framing",
    "serialize_informational",
    "serialize_request",
    "serialize_response",
]
