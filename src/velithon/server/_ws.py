"""WebSocket upgrade of an HTTP/1.1 connection, spoken to the app as an ASGI websocket scope.

The HTTP connection parses the handshake and hands over: it says whether the handshake
carried a body (refused), serialises the 101, and returns any frame bytes the client sent
early, which are fed to wsproto first. Like the http side, the app's own ``receive()``
drives socket reads, so there is no reader task: pings are answered and close frames
acknowledged as the app receives. Sends take a lock because an app may send and receive
from different tasks.

Shutdown: :meth:`WebSocketSession.going_away` interrupts a pending ``receive()`` and the
connection is closed with 1001; a close *before* accept is answered with an HTTP 403.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    TextMessage,
)
from wsproto.utilities import generate_accept_token

from .._http11 import reason
from .._structured import all_leaves_are
from .._types import Message as ASGIMessage
from .._types import Scope
from ._state import ClientDisconnected, logger

if TYPE_CHECKING:
    from ._http import ServerConnection
    from ._policy import RequestHead

__all__ = ["WebSocketSession"]

READ_SIZE = 65536
_CLOSE_WAIT = 1.0


class WebSocketSession:
    """The ASGI websocket exchange on one upgraded connection."""

    def __init__(self, http: ServerConnection, head: RequestHead) -> None:
        self.http = http
        self.head = head
        self.ws: Connection | None = None
        self._events: deque[Event] = deque()
        self._connect_delivered = False
        self._rejected = False
        self._disconnect: ASGIMessage | None = None
        self._lock = trio.Lock()
        self._read_scope: trio.CancelScope | None = None
        self._going_away = False
        self._parts: list[Any] = []
        self._size = 0
        self._denial: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._denial_body: list[bytes] = []

    def going_away(self) -> None:
        """Server shutdown: make a pending or next ``receive()`` close with 1001."""
        self._going_away = True
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def run(self) -> None:
        http = self.http
        if http.handshake_has_body(self.head):
            await http.send_error(400, "a websocket handshake has no body")
            return
        headers = dict(self.head.headers)
        if headers.get(b"sec-websocket-version") != b"13":
            await http.send_error(426, "unsupported websocket version",
                                  b"sec-websocket-version: 13\r\n")
            return
        if not headers.get(b"sec-websocket-key"):
            await http.send_error(400, "missing Sec-WebSocket-Key")
            return
        subprotocols = [
            p.strip().decode("latin-1")
            for name, value in self.head.headers if name == b"sec-websocket-protocol"
            for p in value.split(b",") if p.strip()
        ]
        head = self.head
        scope: Scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": http.ws_scheme,
            "server": http.server,
            "client": http.client,
            "root_path": http.config.root_path,
            "path": head.path,
            "raw_path": head.raw_path,
            "query_string": head.query_string,
            "headers": head.headers,
            "subprotocols": subprotocols,
            "state": http.state.lifespan_state.copy(),
            # lets an app refuse the handshake with a real HTTP response (a proxy's 502/503)
            "extensions": {"websocket.http.response": {}},
        }
        self._key = headers[b"sec-websocket-key"]
        http.enter_websocket(self)
        failure: Exception | None = None
        try:
            await http.state.app(scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception as exc:
            if not all_leaves_are(exc, ClientDisconnected):  # else: from a nursery
                failure = exc
                logger.error("exception in ASGI websocket app", exc_info=exc)
        await self._finish(failure)

    async def close_going_away(self) -> None:
        """The server cancelled the app (drain deadline): say so to the client if we can."""
        if self.ws is None:
            if not self._rejected and not self.http._disconnected:
                await self.http.send_error(503, "server is shutting down")
        elif not self.http._disconnected:
            await self._close(1001)

    async def _finish(self, failure: Exception | None) -> None:
        http = self.http
        if self.ws is None:
            if self._rejected or http._disconnected:
                return
            if failure is not None:
                await http.send_error(500, "internal server error")
            else:
                await http.send_error(403, "websocket connection rejected")
            return
        if http._disconnected:
            return
        code = 1011 if failure is not None else 1001 if self._going_away else 1000
        with trio.move_on_after(_CLOSE_WAIT):
            try:
                await self._close(code)
                # Wait for the peer's close frame (or EOF), then drop the TCP connection.
                while self.ws.state is not ConnectionState.CLOSED and not http._disconnected:
                    await self._read()
                    self._events.clear()
            except ClientDisconnected:
                pass

    # -- ASGI receive -------------------------------------------------------------------
    async def receive(self) -> ASGIMessage:
        if not self._connect_delivered:
            self._connect_delivered = True
            return {"type": "websocket.connect"}
        if self.ws is None:
            raise RuntimeError("websocket.receive before websocket.accept")
        while self._disconnect is None:
            if self._events:
                message = await self._on_event(self._events.popleft())
                if message is not None:
                    return message
            elif self._going_away:
                await self._close(1001)
                self._disconnect = {"type": "websocket.disconnect", "code": 1001, "reason": ""}
            else:
                await self._read()
        return self._disconnect

    async def _read(self) -> None:
        ws = self.ws
        assert ws is not None, "reading frames before the handshake was accepted"
        with trio.CancelScope() as scope:
            self._read_scope = scope
            if self._going_away and ws.state is ConnectionState.OPEN:
                scope.cancel()
            try:
                data = await self.http.io.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""  # the client reset the connection: an abnormal closure (1006)
        self._read_scope = None
        if scope.cancelled_caught:
            return
        if not data:
            self.http._disconnected = True
            if self._disconnect is None:
                self._disconnect = {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            return
        ws.receive_data(data)
        self._events.extend(ws.events())

    async def _on_event(self, event: Event) -> ASGIMessage | None:
        if isinstance(event, Message):
            self._parts.append(event.data)
            self._size += len(event.data)
            if self._size > self.http.config.ws_max_message_size:
                await self._close(1009, "message too big")
                self._disconnect = {"type": "websocket.disconnect", "code": 1009, "reason": ""}
                return None
            if not event.message_finished:
                return None
            parts, self._parts, self._size = self._parts, [], 0
            if isinstance(event, TextMessage):
                return {"type": "websocket.receive", "text": "".join(parts)}
            return {"type": "websocket.receive", "bytes": b"".join(parts)}
        if isinstance(event, Ping):
            assert self.ws is not None  # events come from the accepted connection
            await self._write(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            await self._close(event.code, event.reason or "")
            self._disconnect = {
                "type": "websocket.disconnect", "code": event.code, "reason": event.reason or ""
            }
        return None

    # -- ASGI send ----------------------------------------------------------------------
    async def send(self, message: ASGIMessage) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            if self.ws is None:
                raise RuntimeError("websocket.send before websocket.accept")
            if self._going_away:
                await self._close(1001)
            if self.ws.state is not ConnectionState.OPEN or self.http._disconnected:
                raise ClientDisconnected("websocket is closed")
            text = message.get("text")
            data = BytesMessage(data=message.get("bytes") or b"") if text is None else TextMessage(
                data=text
            )
            await self._write(self.ws.send(data))
        elif kind == "websocket.accept":
            await self._accept(message)
        elif kind == "websocket.http.response.start":
            if self.ws is not None or self._rejected or self._denial is not None:
                raise RuntimeError(
                    "websocket.http.response.start after accept, close or a response")
            self._denial = (int(message["status"]), list(message.get("headers") or ()))
        elif kind == "websocket.http.response.body":
            if self._denial is None:
                raise RuntimeError(
                    "websocket.http.response.body before websocket.http.response.start")
            self._denial_body.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_denial()
        elif kind == "websocket.close":
            if self.ws is None:
                if not self._rejected:
                    self._rejected = True
                    await self.http.send_error(403, "websocket connection rejected")
                return
            await self._close(message.get("code") or 1000, message.get("reason") or "")
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for a websocket scope")

    async def _send_denial(self) -> None:
        """The app refused the handshake with its own HTTP response; then close."""
        assert self._denial is not None
        status, headers = self._denial
        body = b"".join(self._denial_body)
        self._rejected = True
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason(status))]
        for name, value in headers:
            if name.lower() in (b"content-length", b"connection", b"transfer-encoding"):
                continue
            if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value:
                raise RuntimeError("invalid header in websocket.http.response.start")
            lines.append(name + b": " + value + b"\r\n")
        lines.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.http._status = status
        try:
            await self.http.write(b"".join(lines) + body)
        except ClientDisconnected:
            return
        await self.http.close_lingering()

    async def _accept(self, message: ASGIMessage) -> None:
        if self.ws is not None or self._rejected or self._denial is not None:
            raise RuntimeError("websocket.accept sent twice or after close")
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(self._key)),
        ]
        if message.get("subprotocol"):
            headers.append((b"sec-websocket-protocol", message["subprotocol"].encode()))
        headers.extend(message.get("headers") or ())
        out, early = self.http.switch_protocols(headers)
        self.ws = Connection(ConnectionType.SERVER)
        if early:
            self.ws.receive_data(early)
            self._events.extend(self.ws.events())
        await self._write(out)
        self.http._status = 101

    async def _close(self, code: int, reason: str = "") -> None:
        ws = self.ws
        assert ws is not None, "closing before the handshake was accepted"
        if ws.state is ConnectionState.OPEN:
            await self._write(ws.send(CloseConnection(code=code, reason=reason)))
        elif ws.state is ConnectionState.REMOTE_CLOSING:
            await self._write(ws.send(CloseConnection(code=code, reason=reason).response()))

    async def _write(self, data: bytes) -> None:
        async with self._lock:
            await self.http.write(data)
