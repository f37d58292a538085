"""velithon.testing.open_backend: recording, handlers, health, stop/start, idle close."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import trio

from velithon.testing import (
    BackendResponse,
    RecordedRequest,
    open_backend,
    open_raw_connection,
)


async def test_echo_reports_and_records_the_request_as_sent() -> None:
    async with open_backend(name="b1") as backend, httpx.AsyncClient() as client:
        response = await client.post(
            f"{backend.url}/items/a%2Fb?x=1&x=2",
            content=b"hello",
            headers=[("X-Multi", "one"), ("X-Multi", "two")],
        )
    assert response.status_code == 200
    assert response.headers["x-backend"] == "b1"
    echo = response.json()
    assert echo["backend"] == "b1"
    assert echo["method"] == "POST"
    assert echo["target"] == "/items/a%2Fb?x=1&x=2"
    assert ["X-Multi", "one"] in echo["headers"] and ["X-Multi", "two"] in echo["headers"]
    assert echo["body_length"] == 5
    assert echo["body_sha256"] == hashlib.sha256(b"hello").hexdigest()

    [seen] = backend.requests
    assert (seen.method, seen.path, seen.query) == ("POST", "/items/a%2Fb", "x=1&x=2")
    assert seen.body == b"hello"
    assert seen.header_values("x-multi") == ["one", "two"]
    assert seen.header("HOST") == f"127.0.0.1:{backend.port}"
    assert backend.connections_accepted == 1


async def test_raw_header_case_and_order_are_recorded() -> None:
    async with open_backend() as backend, open_raw_connection("127.0.0.1", backend.port) as conn:
        await conn.send(b"GET /x HTTP/1.1\r\nhost: h\r\nX-Odd-CASE: 1\r\nx-odd-case: 2\r\n\r\n")
        response = await conn.receive_response()
    assert response.status == 200
    assert backend.requests[0].headers == [("host", "h"), ("X-Odd-CASE", "1"), ("x-odd-case", "2")]


async def test_keep_alive_requests_share_a_connection_id() -> None:
    async with open_backend() as backend, httpx.AsyncClient() as client:
        for _ in range(3):
            assert (await client.get(backend.url)).status_code == 200
    assert [r.connection_id for r in backend.requests] == [0, 0, 0]
    assert backend.connections_accepted == 1


async def test_large_upload_is_hashed_but_not_kept() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    async with open_backend(max_recorded_body=64 * 1024) as backend, httpx.AsyncClient() as c:
        response = await c.put(backend.url + "/upload", content=body)
    assert response.json()["body_length"] == len(body)
    [seen] = backend.requests
    assert seen.body is None
    assert seen.body_length == len(body)
    assert seen.body_sha256 == hashlib.sha256(body).hexdigest()
    with pytest.raises(ValueError, match="not kept"):
        seen.json()


@pytest.mark.parametrize(
    ("returned", "content_type", "content"),
    [
        ({"ok": True}, "application/json", b'{"ok": true}'),
        (b"\x00\x01", "application/octet-stream", b"\x00\x01"),
        ("text", "text/plain; charset=utf-8", b"text"),
        (
            BackendResponse(201, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], b"made"),
            None,
            b"made",
        ),
    ],
)
async def test_handler_return_types(
    returned: object, content_type: str | None, content: bytes
) -> None:
    async def handler(request: RecordedRequest) -> object:
        return returned

    async with open_backend(handler) as backend, httpx.AsyncClient() as client:
        response = await client.get(backend.url)
    assert response.content == content
    if content_type is not None:
        assert response.headers["content-type"] == content_type
    else:
        assert response.status_code == 201
        assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]


async def test_handler_error_answers_500_and_is_raised_at_exit() -> None:
    async def handler(request: RecordedRequest) -> str:
        raise LookupError("broken handler")

    with pytest.raises(LookupError, match="broken handler"):
        async with open_backend(handler) as backend, httpx.AsyncClient() as client:
            response = await client.get(backend.url)
            assert response.status_code == 500
            assert len(backend.errors) == 1


async def test_body_exception_propagates_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with open_backend():
            raise KeyError("from the test body")


async def test_health_is_controllable_and_recorded_separately() -> None:
    async with open_backend(name="svc") as backend, httpx.AsyncClient() as client:
        assert (await client.get(backend.url + "/health")).json() == {
            "status": "healthy",
            "backend": "svc",
        }
        backend.set_health(503)
        assert (await client.get(backend.url + "/health")).status_code == 503
        assert (await client.head(backend.url + "/health")).status_code == 503
        await client.get(backend.url + "/work")
        backend.set_health(200)
        assert (await client.get(backend.url + "/health")).status_code == 200
    assert [r.method for r in backend.health_checks] == ["GET", "GET", "HEAD", "GET"]
    assert [r.target for r in backend.requests] == ["/work"]


async def test_stop_refuses_and_start_serves_again_on_the_same_port() -> None:
    async with open_backend() as backend, httpx.AsyncClient() as client:
        port = backend.port
        assert (await client.get(backend.url)).status_code == 200
        await backend.stop()
        assert not backend.is_running
        with pytest.raises(httpx.ConnectError):
            await client.get(backend.url)
        await backend.start()
        assert backend.port == port
        assert (await client.get(backend.url)).status_code == 200
    assert len(backend.requests) == 2


async def test_stop_closes_open_keep_alive_connections() -> None:
    async with open_backend() as backend, open_raw_connection("127.0.0.1", backend.port) as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await conn.receive_response()).status == 200
        await backend.stop()
        assert await conn.wait_closed(timeout=1.0)


async def test_close_idle_after_closes_a_quiet_keep_alive_connection() -> None:
    async with open_backend(close_idle_after=0.05) as backend:
        async with open_raw_connection("127.0.0.1", backend.port) as conn:
            await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await conn.receive_response()).status == 200
            start = trio.current_time()
            assert await conn.wait_closed(timeout=1.0)
            assert 0.04 <= trio.current_time() - start < 0.5
        async with open_raw_connection("127.0.0.1", backend.port) as conn:
            await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await conn.receive_response()).status == 200  # new connections still work


async def test_wait_for_requests_wakes_on_arrival_and_times_out() -> None:
    async with open_backend() as backend, httpx.AsyncClient() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.get, backend.url + "/late")
            await backend.wait_for_requests(1, timeout=2.0)
        assert backend.requests[0].target == "/late"
        with pytest.raises(trio.TooSlowError):
            await backend.wait_for_requests(2, timeout=0.02)
        backend.clear()
        assert backend.requests == [] and backend.connections_accepted == 1


async def test_expect_100_continue_is_answered() -> None:
    async with open_backend() as backend, open_raw_connection("127.0.0.1", backend.port) as conn:
        await conn.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        assert (await conn.receive_some()).startswith(b"HTTP/1.1 100 ")
        await conn.send(b"abc")
        response = await conn.receive_response()
    assert response.status == 200
    assert backend.requests[0].body == b"abc"


async def test_malformed_request_gets_400_and_close() -> None:
    async with open_backend() as backend, open_raw_connection("127.0.0.1", backend.port) as conn:
        await conn.send(b"NOT HTTP AT ALL\r\n\r\n")
        response = await conn.receive_response()
        assert response.status == 400
        assert await conn.wait_closed(timeout=1.0)
    assert backend.requests == []


async def test_repr_shows_state() -> None:
    async with open_backend(name="r") as backend:
        assert "'r'" in repr(backend) and "running" in repr(backend)
        await backend.stop()
        assert "stopped" in repr(backend)
