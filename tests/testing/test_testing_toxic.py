"""velithon.testing.open_toxic_proxy: toxics as a client on the far side sees them."""

from __future__ import annotations

import httpx
import pytest
import trio

from velithon.testing import (
    Fault,
    NoResponseError,
    Toxic,
    open_backend,
    open_raw_connection,
    open_toxic_proxy,
)

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_clean_proxy_forwards_both_ways_and_counts() -> None:
    request = (
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nConnection: close\r\n\r\npayload"
    )
    async with (
        open_backend(name="up") as backend,
        open_toxic_proxy("127.0.0.1", backend.port) as proxy,
    ):
        async with open_raw_connection("127.0.0.1", proxy.port) as conn:
            await conn.send(request)
            received = await conn.receive_until_close(timeout=2.0)
        assert b'"backend": "up"' in received
        assert backend.requests[0].body == b"payload"
        await proxy.wait_until(lambda: proxy.connections_active == 0)
        assert proxy.connections_accepted == 1
        assert proxy.bytes_upstream == len(request)
        assert proxy.bytes_downstream == len(received)


async def test_latency_delays_responses_until_removed() -> None:
    async with (
        open_backend() as backend,
        open_toxic_proxy("127.0.0.1", backend.port) as proxy,
        httpx.AsyncClient() as client,
    ):
        # a delay far above a loopback round trip, so a busy machine cannot blur the two
        name = proxy.add_toxic(Toxic.latency(0.5))
        start = trio.current_time()
        assert (await client.get(proxy.url)).status_code == 200
        assert trio.current_time() - start >= 0.5
        proxy.remove_toxic(name)
        start = trio.current_time()
        assert (await client.get(proxy.url)).status_code == 200
        assert trio.current_time() - start < 0.5
        assert proxy.toxics == {}


async def test_limit_data_cuts_the_response_mid_body() -> None:
    async with open_backend() as backend, open_toxic_proxy("127.0.0.1", backend.port) as proxy:
        backend.set_fault(Fault.stream(10_000))
        proxy.add_toxic(Toxic.limit_data(500))
        async with open_raw_connection("127.0.0.1", proxy.port) as conn:
            await conn.send(GET)
            response = await conn.receive_response()
        assert (response.status, response.complete) == (200, False)
        assert 0 < len(response.body) < 500
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(proxy.url)
        assert proxy.limit_closes == 2


async def test_limit_data_upstream_cuts_the_request() -> None:
    async with open_backend() as backend, open_toxic_proxy("127.0.0.1", backend.port) as proxy:
        proxy.add_toxic(Toxic.limit_data(10, direction="upstream"))
        async with open_raw_connection("127.0.0.1", proxy.port) as conn:
            await conn.send(GET)
            assert await conn.wait_closed(timeout=1.0)
        assert backend.requests == []


async def test_reset_peer_resets_the_client_after_a_delay() -> None:
    async with open_backend() as backend, open_toxic_proxy("127.0.0.1", backend.port) as proxy:
        async with open_raw_connection("127.0.0.1", proxy.port) as conn:
            await conn.send(GET)
            assert (await conn.receive_response()).status == 200
            proxy.add_toxic(Toxic.reset_peer(after=0.05))
            start = trio.current_time()
            assert await conn.wait_closed(timeout=1.0)
            assert trio.current_time() - start >= 0.04
            assert conn.reset_by_peer
        assert proxy.resets == 1


async def test_reset_peer_immediately_is_seen_by_httpx() -> None:
    async with (
        open_backend() as backend,
        open_toxic_proxy("127.0.0.1", backend.port) as proxy,
        httpx.AsyncClient() as client,
    ):
        proxy.add_toxic(Toxic.reset_peer())
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)):
            await client.get(proxy.url)


async def test_timeout_silences_then_closes() -> None:
    async with open_backend() as backend, open_toxic_proxy("127.0.0.1", backend.port) as proxy:
        proxy.add_toxic(Toxic.timeout(after=0.05))
        async with open_raw_connection("127.0.0.1", proxy.port) as conn:
            await conn.send(GET)
            with pytest.raises(NoResponseError):
                await conn.receive_response(timeout=1.0)
        assert proxy.timeouts == 1
        assert len(backend.requests) == 1  # the request went up, the answer was dropped


async def test_timeout_zero_never_closes() -> None:
    async with (
        open_backend() as backend,
        open_toxic_proxy("127.0.0.1", backend.port) as proxy,
        httpx.AsyncClient(timeout=0.1) as client,
    ):
        proxy.add_toxic(Toxic.timeout())
        with pytest.raises(httpx.ReadTimeout):
            await client.get(proxy.url)


async def test_down_refuses_and_coming_back_uses_the_same_port() -> None:
    async with (
        open_backend() as backend,
        open_toxic_proxy("127.0.0.1", backend.port) as proxy,
        httpx.AsyncClient() as client,
    ):
        port = proxy.port
        name = proxy.add_toxic(Toxic.down())
        with pytest.raises(httpx.ConnectError):
            await client.get(proxy.url)
        proxy.remove_toxic(name)
        assert proxy.port == port
        assert (await client.get(proxy.url)).status_code == 200


async def test_dead_upstream_closes_the_client_connection() -> None:
    async with open_backend() as backend, open_toxic_proxy("127.0.0.1", backend.port) as proxy:
        await backend.stop()
        async with open_raw_connection("127.0.0.1", proxy.port) as conn:
            assert await conn.wait_closed(timeout=1.0)
        assert proxy.upstream_connect_failures == 1


async def test_slicer_and_bandwidth_deliver_intact_data_slowly() -> None:
    fault = Fault.stream(2_000)
    async with (
        open_backend() as backend,
        open_toxic_proxy("127.0.0.1", backend.port) as proxy,
        httpx.AsyncClient() as client,
    ):
        backend.set_fault(fault)
        proxy.add_toxic(Toxic.slicer(average_size=100, size_variation=50))
        assert (await client.get(proxy.url)).content == fault.expected_body()
        proxy.clear_toxics()
        proxy.add_toxic(Toxic.bandwidth(20_000))
        start = trio.current_time()
        assert (await client.get(proxy.url)).content == fault.expected_body()
        assert trio.current_time() - start >= 0.09  # ~2.2 KB at 20 KB/s


async def test_toxicity_is_drawn_per_connection_from_the_seed() -> None:
    async def affected_pattern(seed: int) -> list[bool]:
        async with (
            open_backend() as backend,
            open_toxic_proxy("127.0.0.1", backend.port, seed=seed) as proxy,
        ):
            proxy.add_toxic(Toxic.reset_peer(toxicity=0.5))
            pattern = []
            for _ in range(8):
                async with open_raw_connection("127.0.0.1", proxy.port) as conn:
                    await conn.send(GET)
                    try:
                        pattern.append((await conn.receive_response()).status != 200)
                    except NoResponseError:
                        pattern.append(True)
            return pattern

    first = await affected_pattern(7)
    assert first == await affected_pattern(7)
    assert True in first and False in first


def test_toxic_values_are_validated() -> None:
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        Toxic.latency(-1)
    with pytest.raises(ValueError, match="toxicity must be within"):
        Toxic.latency(0.1, toxicity=1.5)
    with pytest.raises(ValueError, match="direction"):
        Toxic.latency(0.1, direction="sideways")  # type: ignore[arg-type]
    assert repr(Toxic.limit_data(5)) == (
        "Toxic.limit_data(direction='downstream', toxicity=1.0, nbytes=5)"
    )
