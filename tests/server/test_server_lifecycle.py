"""Lifespan and graceful shutdown (catalogue I) of velithon.server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from velithon.server import ServerConfig, ServerStartupError, serve_tcp

from support.server import (
    Recorder,
    connect,
    get,
    hello,
    parse_responses,
    read_until_closed,
    running_server,
)


def lifespan_app(events: list[str], handler: Any = hello, fail: str | None = None) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            if fail is not None:
                await send({"type": "lifespan.startup.failed", "message": fail})
                return
            events.append("startup")
            await send({"type": "lifespan.startup.complete"})
            await receive()
            events.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        await handler(scope, receive, send)

    return app


async def test_startup_before_accepting_and_shutdown_after_requests() -> None:
    events: list[str] = []

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        events.append("request")
        await trio.sleep(0.3)
        events.append("request done")
        await hello(scope, receive, send)

    async with running_server(lifespan_app(events, slow)) as server:
        assert events == ["startup"]
        stream = await connect(server)
        async with stream:
            await stream.send_all(get())
            await trio.sleep(0.1)
            await server.shutdown()
            data = await read_until_closed(stream)
    assert events == ["startup", "request", "request done", "shutdown"]
    [resp] = parse_responses(data)
    assert resp.status == 200 and resp.headers[b"connection"] == b"close"


async def test_startup_failure_raises_with_message_and_never_listens() -> None:
    app = lifespan_app([], fail="database unreachable")
    with pytest.raises(ServerStartupError, match="database unreachable"):
        await serve_tcp(app, ServerConfig(port=0))


async def test_app_without_lifespan_support_is_served() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"  # raises on the lifespan scope
        await hello(scope, receive, send)

    async with running_server(app) as server:
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url)).text == "hello"
        await server.shutdown()


async def test_address_in_use_is_a_startup_error() -> None:
    async with running_server(hello) as server:
        with pytest.raises(ServerStartupError, match="cannot listen"):
            await serve_tcp(hello, ServerConfig(port=server.port))


async def test_shutdown_refuses_new_connections_and_finishes_in_flight() -> None:
    entered = trio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        entered.set()
        await trio.sleep(0.4)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"complete body"})

    async with running_server(slow) as server:
        idle = await connect(server)  # an idle keep-alive connection
        busy = await connect(server)
        await busy.send_all(get())
        await entered.wait()
        start = trio.current_time()
        server.trigger.set()
        await trio.sleep(0.05)
        with pytest.raises(OSError):
            await trio.open_tcp_stream(server.host, server.port)  # listener already closed
        with trio.fail_after(1):
            assert await read_until_closed(idle) == b""  # idle connection closed promptly
        assert trio.current_time() - start < 0.5
        data = await read_until_closed(busy)
        await server.done.wait()
    [resp] = parse_responses(data)
    assert resp.body == b"complete body" and resp.headers[b"connection"] == b"close"


async def test_keep_alive_connection_gets_no_further_request_during_drain() -> None:
    entered = trio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        entered.set()
        await trio.sleep(0.3)
        await hello(scope, receive, send)

    async with running_server(slow) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(get("/1") + get("/2"))  # the second is pipelined
            await entered.wait()
            server.trigger.set()
            data = await read_until_closed(stream)
        await server.done.wait()
    assert [r.status for r in parse_responses(data)] == [200]


async def test_drain_deadline_cancels_with_503() -> None:
    events: list[str] = []

    async def stuck(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await trio.sleep(30)
        finally:
            events.append("cancelled")

    async with running_server(lifespan_app(events, stuck), graceful_timeout=0.3) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(get())
            await trio.sleep(0.05)
            start = trio.current_time()
            server.trigger.set()
            data = await read_until_closed(stream)
            await server.done.wait()
            elapsed = trio.current_time() - start
    [resp] = parse_responses(data)
    assert resp.status == 503 and resp.json()["status"] == 503
    assert 0.25 < elapsed < 1.5
    assert events == ["startup", "cancelled", "shutdown"]


async def test_drain_deadline_aborts_a_started_response() -> None:
    async def stuck(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await trio.sleep(30)

    async with running_server(stuck, graceful_timeout=0.2) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(get())
            with trio.fail_after(1):
                first = await stream.receive_some(65536)
            server.trigger.set()
            data = first + await read_until_closed(stream)
        await server.done.wait()
    assert data.startswith(b"HTTP/1.1 200 ") and parse_responses(data) == []


async def test_recorder_app_used_with_drain_has_no_leftover_tasks() -> None:
    async with running_server(Recorder()) as server:
        async with httpx.AsyncClient() as client:
            await client.get(server.url)
        with trio.fail_after(2):
            await server.shutdown()  # an idle keep-alive client must not hold the drain


async def test_no_file_descriptors_leak_across_good_and_bad_connections() -> None:
    import psutil

    from support.server import raw_exchange

    proc = psutil.Process()
    baseline = proc.num_fds()
    async with running_server(Recorder(), header_timeout=0.2) as server:
        for raw in (get("/a", b"Connection: close\r\n"), b"\x16\x03\x01", b"GET / HTTP/1.1\r\n"):
            await raw_exchange(server, raw)
        stream = await connect(server)
        await stream.send_all(get() + get())  # left open: closed by the drain
        await trio.sleep(0.05)
        await server.shutdown()
        await read_until_closed(stream)
        await stream.aclose()
    assert proc.num_fds() == baseline
