"""UpstreamPool against real sockets on 127.0.0.1 (reliability.md catalogue E, 31–38).

Backends are scripted raw bytes (``_raw_backend``) so that malformed and hostile
responses can be produced exactly. Every test checks what a caller of the pool
would see: the status and body, the exception family, and whether the
connection was reused or thrown away (``statistics()``).
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
from collections.abc import AsyncIterator
from functools import partial

import psutil
import pytest
import trio
import trustme

from velithon._exceptions import (
    ConfigError,
    UpstreamBodyError,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamProtocolError,
    UpstreamRequestError,
    UpstreamResetError,
)
from velithon._proxy.pool import Origin, PoolStatistics, UpstreamPool

from support.raw_backend import CLOSE, THEN_CLOSE, Reader, Scripted, ok, serve

# every exchange here runs with both response parsers
pytestmark = pytest.mark.usefixtures("http_parser")

MiB = 1024 * 1024


def host_headers(port: int) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"127.0.0.1:%d" % port)]


async def get(pool: UpstreamPool, port: int, method: bytes = b"GET", body: bytes | None = None
              ) -> tuple[int, bytes]:
    response = await pool.request(method, b"/", host_headers(port), body)
    return response.status, await response.read()


# ---- Origin ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "base", "authority"),
    [
        ("http://127.0.0.1:8001", "http", "127.0.0.1", 8001, "", b"127.0.0.1:8001"),
        ("http://Example.COM", "http", "example.com", 80, "", b"example.com"),
        ("https://api.internal/", "https", "api.internal", 443, "", b"api.internal"),
        ("https://svc:8443/base/v1/", "https", "svc", 8443, "/base/v1", b"svc:8443"),
        ("http://[::1]:8080/x", "http", "::1", 8080, "/x", b"[::1]:8080"),
        ("http://[::1]", "http", "::1", 80, "", b"[::1]"),
        ("HTTP://my_service:80", "http", "my_service", 80, "", b"my_service"),
    ],
)
def test_origin_parse(url: str, scheme: str, host: str, port: int, base: str,
                      authority: bytes) -> None:
    origin = Origin.parse(url)
    assert (origin.scheme, origin.host, origin.port, origin.base_path) == (scheme, host, port, base)
    assert origin.authority == authority
    assert Origin.parse(origin.url) == origin


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("127.0.0.1:8000", "missing scheme"),
        ("localhost", "missing scheme"),
        ("ftp://host", "unsupported scheme 'ftp'"),
        ("http://", "missing host"),
        ("http:///path", "missing host"),
        ("http://user:pw@host", "userinfo"),
        ("http://host/?q=1", "query string"),
        ("http://host/#frag", "fragment"),
        ("http://host:0", "invalid port"),
        ("http://host:65536", "invalid port"),
        ("http://host:http", "invalid port"),
        ("http://::1:80", "IPv6 addresses must be in brackets"),
        ("http://[::zz]:80", "invalid IPv6"),
        ("http://ho st", "whitespace"),
        ("http://host/a/../b", "unsafe base path"),
        ("http://hóst", "invalid host"),
    ],
)
def test_origin_parse_rejects_with_a_clear_message(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match="Invalid target URL") as info:
        Origin.parse(url)
    assert why in str(info.value)
    assert repr(url) in str(info.value)


def test_pool_constructor_validates() -> None:
    with pytest.raises(ConfigError, match="connect_timeout"):
        UpstreamPool("http://127.0.0.1:1", connect_timeout=0)
    with pytest.raises(ConfigError, match="Invalid target URL"):
        UpstreamPool("127.0.0.1:1")


# ---- keep-alive and reuse --------------------------------------------------------------


async def test_ten_sequential_requests_share_one_connection() -> None:
    backend = Scripted()
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        for i in range(10):
            response = await pool.request(b"GET", b"/n/%d" % i, host_headers(port))
            assert response.status == 200
            assert await response.read() == b"default"
            assert response.reusable
        assert backend.connections == 1
        assert [r.target for r in backend.requests] == [b"/n/%d" % i for i in range(10)]
        assert pool.statistics() == PoolStatistics(idle=1, active=0, opened_total=1,
                                                   reused_total=9, discarded_total=0)
        assert repr(pool) == f"<UpstreamPool http://127.0.0.1:{port} [0 active, 1 idle]>"


async def test_repr_counts_active_and_idle() -> None:
    async with serve(Scripted()) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        first = await pool.request(b"GET", b"/", host_headers(port))
        second = await pool.request(b"GET", b"/", host_headers(port))
        assert repr(pool) == f"<UpstreamPool http://127.0.0.1:{port} [2 active, 0 idle]>"
        await first.read()
        await second.read()
        assert repr(pool) == f"<UpstreamPool http://127.0.0.1:{port} [0 active, 2 idle]>"


async def test_concurrent_requests_each_get_their_own_response() -> None:
    async def echo(stream: trio.SocketStream) -> None:
        reader = Reader(stream)
        while (request := await reader.request()) is not None:
            await trio.sleep(random.random() / 100)
            await stream.send_all(ok(request.target))

    results: dict[bytes, bytes] = {}
    async with serve(echo) as port, UpstreamPool(f"http://127.0.0.1:{port}", max_idle=4) as pool:

        async def one(i: int) -> None:
            target = b"/item/%d" % i
            response = await pool.request(b"GET", target, host_headers(port))
            results[target] = await response.read()

        for _ in range(3):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(one, i)
        assert results == {b"/item/%d" % i: b"/item/%d" % i for i in range(20)}
        stats = pool.statistics()
        assert stats.active == 0 and stats.idle == 4
        assert stats.opened_total + stats.reused_total == 60


async def test_connections_are_reused_lifo_and_capped_by_max_idle() -> None:
    backend = Scripted()
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}",
                                                     max_idle=2) as pool:
        responses = [await pool.request(b"GET", b"/", host_headers(port)) for _ in range(3)]
        for response in responses:
            await response.read()
        stats = pool.statistics()
        assert (stats.idle, stats.opened_total, stats.discarded_total) == (2, 3, 1)
        for _ in range(4):
            await get(pool, port)
        assert backend.connections == 3
        assert pool.statistics().reused_total == 4


async def test_idle_connections_expire_after_idle_timeout(autojump_clock: trio.abc.Clock) -> None:
    backend = Scripted()
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}",
                                                     idle_timeout=30) as pool:
        await get(pool, port)
        await trio.sleep(29)
        await get(pool, port)
        assert backend.connections == 1
        await trio.sleep(31)
        await get(pool, port)
        assert backend.connections == 2
        assert pool.statistics().discarded_total == 1


async def test_pool_aclose_closes_idle_and_refuses_new_requests() -> None:
    backend = Scripted()
    async with serve(backend) as port:
        async with UpstreamPool(f"http://127.0.0.1:{port}") as pool:
            await get(pool, port)
        await backend.wait_closed(1)
        assert pool.statistics().idle == 0
        with pytest.raises(trio.ClosedResourceError, match="closed"):
            await get(pool, port)


async def test_response_closed_early_discards_its_connection() -> None:
    body = b"x" * 100_000
    backend = Scripted(default=ok(body))
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        async with await pool.request(b"GET", b"/", host_headers(port)) as response:
            assert await response.receive_some()
        assert not response.reusable
        with pytest.raises(trio.ClosedResourceError):
            await response.receive_some()
        assert await get(pool, port) == (200, body)
        assert backend.connections == 2
        assert pool.statistics().discarded_total == 1


# ---- stale keep-alive connections ------------------------------------------------------


async def test_stale_connection_is_retried_once_for_get() -> None:
    # Connection 1 answers once, then reads the next request and closes (a race
    # with the upstream's idle timeout); connection 2 is healthy.
    backend = Scripted([ok(b"first")], close_when_done=True)
    backend.scripts.append([ok(b"second")])
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        assert await get(pool, port) == (200, b"first")
        assert await get(pool, port) == (200, b"second")
        assert backend.connections == 2
        assert [r.method for r in backend.requests] == [b"GET"] * 3
        assert pool.statistics() == PoolStatistics(idle=1, active=0, opened_total=2,
                                                   reused_total=1, discarded_total=1)


async def test_stale_connection_is_not_retried_for_post() -> None:
    backend = Scripted([ok(b"first")], close_when_done=True)
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        assert await get(pool, port) == (200, b"first")
        with pytest.raises(UpstreamResetError) as info:
            await get(pool, port, b"POST", b"payload")
        assert info.value.request_sent
        assert [r.method for r in backend.requests].count(b"POST") == 1
        assert backend.connections == 1


async def test_stale_retry_happens_only_once() -> None:
    backend = Scripted([ok(b"first")], [CLOSE], close_when_done=True)
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        await get(pool, port)
        with pytest.raises(UpstreamResetError):
            await get(pool, port)
        assert backend.connections == 2


async def test_bytes_arriving_on_an_idle_connection_discard_it() -> None:
    # A late second response (or a body after a HEAD answer) sits in the socket of an
    # idle pooled connection: the next request, however soon, must not read it as its
    # own response.
    strays = [ok(b"secret of another")]  # sent once, 50 ms after the first response

    async def late_extra(stream: trio.SocketStream) -> None:
        reader = Reader(stream)
        with contextlib.suppress(trio.BrokenResourceError):  # the pool resets it: fine
            while (request := await reader.request()) is not None:
                await stream.send_all(ok(b"for " + request.target))
                if strays:
                    await trio.sleep(0.05)
                    await stream.send_all(strays.pop())

    async with serve(late_extra) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        assert await get(pool, port) == (200, b"for /")
        await trio.sleep(0.2)  # the stray response has arrived
        for _ in range(3):
            assert await get(pool, port) == (200, b"for /")
        assert pool.statistics().discarded_total == 1


async def test_sweep_closes_idle_connections_the_upstream_closed() -> None:
    # No request comes to take the connection (a target that is down or ejected):
    # the sweep after a health probe gives its socket back.
    backend = Scripted([ok(b"first"), THEN_CLOSE])
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        assert await get(pool, port) == (200, b"first")
        await backend.wait_closed(1)
        await trio.sleep(0.05)  # the FIN has arrived
        assert pool.statistics().idle == 1  # nothing took it: it is still held
        pool.sweep()
        assert pool.statistics() == PoolStatistics(0, 0, 1, 0, 1)


async def test_sweep_keeps_live_idle_connections() -> None:
    backend = Scripted()
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        assert await get(pool, port) == (200, b"default")
        pool.sweep()
        assert pool.statistics().idle == 1
        assert await get(pool, port) == (200, b"default")
        assert pool.statistics().reused_total == 1


async def test_idle_connection_closed_by_upstream_is_skipped_before_sending() -> None:
    # The upstream closed the idle connection (FIN already here): even a POST,
    # which is never replayed, goes out on a fresh connection.
    backend = Scripted([ok(b"first"), THEN_CLOSE])
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        assert await get(pool, port) == (200, b"first")
        await backend.wait_closed(1)
        assert await get(pool, port, b"POST", b"once") == (200, b"default")
        assert [r.body for r in backend.requests if r.method == b"POST"] == [b"once"]
        assert pool.statistics().discarded_total == 1


async def test_reset_on_a_fresh_connection_is_not_retried() -> None:
    backend = Scripted([CLOSE])
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        with pytest.raises(UpstreamResetError, match="before sending a response"):
            await get(pool, port)
        assert backend.connections == 1


# ---- response desync: bytes where none are allowed (catalogue 36) ----------------------


@pytest.mark.parametrize(
    ("method", "raw", "body"),
    [
        (b"GET", ok(b"hello") + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil", b"hello"),
        (b"GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nevil", b""),
        (b"HEAD", ok(b"evil"), b""),
        (b"GET", b"HTTP/1.1 304 Not Modified\r\n\r\n"
                 b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
         b""),
        # HAProxy c4: TE + CL with trailing junk; chunked wins, CL is never passed on.
        (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n"
                 b"0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil", b""),
    ],
    ids=["extra-after-cl", "204-with-body", "head-with-body", "304-then-extra", "te-and-cl"],
)
async def test_extra_bytes_never_reach_the_next_request(method: bytes, raw: bytes,
                                                        body: bytes) -> None:
    backend = Scripted([raw], default=ok(b"good"))
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(method, b"/", host_headers(port))
        assert await response.read() == body
        assert not response.reusable
        assert await get(pool, port) == (200, b"good")
        assert backend.connections == 2
        assert pool.statistics().discarded_total == 1


async def test_te_and_cl_response_drops_content_length() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n"
           b"2\r\nhi\r\n0\r\n\r\n")
    async with serve(Scripted([raw])) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(b"GET", b"/", host_headers(port))
        assert response.content_length is None
        assert [n for n, _ in response.headers] == [b"transfer-encoding"]
        assert await response.read() == b"hi"


async def test_content_length_on_a_204_is_dropped() -> None:
    raw = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n"
    async with serve(Scripted([raw])) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(b"DELETE", b"/", host_headers(port))
        assert (response.content_length, response.headers) == (None, [(b"x-a", b"1")])
        assert await response.read() == b""
        assert response.reusable


@pytest.mark.parametrize(
    "raw",
    [
        ok(b"bye", b"Connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\n\r\nbye",
        b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nbye",
    ],
    ids=["connection-close", "http10-until-eof", "http10-with-cl"],
)
async def test_close_delimited_responses_are_read_and_never_pooled(raw: bytes) -> None:
    backend = Scripted([raw, THEN_CLOSE])
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(b"GET", b"/", host_headers(port))
        assert await response.read() == b"bye"
        assert not response.reusable
        assert pool.statistics().idle == 0


async def test_request_with_connection_close_is_not_pooled() -> None:
    async with serve(Scripted()) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        headers = [*host_headers(port), (b"connection", b"close")]
        response = await pool.request(b"GET", b"/", headers)
        assert await response.read() == b"default"
        assert not response.reusable
        assert pool.statistics().idle == 0


# ---- streaming responses and mid-body failures (catalogue 35) --------------------------


async def test_chunked_response_is_streamed_as_it_arrives() -> None:
    go_on = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        await Reader(stream).request()
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5\r\nfirst\r\n")
        await go_on.wait()
        await stream.send_all(b"6\r\nsecond\r\n0\r\n\r\n")
        await trio.sleep_forever()

    async with serve(handler) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(b"GET", b"/", host_headers(port))
        assert response.content_length is None
        assert await response.receive_some() == b"first"
        go_on.set()
        assert [chunk async for chunk in response] == [b"second"]
        assert await response.receive_some() == b""
        assert response.reusable and pool.statistics().idle == 1


@pytest.mark.parametrize(
    ("raw", "delivered"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 100, b"a" * 100),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n",
         b"abcdef"),
    ],
    ids=["cl-short", "chunked-no-last-chunk"],
)
async def test_mid_body_failure_delivers_bytes_then_raises(raw: bytes, delivered: bytes) -> None:
    backend = Scripted([raw, THEN_CLOSE])
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(b"GET", b"/", host_headers(port))
        assert response.status == 200
        received = b""
        with pytest.raises(UpstreamBodyError):
            while True:
                chunk = await response.receive_some()
                assert chunk, "a truncated body must never look complete"
                received += chunk
        assert received == delivered
        with pytest.raises(UpstreamBodyError):
            await response.receive_some()
        assert pool.statistics() == PoolStatistics(0, 0, 1, 0, 1)


async def test_a_bad_chunk_size_arriving_with_the_head_is_an_invalid_response() -> None:
    """Framing that is already known to be broken is refused before any byte is relayed."""
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
    async with serve(Scripted([raw, THEN_CLOSE])) as port, \
            UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        with pytest.raises(UpstreamProtocolError):
            await pool.request(b"GET", b"/", host_headers(port))


# ---- malformed heads (catalogue 37) ----------------------------------------------------

_MALFORMED = {  # name: (raw bytes, what the error must say)
    "ssh-banner": (b"SSH-2.0-OpenSSH_9.6\r\n", "did not answer with HTTP"),
    "bad-status-code": (b"HTTP/1.1 2OO OK\r\n\r\n", "illegal status line|Invalid status code"),
    "random-8k": (random.Random(7).randbytes(8192), "did not answer with HTTP"),
    "head-over-64k": (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n",
                      "limit 65536|Receive buffer too long"),
    "101-headers": (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(100))
                    + b"Content-Length: 0\r\n\r\n", "101 response headers"),
    "space-before-colon": (b"HTTP/1.1 200 OK\r\nX : y\r\nContent-Length: 0\r\n\r\n",
                           "illegal header line|Invalid header token"),
    "obs-fold": (b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", "folded"),
    "obs-fold-tab-bare-lf": (b"HTTP/1.1 200 OK\nX-A: a\n\tb\nContent-Length: 0\n\n", "folded"),
    "conflicting-cl": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                       "conflicting|Duplicate Content-Length|repeated Content-Length"),
    "bad-cl": (b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
               "bad Content-Length|Invalid character in Content-Length|invalid or repeated"),
    "te-gzip": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
                "Only Transfer-Encoding: chunked|unsupported transfer coding"),
    # no body to frame, yet a coding we cannot read is refused all the same
    "te-gzip-on-204": (b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip\r\n\r\n",
                       "Only Transfer-Encoding: chunked|unsupported transfer coding"),
    "te-gzip-on-304": (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: gzip\r\n\r\n",
                       "Only Transfer-Encoding: chunked|unsupported transfer coding"),
    "unsolicited-101": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: upgrade\r\n\r\n", "unsolicited 101"),
    "too-many-1xx": (b"HTTP/1.1 100 Continue\r\n\r\n" * 20 + ok(), "more than 16 1xx"),
    "http-1.2": (b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
                 "without HTTP/1.1 or HTTP/1.0|Invalid HTTP version"),
    "equal-cl-twice": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
                       "repeated Content-Length"),
    "equal-cl-list": (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
                      "repeated Content-Length"),
    "cl-over-2-64": (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nok",
                     "repeated Content-Length"),
    "partial-head-then-close": (b"HTTP/1.1 200 OK\r\nContent-Le",
                                "in the middle of the response head"),
    # field grammar: nothing refused may reach the client, which is written unchecked
    "nul-in-value": (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
                     "control character|illegal header line"),
    "ctl-in-value": (b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n",
                     "control character|illegal header line"),
    "bare-cr-in-value": (b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
                         "illegal header line|Missing expected LF"),
    "empty-name": (b"HTTP/1.1 200 OK\r\n: a\r\nContent-Length: 0\r\n\r\n",
                   "illegal header line|Invalid header token"),
    "bad-name-char": (b"HTTP/1.1 200 OK\r\nX(A): a\r\nContent-Length: 0\r\n\r\n",
                      "illegal header line|Invalid header token"),
}


@pytest.mark.parametrize(("raw", "message"), list(_MALFORMED.values()), ids=list(_MALFORMED))
async def test_malformed_response_head_is_a_protocol_error(raw: bytes, message: str) -> None:
    # The backend keeps the connection open after its bytes (except for the
    # partial head), so each rejection must come from our checks, not a timeout.
    backend = Scripted([raw, THEN_CLOSE] if raw.endswith(b"Content-Le") else [raw])
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        with trio.fail_after(5), pytest.raises(UpstreamProtocolError, match=message):
            await pool.request(b"GET", b"/", host_headers(port))
        assert pool.statistics() == PoolStatistics(0, 0, 1, 0, 1)
        await backend.wait_closed(1)


async def test_whole_head_in_one_read_is_still_limited() -> None:
    # h11 only limits *incomplete* heads; a 20 KiB head arriving at once must still fail.
    raw = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (20 * 1024) + b"\r\nContent-Length: 0\r\n\r\n"
    async with serve(Scripted([raw])) as port, UpstreamPool(
            f"http://127.0.0.1:{port}", max_head_bytes=16 * 1024) as pool:
        with pytest.raises(UpstreamProtocolError, match="limit 16384"):
            await pool.request(b"GET", b"/", host_headers(port))


async def test_informational_responses_are_skipped() -> None:
    raw = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
           + ok(b"final"))
    async with serve(Scripted([raw])) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(b"POST", b"/", host_headers(port), b"x")
        assert (response.status, await response.read()) == (200, b"final")
        assert response.reusable


async def test_an_unreadable_coding_on_a_head_answer_is_refused() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"
    async with serve(Scripted([raw])) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        with pytest.raises(UpstreamProtocolError,
                           match="Only Transfer-Encoding: chunked|unsupported transfer coding"):
            await pool.request(b"HEAD", b"/", host_headers(port))


async def test_an_interim_response_labelled_http_1_0_is_skipped() -> None:
    raw = (b"HTTP/1.0 100 Continue\r\n\r\nHTTP/1.0 103 Early Hints\r\nLink: </a>\r\n\r\n"
           + ok(b"final"))
    async with serve(Scripted([raw])) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(b"GET", b"/", host_headers(port))
        assert (response.status, await response.read()) == (200, b"final")


async def test_response_fields() -> None:
    raw = (b"HTTP/1.1 201 Created Here\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
           b"Content-Length: 2\r\n\r\nhi")
    async with serve(Scripted([raw])) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(b"GET", b"/", host_headers(port))
        assert (response.status, response.reason, response.http_version) == (201, b"Created Here",
                                                                             "1.1")
        assert response.headers == [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"),
                                    (b"content-length", b"2")]
        assert response.content_length == 2
        assert await response.read() == b"hi"


# ---- what we send ----------------------------------------------------------------------


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_request_framing_is_computed_by_the_pool() -> None:
    backend = Scripted()
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        sneaky = [*host_headers(port), (b"content-length", b"999"),
                  (b"transfer-encoding", b"chunked"), (b"x-keep", b"1")]
        await get(pool, port, b"POST", b"abc")
        await (await pool.request(b"PUT", b"/", sneaky, b"hello")).read()
        await (await pool.request(b"POST", b"/", sneaky[:1], _chunks(b"ab", b"", b"cd"))).read()
        await (await pool.request(b"POST", b"/", [*host_headers(port), (b"content-length", b"4")],
                                  _chunks(b"ab", b"cd"))).read()
        await get(pool, port, b"POST")
        await get(pool, port, b"GET")
        framing = [(r.method, r.header(b"content-length"), r.header(b"transfer-encoding"), r.body)
                   for r in backend.requests]
        assert framing == [
            (b"POST", [b"3"], [], b"abc"),
            (b"PUT", [b"5"], [], b"hello"),
            (b"POST", [], [b"chunked"], b"abcd"),
            (b"POST", [b"4"], [], b"abcd"),
            (b"POST", [b"0"], [], b""),
            (b"GET", [], [], b""),
        ]
        assert backend.requests[1].header(b"x-keep") == [b"1"]
        assert backend.connections == 1


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        (b"/a\r\nX-Injected: 1", []),
        (b"/", [(b"x-evil", b"1.2.3.4\r\nX-Evil: 1")]),
        (b"/", [(b"bad name", b"v")]),
    ],
)
async def test_unsendable_request_is_a_local_error_and_opens_nothing(
        target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    pool = UpstreamPool("http://127.0.0.1:9")
    with pytest.raises(UpstreamRequestError, match="Cannot send the request"):
        await pool.request(b"GET", target, [(b"host", b"x"), *headers])
    assert pool.statistics().opened_total == 0


async def test_streaming_body_length_mismatch_is_a_local_error() -> None:
    backend = Scripted()
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        with pytest.raises(UpstreamRequestError, match="Content-Length"):
            await pool.request(b"POST", b"/", [*host_headers(port), (b"content-length", b"10")],
                               _chunks(b"abc"))
        assert pool.statistics().discarded_total == 1


async def test_body_iterator_failure_propagates_and_closes() -> None:
    class ClientGone(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        yield b"abc"
        raise ClientGone

    async with serve(Scripted()) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        with pytest.raises(ClientGone):
            await pool.request(b"POST", b"/", host_headers(port), failing())
        assert pool.statistics().discarded_total == 1


# ---- early response during an upload (catalogue 38) ------------------------------------


@pytest.mark.parametrize("streaming", [True, False], ids=["iterable", "bytes"])
async def test_early_response_stops_a_10_mib_upload(streaming: bool) -> None:
    answered = trio.Event()
    release = trio.Event()
    seen_eof = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        reader = Reader(stream)
        await reader.until(b"\r\n\r\n")  # headers only; the body is never read
        await stream.send_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\n"
                              b"too big!")
        answered.set()
        await release.wait()
        await reader.drain_to_eof()
        seen_eof.set()

    sent = 0

    async def upload() -> AsyncIterator[bytes]:
        nonlocal sent
        block = b"u" * 65536
        for _ in range(160):
            sent += len(block)
            yield block

    body = upload() if streaming else b"u" * (10 * MiB)
    async with serve(handler) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        with trio.fail_after(10):
            response = await pool.request(b"POST", b"/upload", host_headers(port), body)
            assert (response.status, await response.read()) == (413, b"too big!")
        assert not response.reusable
        if streaming:
            assert sent < 10 * MiB
        assert pool.statistics() == PoolStatistics(0, 0, 1, 0, 1)
        release.set()
        with trio.fail_after(5):
            await seen_eof.wait()


# ---- cancellation ----------------------------------------------------------------------


async def test_cancel_while_waiting_for_the_head_closes_the_connection() -> None:
    upstream_saw_eof = trio.Event()

    async def hang(stream: trio.SocketStream) -> None:
        reader = Reader(stream)
        await reader.request()
        await reader.drain_to_eof()  # never answers
        upstream_saw_eof.set()

    async with serve(hang) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        with trio.move_on_after(0.2) as scope:
            await pool.request(b"GET", b"/", host_headers(port))
        assert scope.cancelled_caught
        assert pool.statistics() == PoolStatistics(0, 0, 1, 0, 1)
        with trio.fail_after(5):
            await upstream_saw_eof.wait()


async def test_cancel_mid_body_closes_the_connection() -> None:
    backend = Scripted(default=b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(b"GET", b"/", host_headers(port))
        assert await response.receive_some() == b"half"
        with trio.move_on_after(0.2):
            await response.receive_some()
        assert pool.statistics() == PoolStatistics(0, 0, 1, 0, 1)
        with pytest.raises(trio.ClosedResourceError):
            await response.receive_some()
        await backend.wait_closed(1)


async def test_cancel_during_streaming_upload_closes_the_connection() -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await Reader(stream).drain_to_eof()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a"
        await trio.sleep_forever()
        yield b"b"  # pragma: no cover

    async with serve(handler) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        with trio.move_on_after(0.2) as scope:
            await pool.request(b"POST", b"/", host_headers(port), slow())
        assert scope.cancelled_caught
        assert pool.statistics() == PoolStatistics(0, 0, 1, 0, 1)


# ---- connect errors (catalogue 31, 32) -------------------------------------------------


async def test_connect_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # bound then closed: nothing listens there
    pool = UpstreamPool(f"http://127.0.0.1:{port}")
    with pytest.raises(UpstreamConnectError, match="Cannot connect to http://127.0.0.1"):
        await pool.request(b"GET", b"/", host_headers(port))
    assert pool.statistics() == PoolStatistics(0, 0, 0, 0, 0)


async def test_connect_timeout_against_a_full_backlog(autojump_clock: trio.abc.Clock) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # never accepted: the accept queue fills, later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        pool = UpstreamPool(f"http://127.0.0.1:{port}", connect_timeout=2.5)
        start = trio.current_time()
        with pytest.raises(UpstreamConnectTimeout, match="after 2.5s"):
            await pool.request(b"GET", b"/", host_headers(port))
        assert trio.current_time() - start == pytest.approx(2.5)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# ---- TLS -------------------------------------------------------------------------------


async def test_https_with_a_private_ca() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    backend = Scripted()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, backend, 0, server_ctx, host="127.0.0.1"))
        port = listeners[0].transport_listener.socket.getsockname()[1]
        async with UpstreamPool(f"https://127.0.0.1:{port}", ssl_context=client_ctx) as pool:
            for _ in range(3):
                assert await get(pool, port) == (200, b"default")
            assert backend.connections == 1
        untrusting = UpstreamPool(f"https://127.0.0.1:{port}")
        with pytest.raises(UpstreamConnectError, match="TLS handshake .* failed.*CERTIFICATE"):
            await untrusting.request(b"GET", b"/", host_headers(port))
        nursery.cancel_scope.cancel()


# ---- bounded memory --------------------------------------------------------------------


async def test_64_mib_each_way_in_bounded_memory() -> None:
    size = 64 * MiB
    block = b"z" * 65536
    received_upload = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal received_upload
        reader = Reader(stream)
        while (request := await reader.request(keep_body=False)) is not None:
            if request.method == b"GET":
                await stream.send_all(ok())
                continue
            received_upload = request.body_size
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // len(block)):
                await stream.send_all(block)

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    process = psutil.Process()
    async with serve(handler) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        await get(pool, port)  # warm up imports and buffers
        baseline = process.memory_info().rss
        peak = baseline
        response = await pool.request(b"POST", b"/", host_headers(port), upload())
        downloaded = 0
        async for chunk in response:
            downloaded += len(chunk)
            if downloaded % (4 * MiB) < len(chunk):
                peak = max(peak, process.memory_info().rss)
        peak = max(peak, process.memory_info().rss)
    assert received_upload == size
    assert downloaded == size
    assert peak - baseline < 16 * MiB

