"""Catalogue E (reliability.md §5, cases 31–38): backend faults, through the real gateway.

Plus the kill-and-revive scenario: one backend killed mid-run causes no client-visible
error for GETs, its breaker opens, and it recovers through half-open once revived.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import trio

from velithon.gateway import GatewayRoute
from velithon.testing import (
    BackendResponse,
    Close,
    Fault,
    ReadRequest,
    RecordedRequest,
    Send,
    Sleep,
    open_backend,
    open_scripted_backend,
    open_toxic_proxy,
)

from support.catalogue import (
    assert_gateway_error,
    bounded,
    gateway,
    no_leaks,
    request_bytes,
    target_status,
)

OK_FRESH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfresh"


# ---- 31. connection refused --------------------------------------------------------


@bounded(10)
async def test_31_refused_connection_is_a_fast_502_and_recorded() -> None:
    async with open_backend() as a:
        await a.stop()
        route = GatewayRoute("/api/{path:path}", [a.url], max_retries=0)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            start = trio.current_time()
            response = await client.get("/api/x")
            elapsed = trio.current_time() - start
            assert_gateway_error(response, 502)
            assert elapsed < 0.5
            status = await target_status(route, a.url)
            await gw.assert_serves()
    assert status["failures"] == 1 and status["failure_count"] == 1
    assert a.connections_accepted == 0


@pytest.mark.parametrize("method", ["GET", "POST"])
@bounded(10)
async def test_31_refused_connection_is_retried_on_the_other_backend(method: str) -> None:
    """Nothing reached the refused backend, so even a POST may be retried."""
    async with open_backend(name="a") as a, open_backend(name="b") as b:
        await a.stop()
        route = GatewayRoute("/api/{path:path}", [a.url, b.url], max_retries=1)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            for _ in range(2):
                response = await client.request(method, "/api/x", content=b"body")
                assert response.status_code == 200
                assert response.json()["backend"] == "b"
    assert a.connections_accepted == 0
    assert [r.method for r in b.requests] == [method, method]


# ---- 32. connect timeout ------------------------------------------------------------


@contextmanager
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full: new connects hang (SYNs are dropped)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
        except (TimeoutError, OSError):
            pass
        else:  # pragma: no cover - depends on the kernel
            pytest.skip("cannot build a non-accepting listener on this kernel")
        finally:
            probe.close()
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@bounded(10)
async def test_32_connect_timeout_is_504_and_get_is_retried_elsewhere() -> None:
    with blackhole() as port:
        dead = f"http://127.0.0.1:{port}"
        async with open_backend(name="b") as b:
            only_dead = GatewayRoute("/dead/{path:path}", [dead], timeout_ms=300, max_retries=0)
            both = GatewayRoute("/api/{path:path}", [dead, b.url], timeout_ms=3000,
                                per_try_timeout_ms=300, max_retries=1)
            async with gateway(only_dead, both) as gw, \
                    httpx.AsyncClient(base_url=gw.url) as client:
                start = trio.current_time()
                response = await client.get("/dead/x")
                assert 0.25 <= trio.current_time() - start < 1.5
                assert_gateway_error(response, 504)
                assert (await target_status(only_dead, dead))["failures"] == 1
                for _ in range(2):
                    response = await client.get("/api/x")
                    assert response.status_code == 200
                    assert response.json()["backend"] == "b"
    assert len(b.requests) == 2


# ---- 33. backend hangs after reading the request -----------------------------------


@bounded(10)
async def test_33_hang_is_504_and_a_post_is_not_retried() -> None:
    async with open_backend(name="a") as a, open_backend(name="b") as b:
        a.set_fault(Fault.hang())
        route = GatewayRoute("/api/{path:path}", [a.url, b.url], timeout_ms=400, max_retries=3)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            start = trio.current_time()
            response = await client.post("/api/orders", content=b'{"qty": 1}')
            elapsed = trio.current_time() - start
            assert_gateway_error(response, 504)
            assert 0.35 <= elapsed < 1.5
            status = await target_status(route, a.url)
            await gw.assert_serves()
    assert [(r.method, r.body) for r in a.requests] == [("POST", b'{"qty": 1}')]
    assert b.requests == []
    assert status["failures"] == 1


@bounded(10)
async def test_33_hung_get_is_retried_on_another_target_within_the_deadline() -> None:
    async with open_backend(name="a") as a, open_backend(name="b") as b:
        a.set_fault(Fault.hang())
        route = GatewayRoute("/api/{path:path}", [a.url, b.url], timeout_ms=3000,
                             per_try_timeout_ms=300, max_retries=1)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.get("/api/x")
            assert response.status_code == 200 and response.json()["backend"] == "b"
    assert len(a.requests) == 1 and len(b.requests) == 1


@bounded(10)
async def test_33_hung_upstream_connection_is_closed_not_pooled() -> None:
    async with open_backend() as a, open_toxic_proxy("127.0.0.1", a.port) as link:
        a.set_fault(Fault.hang(), times=1)
        route = GatewayRoute("/api/{path:path}", [link.url], timeout_ms=400, max_retries=0)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client, \
                no_leaks(fd_slack=6):
            assert_gateway_error(await client.get("/api/first"), 504)
            # the gateway closed its side: the proxied link goes away
            await link.wait_until(lambda: link.connections_active == 0, timeout=1.0)
            second = await client.get("/api/second")
            assert second.status_code == 200
    first_conn, second_conn = (r.connection_id for r in a.requests)
    assert first_conn != second_conn


# ---- 34. reset / close before the response head ------------------------------------


@pytest.mark.parametrize("fault", [Fault.reset(), Fault.close()], ids=["rst", "fin"])
@bounded(10)
async def test_34_reset_before_headers_is_502_and_post_is_sent_once(fault: Fault) -> None:
    async with open_backend(name="a") as a, open_backend(name="b") as b:
        a.set_fault(fault)
        route = GatewayRoute("/api/{path:path}", [a.url, b.url], max_retries=3)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.post("/api/pay", content=b"amount=5")
            assert_gateway_error(response, 502)
            status = await target_status(route, a.url)
            await gw.assert_serves()
    assert [r.method for r in a.requests] == ["POST"]
    assert b.requests == []
    assert status["failures"] == 1


@pytest.mark.parametrize("fault", [Fault.reset(), Fault.close()], ids=["rst", "fin"])
@bounded(10)
async def test_34_reset_before_headers_get_is_retried_on_the_other_target(fault: Fault) -> None:
    async with open_backend(name="a") as a, open_backend(name="b") as b:
        a.set_fault(fault)
        route = GatewayRoute("/api/{path:path}", [a.url, b.url], max_retries=1)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.get("/api/x")
            assert response.status_code == 200 and response.json()["backend"] == "b"
    assert len(a.requests) == 1 and len(b.requests) == 1


def _stale_script(index: int) -> list:
    """Connection 0 answers once, then reads the next request and closes without a
    response: a keep-alive connection that went stale just as it was reused."""
    if index == 0:
        return [ReadRequest(), Send(OK_FRESH), ReadRequest(), Close()]
    return [ReadRequest(), Send(OK_FRESH)]


@bounded(10)
async def test_34_stale_pooled_connection_get_is_replayed_transparently() -> None:
    async with open_scripted_backend(_stale_script) as b:
        route = GatewayRoute("/api/{path:path}", [b.url], max_retries=0)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            assert (await client.get("/api/one")).text == "fresh"
            second = await client.get("/api/two")
            assert second.status_code == 200 and second.text == "fresh"
            status = await target_status(route, b.url)
    assert len(b.connections) == 2
    assert [len(c.requests) for c in b.connections] == [2, 1]
    assert b.connections[1].requests[0].startswith(b"GET /api/two ")
    assert status["failures"] == 0


@bounded(10)
async def test_34_stale_pooled_connection_post_is_never_sent_twice() -> None:
    async with open_scripted_backend(_stale_script) as b:
        route = GatewayRoute("/api/{path:path}", [b.url], max_retries=3)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            assert (await client.get("/api/one")).text == "fresh"
            response = await client.post("/api/pay", content=b"amount=5")
            assert_gateway_error(response, 502)
            await gw.assert_serves()
    posts = [raw for c in b.connections for raw in c.requests if raw.startswith(b"POST ")]
    assert len(posts) == 1


@bounded(10)
async def test_34_idle_closed_keepalive_connections_are_not_used() -> None:
    async with open_backend(close_idle_after=0.15) as b:
        route = GatewayRoute("/api/{path:path}", [b.url], max_retries=0)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            assert (await client.get("/api/1")).status_code == 200
            await trio.sleep(0.35)  # the backend closes the idle connection meanwhile
            assert (await client.post("/api/2", content=b"x")).status_code == 200
            await trio.sleep(0.35)
            assert (await client.get("/api/3")).status_code == 200
    assert [r.target for r in b.requests] == ["/api/1", "/api/2", "/api/3"]
    assert len({r.connection_id for r in b.requests}) == 3


# ---- 35. reset / close mid-body ----------------------------------------------------

MID_BODY = [
    pytest.param(Fault.truncate(100, declared=1000), id="cl-fin"),
    pytest.param(Fault.truncate(100, declared=1000, rst=True), id="cl-rst"),
    pytest.param(Fault.chunked([b"a" * 50, b"b" * 50], finish=False), id="chunked-fin"),
    pytest.param(Fault.chunked([b"a" * 50, b"b" * 50], finish=False, rst=True), id="chunked-rst"),
]


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@bounded(10)
async def test_35_upstream_gone_right_after_its_head_is_a_502(rst: bool) -> None:
    # No body byte came, so no byte of the response reached the client either: the
    # client can still be told properly (502), not with a 500 or a cut connection.
    async with open_backend() as a:
        a.set_fault(Fault.truncate(0, declared=10, rst=rst), times=1)
        route = GatewayRoute("/api/{path:path}", [a.url], max_retries=0)
        async with gateway(route) as gw:
            response = await gw.raw(request_bytes("GET", "/api/x"))
            again = await gw.raw(request_bytes("GET", "/api/again"))
    assert response.status == 502 and response.complete
    assert again.status == 200 and again.complete


@pytest.mark.parametrize("fault", MID_BODY)
@bounded(10)
async def test_35_mid_body_failure_aborts_the_client_connection(fault: Fault) -> None:
    async with open_backend() as a:
        a.set_fault(fault, times=1)
        route = GatewayRoute("/api/{path:path}", [a.url], max_retries=3)
        async with gateway(route) as gw, no_leaks():
            async with gw.connect() as conn:
                await conn.send(request_bytes("GET", "/api/download"))
                response = await conn.receive_response(timeout=3)
                assert await conn.wait_closed(2.0), "the client connection must be closed"
            status = await target_status(route, a.url)
            # the next request is served normally (I1 for this route too)
            again = await gw.raw(request_bytes("GET", "/api/again"))
            assert again.status == 200 and again.complete
    assert response.status == 200
    assert response.complete is False, "a truncated body must never look complete"
    assert fault.expected_body().startswith(response.body)
    assert len(response.body) <= 100
    assert status["failures"] == 1
    assert len(a.requests) == 2  # never retried once the response had started


@bounded(10)
async def test_35_mid_body_abort_is_not_logged_as_a_gateway_crash(
        caplog: pytest.LogCaptureFixture) -> None:
    """Invariant I5: no unhandled exception in the gateway's logs. A truncated upstream is
    an upstream fault, worth a warning, not an app crash with a traceback."""
    async with open_backend() as a:
        a.set_fault(Fault.truncate(100, declared=1000), times=1)
        async with gateway(GatewayRoute("/api/{path:path}", [a.url])) as gw:
            response = await gw.raw(request_bytes("GET", "/api/download"))
    assert response.status == 200 and not response.complete
    crashes = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") and r.exc_info]
    assert crashes == [], [f"{r.name}: {r.getMessage()}" for r in crashes]


@pytest.mark.parametrize("fault", MID_BODY)
@bounded(10)
async def test_35_httpx_sees_an_incomplete_message(fault: Fault) -> None:
    async with open_backend() as a:
        a.set_fault(fault)
        async with gateway(GatewayRoute("/api/{path:path}", [a.url])) as gw, \
                httpx.AsyncClient(base_url=gw.url) as client:
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await client.get("/api/download")


# ---- 36. extra bytes / bodies where none are allowed: no desync --------------------

DESYNC = (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
          b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")


def _first_then_fresh(first: list) -> object:
    def script(index: int) -> list:
        if index == 0:  # if the gateway reused this connection it would read "evil"
            evil = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"
            return [*first, ReadRequest(), Send(evil)]
        return [ReadRequest(), Send(OK_FRESH)]

    return script


@pytest.mark.parametrize(("method", "first_reply", "expect_status", "expect_body"), [
    pytest.param("GET", DESYNC, 200, b"hello", id="extra-bytes-after-cl"),
    pytest.param("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
                 204, b"", id="204-with-body"),
    pytest.param("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello",
                 304, b"", id="304-with-body"),
    pytest.param("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                 200, b"", id="head-with-body"),
    pytest.param("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 30"
                        b"\r\n\r\n0\r\n\r\nResponse splitting attach",
                 200, b"", id="te-cl-junk"),
])
@bounded(10)
async def test_36_no_desync_after_a_response_with_extra_bytes(
        method: str, first_reply: bytes, expect_status: int, expect_body: bytes) -> None:
    script = _first_then_fresh([ReadRequest(), Send(first_reply)])
    async with open_scripted_backend(script, strict=False) as b:
        route = GatewayRoute("/api/{path:path}", [b.url], max_retries=0)
        async with gateway(route) as gw:
            async with gw.connect() as conn:  # one keep-alive client connection
                await conn.send(request_bytes(method, "/api/first"))
                first = await conn.receive_response(timeout=3, method=method)
                await conn.send(request_bytes("GET", "/api/second"))
                second = await conn.receive_response(timeout=3)
                await conn.send(request_bytes("GET", "/api/third"))
                third = await conn.receive_response(timeout=3)
    assert (first.status, first.body, first.complete) == (expect_status, expect_body, True)
    if b"Transfer-Encoding: chunked" in first_reply:  # TE + CL: chunked wins; CL: 30 is dropped
        assert first.header("content-length") in (None, "0"), first.headers
    assert (second.status, second.body) == (200, b"fresh")
    assert (third.status, third.body) == (200, b"fresh")
    assert b"evil" not in first.body + second.body + third.body
    assert b"Response splitting" not in first.body + second.body + third.body
    # the poisoned connection was discarded: exactly one request was read on it
    assert len(b.connections[0].requests) == 1


@pytest.mark.parametrize("reply", [
    pytest.param(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody-until-eof", id="http10"),
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody-until-eof", id="close-delim"),
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 14\r\n\r\n"
                 b"body-until-eof", id="conn-close-cl"),
])
@bounded(10)
async def test_36_close_delimited_responses_are_forwarded_and_never_pooled(reply: bytes) -> None:
    def script(index: int) -> list:
        if index == 0:
            return [ReadRequest(), Send(reply), Close()]
        return [ReadRequest(), Send(OK_FRESH)]

    async with open_scripted_backend(script) as b:
        route = GatewayRoute("/api/{path:path}", [b.url], max_retries=0)
        async with gateway(route) as gw:
            async with gw.connect() as conn:
                await conn.send(request_bytes("GET", "/api/first"))
                first = await conn.receive_response(timeout=3)
                await conn.send(request_bytes("GET", "/api/second"))
                second = await conn.receive_response(timeout=3)
    assert (first.status, first.body, first.complete) == (200, b"body-until-eof", True)
    assert (second.status, second.body) == (200, b"fresh")
    assert len(b.connections) == 2


@bounded(10)
async def test_36_relayed_204_has_no_content_length() -> None:
    script = [ReadRequest(), Send(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")]
    async with open_scripted_backend(script, strict=False) as b:
        async with gateway(GatewayRoute("/api/{path:path}", [b.url], max_retries=0)) as gw:
            response = await gw.raw(request_bytes("DELETE", "/api/item/1"))
    assert response.status == 204 and response.body == b""
    assert response.header("content-length") is None, response.headers


async def _fixed_file(request: RecordedRequest) -> BackendResponse:
    return BackendResponse(200, [("Content-Type", "application/octet-stream")], b"0123456789" * 10)


@bounded(10)
async def test_36_head_response_keeps_the_backend_content_length() -> None:
    """RFC 9110 §9.3.2: HEAD answers with the header fields a GET would have."""
    async with open_backend(_fixed_file) as b:
        async with gateway(GatewayRoute("/api/{path:path}", [b.url])) as gw:
            async with gw.connect() as conn:
                await conn.send(request_bytes("HEAD", "/api/file"))
                head = await conn.receive_response(timeout=3, method="HEAD")
                await conn.send(request_bytes("GET", "/api/file"))
                get = await conn.receive_response(timeout=3)
    assert head.status == 200 and head.body == b"" and head.complete
    assert head.header("content-length") == "100", head.headers
    assert head.header("transfer-encoding") is None
    assert get.header("content-length") == "100" and get.body == b"0123456789" * 10


# ---- 37. malformed or oversized response heads -------------------------------------

MALFORMED = [
    pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="ssh-banner"),
    pytest.param(b"HTTP/1.1 2OO OK\r\n\r\n", id="bad-status"),
    pytest.param(random.Random(7).randbytes(8192), id="random-8k"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
                 id="head-over-64k"),
    pytest.param(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(120))
                 + b"Content-Length: 0\r\n\r\n", id="120-headers"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX : y\r\nContent-Length: 0\r\n\r\n", id="space-before-colon"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", id="obs-fold"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                 id="conflicting-cl"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-cl"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxxxx", id="te-gzip"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\n\r\n", id="unsolicited-101"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", id="nul-in-value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Len", id="cut-in-head"),
]


@pytest.mark.parametrize("reply", MALFORMED)
@bounded(10)
async def test_37_malformed_response_head_is_502_and_not_retried(reply: bytes) -> None:
    async with open_scripted_backend([ReadRequest(), Send(reply), Close()]) as b:
        route = GatewayRoute("/api/{path:path}", [b.url], max_retries=3)
        async with gateway(route) as gw, no_leaks():
            async with gw.connect() as conn:
                await conn.send(request_bytes("GET", "/api/x"))
                response = await conn.receive_response(timeout=3)
                # the client connection survives a gateway error
                await conn.send(request_bytes("GET", "/local/ping"))
                assert (await conn.receive_response(timeout=3)).status == 200
            status = await target_status(route, b.url)
    assert_gateway_error(response, 502)
    assert len(b.connections) == 1  # a malformed response is not retried
    assert status["failures"] == 1


# ---- 38. early response during a large upload --------------------------------------


@pytest.mark.parametrize("early", [
    pytest.param(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: 9\r\nConnection: close\r\n\r\ntoo large", id="413-close"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ntoo large", id="200-keepalive"),
])
@bounded(15)
async def test_38_early_response_during_upload_is_relayed_and_upload_stops(early: bytes) -> None:
    size = 10 * 1024 * 1024
    async with open_scripted_backend([Sleep(0.05), Send(early), Sleep(0.5), Close()]) as b:
        route = GatewayRoute("/api/{path:path}", [b.url], max_retries=0)
        async with gateway(route) as gw, no_leaks():
            async with gw.connect() as conn:
                await conn.send(request_bytes("POST", "/api/upload", [
                    ("Content-Length", str(size)), ("Content-Type", "application/octet-stream")]))
                sent = 0

                async def upload() -> None:
                    nonlocal sent
                    chunk = b"u" * 65536
                    try:
                        while sent < size:
                            await conn.send(chunk)
                            sent += len(chunk)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass  # the gateway stopped reading: fine

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(upload)
                    response = await conn.receive_response(timeout=5)
                    closed = await conn.wait_closed(5.0)
                    nursery.cancel_scope.cancel()
            await gw.assert_serves()
            again_status = (await gw.raw(request_bytes("GET", "/local/ping"))).status
    code = int(early.split(b" ")[1])
    assert (response.status, response.body, response.complete) == (code, b"too large", True)
    assert closed, "the client connection must be closed after an early response"
    # the gateway stopped forwarding the upload: the backend got far less than 10 MiB
    assert len(b.connections[0].received) < size // 2
    assert again_status == 200


# ---- Error-JSON carries no backend internals (catalogue conventions, §2.8) -----------



@pytest.mark.parametrize("fault", [
    pytest.param(None, id="refused"),
    pytest.param(Fault.reset(), id="reset"),
    pytest.param(Fault.garbage(), id="garbage"),
    pytest.param(Fault.hang(), id="timeout"),
])
@bounded(10)
async def test_gateway_errors_do_not_reveal_backend_internals(fault: Fault | None) -> None:
    async with open_backend() as a:
        if fault is None:
            await a.stop()
        else:
            a.set_fault(fault)
        route = GatewayRoute("/api/{path:path}", [a.url], timeout_ms=300, max_retries=0)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.get("/api/x")
    assert response.status_code in (502, 504)
    assert_gateway_error(response, response.status_code)
    text = response.text
    for secret in (f"127.0.0.1:{a.port}", str(a.port), "Errno", "h11", "Traceback"):
        assert secret not in text, (secret, text)


# ---- one backend killed mid-run: retries, breaker open, half-open recovery ---------


@bounded(20)
async def test_backend_killed_mid_run_no_client_errors_and_breaker_recovers() -> None:
    async with open_backend(name="a") as a, open_backend(name="b") as b:
        route = GatewayRoute("/api/{path:path}", [a.url, b.url], max_retries=2,
                             max_failures=2, recovery_timeout_ms=300)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            served: list[str] = []

            async def get_many(n: int) -> None:
                for _ in range(n):
                    response = await client.get("/api/items")
                    assert response.status_code == 200, response.text
                    served.append(response.json()["backend"])

            await get_many(4)
            assert set(served) == {"a", "b"}
            await a.stop()  # killed mid-run
            served.clear()
            await get_many(10)  # every GET still succeeds: retried on b
            assert set(served) == {"b"}
            status = await target_status(route, a.url, lambda r: r["breaker_state"] == "open")
            assert status["breaker_state"] == "open", status
            assert status["failures"] >= 2
            accepted_while_dead = a.connections_accepted

            await a.start()
            await trio.sleep(0.45)  # > recovery_timeout_ms: the breaker admits a trial
            status = await target_status(route, a.url,
                                         lambda r: r["breaker_state"] == "half_open")
            assert status["breaker_state"] == "half_open", status
            served.clear()
            await get_many(6)
            status = await target_status(route, a.url, lambda r: r["breaker_state"] == "closed")
            assert status["breaker_state"] == "closed", status
            assert served.count("a") >= 2, served  # a is back in rotation
    assert a.connections_accepted > accepted_while_dead
