"""velithon.testing.open_scripted_backend: byte-exact scripts per connection."""

from __future__ import annotations

import httpx
import pytest
import trio

from velithon.testing import (
    Close,
    Expect,
    NoResponseError,
    ReadRequest,
    Reset,
    ScriptError,
    Send,
    Sleep,
    open_raw_connection,
    open_scripted_backend,
)

OK_5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


async def test_bytes_out_are_exactly_the_script_and_bytes_in_are_recorded() -> None:
    smuggled = OK_5 + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"
    request = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    async with (
        open_scripted_backend([ReadRequest(), Send(smuggled), Close()]) as backend,
        open_raw_connection("127.0.0.1", backend.port) as conn,
    ):
        await conn.send(request)
        assert await conn.receive_until_close(timeout=2.0) == smuggled
        await backend.wait_until(lambda: backend.connections[0].completed)
    [record] = backend.connections
    assert record.requests == [request]
    assert record.received == request
    assert record.steps_done == 3


async def test_read_request_handles_chunked_and_pipelined_requests() -> None:
    first = (
        b"POST /1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    second = b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
    script = [ReadRequest(), ReadRequest(), Send(OK_5), Send(OK_5)]
    async with (
        open_scripted_backend(script) as backend,
        open_raw_connection("127.0.0.1", backend.port) as conn,
    ):
        await conn.send(first + second)  # one segment: the second request is leftover
        assert (await conn.receive_response()).body == b"hello"
        assert (await conn.receive_response()).body == b"hello"
    assert backend.connections[0].requests == [first, second]


async def test_callable_script_varies_per_connection() -> None:
    def script(index: int) -> list[Send | ReadRequest | Close]:
        if index == 0:
            return [ReadRequest(), Close()]
        return [ReadRequest(), Send(OK_5)]

    async with open_scripted_backend(script) as backend, httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(backend.url)
        assert (await client.get(backend.url)).text == "hello"
    assert backend.connections_accepted == 2


async def test_early_response_before_the_body_is_read() -> None:
    script = [
        Expect(b"POST /upload "),
        Send(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n"),
    ]
    async with (
        open_scripted_backend(script) as backend,
        open_raw_connection("127.0.0.1", backend.port) as conn,
    ):
        await conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        response = await conn.receive_response()
    assert (response.status, response.complete) == (413, True)


async def test_101_to_a_plain_request_and_extra_bytes_are_kept_for_the_client() -> None:
    upgrade = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    async with (
        open_scripted_backend([ReadRequest(), Send(upgrade + b"RAW-TUNNEL")]) as backend,
        open_raw_connection("127.0.0.1", backend.port) as conn,
    ):
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await conn.receive_response()
        assert response.status == 101
        assert await conn.receive_until_close(timeout=2.0) == b"RAW-TUNNEL"


async def test_reset_step_aborts_and_sleep_step_waits() -> None:
    async with (
        open_scripted_backend([ReadRequest(), Sleep(0.05), Reset()]) as backend,
        open_raw_connection("127.0.0.1", backend.port) as conn,
    ):
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        start = trio.current_time()
        with pytest.raises(NoResponseError):
            await conn.receive_response()
        assert trio.current_time() - start >= 0.05
        assert conn.reset_by_peer


async def test_mismatch_is_recorded_and_raised_at_exit() -> None:
    with pytest.raises(ScriptError, match="expected b'PUT ', got b'GET '"):
        async with (
            open_scripted_backend([Expect(b"PUT "), Send(OK_5)]) as backend,
            httpx.AsyncClient() as client,
        ):
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(backend.url)
            await backend.wait_until(lambda: bool(backend.errors))
    assert backend.connections[0].completed is False


async def test_non_strict_keeps_errors_for_inspection() -> None:
    async with (
        open_scripted_backend([ReadRequest()], strict=False) as backend,
        open_raw_connection("127.0.0.1", backend.port) as conn,
    ):
        await conn.send(b"BROKEN\r\n\r\n")
        await backend.wait_until(lambda: bool(backend.errors))
    assert backend.errors[0].startswith("malformed request")


async def test_peer_leaving_early_is_not_an_error() -> None:
    async with open_scripted_backend([ReadRequest(), Send(OK_5)]) as backend:
        async with open_raw_connection("127.0.0.1", backend.port) as conn:
            await conn.send(b"GET / HTT")
        await backend.wait_until(lambda: backend.connections_accepted == 1)
    assert backend.errors == []
    assert backend.connections[0].completed is False


async def test_stop_and_start_keep_the_port() -> None:
    async with open_scripted_backend([ReadRequest(), Send(OK_5)]) as backend:
        port = backend.port
        await backend.stop()
        with pytest.raises(OSError):
            async with open_raw_connection("127.0.0.1", port):
                pass
        await backend.start()
        async with httpx.AsyncClient() as client:
            assert (await client.get(backend.url)).text == "hello"
