"""Catalogue H (reliability.md §5, cases 51–55): WebSocket proxying through the gateway,
and F (cases 40–42) where the API supports them: streamed large uploads/downloads in
bounded memory and body-size limits.

The gateway runs in this process, so its memory is this process's RSS (psutil).
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import psutil
import pytest
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, open_websocket_url

from velithon.gateway import GatewayRoute
from velithon.testing import (
    BackendResponse,
    Fault,
    ReadRequest,
    RecordedRequest,
    Send,
    Sleep,
    open_backend,
    open_scripted_backend,
    open_toxic_proxy,
    open_ws_backend,
)

from support.catalogue import (
    Served,
    assert_error_json,
    assert_gateway_error,
    bounded,
    gateway,
    request_bytes,
    target_status,
)

MIB = 1024 * 1024
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def ws_url(gw: Served, path: str) -> str:
    return f"ws://127.0.0.1:{gw.port}{path}"


def handshake(path: str = "/ws/chat", extra: list[tuple[str, str]] | None = None,
              *, method: str = "GET", version: str = "1.1", key: str | None = SAMPLE_KEY,
              ws_version: str = "13") -> bytes:
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    if key is not None:
        headers.append(("Sec-WebSocket-Key", key))
    headers.append(("Sec-WebSocket-Version", ws_version))
    return request_bytes(method, path, [*headers, *(extra or [])], version=version)


def client_frame(payload: bytes, opcode: int = 0x1, mask: bytes = b"\x11\x22\x33\x44") -> bytes:
    """One masked, final client frame (payload < 126 bytes)."""
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def parse_server_frame(data: bytes) -> tuple[int, bytes, bytes]:
    """``(opcode, payload, rest)`` of one unmasked server frame (payload < 126 bytes)."""
    opcode, length = data[0] & 0x0F, data[1] & 0x7F
    assert data[1] & 0x80 == 0 and length < 126
    return opcode, data[2 : 2 + length], data[2 + length :]




# ---- 51. happy path ------------------------------------------------------------------


@bounded(20)
async def test_51_echo_text_and_binary_both_ways() -> None:
    async with open_ws_backend(name="ws") as wsb:
        route = GatewayRoute("/ws/{path:path}", [wsb.http_url])
        async with gateway(route) as gw:
            messages: list[str | bytes] = ["a", "héllo wörld", b"\x00", b"\x00\xff" * 32768,
                                           "t" * (512 * 1024), random.Random(1).randbytes(MIB)]
            async with open_websocket_url(
                ws_url(gw, "/ws/chat?room=1"), max_message_size=2 * MIB,
                extra_headers=[(b"Cookie", b"sid=1"), (b"X-Secret", b"s"),
                               (b"Authorization", b"Bearer t")],
            ) as ws:
                for message in messages:
                    await ws.send_message(message)
                    echoed = await ws.get_message()
                    assert type(echoed) is type(message) and echoed == message
                await ws.ping(b"p1")  # answered (pong) by the gateway, no error
            await wsb.wait_until(lambda: wsb.close_codes == [1000], timeout=2)
            await gw.assert_serves()
    [session] = wsb.sessions
    assert session.path == "/ws/chat?room=1"
    assert session.messages == messages
    got = {k.lower(): v for k, v in session.headers}
    assert got["cookie"] == "sid=1" and got["authorization"] == "Bearer t"
    assert got["x-forwarded-for"] == "127.0.0.1"
    assert got["upgrade"].lower() == "websocket" and "upgrade" in got["connection"].lower()
    assert "x-secret" not in got


@bounded(10)
async def test_51_early_frame_in_the_handshake_segment_reaches_the_backend() -> None:
    async with open_ws_backend() as wsb:
        async with gateway(GatewayRoute("/ws/{path:path}", [wsb.http_url])) as gw:
            async with gw.connect() as conn:
                await conn.send(handshake("/ws/early") + client_frame(b"early"))
                response = await conn.receive_response(timeout=3)
                assert response.status == 101
                assert response.header("sec-websocket-accept") == SAMPLE_ACCEPT
                data = b""
                while len(data) < 7:
                    data += await conn.receive_some(timeout=3)
                opcode, payload, rest = parse_server_frame(data)
                assert (opcode, payload) == (0x1, b"early")
                # client close 1000 → close frame back, then both TCP connections close
                await conn.send(client_frame(struct.pack("!H", 1000), opcode=0x8))
                tail = rest + await conn.receive_until_close(timeout=3)
                opcode, payload, _ = parse_server_frame(tail)
                assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1000
            await wsb.wait_until(lambda: wsb.close_codes == [1000], timeout=2)
    assert wsb.messages == ["early"]


# ---- close codes propagate both ways -------------------------------------------------


@asynccontextmanager
async def closing_ws_backend() -> AsyncIterator[int]:
    """A WS echo server that closes with the code it is told to (``close:<code>``)."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, str) and message.startswith("close:"):
                    await ws.aclose(code=int(message.split(":")[1]), reason="bye")
                    return
                await ws.send_message(message)
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(
            trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None,
            max_message_size=8 * MIB))
        yield server.port
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("code", [1000, 1001, 1008, 4001])
@bounded(10)
async def test_51_backend_close_code_reaches_the_client(code: int) -> None:
    async with closing_ws_backend() as port:
        async with gateway(GatewayRoute("/ws/{path:path}", [f"http://127.0.0.1:{port}"])) as gw:
            async with open_websocket_url(ws_url(gw, "/ws/x")) as ws:
                await ws.send_message("ping")
                assert await ws.get_message() == "ping"
                await ws.send_message(f"close:{code}")
                with trio.fail_after(2), pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
    assert closed.value.reason.code == code
    assert closed.value.reason.reason == "bye"


@bounded(10)
async def test_51_messages_up_to_the_servers_limit_pass_both_ways() -> None:
    big = random.Random(2).randbytes(2 * MIB)
    async with closing_ws_backend() as port:
        async with gateway(GatewayRoute("/ws/{path:path}", [f"http://127.0.0.1:{port}"])) as gw:
            async with open_websocket_url(ws_url(gw, "/ws/x"), max_message_size=8 * MIB) as ws:
                await ws.send_message(big)
                with trio.fail_after(3):
                    assert await ws.get_message() == big


@pytest.mark.parametrize("code", [1000, 1001, 4002])
@bounded(10)
async def test_51_client_close_code_reaches_the_backend(code: int) -> None:
    async with open_ws_backend() as wsb:
        async with gateway(GatewayRoute("/ws/{path:path}", [wsb.http_url])) as gw:
            async with open_websocket_url(ws_url(gw, "/ws/x")) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"
                await ws.aclose(code=code, reason="client-bye")
            await wsb.wait_until(lambda: wsb.close_codes == [code], timeout=2)


# ---- 52. invalid upgrade requests ----------------------------------------------------


@pytest.mark.parametrize(("raw", "status"), [
    pytest.param(handshake(key=None), 400, id="missing-key"),
    pytest.param(handshake(ws_version="99"), 426, id="version-99"),
])
@bounded(10)
async def test_52_invalid_handshake_is_refused_without_backend_contact(raw: bytes,
                                                                       status: int) -> None:
    async with open_ws_backend() as wsb:
        async with gateway(GatewayRoute("/ws/{path:path}", [wsb.http_url])) as gw:
            async with gw.connect() as conn:
                await conn.send(raw)
                response = await conn.receive_response(timeout=3)
                assert await conn.wait_closed(2.0)
            assert_error_json(response, status)
            await gw.assert_serves()
    assert wsb.connections_accepted == 0 and wsb.sessions == []


@bounded(10)
async def test_52_upgrade_on_post_is_plain_http_never_a_tunnel() -> None:
    async with open_backend() as b:
        async with gateway(GatewayRoute("/ws/{path:path}", [b.url])) as gw:
            body = b"data"
            response = await gw.raw(handshake(method="POST", extra=[
                ("Content-Length", str(len(body)))]) + body)
    assert response.status == 200 and response.complete
    [seen] = b.requests
    assert seen.method == "POST" and seen.body == body
    assert seen.header("upgrade") is None and seen.header("sec-websocket-key") is not None


@bounded(10)
async def test_52_upgrade_on_http10_is_never_a_tunnel() -> None:
    async with open_ws_backend() as wsb:
        async with gateway(GatewayRoute("/ws/{path:path}", [wsb.http_url])) as gw:
            response = await gw.raw(handshake(version="1.0"))
    assert response.status != 101
    assert wsb.sessions == []


# ---- 53. backend refuses or fakes the upgrade ---------------------------------------


def _refusing(status: int):  # type: ignore[no-untyped-def]
    async def handler(request: RecordedRequest) -> BackendResponse:
        return BackendResponse.text("no websocket here", status=status)

    return handler


@pytest.mark.parametrize("status", [426, 200, 403])
@bounded(10)
async def test_53_backend_refusing_the_upgrade_refuses_the_client(status: int) -> None:
    async with open_backend(_refusing(status)) as b:
        route = GatewayRoute("/ws/{path:path}", [b.url], max_retries=0)
        async with gateway(route) as gw:
            async with gw.connect() as conn:
                await conn.send(handshake("/ws/chat"))
                response = await conn.receive_response(timeout=3)
                # smuggling attempt: the connection must not have become a raw pipe
                try:
                    await conn.send(request_bytes("GET", "/internal"))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                rest = await conn.receive_until_close(timeout=3)
            await gw.assert_serves()
    assert response.status != 101 and response.status >= 400
    assert_error_json(response, response.status)
    assert b"no websocket here" not in rest
    assert [r.path for r in b.requests] == ["/ws/chat"]  # /internal never reached B


@pytest.mark.parametrize("reply", [
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\n\r\n", id="no-accept"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: d3JvbmcgYWNjZXB0IGtleQ==\r\n\r\n",
                 id="wrong-accept"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                 b"Connection: Upgrade\r\n\r\n", id="wrong-protocol"),
])
@bounded(10)
async def test_53_fake_101_from_the_backend_is_refused(reply: bytes) -> None:
    async with open_scripted_backend([ReadRequest(), Send(reply), Sleep(0.3)]) as b:
        route = GatewayRoute("/ws/{path:path}", [b.url], max_retries=0)
        async with gateway(route) as gw:
            response = await gw.raw(handshake("/ws/chat"))
            await gw.assert_serves()
            status = await target_status(route, b.url, lambda r: r["failures"] == 1)
    assert response.status != 101
    assert response.status in (403, 502)  # refused (never a 500: not a gateway bug)
    assert_error_json(response, response.status)
    assert status["failures"] == 1  # a handshake failure counts against the target


@bounded(10)
async def test_53_refused_upgrade_reports_the_gateway_status() -> None:
    async with open_ws_backend() as wsb:
        await wsb.stop()
        route = GatewayRoute("/ws/{path:path}", [wsb.http_url], max_retries=0)
        async with gateway(route) as gw:
            response = await gw.raw(handshake("/ws/chat"))
    assert_gateway_error(response, 502)


# ---- 54. tunnel faults ----------------------------------------------------------------


@bounded(10)
async def test_54_backend_dying_mid_session_closes_the_client_promptly() -> None:
    async with open_ws_backend() as wsb:
        async with gateway(GatewayRoute("/ws/{path:path}", [wsb.http_url])) as gw:
            async with open_websocket_url(ws_url(gw, "/ws/x")) as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
                await wsb.stop()  # TCP close, no close frame
                with trio.fail_after(1.0), pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            await gw.assert_serves()
    assert closed.value.reason.code in (1011, 1006)


@bounded(10)
async def test_54_client_vanishing_closes_the_backend_session_promptly() -> None:
    async with open_ws_backend() as wsb:
        async with gateway(GatewayRoute("/ws/{path:path}", [wsb.http_url])) as gw:
            async with gw.connect() as conn:
                await conn.send(handshake("/ws/x"))
                assert (await conn.receive_response(timeout=3)).status == 101
                await wsb.wait_until(lambda: len(wsb.sessions) == 1, timeout=2)
                conn.reset()  # RST, no close frame
                await wsb.wait_until(lambda: wsb.sessions[0].closed, timeout=1.0)
            await gw.assert_serves()


@bounded(10)
async def test_54_client_rst_mid_session_is_not_logged_as_a_crash(
        caplog: pytest.LogCaptureFixture) -> None:
    async with open_ws_backend() as wsb:
        async with gateway(GatewayRoute("/ws/{path:path}", [wsb.http_url])) as gw:
            async with gw.connect() as conn:
                await conn.send(handshake("/ws/x"))
                assert (await conn.receive_response(timeout=3)).status == 101
                await wsb.wait_until(lambda: len(wsb.sessions) == 1, timeout=2)
                conn.reset()
                await wsb.wait_until(lambda: wsb.sessions[0].closed, timeout=1.0)
            await gw.assert_serves()
    crashes = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") and r.exc_info]
    assert crashes == [], [f"{r.name}: {r.getMessage()}" for r in crashes]


@bounded(10)
async def test_54_55_long_healthy_session_outlives_the_http_timeout() -> None:
    async with open_ws_backend() as wsb:
        route = GatewayRoute("/ws/{path:path}", [wsb.http_url], timeout_ms=300, max_failures=1)
        async with gateway(route) as gw:
            async with open_websocket_url(ws_url(gw, "/ws/x")) as ws:
                for _ in range(4):  # ~0.8 s, well past timeout_ms
                    await trio.sleep(0.2)
                    await ws.send_message("still here")
                    assert await ws.get_message() == "still here"
            await wsb.wait_until(lambda: wsb.close_codes == [1000], timeout=2)
            status = await target_status(route, wsb.http_url, lambda r: r["in_flight"] == 0)
    assert status["failures"] == 0 and status["breaker_state"] == "closed"
    assert status["in_flight"] == 0


# ---- 55. WebSocket and the breaker ----------------------------------------------------


@bounded(10)
async def test_55_upgrade_to_a_target_with_an_open_breaker_is_refused_without_contact() -> None:
    async with open_ws_backend() as wsb:
        await wsb.stop()
        route = GatewayRoute("/ws/{path:path}", [wsb.http_url], max_failures=1,
                             recovery_timeout_ms=60000, max_retries=0)
        async with gateway(route) as gw:
            first = await gw.raw(handshake("/ws/a"))  # connect refused: a handshake failure
            assert first.status != 101
            status = await target_status(route, wsb.http_url,
                                         lambda r: r["breaker_state"] == "open")
            assert status["failures"] == 1 and status["breaker_state"] == "open", status
            await wsb.start()
            second = await gw.raw(handshake("/ws/b"))
            await gw.assert_serves()
    assert second.status != 101 and second.status >= 400
    assert_error_json(second, second.status)
    assert wsb.connections_accepted == 0 and wsb.sessions == []


# ---- F41/F42. large bodies stream in bounded memory ----------------------------------


class RssSampler:
    """Peak RSS growth of this process (the gateway runs in it) while a block runs."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.baseline = 0
        self.peak = 0

    @asynccontextmanager
    async def measure(self) -> AsyncIterator[RssSampler]:
        self.baseline = self.peak = self.process.memory_info().rss
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sample)
            yield self
            nursery.cancel_scope.cancel()
        self.peak = max(self.peak, self.process.memory_info().rss)

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            await trio.sleep(0.005)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / MIB


UPLOAD = 48 * MIB
CHUNK = 64 * 1024


def _upload_chunk() -> bytes:
    return hashlib.sha256(b"seed").digest() * (CHUNK // 32)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
@bounded(40)
async def test_41_large_upload_streams_in_bounded_memory(framing: str) -> None:
    chunk = _upload_chunk()
    expected = hashlib.sha256()
    for _ in range(UPLOAD // CHUNK):
        expected.update(chunk)
    async with open_backend() as b, open_toxic_proxy("127.0.0.1", b.port) as link:
        route = GatewayRoute("/api/{path:path}", [link.url], timeout_ms=30000)
        async with gateway(route, max_body_size=128 * MIB) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            assert (await client.get("/api/warmup")).status_code == 200
            seen_early: list[int] = []

            async def body() -> AsyncIterator[bytes]:
                for i in range(UPLOAD // CHUNK):
                    if i == UPLOAD // CHUNK // 2:
                        seen_early.append(link.bytes_upstream)
                    yield chunk

            headers = {"Content-Length": str(UPLOAD)} if framing == "content-length" else {}
            async with RssSampler().measure() as rss:
                response = await client.post("/api/upload", content=body(), headers=headers)
            assert response.status_code == 200, response.text
    upload = b.requests[-1]
    assert upload.body_length == UPLOAD
    assert upload.body_sha256 == expected.hexdigest()
    # the backend got bytes of the body before the client had sent half of it
    assert seen_early and seen_early[0] > MIB, seen_early
    assert rss.growth_mib < 16, (
        f"RSS grew {rss.growth_mib:.1f} MiB for a {UPLOAD // MIB} MiB upload")


@bounded(40)
async def test_42_large_download_streams_in_bounded_memory() -> None:
    size = 48 * MIB
    fault = Fault.stream(size, chunk=CHUNK)
    piece = Fault.stream(CHUNK, chunk=CHUNK).expected_body()  # the pattern repeats per chunk
    expected = hashlib.sha256()
    for _ in range(size // CHUNK):
        expected.update(piece)
    async with open_backend() as b:
        route = GatewayRoute("/api/{path:path}", [b.url], timeout_ms=30000)
        async with gateway(route) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            assert (await client.get("/api/warmup")).status_code == 200
            b.set_fault(fault)
            digest = hashlib.sha256()
            received = 0
            async with RssSampler().measure() as rss:
                start = trio.current_time()
                async with client.stream("GET", "/api/big") as response:
                    assert response.status_code == 200
                    assert response.headers["content-length"] == str(size)
                    first_byte_at = None
                    async for data in response.aiter_raw():
                        if first_byte_at is None:
                            first_byte_at = trio.current_time() - start
                        digest.update(data)
                        received += len(data)
    assert received == size and digest.hexdigest() == expected.hexdigest()
    assert first_byte_at is not None and first_byte_at < 0.5, first_byte_at
    assert rss.growth_mib < 16, (
        f"RSS grew {rss.growth_mib:.1f} MiB for a {size // MIB} MiB download")


# ---- F41. body-size limits ------------------------------------------------------------


@bounded(10)
async def test_41_declared_body_over_the_limit_is_413_before_any_backend_contact() -> None:
    async with open_backend() as b:
        async with gateway(GatewayRoute("/api/{path:path}", [b.url]), max_body_size=MIB) as gw:
            async with gw.connect() as conn:
                await conn.send(request_bytes("POST", "/api/up",
                                              [("Content-Length", str(2 * MIB))]))
                response = await conn.receive_response(timeout=3)
                assert await conn.wait_closed(3.0)
            assert_error_json(response, 413)
            await gw.assert_serves()
    assert b.connections_accepted == 0


async def _chunked_upload(conn, total: int, piece: int = 64 * 1024,  # type: ignore[no-untyped-def]
                          *, finish: bool = True) -> None:
    chunk = b"%x\r\n" % piece + b"c" * piece + b"\r\n"
    try:
        for _ in range(total // piece):
            await conn.send(chunk)
        if finish:
            await conn.send(b"0\r\n\r\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


@bounded(15)
async def test_41_chunked_body_over_the_limit_is_413_and_the_upstream_aborted() -> None:
    async with open_backend() as b:
        route = GatewayRoute("/api/{path:path}", [b.url])
        async with gateway(route, max_body_size=MIB) as gw:
            async with gw.connect() as conn:
                await conn.send(request_bytes("POST", "/api/up",
                                              [("Transfer-Encoding", "chunked")]))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_chunked_upload, conn, 4 * MIB)
                    response = await conn.receive_response(timeout=5)
                    nursery.cancel_scope.cancel()
            assert_error_json(response, 413)
            await gw.assert_serves()
    assert b.requests == []  # the backend never saw a complete (truncated) upload


@bounded(15)
async def test_41_upload_over_the_limit_releases_the_target(caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    async with open_backend() as b:
        route = GatewayRoute("/api/{path:path}", [b.url])
        async with gateway(route, max_body_size=MIB) as gw:
            async with gw.connect() as conn:
                await conn.send(request_bytes("POST", "/api/up",
                                              [("Transfer-Encoding", "chunked")]))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_chunked_upload, conn, 4 * MIB)
                    assert (await conn.receive_response(timeout=5)).status == 413
                    nursery.cancel_scope.cancel()
            status = await target_status(route, b.url, lambda r: r["in_flight"] == 0,
                                         timeout=0.5)
            await gw.assert_serves()
    assert status["in_flight"] == 0, status
    crashes = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") and r.exc_info]
    assert crashes == [], [f"{r.name}: {r.getMessage()}" for r in crashes]


@bounded(15)
async def test_41_client_vanishing_mid_upload_aborts_upstream_without_blaming_it() -> None:
    async with open_backend() as b, open_toxic_proxy("127.0.0.1", b.port) as link:
        route = GatewayRoute("/api/{path:path}", [link.url], timeout_ms=800)
        async with gateway(route) as gw:
            async with gw.connect() as conn:
                await conn.send(request_bytes("POST", "/api/up",
                                              [("Transfer-Encoding", "chunked")]))
                # 256 KiB of chunks and half a chunk, then the client vanishes (RST)
                await _chunked_upload(conn, 256 * 1024, finish=False)
                await conn.send(b"%x\r\n" % (128 * 1024) + b"x" * 1000)
                await link.wait_until(lambda: link.bytes_upstream > 256 * 1024, timeout=2)
                conn.reset()
            # the upstream exchange is aborted promptly, not held until timeout_ms
            with trio.move_on_after(0.4):
                await link.wait_until(lambda: link.connections_active == 0, timeout=0.4)
            aborted_promptly = link.connections_active == 0
            early = await target_status(route, link.url)
            await trio.sleep(0.6)  # past timeout_ms
            late = await target_status(route, link.url)
            await gw.assert_serves()
    assert aborted_promptly, "the upstream connection was kept open after the client left"
    assert early["in_flight"] == 0, early
    assert late["failures"] == 0, late  # a vanished client is not the backend's fault
    assert b.requests == []
