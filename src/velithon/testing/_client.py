"""A raw TCP client for tests that must send exact bytes and see exactly what comes back.

HTTP client libraries normalise requests and hide how a response ended. Smuggling,
framing and abort tests need the opposite: send the bytes as written, then learn the
status, headers, body and whether the message was *complete* or cut off by the peer.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import h11
import trio

from ._http import MAX_HEAD_SIZE, HeaderLookup, decode_headers
from ._net import NETWORK_ERRORS, reset_now

__all__ = ["NoResponseError", "RawConnection", "RawResponse", "open_raw_connection"]

_RECEIVE_SIZE = 65536
#: Parsing needs an h11 client that "sent" a request. Proposing an upgrade lets the same
#: parser accept a 101 as well as an ordinary response.
_PRETEND_HEADERS = [("Host", "raw"), ("Connection", "upgrade"), ("Upgrade", "websocket")]


class NoResponseError(Exception):
    """The peer closed (or reset) the connection before sending a response head."""


@attrs.frozen
class RawResponse(HeaderLookup):
    """One response as it arrived.

    ``complete`` is False when the peer closed mid-body; ``body`` then holds what came.
    ``informational`` lists any 1xx responses (status, headers) that preceded it; a 101
    is returned as the response itself.
    """

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool
    http_version: str = "1.1"
    informational: list[tuple[int, list[tuple[str, str]]]] = attrs.Factory(list)

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """A connected TCP stream with HTTP-aware reading; get one from :func:`open_raw_connection`.

    Bytes read past the end of a response are kept for the next read, so pipelined
    responses and post-``101`` frames are not lost.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self.eof = False
        self.reset_by_peer = False

    def __repr__(self) -> str:
        return f"<RawConnection eof={self.eof} buffered={len(self._buffer)}>"

    @property
    def stream(self) -> trio.SocketStream:
        return self._stream

    async def send(self, data: bytes) -> None:
        """Write ``data`` exactly as given."""
        await self._stream.send_all(data)

    async def send_eof(self) -> None:
        """Half-close: send FIN but keep reading."""
        await self._stream.send_eof()

    def reset(self) -> None:
        """Abort with an RST (a client that vanishes mid-request)."""
        reset_now(self._stream)

    async def _receive(self) -> bytes:
        """Buffered bytes first, then the socket; ``b""`` at EOF or on a reset."""
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            await trio.lowlevel.checkpoint()
            return data
        if self.eof:
            await trio.lowlevel.checkpoint()
            return b""
        try:
            data = await self._stream.receive_some(_RECEIVE_SIZE)
        except NETWORK_ERRORS as exc:
            self.reset_by_peer = isinstance(exc.__cause__, ConnectionResetError)
            data = b""
        self.eof = not data
        return data

    async def receive_some(self, *, timeout: float = 5.0) -> bytes:
        """The next bytes (``b""`` once the peer closed).

        Raises:
            trio.TooSlowError: nothing arrived within ``timeout``.
        """
        with trio.fail_after(timeout):
            return await self._receive()

    async def receive_response(self, *, timeout: float = 5.0, method: str = "GET") -> RawResponse:
        """Read one response; pass ``method="HEAD"`` for a HEAD (no body follows).

        Raises:
            NoResponseError: the peer closed before a response head.
            h11.RemoteProtocolError: the response head is malformed.
            trio.TooSlowError: no full response (or close) within ``timeout``.
        """
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)
        conn.send(h11.Request(method=method, target="/", headers=_PRETEND_HEADERS))
        conn.send(h11.EndOfMessage())
        head: h11.Response | h11.InformationalResponse | None = None
        body = bytearray()
        informational: list[tuple[int, list[tuple[str, str]]]] = []
        with trio.fail_after(timeout):
            while True:  # one h11 event per turn; ends at a full message, EOF or timeout
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError:
                    if head is None and self.eof:
                        raise NoResponseError("connection closed before a response") from None
                    if head is None or not self.eof:
                        raise
                    return self._response(head, body, informational, complete=False)
                if event is h11.NEED_DATA:
                    conn.receive_data(await self._receive())
                elif isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                    informational.append((event.status_code, decode_headers(event)))
                elif isinstance(event, h11.Response | h11.InformationalResponse):
                    head = event
                    if event.status_code == 101:
                        break
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise NoResponseError("connection closed before a response")
        assert head is not None
        leftover, _ = conn.trailing_data
        self._buffer[:0] = leftover
        return self._response(head, body, informational, complete=True)

    @staticmethod
    def _response(
        head: h11.Response | h11.InformationalResponse,
        body: bytearray,
        informational: list[tuple[int, list[tuple[str, str]]]],
        *,
        complete: bool,
    ) -> RawResponse:
        return RawResponse(
            status=head.status_code,
            reason=head.reason.decode("latin-1"),
            headers=decode_headers(head),
            body=bytes(body),
            complete=complete,
            http_version=head.http_version.decode("ascii"),
            informational=informational,
        )

    async def receive_until_close(self, *, timeout: float = 5.0) -> bytes:
        """Everything until the peer closes.

        Raises:
            trio.TooSlowError: the peer kept the connection open past ``timeout``.
        """
        received = bytearray()
        with trio.fail_after(timeout):
            while data := await self._receive():  # ends at EOF or timeout
                received += data
        return bytes(received)

    async def wait_closed(self, timeout: float = 5.0) -> bool:
        """True if the peer closes (FIN or RST) within ``timeout``; data is discarded."""
        with trio.move_on_after(timeout):
            while await self._receive():  # ends at EOF or timeout
                pass
            return True
        return False

    async def aclose(self) -> None:
        await self._stream.aclose()


@contextlib.asynccontextmanager
async def open_raw_connection(
    host: str, port: int, *, connect_timeout: float = 5.0
) -> AsyncIterator[RawConnection]:
    """Connect to ``host:port`` for the ``async with`` block; closed (FIN) on exit.

    Raises:
        OSError: the connection was refused.
        trio.TooSlowError: no connection within ``connect_timeout``.
    """
    with trio.fail_after(connect_timeout):
        stream = await trio.open_tcp_stream(host, port)
    async with stream:
        yield RawConnection(stream)
