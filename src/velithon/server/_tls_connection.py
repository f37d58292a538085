"""A server connection over TLS: trio's ``SSLStream`` under the same HTTP/1.1 code.

The seam is the connection's ``io``: plain connections read and write a
:class:`~velithon._sockio.FastSocket`; a TLS connection reads and writes an
``SSLStream``, which itself sits on a FastSocket (:class:`TLSTransport`), so TCP reads and
writes skip trio's per-call scheduling here too. Everything above ``io`` (parsing,
deadlines, ASGI, WebSockets, draining) is the plain connection's code, unchanged;
:class:`TLSConnection` is mixed into whichever parser's connection class is in use
(:func:`with_tls`), so the plain classes carry no TLS branch at all.

What TLS adds:

* the handshake, first, under ``handshake_timeout``, enforced by the server's watchdog
  like every other deadline (no cancel scope or timer per connection). A client that
  never finishes it is dropped at the deadline; a failed handshake (garbage, an old
  protocol version, a missing client certificate) closes the connection with one DEBUG
  line. A plain HTTP request (OpenSSL recognises ``GET``, ``POST``, ``HEAD``, ``PUT``) is
  answered, in cleartext, ``400 plain HTTP request sent to HTTPS port``, as nginx does;
* ``https``/``wss`` as the scope's scheme, and ``Strict-Transport-Security`` on responses
  when configured (unless the app set its own);
* the end of a connection: a ``close_notify`` alert before our side of TCP closes, then
  the same lingering close as plain connections. ``SSLStream.aclose`` sends the alert and
  then closes its transport; :class:`TLSTransport` turns that close into what the
  connection asked for (half-close, or half-close and linger), and the connection closes
  the socket itself afterwards.

A client that closes TCP without its own ``close_notify`` (most do) ends the connection
like a plain EOF: the stream reports it as broken, which the plain code already treats as
the client leaving.
"""

from __future__ import annotations

import functools
import math
import socket
import ssl
from typing import cast

import trio

from .._sockio import FastSocket
from .._types import Message
from ._http import IDLE, READ_SIZE, ConnectionIO, ServerConnection, linger
from ._policy import error_response
from ._state import ServerState, logger

__all__ = ["HANDSHAKE", "TLSConnection", "TLSTransport", "with_tls"]

#: The connection phase (and deadline kind) before the TLS handshake is done.
HANDSHAKE = "tls-handshake"
_CLOSE, _EOF, _LINGER = "close", "eof", "linger"
_REFUSAL_TIME = 2.0  # the cleartext 400 and its lingering close, at most
_PLAIN_HTTP = error_response(400, "plain HTTP request sent to HTTPS port")
_HSTS_NAME = b"strict-transport-security"
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class TLSTransport(trio.abc.HalfCloseableStream):
    """The TCP connection under a server's ``SSLStream``, read and written via FastSocket.

    ``aclose()`` does what :attr:`on_close` says: ``"close"`` closes the socket;
    ``"eof"`` only half-closes it and ``"linger"`` half-closes it and reads what still
    arrives for a moment (see :func:`~._http.linger`). In those two cases the connection
    that owns the socket closes it afterwards.
    """

    def __init__(self, stream: trio.SocketStream, io: FastSocket) -> None:
        self.stream = stream
        self.io = io
        self.on_close = _CLOSE

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.io.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.io.receive_some(max_bytes or READ_SIZE)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        if self.on_close == _LINGER:
            await linger(self.stream)
        elif self.on_close == _EOF:
            try:
                await self.stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        else:
            await self.stream.aclose()


class _SSLIO:
    """The connection's ``io`` on TLS: the ``SSLStream``'s own methods, no extra call."""

    __slots__ = ("receive_some", "receive_when_ready", "send_all")

    def __init__(self, stream: trio.SSLStream[TLSTransport]) -> None:
        # SSLObject.read returns bytes; trio's annotation is wider than what it returns
        self.receive_some = self.receive_when_ready = cast(
            ConnectionIO, stream).receive_some
        self.send_all = stream.send_all


class TLSConnection(ServerConnection):
    """The TLS part of a server connection; see the module docstring."""

    scheme = "https"
    ws_scheme = "wss"

    def __init__(self, stream: trio.SocketStream, state: ServerState) -> None:
        super().__init__(stream, state)
        tls = state.tls
        assert tls is not None, "a TLS connection needs the server's certificates"
        io = self.io
        assert isinstance(io, FastSocket)
        self._transport = TLSTransport(stream, io)
        self.tls_stream = trio.SSLStream(self._transport, tls.context, server_side=True)
        self.io = _SSLIO(self.tls_stream)
        self._hsts = tls.config.hsts_header
        self._phase = self._deadline_kind = HANDSHAKE
        self.deadline = trio.current_time() + tls.config.handshake_timeout

    def begin_drain(self) -> None:
        if self._phase is HANDSHAKE:  # no request yet: nothing to finish
            self._draining = True
            self._conn_scope.cancel()
            return
        super().begin_drain()

    async def run(self) -> None:
        try:
            if await self._handshake():
                await super().run()
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _handshake(self) -> bool:
        """Run the TLS handshake under its deadline; True if the connection is usable."""
        try:
            with self._conn_scope:
                await self.tls_stream.do_handshake()
                self.deadline = math.inf
                _ack_now(self.stream)
                # the handshake's scope is spent: the plain code gets a fresh one
                self._conn_scope = trio.CancelScope()
                self._phase = self._deadline_kind = IDLE
                return True
        except trio.BrokenResourceError as exc:
            self.deadline = math.inf
            await self._refuse(exc.__cause__)
            return False
        if self._expired == HANDSHAKE:
            logger.debug("%s did not finish its TLS handshake in time", self.client)
        return False

    async def _refuse(self, cause: BaseException | None) -> None:
        """A failed handshake: say so in cleartext if it was plain HTTP; then close."""
        reason = getattr(cause, "reason", None) if isinstance(cause, ssl.SSLError) else None
        if reason != "HTTP_REQUEST":
            logger.debug("TLS handshake with %s failed: %s", self.client,
                         reason or cause or "connection closed")
            return
        logger.debug("%s sent a plain HTTP request to the TLS port: answered 400", self.client)
        self._status = 400
        with trio.move_on_after(_REFUSAL_TIME):
            try:
                await self._transport.io.send_all(_PLAIN_HTTP)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await linger(self.stream)

    # -- the end of a connection: close_notify first ---------------------------------
    async def _close_tls(self, how: str) -> None:
        self._transport.on_close = how
        try:
            await self.tls_stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def send_eof(self) -> None:
        await self._close_tls(_EOF)

    async def close_lingering(self) -> None:
        await self._close_tls(_LINGER)

    # -- response ------------------------------------------------------------------------
    plain_response_fields = False  # HSTS is added below

    def _response_fields(self, start: Message, status: int, final_length: int | None
                         ) -> list[tuple[bytes, bytes]]:
        headers = super()._response_fields(start, status, final_length)
        hsts = self._hsts
        if hsts is not None:
            for name, _ in headers:
                if len(name) == 25 and name.lower() == _HSTS_NAME:
                    break
            else:
                headers.append(hsts)
        return headers


def _ack_now(stream: trio.SocketStream) -> None:
    """Acknowledge the client's last handshake bytes at once.

    With TLS 1.3 the client speaks last in the handshake, and trio holds the server's
    session tickets back until the first response, so the server has nothing to send
    and the kernel delays its ACK (40 ms on Linux). A client that writes its request
    with Nagle's algorithm on (Python's plain ``ssl`` sockets, for one) waits for that
    ACK before sending. ``TCP_QUICKACK`` sends the pending ACK now (Linux only).
    """
    if _QUICKACK is not None:
        try:
            stream.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass


@functools.cache
def with_tls(base: type[ServerConnection]) -> type[ServerConnection]:
    """``base`` (a parser's connection class) speaking TLS: :class:`TLSConnection` mixed in."""
    cls = type(f"TLS{base.__name__}", (TLSConnection, base),
               {"__module__": __name__, "__doc__": f"{base.__name__} over TLS."})
    return cast(type[ServerConnection], cls)
