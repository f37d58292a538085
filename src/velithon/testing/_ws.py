"""A WebSocket echo backend for tests, which also answers plain HTTP health probes.

The request head is read first, so one port can serve both: a WebSocket upgrade is handed
to trio-websocket (``wrap_server_stream``, the layer under ``serve_websocket``) with the
head replayed in front of the stream; any other request gets a plain HTTP answer. That
lets a gateway probe ``/health`` on a WebSocket backend like on any other, and lets a
test kill and revive the backend on the same port.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import attrs
import h11
import trio
import trio_websocket

from ._http import (
    MAX_HEAD_SIZE,
    BackendResponse,
    RecordedRequest,
    decode_headers,
    send_response,
)
from ._net import (
    ChangeSignal,
    RestartableListener,
    RestartablePeer,
    close_gracefully,
    owning_nursery,
)

__all__ = ["WsBackend", "WsSession", "open_ws_backend"]

_RECEIVE_SIZE = 65536


@attrs.define
class WsSession:
    """One accepted WebSocket: what the client sent and how the session ended."""

    connection_id: int
    path: str
    headers: list[tuple[str, str]]
    messages: list[str | bytes] = attrs.Factory(list)
    close_code: int | None = None
    close_reason: str | None = None
    closed: bool = False


class _ReplayStream(trio.abc.Stream):
    """A stream that first returns bytes already read from ``inner``."""

    def __init__(self, inner: trio.SocketStream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return await self._inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._inner.aclose()


class WsBackend(RestartablePeer):
    """A running WebSocket echo backend; get one from :func:`open_ws_backend`.

    Attributes:
        sessions: accepted WebSocket sessions in order.
        health_checks: plain HTTP requests to ``health_path``.
        connections_accepted: TCP connections accepted (probes included).
    """

    def __init__(
        self, nursery: trio.Nursery, *, name: str, host: str, port: int, health_path: str
    ) -> None:
        self.name = name
        self.health_path = health_path
        self.sessions: list[WsSession] = []
        self.health_checks: list[RecordedRequest] = []
        self.connections_accepted = 0
        self._health = 200
        self._changed = ChangeSignal()
        self._listener = RestartableListener(nursery, self._serve_connection, host=host, port=port)

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<WsBackend {self.name!r} {self.url} {state} sessions={len(self.sessions)}>"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def messages(self) -> list[str | bytes]:
        """Every message received, across sessions, in session order."""
        return [message for session in self.sessions for message in session.messages]

    @property
    def close_codes(self) -> list[int | None]:
        """The close code of each finished session (``None``: no close frame)."""
        return [session.close_code for session in self.sessions if session.closed]

    def set_health(self, status: int) -> None:
        """Answer plain ``GET health_path`` with ``status``."""
        self._health = status

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        connection_id = self.connections_accepted
        self.connections_accepted += 1
        self._changed.notify()
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
        received = bytearray()
        try:
            while (event := conn.next_event()) is h11.NEED_DATA:  # ends at the head or EOF
                data = await stream.receive_some(_RECEIVE_SIZE)
                received += data
                conn.receive_data(data)
        except h11.RemoteProtocolError:
            return
        if not isinstance(event, h11.Request):
            return
        if (b"upgrade", b"websocket") in [(k, v.lower()) for k, v in event.headers]:
            target = event.target.decode("latin-1")
            session = WsSession(connection_id, target, decode_headers(event))
            await self._serve_websocket(stream, bytes(received), session)
            return
        await self._serve_http(stream, conn, event, connection_id)

    async def _serve_http(
        self, stream: trio.SocketStream, conn: h11.Connection, head: h11.Request, connection_id: int
    ) -> None:
        target = head.target.decode("latin-1")
        method = head.method.decode("ascii")
        if target.partition("?")[0] == self.health_path and method in ("GET", "HEAD"):
            self.health_checks.append(
                RecordedRequest(method, target, decode_headers(head), b"", 0, "", connection_id)
            )
            self._changed.notify()
            state = "healthy" if self._health < 400 else "unhealthy"
            body = {"status": state, "backend": self.name}
            response = BackendResponse.json(body, status=self._health)
        else:
            response = BackendResponse.text("websocket endpoint", status=426)
        response = attrs.evolve(response, headers=[*response.headers, ("Connection", "close")])
        with contextlib.suppress(h11.LocalProtocolError):
            await send_response(stream, conn, response, head_only=method == "HEAD")
        await close_gracefully(stream)

    async def _serve_websocket(
        self, stream: trio.SocketStream, head: bytes, session: WsSession
    ) -> None:
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, _ReplayStream(stream, head))
            ws = await request.accept()
            self.sessions.append(session)
            self._changed.notify()
            try:
                while True:  # ends when the peer closes (ConnectionClosed)
                    message = await ws.get_message()
                    session.messages.append(message)
                    self._changed.notify()
                    await ws.send_message(message)
            except trio_websocket.ConnectionClosed as closed:
                if closed.reason is not None:
                    session.close_code = int(closed.reason.code)
                    session.close_reason = closed.reason.reason
            finally:
                session.closed = True
                self._changed.notify()


@contextlib.asynccontextmanager
async def open_ws_backend(
    *,
    name: str = "ws-backend",
    host: str = "127.0.0.1",
    port: int = 0,
    health_path: str = "/health",
) -> AsyncIterator[WsBackend]:
    """Run a WebSocket echo backend (text and binary) for the ``async with`` block.

    Plain HTTP ``GET health_path`` is answered with the status set by
    :meth:`WsBackend.set_health` (200 by default); other plain requests get 426.
    """
    async with owning_nursery() as nursery:
        backend = WsBackend(nursery, name=name, host=host, port=port, health_path=health_path)
        backend._listener.open()
        try:
            yield backend
        finally:
            backend._listener.close()
