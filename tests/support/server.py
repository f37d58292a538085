"""Helpers for the server tests: a running server, raw-socket exchanges, tiny ASGI apps."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import trio

from velithon.server import ServerConfig, serve_tcp


@attrs.define
class Running:
    host: str
    port: int
    trigger: trio.Event
    done: trio.Event

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def shutdown(self) -> None:
        """Trigger the graceful shutdown and wait until serve_tcp has returned."""
        self.trigger.set()
        await self.done.wait()


@asynccontextmanager
async def running_server(app: Any, **options: Any) -> AsyncIterator[Running]:
    """serve_tcp on an ephemeral 127.0.0.1 port for the duration of the block."""
    config = ServerConfig(host="127.0.0.1", port=0, **options)
    trigger, done = trio.Event(), trio.Event()

    async def serve(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await serve_tcp(app, config, shutdown_trigger=trigger, task_status=task_status)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        [(host, port)] = await nursery.start(serve)
        yield Running(host, port, trigger, done)
        nursery.cancel_scope.cancel()


async def connect(server: Running) -> trio.SocketStream:
    return await trio.open_tcp_stream(server.host, server.port)


async def read_until_closed(stream: trio.abc.ReceiveStream, limit: float = 3.0) -> bytes:
    """Everything the server sends until it closes (fails the test on a timeout)."""
    chunks = []
    with trio.fail_after(limit):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # connection reset
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


async def raw_exchange(server: Running, data: bytes, limit: float = 3.0) -> bytes:
    """Send raw bytes, then read until the server closes the connection."""
    stream = await connect(server)
    async with stream:
        try:
            await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        return await read_until_closed(stream, limit)


@attrs.define
class Resp:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_responses(data: bytes, method: bytes = b"GET") -> list[Resp]:
    """Parse one or more HTTP/1.1 responses from raw bytes (complete ones only)."""
    out = []
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    status, headers, body = 0, {}, bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            break
        if isinstance(event, h11.Response):
            status, headers, body = event.status_code, dict(event.headers), bytearray()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append(Resp(status, headers, bytes(body)))
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                break
            conn.start_next_cycle()
            conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
            conn.send(h11.EndOfMessage())
        else:
            break
    return out


class Recorder:
    """An ASGI app that records each http request (headers, body) and echoes a summary."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("http only")
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append({"scope": scope, "body": body})
        payload = json.dumps(
            {"path": scope["path"], "query": scope["query_string"].decode(), "body": body.decode()}
        ).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise RuntimeError("http only")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + extra + b"\r\n"


async def assert_still_serving(server: Running) -> None:
    """Invariant I1: the server accepts and answers a normal request."""
    data = await raw_exchange(server, get("/ok", b"Connection: close\r\n"))
    [resp] = parse_responses(data)
    assert resp.status == 200
