"""velithon.testing.Fault: every fault as a plain HTTP client sees it."""

from __future__ import annotations

import httpx
import pytest
import trio

from velithon.testing import Fault, open_backend, open_raw_connection

GET = b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_hang_reads_the_request_then_times_the_client_out() -> None:
    async with open_backend() as backend, httpx.AsyncClient(timeout=0.1) as client:
        backend.set_fault(Fault.hang())
        start = trio.current_time()
        with pytest.raises(httpx.ReadTimeout):
            await client.post(backend.url + "/slow", content=b"data")
        assert trio.current_time() - start < 1.0
        assert backend.requests[0].body == b"data"  # it did arrive


async def test_hung_connection_is_closed_once_the_client_leaves() -> None:
    async with open_backend() as backend:
        backend.set_fault(Fault.hang())
        async with open_raw_connection("127.0.0.1", backend.port) as conn:
            await conn.send(GET)
            await backend.wait_for_requests(1)
            await conn.send_eof()
            assert await conn.wait_closed(timeout=1.0)


async def test_reset_is_a_connection_reset() -> None:
    async with open_backend() as backend, httpx.AsyncClient() as client:
        backend.set_fault(Fault.reset())
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.get(backend.url)
    async with open_backend() as backend, open_raw_connection("127.0.0.1", backend.port) as conn:
        backend.set_fault(Fault.reset())
        await conn.send(GET)
        assert await conn.wait_closed(timeout=1.0)
        assert conn.reset_by_peer


async def test_close_is_a_fin_before_any_response() -> None:
    async with open_backend() as backend, httpx.AsyncClient() as client:
        backend.set_fault(Fault.close())
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.get(backend.url)
    async with open_backend() as backend, open_raw_connection("127.0.0.1", backend.port) as conn:
        backend.set_fault(Fault.close())
        await conn.send(GET)
        assert await conn.receive_until_close(timeout=1.0) == b""
        assert not conn.reset_by_peer


async def test_truncate_sends_part_of_the_declared_body() -> None:
    async with open_backend() as backend, httpx.AsyncClient() as client:
        backend.set_fault(Fault.truncate(100, declared=1000))
        with pytest.raises(httpx.RemoteProtocolError, match="received 100 bytes, expected 1000"):
            await client.get(backend.url)
    async with open_backend() as backend, open_raw_connection("127.0.0.1", backend.port) as conn:
        backend.set_fault(Fault.truncate(100, declared=1000))
        await conn.send(GET)
        response = await conn.receive_response()
    assert response.status == 200
    assert response.header("content-length") == "1000"
    assert response.body == Fault.truncate(100, declared=1000).expected_body()
    assert not response.complete


async def test_truncate_with_rst() -> None:
    async with open_backend() as backend, open_raw_connection("127.0.0.1", backend.port) as conn:
        backend.set_fault(Fault.truncate(10, declared=20, rst=True))
        await conn.send(GET)
        response = await conn.receive_response()
    assert (response.status, response.complete) == (200, False)
    assert len(response.body) <= 10


async def test_garbage_is_a_protocol_error() -> None:
    async with open_backend() as backend, httpx.AsyncClient() as client:
        backend.set_fault(Fault.garbage())
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(backend.url)
        backend.set_fault(Fault.garbage(b"HTTP/1.1 2OO OK\r\n\r\n"))
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(backend.url)


async def test_status_and_times_then_heals_itself() -> None:
    async with open_backend(name="b") as backend, httpx.AsyncClient() as client:
        backend.set_fault(Fault.status(503), times=2)
        statuses = [(await client.get(backend.url)).status_code for _ in range(3)]
        assert statuses == [503, 503, 200]
        assert backend.fault is None
        backend.set_fault(Fault.status(418, b"teapot", [("X-Why", "test")]))
        response = await client.get(backend.url)
    assert (response.status_code, response.content) == (418, b"teapot")
    assert response.headers["x-why"] == "test"
    assert len(backend.requests) == 4


async def test_status_default_body_is_json() -> None:
    async with open_backend(name="b") as backend, httpx.AsyncClient() as client:
        backend.set_fault(Fault.status(502))
        response = await client.get(backend.url)
    assert response.json() == {"error": "Bad Gateway", "status": 502, "backend": "b"}


async def test_delay_then_normal_answer() -> None:
    async with open_backend() as backend, httpx.AsyncClient() as client:
        backend.set_fault(Fault.delay(0.05))
        start = trio.current_time()
        response = await client.get(backend.url)
        assert trio.current_time() - start >= 0.05
    assert response.json()["method"] == "GET"


async def test_set_fault_none_heals() -> None:
    async with open_backend() as backend, httpx.AsyncClient() as client:
        backend.set_fault(Fault.close())
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(backend.url)
        backend.set_fault(None)
        assert (await client.get(backend.url)).status_code == 200


async def test_chunked_complete_and_cut() -> None:
    async with open_backend() as backend, httpx.AsyncClient() as client:
        backend.set_fault(Fault.chunked([b"ab", b"cd"]))
        response = await client.get(backend.url)
        assert response.content == b"abcd"
        assert response.headers["transfer-encoding"] == "chunked"
        backend.set_fault(Fault.chunked([b"ab", b"cd"], finish=False))
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            await client.get(backend.url)
    async with open_backend() as backend, open_raw_connection("127.0.0.1", backend.port) as conn:
        backend.set_fault(Fault.chunked([b"ab", b"cd"], finish=False))
        await conn.send(GET)
        response = await conn.receive_response()
    assert (response.body, response.complete) == (b"abcd", False)
    assert response.body == Fault.chunked([b"ab", b"cd"]).expected_body()


async def test_stream_sends_a_large_body_in_pieces() -> None:
    fault = Fault.stream(300_000, chunk=65536)
    async with open_backend() as backend, httpx.AsyncClient() as client:
        backend.set_fault(fault)
        async with client.stream("GET", backend.url) as response:
            pieces = [piece async for piece in response.aiter_raw()]
    body = b"".join(pieces)
    assert response.headers["content-length"] == "300000"
    assert body == fault.expected_body()
    assert len(pieces) > 1


async def test_faults_do_not_touch_health_probes_unless_asked() -> None:
    async with open_backend() as backend, httpx.AsyncClient(timeout=0.1) as client:
        backend.set_fault(Fault.reset())
        assert (await client.get(backend.url + "/health")).status_code == 200
        backend.set_health(Fault.hang())
        with pytest.raises(httpx.ReadTimeout):
            await client.get(backend.url + "/health")


def test_fault_values_are_validated_and_readable() -> None:
    with pytest.raises(ValueError, match="sent < declared"):
        Fault.truncate(10, declared=10)
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        Fault.delay(-1)
    with pytest.raises(ValueError, match="chunk > 0"):
        Fault.stream(10, chunk=0)
    assert repr(Fault.hang()) == "Fault.hang()"
    assert repr(Fault.delay(0.5)) == "Fault.delay(seconds=0.5)"
    assert Fault.status(503) == Fault.status(503)
    with pytest.raises(TypeError):
        Fault.hang().expected_body()
