"""The h2 connection under :mod:`http2`: two receive paths replaced, one made cheaper.

Internal to ``http2.py`` (its ``_Endpoint`` is the only user); kept apart so each module
stays one concern: this one is "where we depart from h2", pinned by tests against h2 upgrades.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.stream
from h2.errors import ErrorCodes as H2ErrorCode
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame

__all__ = ["Connection", "GoAway", "Refused"]


class Refused(h2.events.Event):
    """Internal: a new stream was answered with REFUSED_STREAM."""

    def __init__(self, stream_id: int, reason: str) -> None:
        self.stream_id, self.reason = stream_id, reason


class GoAway(h2.events.Event):
    """Internal: the peer sent GOAWAY (h2's own handling is replaced, see Connection)."""

    def __init__(self, code: int, last_stream_id: int, debug: bytes) -> None:
        self.code, self.last_stream_id, self.debug = code, last_stream_id, debug


class Connection(h2.connection.H2Connection):
    """h2 with two receive paths replaced (both pinned by tests against h2 upgrades).

    HEADERS opening a stream beyond our limit (or after our graceful GOAWAY) is refused
    with RST_STREAM(REFUSED_STREAM) instead of killing the connection; its header block is
    still decoded, as HPACK state is shared by the whole connection. GOAWAY from the peer
    becomes an event without closing h2's state machine, so in-flight streams finish.
    """

    def __init__(self, config: h2.config.H2Configuration, limit: int) -> None:
        super().__init__(config)
        self.hm_limit = limit
        self.hm_draining_after: int | None = None  # last stream id of our graceful GOAWAY

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[
            list[Frame], list[h2.events.Event]]:
        sid = frame.stream_id
        if self.config.client_side and not sid & 1 and sid not in self.streams:
            # h2 would open it and report a *request* to a client (push is disabled)
            raise h2.exceptions.ProtocolError(f"server-initiated stream {sid}")
        if sid in self.streams or self.config.client_side or not sid & 1:
            return super()._receive_headers_frame(frame)  # h2's rules suffice
        if sid <= self.highest_inbound_stream_id:  # a stream closed and cleaned up
            h2.connection._decode_headers(self.decoder, frame.data)
            raise h2.exceptions.StreamIDTooLowError(sid, self.highest_inbound_stream_id)
        if self.hm_draining_after is not None and sid > self.hm_draining_after:
            return self._refuse(frame, "draining")
        if len(self.streams) >= self.hm_limit and self.open_inbound_streams >= self.hm_limit:
            return self._refuse(frame, "max-concurrent-streams")
        return super()._receive_headers_frame(frame)

    def _refuse(self, frame: HeadersFrame, reason: str) -> tuple[
            list[Frame], list[h2.events.Event]]:
        h2.connection._decode_headers(self.decoder, frame.data)
        self.state_machine.process_input(h2.connection.ConnectionInputs.RECV_HEADERS)
        self.highest_inbound_stream_id = frame.stream_id
        self._closed_streams[frame.stream_id] = h2.stream.StreamClosedBy.SEND_RST_STREAM
        rst = RstStreamFrame(frame.stream_id)
        rst.error_code = H2ErrorCode.REFUSED_STREAM
        return [rst], [Refused(frame.stream_id, reason)]

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[
            list[Frame], list[h2.events.Event]]:
        return [], [GoAway(frame.error_code, frame.last_stream_id, frame.additional_data)]

    def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
        """h2's frame dispatch and error handling, minus its trace log: h2 formats
        ``repr(frame)`` (a hex dump of the payload) for every frame it receives, even with
        logging off; that was a twentieth of the proxy's HTTP/2 receive cost."""
        events: list[h2.events.Event]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as e:
            if not self._stream_is_closed_by_reset(e.stream_id):
                raise
            rst = RstStreamFrame(e.stream_id)
            rst.error_code = e.error_code
            self._prepare_for_sending([rst])
            return list(e._events)
        except h2.exceptions.StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):  # a stream error
                rst = RstStreamFrame(e.stream_id)
                rst.error_code = H2ErrorCode.STREAM_CLOSED
                self._prepare_for_sending([rst])
                return []
            if self._stream_is_closed_by_end(e.stream_id):
                raise h2.exceptions.StreamClosedError(e.stream_id) from e
            raise
        self._prepare_for_sending(frames)
        return events
