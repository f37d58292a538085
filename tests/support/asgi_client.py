"""A tiny in-process ASGI test client for trio (no sockets, works with autojump_clock).

Why not httpx's ASGITransport: it buffers the response, has no websocket support
and does not check the ASGI message order. This client drives the app directly:

* ``await client.get("/x")`` → ``ASGIResponse`` (status, headers, body, chunks);
* ``async with client.stream("GET", "/x") as resp:`` reads chunks as the app sends
  them; leaving the block early makes the next ``receive()`` return
  ``http.disconnect`` (a client that went away);
* ``async with client.websocket("/ws") as ws:`` a websocket session;
* ``async with lifespan(app):`` runs the ASGI lifespan protocol.

The fake server is strict: it fails the test on out-of-order messages, on non-bytes
header pairs and on a body that disagrees with ``content-length``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import trio

from velithon import Headers

ASGI = {"version": "3.0", "spec_version": "2.3"}
HeadersArg = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] | None


def _raw_headers(headers: HeadersArg) -> list[tuple[bytes, bytes]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k.encode().lower() if isinstance(k, str) else k.lower(),
             v.encode() if isinstance(v, str) else v) for k, v in items]


class ASGIResponse:
    def __init__(self) -> None:
        self.status: int | None = None
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.complete = False

    @property
    def headers(self) -> Headers:
        return Headers(raw=self.raw_headers)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<ASGIResponse {self.status} {self.body[:80]!r}>"


class _Exchange:
    """One HTTP request/response between the fake server and the app."""

    def __init__(self, scope: dict[str, Any], body_chunks: list[bytes]) -> None:
        self.scope = scope
        self._body = [*body_chunks] or [b""]
        self.response = ASGIResponse()
        self.disconnected = trio.Event()
        self.started = trio.Event()
        self.finished = trio.Event()
        self.chunk_send, self.chunk_recv = trio.open_memory_channel[bytes](0)
        self.streaming = False
        self.receive_calls = 0
        self.dropped_after_disconnect = 0

    async def receive(self) -> dict[str, Any]:
        self.receive_calls += 1
        if self._body:
            chunk = self._body.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self._body)}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        kind = message["type"]
        resp = self.response
        if self.disconnected.is_set() and not self.finished.is_set():
            self.dropped_after_disconnect += 1  # like hypercorn: silently dropped
            return
        if kind == "http.response.start":
            assert resp.status is None, "http.response.start sent twice"
            headers = message.get("headers", [])
            for pair in headers:
                name, value = pair
                assert isinstance(name, bytes) and isinstance(value, bytes), pair
                assert name == name.lower(), f"header name not lower-case: {name!r}"
            resp.status = message["status"]
            resp.raw_headers = [tuple(p) for p in headers]  # type: ignore[misc]
            self.started.set()
        elif kind == "http.response.body":
            assert resp.status is not None, "body before http.response.start"
            assert not resp.complete, "body after the response was complete"
            body = message.get("body", b"")
            assert isinstance(body, bytes)
            if body:
                resp.chunks.append(body)
                if self.streaming:
                    try:
                        await self.chunk_send.send(body)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self.dropped_after_disconnect += 1
            if not message.get("more_body", False):
                resp.complete = True
                self._check_length()
                self.finished.set()
                self.disconnected.set()  # the connection has nothing more to say
        else:
            raise AssertionError(f"unexpected message for http: {kind}")

    def _check_length(self) -> None:
        declared = self.response.headers.get("content-length")
        if declared is not None and self.scope["method"] != "HEAD":
            assert int(declared) == len(self.response.body), "content-length mismatch"


class ASGIClient:
    """Call an ASGI app in-process; see the module docstring."""

    def __init__(self, app: Any, *, client: tuple[str, int] | None = ("127.0.0.1", 50123),
                 server: tuple[str, int] = ("testserver", 80)) -> None:
        self.app = app
        self.client = client
        self.server = server

    def _scope(self, kind: str, method: str, path: str, query: str | bytes,
               headers: HeadersArg, extra: dict[str, Any] | None) -> dict[str, Any]:
        raw_path, _, query_part = path.partition("?")
        query_string = query if isinstance(query, bytes) else query.encode()
        if query_part and not query_string:
            query_string = query_part.encode()
        raw = [(b"host", f"{self.server[0]}".encode())] + _raw_headers(headers)
        scope: dict[str, Any] = {
            "type": kind, "asgi": dict(ASGI), "http_version": "1.1",
            "scheme": "http" if kind == "http" else "ws",
            "path": unquote(raw_path), "raw_path": raw_path.encode(),
            "query_string": query_string, "root_path": "", "headers": raw,
            "client": self.client, "server": self.server, "state": {},
        }
        if kind == "http":
            scope["method"] = method.upper()
        if extra:
            scope.update(extra)
        return scope

    async def request(self, method: str, path: str, *, query: str | bytes = b"",
                      headers: HeadersArg = None, body: bytes | Iterable[bytes] = b"",
                      scope: dict[str, Any] | None = None) -> ASGIResponse:
        chunks = [body] if isinstance(body, bytes) else list(body)
        hdrs = _raw_headers(headers)
        if isinstance(body, bytes) and body and not any(k == b"content-length" for k, _ in hdrs):
            hdrs.append((b"content-length", str(len(body)).encode()))
        elif not isinstance(body, bytes):
            hdrs.append((b"transfer-encoding", b"chunked"))
        exchange = _Exchange(self._scope("http", method, path, query, hdrs, scope), chunks)
        await self.app(exchange.scope, exchange.receive, exchange.send)
        exchange.disconnected.set()
        return exchange.response

    async def get(self, path: str, **kw: Any) -> ASGIResponse:
        return await self.request("GET", path, **kw)

    async def head(self, path: str, **kw: Any) -> ASGIResponse:
        return await self.request("HEAD", path, **kw)

    async def post(self, path: str, **kw: Any) -> ASGIResponse:
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> ASGIResponse:
        return await self.request("PUT", path, **kw)

    async def delete(self, path: str, **kw: Any) -> ASGIResponse:
        return await self.request("DELETE", path, **kw)

    @asynccontextmanager
    async def stream(self, method: str, path: str, *, headers: HeadersArg = None,
                     body: bytes | Iterable[bytes] = b"") -> AsyncIterator[StreamedResponse]:
        """Run the request in the background; leaving the block disconnects the client."""
        chunks = [body] if isinstance(body, bytes) else list(body)
        exchange = _Exchange(self._scope("http", method, path, b"", headers, None), chunks)
        exchange.streaming = True
        async with trio.open_nursery() as nursery:
            async def run_app() -> None:
                async with exchange.chunk_send:
                    await self.app(exchange.scope, exchange.receive, exchange.send)
            nursery.start_soon(run_app)
            await exchange.started.wait()
            try:
                yield StreamedResponse(exchange)
            finally:
                exchange.disconnected.set()
                exchange.chunk_recv.close()

    @asynccontextmanager
    async def websocket(self, path: str, *, subprotocols: list[str] | None = None,
                        headers: HeadersArg = None) -> AsyncIterator[WebSocketSession]:
        """Open a websocket session; raises ``WebSocketRejected`` if the app closes first."""
        scope = self._scope("websocket", "GET", path, b"", headers,
                            {"subprotocols": subprotocols or []})
        session = WebSocketSession(scope)
        rejected: WebSocketRejected | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run_app, self.app)
            try:
                await session.handshake()
            except WebSocketRejected as exc:
                rejected = exc
            else:
                try:
                    yield session
                finally:
                    await session.finish()
        if rejected is not None:
            raise rejected


class StreamedResponse:
    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange
        self.status = exchange.response.status
        self.headers = exchange.response.headers

    @property
    def exchange(self) -> _Exchange:
        return self._exchange

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._exchange.chunk_recv:
            yield chunk


class WebSocketRejected(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class WebSocketSession:
    """The client side of an in-process websocket."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self._to_app_send, self._to_app_recv = trio.open_memory_channel[dict[str, Any]](8)
        self._from_app_send, self._from_app_recv = trio.open_memory_channel[dict[str, Any]](8)
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self._client_closed = False

    async def run_app(self, app: Any) -> None:
        async with self._from_app_send:
            await app(self.scope, self._to_app_recv.receive, self._from_app_send.send)

    async def handshake(self) -> None:
        await self._to_app_send.send({"type": "websocket.connect"})
        message = await self._from_app_recv.receive()
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            await self._to_app_send.aclose()
            raise WebSocketRejected(self.close_code)
        assert message["type"] == "websocket.accept", message
        self.subprotocol = message.get("subprotocol")

    async def send_text(self, text: str) -> None:
        await self._to_app_send.send({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self._to_app_send.send({"type": "websocket.receive", "bytes": data})

    async def send_json(self, data: Any) -> None:
        await self.send_text(json.dumps(data))

    async def receive(self) -> dict[str, Any]:
        message = await self._from_app_recv.receive()
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
        return message

    async def receive_text(self) -> str:
        message = await self.receive()
        assert message["type"] == "websocket.send", message
        return message["text"]

    async def receive_bytes(self) -> bytes:
        message = await self.receive()
        assert message["type"] == "websocket.send", message
        return message["bytes"]

    async def receive_json(self) -> Any:
        return json.loads(await self.receive_text())

    async def close(self, code: int = 1000) -> None:
        if not self._client_closed:
            self._client_closed = True
            await self._to_app_send.send({"type": "websocket.disconnect", "code": code})

    async def finish(self) -> None:
        """Close from the client side (unless the app closed) and drain the app's messages."""
        if not self._client_closed:
            self._client_closed = True
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                self._to_app_send.send_nowait(
                    {"type": "websocket.disconnect", "code": self.close_code or 1000})
        with trio.move_on_after(5):
            async for message in self._from_app_recv:
                if message["type"] == "websocket.close":
                    self.close_code = message.get("code", 1000)


class LifespanFailed(Exception):
    pass


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    """Run ``app``'s lifespan: startup on enter, shutdown on exit; yields the state dict."""
    to_app_send, to_app_recv = trio.open_memory_channel[dict[str, Any]](1)
    from_app_send, from_app_recv = trio.open_memory_channel[dict[str, Any]](1)
    state: dict[str, Any] = {}
    scope = {"type": "lifespan", "asgi": dict(ASGI), "state": state}
    failure: str | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, scope, to_app_recv.receive, from_app_send.send)
        await to_app_send.send({"type": "lifespan.startup"})
        message = await from_app_recv.receive()
        if message["type"] == "lifespan.startup.failed":
            failure = message.get("message", "")
        else:
            assert message["type"] == "lifespan.startup.complete", message
            yield state
            await to_app_send.send({"type": "lifespan.shutdown"})
            message = await from_app_recv.receive()
            if message["type"] == "lifespan.shutdown.failed":
                failure = message.get("message", "")
            else:
                assert message["type"] == "lifespan.shutdown.complete", message
    if failure is not None:
        raise LifespanFailed(failure)
