"""One TCP connection speaking HTTP/1.1 (h11) to an ASGI app.

Hot-path design: one task per connection, one ``h11.Connection`` per socket, and the app
is called *in* that task. The request body is read by the app's own ``receive()`` calls (one
socket read per call, so there is never more than one chunk read ahead), which is why a
plain GET/POST needs no extra task. A response that is ``http.response.start`` followed by
a final body goes out in one ``send_all`` (trio's ``SocketStream`` already sets
``TCP_NODELAY``, so it leaves at once).

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
from typing import Any

import h11
import trio

from .._exceptions import ResponseAborted
from .._http11 import (
    H11_RESPONSE_FIELDS,
    ChunkedBodyError,
    ChunkedFraming,
    split_for_h11,
)
from .._types import Message
from ._policy import (
    RequestHead,
    RequestRejected,
    error_response,
    inspect_request,
    protocol_error_message,
    scan_head,
)
from ._state import (
    ClientDisconnected,
    ServerState,
    access_logger,
    logger,
)
from ._ws import WebSocketSession

__all__ = ["ServerConnection"]

READ_SIZE = 65536
_LINGER_TIME = 1.0
_LINGER_BYTES = 256 * 1024
_DRAIN_UNREAD_BYTES = 64 * 1024
_FORCED_WRITE_TIME = 1.0
# Connection phases, which are also the kinds of deadline the watchdog enforces.
_IDLE, _HEAD, _REQUEST, _BODY, _SEND, _WEBSOCKET = "idle", "head", "request", "body", "send", "ws"
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_REASONS = {code.value: code.phrase.encode() for code in http.HTTPStatus}
_NO_BODY_STATUS = frozenset((204, 304))
_SERVER = (b"server", b"velithon")
_CLOSE = (b"connection", b"close")
_EOM = h11.EndOfMessage()  # events are immutable: one instance serves every response


class ServerConnection:
    """Serve requests on one accepted stream until it closes; see the module docstring."""

    def __init__(self, stream: trio.SocketStream, state: ServerState) -> None:
        self.stream = stream
        self.state = state
        self.config = state.config
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.config.max_header_size
        )
        self.client = _address(stream, peer=True)
        self.server = _address(stream, peer=False)
        self._conn_scope = trio.CancelScope()
        self.deadline = math.inf  # read by the watchdog; inf = no timer running
        self._deadline_kind = _IDLE
        self._expired: str | None = None
        self._phase = _IDLE
        self._draining = False
        self._forced = False
        self._started = self._complete = self._disconnected = False
        self._status = 0
        self.websocket: Any = None  # the live WebSocket session, for drain hooks
        self._receive = self.receive
        self._send = self.send

    # -- hooks called from other tasks (watchdog, drain) ---------------------------------
    def check_deadline(self, now: float) -> None:
        """Watchdog hook: cancel the connection once its current deadline has passed."""
        if now >= self.deadline:
            self._expired = self._deadline_kind
            self._conn_scope.cancel()

    def begin_drain(self) -> None:
        self._draining = True
        if self._phase is _IDLE:
            self._conn_scope.cancel()
        elif self.websocket is not None:
            self.websocket.going_away()

    def enter_websocket(self, session: Any) -> None:
        """The connection now carries a WebSocket session (no deadlines but sends)."""
        self.websocket = session
        self._phase = _WEBSOCKET
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
            await trio.aclose_forcefully(self.stream)

    async def _after_cancel(self) -> None:
        """A deadline passed or the drain gave up: answer if we still can, else reset."""
        phase, expired = self._phase, self._expired
        if phase is _IDLE or expired == _SEND:
            if expired == _SEND:
                self.abort()
            return
        if phase is _WEBSOCKET:
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
        elif phase is _HEAD:
            status, message = 408, "timed out reading request headers"
        else:
            status, message = 408, "timed out reading request body"
        with trio.move_on_after(_FORCED_WRITE_TIME):
            await self.send_error(status, message)

    async def _serve(self) -> None:
        conn = self.conn
        config = self.config
        while True:
            try:
                event = await self._next_request()
                if event is None:
                    return
                head = inspect_request(event, config)
            except RequestRejected as exc:
                await self.send_error(exc.status, exc.message)
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                logger.debug("%s sent an unparsable request head: %r", self.client, str(exc))
                await self.send_error(status, protocol_error_message(status))
                return
            if head.websocket:
                await WebSocketSession(self, head).run()
                return
            if not await self._handle(event, head):
                return
            conn.start_next_cycle()

    async def _next_request(self) -> h11.Request | None:
        """Read and return the next request head, or ``None`` to close silently."""
        conn = self.conn
        config = self.config
        while True:
            buf, closed = conn.trailing_data
            if buf:
                scan_head(buf, config)
                if self._phase is not _HEAD:
                    self._phase = _HEAD
                    self._deadline_kind = _HEAD
                    self.deadline = trio.current_time() + config.header_timeout
                event = conn.next_event()
            elif closed or conn.their_state is not h11.IDLE:
                event = conn.next_event()
            else:
                event = h11.NEED_DATA  # nothing buffered: skip asking h11 (saves ~2 µs)
            if event is h11.NEED_DATA:
                if self._phase is not _HEAD:
                    if self._draining:
                        return None
                    self._phase = _IDLE
                    self._deadline_kind = _IDLE
                    self.deadline = trio.current_time() + config.keepalive_timeout
                conn.receive_data(await self.stream.receive_some(READ_SIZE))
                continue
            self.deadline = math.inf
            if type(event) is h11.Request:
                self._phase = _REQUEST
                return event
            return None  # ConnectionClosed

    # -- one request --------------------------------------------------------------------
    async def _handle(self, event: h11.Request, head: RequestHead) -> bool:
        """Run the app for one request; return True if the connection may be reused."""
        self._method = _METHODS.get(event.method) or event.method.decode("ascii")
        self._is_head = event.method == b"HEAD"
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
        self._expect_100 = self.conn.they_are_waiting_for_100_continue
        self._chunked = head.chunked
        self._framing: ChunkedFraming | None = None
        if self._chunked:
            buffered = self.conn.trailing_data[0]
            self._fed = len(buffered)
            self._chunks = 0
            self._framing = ChunkedFraming(self.config.max_chunk_header_size)
            self._check_framing(buffered)
        if self._body_error is None:
            self._pull_body()
        if self._body_error is not None:
            await self.send_error(*self._body_error)
            return False
        scope = {
            "type": "http",
            "asgi": _ASGI.copy(),
            "http_version": event.http_version.decode("ascii"),
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": self._method,
            "root_path": self.config.root_path,
            "path": head.path,
            "raw_path": head.raw_path,
            "query_string": head.query_string,
            "headers": head.headers,
            "state": self.state.lifespan_state.copy(),
        }
        failure: BaseException | None = None
        try:
            await self.state.app(scope, self._receive, self._send)
        except ClientDisconnected as exc:
            logger.debug("client went away: %s", exc)
            self._disconnected = True
        except Exception as exc:
            failure = exc
        try:
            return await self._finish(failure)
        finally:
            if self.config.access_log:
                access_logger.info(
                    '%s - "%s %s HTTP/%s" %d', "%s:%s" % (self.client or ("-", "-")),
                    self._method, event.target.decode("latin-1"), scope["http_version"],
                    self._status,
                )

    async def _finish(self, failure: BaseException | None) -> bool:
        """Settle the exchange after the app returned; True if we can read another request."""
        if failure is not None:
            if isinstance(failure, h11.LocalProtocolError):
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
        elif failure is not None:
            await self.send_error(500, "internal server error")
        elif not self._complete:
            await self.send_error(500, "app returned without a complete response")
        return False

    async def _prepare_reuse(self) -> bool:
        conn = self.conn
        if conn.their_state is h11.SEND_BODY and not (self._expect_100 and not self._sent_100):
            # Unread request body: skip a small remainder to keep the connection alive.
            budget = _DRAIN_UNREAD_BYTES
            with trio.move_on_after(min(self.config.body_timeout, _LINGER_TIME)):
                while (
                    not self._body_done and self._body_error is None
                    and not self._disconnected and budget > 0
                ):
                    budget -= await self._read_body()
                    self._pending.clear()
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE and not self._draining:
            return True
        if conn.our_state is h11.MUST_CLOSE and conn.their_state is h11.MUST_CLOSE:
            await self.stream.send_eof()
            return False
        await self.close_lingering()
        return False

    # -- request body -------------------------------------------------------------------
    def _pull_body(self) -> None:
        """Move body events h11 already has into ``_pending``; enforce size rules."""
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
                data = event.data
                self._received += len(data)
                self._pending.append(data)
                if self._chunked and event.chunk_start:
                    self._chunks += 1
                limit = self.config.max_body_size
                if limit is not None and self._received > limit:
                    self._body_error = (413, "request body too large")
                    return
            elif type(event) is h11.EndOfMessage:  # request trailers (event.headers): dropped
                self._body_done = True
                if self._chunked:
                    self._check_chunk_overhead(len(conn.trailing_data[0]))
                return
            else:
                if self._chunked and event is h11.NEED_DATA:
                    self._check_chunk_overhead(len(conn.trailing_data[0]))
                return

    def _check_framing(self, data: bytes) -> None:
        """Vet chunk-size lines in ``data`` before h11 sees it (see :class:`ChunkedFraming`).

        h11 would take a 20-hex-digit size as a real length and hand the app the next
        lines as chunk data, and it accepts a bare CR in a chunk extension.
        """
        framing = self._framing
        if framing is None or framing.done:
            return
        try:
            framing.feed(data)
        except ChunkedBodyError as exc:
            self._body_error = (400, str(exc))

    def _check_chunk_overhead(self, buffered: int) -> None:
        """Cap chunk-extension lines: h11 accepts and discards any length of them.

        Framing bytes (size lines, extensions, CRLFs, trailers) may average 64 bytes per
        chunk plus one ``max_chunk_header_size`` allowance; a partial line h11 is still
        holding may not exceed the allowance either.
        """
        allowance = self.config.max_chunk_header_size
        overhead = self._fed - self._received - buffered
        if buffered > allowance or overhead > allowance + 64 * self._chunks:
            self._body_error = (400, "chunk extension too long")

    async def _read_body(self) -> int:
        """One socket read into h11 while the body is incomplete; returns bytes read."""
        conn = self.conn
        if self._expect_100 and not self._sent_100 and not self._started:
            self._sent_100 = True
            await self.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        self._deadline_kind = _BODY
        self.deadline = trio.current_time() + self.config.body_timeout
        try:
            data = await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""  # reset by the client: the app sees http.disconnect, not an error
        self.deadline = math.inf
        if not data:
            self._disconnected = True
            return 0
        if self._chunked:
            self._fed += len(data)
            self._check_framing(data)
            if self._body_error is not None:
                return len(data)  # never parsed: no byte of a bad chunk reaches the app
        conn.receive_data(data)
        self._pull_body()
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
                    data = await self.stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self._disconnected = True
                budget -= len(data)
                self.conn.receive_data(data)
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
            conn = self.conn
            start = self._start
            if start is not None:
                self._start = None
                out = self._send_head(start, None if more else len(body))
                if body and not self._no_body:
                    out += conn.send(h11.Data(data=body))
                self._started = True
            elif not self._started:
                raise RuntimeError("http.response.body sent before http.response.start")
            elif body and not self._no_body:
                out = conn.send(h11.Data(data=body))
            else:
                out = b""
            if not more:
                out += conn.send(_EOM)
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

    def _send_head(self, start: Message, final_length: int | None) -> bytes:
        """The serialised response head, with h11's state machine advanced past it.

        h11 validates every field of a response twice (its framing clean-up builds a
        second event), yet acts only on framing and ``Connection``. So h11 gets just
        those; the others are checked with h11's own grammar and written by us right
        after the status line, which is where h11 writes them too (it appends what it
        adds). Any field that is not plain, valid bytes sends the whole head through h11.
        """
        status = start["status"]
        headers = self._response_fields(start, status, final_length)
        reason = _REASONS.get(status, b"")
        split = split_for_h11(headers, H11_RESPONSE_FIELDS)
        if split is None:
            return self.conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
        fields, extra = split
        head = self.conn.send(h11.Response(status_code=status, headers=fields, reason=reason))
        after_status = head.index(b"\r\n") + 2
        return head[:after_status] + extra + head[after_status:]

    def _response_fields(self, start: Message, status: int, final_length: int | None
                         ) -> list[tuple[bytes, bytes]]:
        app_headers = start.get("headers") or ()
        self._no_body = self._is_head or status in _NO_BODY_STATUS
        # our Date and Server only where the app (e.g. a proxied upstream) sent none:
        # RFC 9110 allows a single Date
        has_date = has_server = False
        for name, _ in app_headers:
            if len(name) == 4 and name.lower() == b"date":
                has_date = True
            elif len(name) == 6 and name.lower() == b"server":
                has_server = True
        headers = [] if has_date else [(b"date", self.state.date_header())]
        if not has_server:
            headers.append(_SERVER)
        headers.extend(app_headers)
        if final_length is not None and status not in _NO_BODY_STATUS and status >= 200:
            if final_length or not self._is_head:
                for name, _ in app_headers:
                    if len(name) == 14 and name.lower() == b"content-length":
                        break
                else:
                    headers.append((b"content-length", b"%d" % final_length))
        if self._draining:
            headers.append(_CLOSE)
        return headers

    # -- I/O helpers (also used by the WebSocket session) --------------------------------
    async def write(self, data: bytes) -> None:
        """``send_all`` under the send deadline; a dead client → ClientDisconnected."""
        self._deadline_kind = _SEND
        self.deadline = trio.current_time() + self.config.send_timeout
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._disconnected = True
            raise ClientDisconnected("client disconnected") from exc
        finally:
            self.deadline = math.inf

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
        try:
            await self.stream.send_eof()
            budget = _LINGER_BYTES
            with trio.move_on_after(_LINGER_TIME):
                while budget > 0:
                    data = await self.stream.receive_some(READ_SIZE)
                    if not data:
                        break
                    budget -= len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    def abort(self) -> None:
        """Reset the connection (RST) so a partial response is never taken as complete."""
        try:
            self.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except OSError:
            pass


def _address(stream: trio.SocketStream, *, peer: bool) -> tuple[str, int] | None:
    try:
        name = stream.socket.getpeername() if peer else stream.socket.getsockname()
    except OSError:
        return None
    if isinstance(name, tuple):
        return (name[0], name[1])
    return None
