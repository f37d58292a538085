"""Integration: the app runs unchanged under hypercorn's trio worker (real sockets, 127.0.0.1).

Every test starts its own hypercorn on a free ephemeral port, talks to it with httpx
and trio-websocket, and shuts it down through ``shutdown_trigger`` (which also runs
the ASGI lifespan shutdown). Each test has an absolute wall-clock guard.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from trio_websocket import ConnectionRejected, open_websocket_url

from velithon import BaseRoute, Match, Request, StreamingResponse, Velithon, WebSocket

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CountingServiceRoute(BaseRoute):
    """A service route (like GatewayRoute) that reports whether its service runs."""

    def __init__(self) -> None:
        self.running = False

    async def run_service(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self.running = False

    def matches(self, scope: dict[str, Any]) -> tuple[Match, dict[str, Any]]:
        if scope["type"] == "http" and scope["path"] == "/service":
            return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b'{"running":%s}' % (b"true" if self.running else b"false")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def build_app() -> tuple[Velithon, dict[str, Any]]:
    probe: dict[str, Any] = {"service": CountingServiceRoute(), "stream_closed": trio.Event()}
    app = Velithon(routes=[probe["service"]])

    @app.get("/health")
    async def health_check() -> dict[str, str]:
        return {"status": "healthy"}

    @app.get("/users/{user_id:int}")
    async def user(user_id: int, request: Request) -> dict[str, Any]:
        return {"id": user_id, "tags": request.query_params.getlist("tag"),
                "agent": request.headers.get("user-agent", "")[:5]}

    @app.post("/count")
    async def count(request: Request) -> dict[str, int]:
        total = chunks = 0
        async for chunk in request.stream():
            total += len(chunk)
            chunks += 1
        return {"bytes": total, "chunks": chunks}

    @app.get("/numbers/{n:int}")
    async def numbers(n: int) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(n):
                yield f"{i}\n".encode()
                await trio.sleep(0)
        return StreamingResponse(gen(), media_type="text/plain")

    @app.get("/forever")
    async def forever() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"x" * 1024
                    await trio.sleep(0.01)
            finally:
                probe["stream_closed"].set()
        return StreamingResponse(gen())

    @app.websocket("/ws/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(f"echo: {text}")

    return app, probe


@asynccontextmanager
async def run_hypercorn(app: Velithon) -> AsyncIterator[str]:
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 2.0
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
        try:
            yield f"127.0.0.1:{port}"
        finally:
            shutdown.set()


async def test_http_routing_params_errors_and_services() -> None:
    app, probe = build_app()
    with trio.fail_after(20):
        async with run_hypercorn(app) as addr:
            async with httpx.AsyncClient(base_url=f"http://{addr}") as client:
                response = await client.get("/health")
                assert response.status_code == 200
                assert response.json() == {"status": "healthy"}
                assert response.headers["content-type"] == "application/json"
                response = await client.get("/users/42?tag=a&tag=b")
                assert response.json() == {"id": 42, "tags": ["a", "b"], "agent": "pytho"}
                response = await client.get("/users/abc")
                assert (response.status_code, response.json()) == (
                    404, {"error": "Not Found", "status": 404,
                          "detail": "No route matches the requested path"})
                response = await client.delete("/health")
                assert response.status_code == 405
                assert response.headers["allow"] == "GET, HEAD"
                response = await client.head("/health")
                assert (response.status_code, response.content) == (200, b"")
                assert (await client.get("/service")).json() == {"running": True}
        assert not probe["service"].running  # lifespan shutdown cancelled the service


async def test_streaming_request_and_response_bodies() -> None:
    app, _ = build_app()

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"a" * 10_000
            await trio.sleep(0)

    with trio.fail_after(20):
        async with run_hypercorn(app) as addr:
            async with httpx.AsyncClient(base_url=f"http://{addr}") as client:
                response = await client.post("/count", content=upload())
                assert response.json()["bytes"] == 50_000
                assert response.json()["chunks"] >= 1
                async with client.stream("GET", "/numbers/200") as streamed:
                    assert streamed.headers["transfer-encoding"] == "chunked"
                    body = b"".join([chunk async for chunk in streamed.aiter_bytes()])
                assert body.decode().split() == [str(i) for i in range(200)]


async def test_infinite_stream_stops_after_client_disconnects() -> None:
    app, probe = build_app()
    with trio.fail_after(20):
        async with run_hypercorn(app) as addr:
            async with httpx.AsyncClient(base_url=f"http://{addr}") as client:
                async with client.stream("GET", "/forever") as streamed:
                    async for _ in streamed.aiter_bytes():
                        break
            with trio.fail_after(5):
                await probe["stream_closed"].wait()


async def test_websocket_echo_and_unknown_path_rejected() -> None:
    app, _ = build_app()
    with trio.fail_after(20):
        async with run_hypercorn(app) as addr:
            async with open_websocket_url(f"ws://{addr}/ws/echo") as ws:
                for text in ("hello", "wörld"):
                    await ws.send_message(text)
                    assert await ws.get_message() == f"echo: {text}"
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(f"ws://{addr}/ws/nope"):
                    pass
            assert info.value.status_code == 403
