"""One TCP connection speaking HTTP/1.1 to an ASGI app: the part both parsers share.

Hot-path design: one task per connection, and the app is called *in* that task. The
request body is read by the app's own ``receive()`` calls (one socket read per call, so
there is never more than one chunk read ahead), which is why a plain GET/POST needs no
extra task. A response that is ``http.response.start`` followed by a final body goes out
in one ``send_all`` (trio's ``SocketStream`` already sets ``TCP_NODELAY``, so it leaves
at once).

Parsing and serialising are left to a subclass, one per parser: :mod:`._http_llhttp`
(llhttp heads, our own body framing; the fast default) and :mod:`._http_h11` (h11, the
pure-Python fallback). :func:`connection_class` picks one. Everything else lives here
once: deadlines, the ASGI ``receive``/``send`` glue, errors, draining and closing.

Timeouts cost nothing per request: each connection publishes one ``deadline`` (and what
it guards), and the server's watchdog task cancels the connection's single cancel scope
when it passes (:meth:`ServerConnection.check_deadline`). A cancel scope per read or write
would cost ~5 µs each on every request.

Error handling: a request the policies refuse gets a JSON error and ``Connection: close``
without the app being called. An app exception becomes a 500 (or an aborted connection if
the response had already started). Nothing escapes :meth:`ServerConnection.run` except
``trio.Cancelled`` and non-``Exception`` base exceptions.
"""

from __future__ import annotations

import http
import math
import socket
import struct
from typing import Any, Protocol

import trio

from .._access import ACCESS_SCOPE_KEY, AccessRecord
from .._exceptions import ResponseAborted
from .._http11 import CheckedFields, ChunkedBodyError, ChunkedDecoder, is_checked
from .._http11.llhttp import HttpParser
from .._sockio import FastSocket
from .._structured import all_leaves_are
from .._types import Message
from ._policy import (
    RequestHead,
    RequestRejected,
    error_response,
)
from ._state import (
    SERVER_FIELD,
    ClientDisconnected,
    ServerState,
    access_logger,
    logger,
)
from ._ws import WebSocketSession

__all__ = ["ConnectionIO", "InvalidResponse", "ServerConnection", "connection_class", "linger"]

READ_SIZE = 65536
CHUNKED_READ_SIZE = 16384
_LINGER_TIME = 1.0
_LINGER_BYTES = 256 * 1024
_DRAIN_UNREAD_BYTES = 64 * 1024
_FORCED_WRITE_TIME = 1.0
# Connection phases, which are also the kinds of deadline the watchdog enforces.
IDLE, HEAD, REQUEST, BODY, SEND, WEBSOCKET = "idle", "head", "request", "body", "send", "ws"
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}
REASONS = {code.value: code.phrase.encode() for code in http.HTTPStatus}
NO_BODY_STATUS = frozenset((204, 304))
_CLOSE = (b"connection", b"close")


class InvalidResponse(Exception):
    """The app's response cannot be sent as it is (bad field, body longer than its length)."""


class ConnectionIO(Protocol):
    """Where a connection reads and writes: a :class:`~velithon._sockio.FastSocket` on plain
    TCP, the ``SSLStream`` on TLS (see :mod:`._tls_connection`)."""

    async def receive_some(self, max_bytes: int) -> bytes: ...

    async def receive_when_ready(self, max_bytes: int) -> bytes: ...

    async def send_all(self, data: bytes) -> None: ...


def connection_class(parser: HttpParser, *, tls: bool = False) -> type[ServerConnection]:
    """The connection type that speaks HTTP/1.1 with ``parser`` (over TLS with ``tls``)."""
    base: type[ServerConnection]
    if parser == "httptools":
        from ._http_llhttp import LlhttpConnection
        base = LlhttpConnection
    else:
        from ._http_h11 import H11Connection
        base = H11Connection
    if tls:
        from ._tls_connection import with_tls
        return with_tls(base)
    return base


class ServerConnection:
    """Serve requests on one accepted stream until it closes; see the module docstring.

    Subclasses implement the parser-specific steps: :meth:`_next_request`,
    :meth:`_start_body`, :meth:`_feed_body`, :meth:`_buffer`, the ``_encode_*`` methods,
    :meth:`_continue`, :meth:`_reuse` and the WebSocket hand-over
    (:meth:`handshake_has_body`, :meth:`switch_protocols`).
    """

    #: The ASGI scheme of http and websocket scopes (TLS connections say https, wss).
    scheme = "http"
    ws_scheme = "ws"
    #: :meth:`_response_fields` adds nothing beyond Date, Server and framing, so a
    #: checked response head may be written in one pass without it
    plain_response_fields = True

    def __init__(self, stream: trio.SocketStream, state: ServerState) -> None:
        self.stream = stream
        self.io: ConnectionIO = FastSocket(stream)  # the hot path's reads and writes
        self.state = state
        self._now = state.now
        self.config = state.config
        self.client = _address(stream, peer=True)
        self.server = _address(stream, peer=False)
        self._conn_scope = trio.CancelScope()
        self.deadline = math.inf  # read by the watchdog; inf = no timer running
        self._deadline_kind = IDLE
        self._expired: str | None = None
        self._phase = IDLE
        self._draining = False
        self._forced = False
        self._started = self._complete = self._disconnected = False
        self._status = 0
        self.websocket: Any = None  # the live WebSocket session, for drain hooks
        self._receive = self.receive
        # with the access log on, every body message is counted on its way out
        self._send = self._send_counted if self.config.access_log else self.send
        self._access: AccessRecord | None = None

    # -- hooks called from other tasks (watchdog, drain) ---------------------------------
    def check_deadline(self, now: float) -> None:
        """Watchdog hook: cancel the connection once its current deadline has passed."""
        if now >= self.deadline:
            self._expired = self._deadline_kind
            self._conn_scope.cancel()

    def begin_drain(self) -> None:
        self._draining = True
        if self._phase is IDLE:
            self._conn_scope.cancel()
        elif self.websocket is not None:
            self.websocket.going_away()

    def enter_websocket(self, session: Any) -> None:
        """The connection now carries a WebSocket session (no deadlines but sends)."""
        self.websocket = session
        self._phase = WEBSOCKET
        if self._draining:
            session.going_away()

    def force_close(self) -> None:
        self._forced = True
        self._conn_scope.cancel()

    # -- connection loop ----------------------------------------------------------------
    async def run(self) -> None:
        """Serve until the connection ends. Never raises ``Exception``."""
        try:
            with self._conn_scope:
                await self._serve()
            if self._conn_scope.cancelled_caught:
                await self._after_cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ClientDisconnected):
            pass
        except Exception:
            logger.exception("error on connection from %s", self.client)
        finally:
            try:
                await trio.aclose_forcefully(self.stream)
            finally:
                self._forget()

    def _forget(self) -> None:
        """The connection is over: drop what refers back to it (its own bound methods
        kept as ``receive``/``send``), so it is freed with its task rather than at the
        garbage collector's next pass, with its buffers and socket objects."""
        del self._receive, self._send

    async def _after_cancel(self) -> None:
        """A deadline passed or the drain gave up: answer if we still can, else reset."""
        phase, expired = self._phase, self._expired
        if phase is IDLE or expired == SEND:
            if expired == SEND:
                self.abort()
            return
        if phase is WEBSOCKET:
            if self.websocket is not None:
                with trio.move_on_after(_FORCED_WRITE_TIME):
                    await self.websocket.close_going_away()
            return
        if self._started:
            if not self._complete:
                self.abort()
            return
        if self._forced:
            status, message = 503, "server is shutting down"
        elif phase is HEAD:
            status, message = 408, "timed out reading request headers"
        else:
            status, message = 408, "timed out reading request body"
        with trio.move_on_after(_FORCED_WRITE_TIME):
            await self.send_error(status, message)

    async def _serve(self) -> None:
        while True:
            try:
                head = await self._next_request()
                if head is None:
                    return
            except RequestRejected as exc:
                await self.send_error(exc.status, exc.message)
                if self.config.access_log:
                    now = trio.current_time()
                    access_logger.info(AccessRecord(now).line(
                        client=self.client, method=None, path=None, status=exc.status,
                        ended=now, error=exc.message))
                return
            if head.websocket:
                await WebSocketSession(self, head).run()
                return
            if not await self._handle(head):
                return

    def _enter_head(self) -> None:
        """Bytes of a new request head arrived: the header timeout runs from now."""
        self._phase = HEAD
        self._deadline_kind = HEAD
        self.deadline = self._now() + self.config.header_timeout

    def _enter_idle(self) -> None:
        """Waiting for the next request on a kept-alive connection."""
        self._phase = IDLE
        self._deadline_kind = IDLE
        self.deadline = self._now() + self.config.keepalive_timeout

    # -- parser-specific steps ----------------------------------------------------------
    async def _next_request(self) -> RequestHead | None:
        """Read and return the next request head, or ``None`` to close silently.

        Raises:
            RequestRejected: the head breaks a rule; answer and close.
        """
        raise NotImplementedError

    def _start_body(self, head: RequestHead) -> None:
        """Set up reading ``head``'s body and take what is already buffered."""
        raise NotImplementedError

    def _feed_body(self, data: bytes) -> None:
        """Body bytes just read: queue what the app gets in ``_pending``."""
        raise NotImplementedError

    def _buffer(self, data: bytes) -> None:
        """Bytes read after the request body (a pipelined request): keep them."""
        raise NotImplementedError

    def _continue(self) -> bytes:
        """The serialised ``100 Continue``."""
        raise NotImplementedError

    def _encode_head(self, start: Message, final_length: int | None) -> bytes:
        """The serialised response head (``final_length``: the whole body's, if known)."""
        raise NotImplementedError

    def _encode_body(self, body: bytes) -> bytes:
        raise NotImplementedError

    def _encode_end(self) -> bytes:
        raise NotImplementedError

    def _reuse(self) -> str:
        """After the exchange: ``"reuse"``, ``"eof"`` (half-close) or ``"linger"``."""
        raise NotImplementedError

    def handshake_has_body(self, head: RequestHead) -> bool:
        """Whether a WebSocket handshake request came with a body (refused)."""
        raise NotImplementedError

    def switch_protocols(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        """``(the serialised 101 response, bytes the client sent after its handshake)``."""
        raise NotImplementedError

    # -- one request --------------------------------------------------------------------
    async def _handle(self, head: RequestHead) -> bool:
        """Run the app for one request; return True if the connection may be reused."""
        self._head = head
        self._is_head = head.method == "HEAD"
        self._start: Message | None = None  # http.response.start not yet written
        self._started = False  # response head handed to the socket
        self._complete = False
        self._status = 0
        self._pending: list[bytes] = []
        self._body_done = False
        self._final_returned = False
        self._received = 0
        self._body_error: tuple[int, str] | None = None
        self._disconnected = False
        self._disconnect_scope: trio.CancelScope | None = None
        self._no_body = False
        self._sent_100 = False
        self._expect_100 = head.expect_100
        self._decoder: ChunkedDecoder | None = None
        if head.chunked:
            self._decoder = ChunkedDecoder(self.config.max_chunk_header_size)
        self._start_body(head)
        if self._body_error is not None:
            await self.send_error(*self._body_error)
            return False
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI.copy(),
            "http_version": head.http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": head.method,
            "root_path": self.config.root_path,
            "path": head.path,
            "raw_path": head.raw_path,
            "query_string": head.query_string,
            "headers": head.headers,
            "state": self.state.lifespan_state.copy(),
        }
        access = None
        if self.config.access_log:
            access = self._access = AccessRecord(trio.current_time())
            scope[ACCESS_SCOPE_KEY] = access
        failure: BaseException | None = None
        try:
            await self.state.app(scope, self._receive, self._send)
        except ClientDisconnected as exc:
            logger.debug("client went away: %s", exc)
            self._disconnected = True
        except Exception as exc:
            if all_leaves_are(exc, ClientDisconnected):  # from the app's nursery
                logger.debug("client went away: %s", exc)
                self._disconnected = True
            else:
                failure = exc
        if access is None:
            return await self._finish(failure)
        ended = trio.current_time()  # before any lingering close or unread-body drain
        try:
            return await self._finish(failure)
        finally:
            self._access = None
            access_logger.info(access.line(
                client=self.client, method=head.method, path=head.target.decode("latin-1"),
                status=self._status, ended=ended))

    def _is_invalid_response(self, failure: BaseException) -> bool:
        """Whether ``failure`` says the app's response could not be serialised."""
        return isinstance(failure, InvalidResponse)

    async def _finish(self, failure: BaseException | None) -> bool:
        """Settle the exchange after the app returned; True if we can read another request."""
        if failure is not None:
            if self._is_invalid_response(failure):
                logger.error("app sent an invalid response: %s", failure)
            elif isinstance(failure, ResponseAborted):
                logger.warning("response aborted: %s", failure)  # deliberate: no traceback
            else:
                logger.error("exception in ASGI app", exc_info=failure)
        if self._complete:
            if failure is None and self._body_error is None:
                return await self._prepare_reuse()
            await self.close_lingering()
            return False
        if self._disconnected:
            return False
        if self._started:
            self.abort()  # the client must not mistake a cut response for a whole one
            return False
        if self._body_error is not None:
            await self.send_error(*self._body_error)
        elif isinstance(failure, ResponseAborted):
            # aborted before its head reached the socket (a proxy whose upstream failed
            # right after its head): still time to say so properly
            await self.send_error(502, "the response could not be completed")
        elif failure is not None:
            await self.send_error(500, "internal server error")
        elif not self._complete:
            await self.send_error(500, "app returned without a complete response")
        return False

    async def _prepare_reuse(self) -> bool:
        if not self._body_done and not (self._expect_100 and not self._sent_100):
            # Unread request body: skip a small remainder to keep the connection alive.
            budget = _DRAIN_UNREAD_BYTES
            with trio.move_on_after(min(self.config.body_timeout, _LINGER_TIME)):
                while (
                    not self._body_done and self._body_error is None
                    and not self._disconnected and budget > 0
                ):
                    budget -= await self._read_body()
                    self._pending.clear()
        verdict = self._reuse()
        if verdict == "reuse" and not self._draining:
            return True
        if verdict == "eof":
            await self.send_eof()
            return False
        await self.close_lingering()
        return False

    # -- request body -------------------------------------------------------------------
    def _decode_chunked(self, data: bytes) -> tuple[bytes, int]:
        """Run ``data`` through the chunk decoder; a framing error becomes a 400."""
        assert self._decoder is not None
        try:
            return self._decoder.feed(data)
        except ChunkedBodyError as exc:
            self._body_error = (400, str(exc))
            return b"", len(data)

    def _add_body(self, data: bytes) -> None:
        """Queue request body bytes for the app, within ``max_body_size``."""
        self._received += len(data)
        self._pending.append(data)
        limit = self.config.max_body_size
        if limit is not None and self._received > limit:
            self._body_error = (413, "request body too large")

    async def _read_body(self) -> int:
        """One socket read while the body is incomplete; returns bytes read."""
        if self._expect_100 and not self._sent_100 and not self._started:
            self._sent_100 = True
            await self.write(self._continue())
        self._deadline_kind = BODY
        self.deadline = self._now() + self.config.body_timeout
        # a chunked body is read in smaller pieces: decoding costs Python time per
        # chunk, and one read of tiny chunks must not hold the event loop for long
        size = CHUNKED_READ_SIZE if self._decoder is not None else READ_SIZE
        try:
            data = await self.io.receive_some(size)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""  # reset by the client: the app sees http.disconnect, not an error
        self.deadline = math.inf
        if not data:
            self._disconnected = True
            return 0
        self._feed_body(data)
        return len(data)

    async def receive(self) -> Message:
        """ASGI ``receive`` for http: body chunks as they arrive, then ``http.disconnect``."""
        while not self._pending:
            if self._body_done:
                if not self._final_returned:
                    self._final_returned = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                return await self._wait_disconnect()
            if self._disconnected or self._body_error is not None:
                return _DISCONNECT
            await self._read_body()
        pending = self._pending
        body = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        more = not self._body_done
        self._final_returned = not more
        return {"type": "http.request", "body": body, "more_body": more}

    async def _wait_disconnect(self) -> Message:
        """Block until the client goes away or the response is complete."""
        budget = self.config.max_header_size  # pipelined bytes we are willing to buffer
        with trio.CancelScope() as scope:
            self._disconnect_scope = scope
            while not self._disconnected and not self._complete:
                if budget <= 0:
                    await trio.sleep_forever()
                try:
                    data = await self.io.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self._disconnected = True
                budget -= len(data)
                self._buffer(data)
        self._disconnect_scope = None
        return _DISCONNECT

    # -- response -----------------------------------------------------------------------
    async def send(self, message: Message) -> None:
        """ASGI ``send`` for http; returns once the bytes were handed to the socket."""
        kind = message["type"]
        if kind == "http.response.body":
            if self._disconnected or self._body_error is not None:
                raise ClientDisconnected("client disconnected")
            if self._complete:
                raise RuntimeError("http.response.body sent after the response completed")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            start = self._start
            if start is not None:
                self._start = None
                out = self._encode_head(start, None if more else len(body))
                if body and not self._no_body:
                    out += self._encode_body(body)
                self._started = True
            elif not self._started:
                raise RuntimeError("http.response.body sent before http.response.start")
            elif body and not self._no_body:
                out = self._encode_body(body)
            else:
                out = b""
            if not more:
                out += self._encode_end()
                self._complete = True
                if self._disconnect_scope is not None:
                    self._disconnect_scope.cancel()
            if out:
                await self.write(out)
        elif kind == "http.response.start":
            if self._start is not None or self._started:
                raise RuntimeError("http.response.start sent twice")
            self._start = message
            self._status = message["status"]
        elif kind != "http.response.trailers":
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for an http scope")

    async def _send_counted(self, message: Message) -> None:
        """ASGI ``send`` while the access log is on: :meth:`send`, counting body bytes."""
        await self.send(message)
        access = self._access
        if access is not None and message["type"] == "http.response.body" \
                and not self._no_body:
            access.bytes_sent += len(message.get("body", b""))

    def _response_fields(self, start: Message, status: int, final_length: int | None
                         ) -> list[tuple[bytes, bytes]]:
        """The app's fields plus ours: Date, Server, a known length, a draining close."""
        app_headers = start.get("headers") or ()
        self._no_body = self._is_head or status in NO_BODY_STATUS
        checked = is_checked(app_headers)  # then names are lowercase already
        # our Date and Server only where the app (e.g. a proxied upstream) sent none:
        # RFC 9110 allows a single Date
        has_date = has_server = has_length = False
        for name, _ in app_headers:
            if len(name) == 4 and (name if checked else name.lower()) == b"date":
                has_date = True
            elif len(name) == 6 and (name if checked else name.lower()) == b"server":
                has_server = True
            elif len(name) == 14 and (name if checked else name.lower()) == b"content-length":
                has_length = True
        headers = [] if has_date else [(b"date", self.state.date_header())]
        if not has_server:
            headers.append(SERVER_FIELD)
        headers.extend(app_headers)
        if (final_length is not None and status not in NO_BODY_STATUS and status >= 200
                and (final_length or not self._is_head) and not has_length):
            headers.append((b"content-length", b"%d" % final_length))
        if self._draining:
            headers.append(_CLOSE)
        return CheckedFields(headers) if checked else headers  # ours are valid too

    # -- I/O helpers (also used by the WebSocket session) --------------------------------
    async def write(self, data: bytes) -> None:
        """``send_all`` under the send deadline; a dead client → ClientDisconnected."""
        self._deadline_kind = SEND
        self.deadline = self._now() + self.config.send_timeout
        try:
            await self.io.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._disconnected = True
            raise ClientDisconnected("client disconnected") from exc
        finally:
            self.deadline = math.inf

    async def send_eof(self) -> None:
        """The response was the last one: end our side of the connection."""
        await self.stream.send_eof()

    async def send_error(self, status: int, message: str, extra: bytes = b"") -> None:
        """Answer with a JSON error and close gracefully (the caller then returns)."""
        logger.debug("%s → %d %s", self.client, status, message)
        self._status = status
        try:
            await self.write(error_response(status, message, extra))
        except ClientDisconnected:
            return
        await self.close_lingering()

    async def close_lingering(self) -> None:
        """Half-close, then read and discard for a moment so our last response is not lost.

        Closing with unread input makes the kernel send RST, which can destroy a response
        the client has not read yet (the classic "lingering close" problem).
        """
        await linger(self.stream)

    def abort(self) -> None:
        """Reset the connection (RST) so a partial response is never taken as complete."""
        try:
            self.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except OSError:
            pass


async def linger(stream: trio.SocketStream) -> None:
    """Half-close ``stream``, then read and discard what still comes, for a moment."""
    try:
        await stream.send_eof()
        budget = _LINGER_BYTES
        with trio.move_on_after(_LINGER_TIME):
            while budget > 0:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    break
                budget -= len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


def _address(stream: trio.SocketStream, *, peer: bool) -> tuple[str, int] | None:
    try:
        name = stream.socket.getpeername() if peer else stream.socket.getsockname()
    except OSError:
        return None
    if isinstance(name, tuple):
        return (name[0], name[1])
    return None
