"""The server connection on h11: the pure-Python parser, for where httptools is missing.

One ``h11.Connection`` per socket parses requests and serialises responses. h11 is
correct but lenient in places, so the shared policies (:mod:`._policy`) run on the raw
head before h11 parses it, and the chunk decoder vets every body byte before h11 sees
it: a request is refused for the same reasons as with llhttp.
"""

from __future__ import annotations

import math

import h11
import trio

from .._http11 import H11_RESPONSE_FIELDS, split_for_h11
from .._types import Message
from ._http import HEAD, READ_SIZE, REASONS, REQUEST, InvalidResponse, ServerConnection
from ._policy import (
    RequestHead,
    RequestRejected,
    inspect_request,
    protocol_error_message,
    scan_head,
)
from ._state import ServerState, logger

__all__ = ["H11Connection"]

_EOM = h11.EndOfMessage()  # events are immutable: one instance serves every response


def _check_h11_header_items() -> None:
    """Fail at import, not on the first request, if h11 stores parsed headers differently.

    :meth:`H11Connection._next_request` reads ``h11.Headers._full_items``, h11's private
    list of ``(raw name, lowercased name, value)`` triples: building the same list
    through the public views (``raw_items()`` or iteration) costs about twice as much on
    every request. The dependency on h11 is pinned to 0.16.x for this reason.

    Raises:
        ImportError: the installed h11 does not keep its headers that way.
    """
    probe = h11.Request(method="GET", target="/", headers=[("Host", "a")])
    if getattr(probe.headers, "_full_items", None) != [(b"Host", b"host", b"a")]:
        raise ImportError(
            f"velithon needs h11 0.16.x (found h11 {getattr(h11, '__version__', '?')}): "
            "h11.Headers no longer keeps its (raw name, name, value) triples in _full_items")


_check_h11_header_items()


class H11Connection(ServerConnection):
    """A server connection whose requests h11 parses and whose responses h11 writes."""

    def __init__(self, stream: trio.SocketStream, state: ServerState) -> None:
        super().__init__(stream, state)
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.config.max_header_size
        )

    async def _next_request(self) -> RequestHead | None:
        conn = self.conn
        config = self.config
        if conn.our_state is h11.DONE:
            conn.start_next_cycle()
        while True:
            buf, closed = conn.trailing_data
            if buf:
                scan_head(buf, config)
                if self._phase is not HEAD:
                    self._enter_head()
                event = self._next_event()
            elif closed or conn.their_state is not h11.IDLE:
                event = self._next_event()
            else:
                event = h11.NEED_DATA  # nothing buffered: skip asking h11 (saves ~2 µs)
            if event is h11.NEED_DATA:
                if self._phase is not HEAD:
                    if self._draining:
                        return None
                    self._enter_idle()
                if buf:
                    conn.receive_data(await self.io.receive_some(READ_SIZE))
                else:  # between requests: the next one is rarely there yet
                    conn.receive_data(await self.io.receive_when_ready(READ_SIZE))
                continue
            self.deadline = math.inf
            if type(event) is not h11.Request:
                return None  # ConnectionClosed
            self._phase = REQUEST
            headers = [(name, value) for _, name, value in event.headers._full_items]
            return inspect_request(event.method, event.target, event.http_version, headers,
                                   config)

    def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            return self.conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            logger.debug("%s sent an unparsable request head: %r", self.client, str(exc))
            raise RequestRejected(status, protocol_error_message(status)) from None

    # -- request body -------------------------------------------------------------------
    def _start_body(self, head: RequestHead) -> None:
        if self._decoder is not None:
            self._vet(self.conn.trailing_data[0])
        if self._body_error is None:
            self._pull_body()

    def _vet(self, data: bytes) -> None:
        """Check chunked bytes with the decoder before h11 parses them.

        h11 would take a 20-hex-digit size as a real length and hand the app the next
        lines as chunk data, and it accepts a bare CR in a chunk extension and extension
        lines of any length.
        """
        decoder = self._decoder
        if decoder is not None and not decoder.done:
            self._decode_chunked(data)

    def _feed_body(self, data: bytes) -> None:
        self._vet(data)
        if self._body_error is not None:
            return  # never parsed: no byte of a bad chunk reaches the app
        self.conn.receive_data(data)
        self._pull_body()

    def _pull_body(self) -> None:
        """Move body events h11 already has into ``_pending``."""
        conn = self.conn
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                logger.debug("%s sent an unparsable request body: %r", self.client, str(exc))
                self._body_error = (status, protocol_error_message(status))
                return
            if type(event) is h11.Data:
                self._add_body(event.data)
                if self._body_error is not None:
                    return
            elif type(event) is h11.EndOfMessage:  # request trailers (event.headers): dropped
                self._body_done = True
                return
            else:
                return

    def _buffer(self, data: bytes) -> None:
        self.conn.receive_data(data)

    def _continue(self) -> bytes:
        return self.conn.send(h11.InformationalResponse(status_code=100, headers=[]))

    # -- response -----------------------------------------------------------------------
    def _is_invalid_response(self, failure: BaseException) -> bool:
        return isinstance(failure, (h11.LocalProtocolError, InvalidResponse))

    def _encode_head(self, start: Message, final_length: int | None) -> bytes:
        """The serialised response head, with h11's state machine advanced past it.

        h11 validates every field of a response twice (its framing clean-up builds a
        second event), yet acts only on framing and ``Connection``. So h11 gets just
        those; the others are checked with h11's own grammar and written by us right
        after the status line, which is where h11 writes them too (it appends what it
        adds). Any field that is not plain, valid bytes sends the whole head through h11.
        """
        status = start["status"]
        headers = self._response_fields(start, status, final_length)
        reason = REASONS.get(status, b"")
        split = split_for_h11(headers, H11_RESPONSE_FIELDS)
        if split is None:
            return self.conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
        fields, extra = split
        head = self.conn.send(h11.Response(status_code=status, headers=fields, reason=reason))
        after_status = head.index(b"\r\n") + 2
        return head[:after_status] + extra + head[after_status:]

    def _encode_body(self, body: bytes) -> bytes:
        return self.conn.send(h11.Data(data=body))

    def _encode_end(self) -> bytes:
        return self.conn.send(_EOM)

    def _reuse(self) -> str:
        conn = self.conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            return "reuse"
        if conn.our_state is h11.MUST_CLOSE and conn.their_state is h11.MUST_CLOSE:
            return "eof"
        return "linger"

    # -- WebSocket hand-over ------------------------------------------------------------
    def handshake_has_body(self, head: RequestHead) -> bool:
        conn = self.conn
        while (event := conn.next_event()) is not h11.PAUSED:
            if type(event) is not h11.EndOfMessage:  # a body, or an incomplete one
                return True
        return False

    def switch_protocols(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        out = self.conn.send(h11.InformationalResponse(status_code=101, headers=headers))
        return out, self.conn.trailing_data[0]
