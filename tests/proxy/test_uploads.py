"""Uploads through a real gateway: framing kept, slow clients kept apart from sick backends.

Backends are real servers on loopback, among them Python's own ``http.server``, which
reads only ``Content-Length`` bodies: an upload forwarded chunked reaches it empty.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
import trio

from velithon.gateway import GatewayRoute
from velithon.testing import open_raw_connection

from support.catalogue import Served, bounded, gateway, request_bytes
from support.gateway import backends

MIB = 1024 * 1024


class _HashingHandler(http.server.BaseHTTPRequestHandler):
    """Answers with what it read: the body's length and hash, and the request's framing."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = json.dumps({
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "content_length": self.headers.get("Content-Length"),
            "transfer_encoding": self.headers.get("Transfer-Encoding"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_PUT = do_POST

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is for assertions."""


@contextmanager
def stdlib_backend() -> Iterator[str]:
    """Python's ``http.server`` on an ephemeral loopback port, in a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HashingHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@asynccontextmanager
async def stdlib_gateway(**route: Any) -> AsyncIterator[Served]:
    with stdlib_backend() as url:
        async with gateway(GatewayRoute("/up/{path:path}", targets=[url], **route),
                           max_body_size=64 * MIB) as served:
            yield served


def _body(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


async def _chunked(data: bytes, piece: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i:i + piece]


@bounded(30)
async def test_a_large_upload_with_a_length_reaches_a_content_length_only_backend_whole() -> None:
    data = _body(3 * MIB)
    async with stdlib_gateway() as gw, httpx.AsyncClient(timeout=20) as c:
        response = await c.post(f"{gw.url}/up/file", content=data)
    assert response.status_code == 200
    seen = response.json()
    assert seen["length"] == len(data)
    assert seen["sha256"] == hashlib.sha256(data).hexdigest()
    assert seen["content_length"] == str(len(data))
    assert seen["transfer_encoding"] is None


@bounded(30)
async def test_a_small_chunked_upload_is_sent_with_its_length() -> None:
    data = _body(40_000)
    async with stdlib_gateway() as gw, httpx.AsyncClient(timeout=20) as c:
        response = await c.post(f"{gw.url}/up/file", content=_chunked(data, 10_000))
    seen = response.json()
    assert (seen["length"], seen["content_length"]) == (len(data), str(len(data)))
    assert seen["transfer_encoding"] is None


@bounded(30)
async def test_buffer_chunked_uploads_sends_a_large_chunked_upload_with_its_length() -> None:
    data = _body(2 * MIB)
    async with stdlib_gateway(buffer_chunked_uploads=4 * MIB) as gw, \
            httpx.AsyncClient(timeout=20) as c:
        response = await c.post(f"{gw.url}/up/file", content=_chunked(data))
    seen = response.json()
    assert seen["sha256"] == hashlib.sha256(data).hexdigest()
    assert seen["content_length"] == str(len(data))


@bounded(30)
async def test_a_large_chunked_upload_stays_chunked_and_arrives_whole() -> None:
    data = _body(2 * MIB)
    async with backends("a") as (a,), \
            gateway(GatewayRoute("/up/{path:path}", targets=[a.url]),
                    max_body_size=64 * MIB) as gw, httpx.AsyncClient(timeout=20) as c:
        response = await c.post(f"{gw.url}/up/file", content=_chunked(data))
    assert response.status_code == 200
    seen = response.json()
    assert seen["body_sha256"] == hashlib.sha256(data).hexdigest()
    names = {name for name, _ in seen["headers"]}
    assert "transfer-encoding" in names and "content-length" not in names


@bounded(30)
async def test_a_large_upload_with_a_length_keeps_its_length_on_our_backends_too() -> None:
    data = _body(MIB)
    async with backends("a") as (a,), \
            gateway(GatewayRoute("/up/{path:path}", targets=[a.url])) as gw, \
            httpx.AsyncClient(timeout=20) as c:
        response = await c.put(f"{gw.url}/up/file", content=data)
    seen = response.json()
    assert seen["body_length"] == len(data)
    headers = {name: value for name, value in seen["headers"]}
    assert headers["content-length"] == str(len(data))
    assert "transfer-encoding" not in headers


# ---- slow and stalled clients ------------------------------------------------------------


async def _stall(gw: Served, declared: int, sent: int, done: trio.Event,
                 statuses: list[int]) -> None:
    """Start an upload of ``declared`` bytes, send ``sent`` of them, then wait."""
    head = request_bytes("POST", "/up/file", [("Content-Length", str(declared))])
    async with open_raw_connection(gw.host, gw.port) as conn:
        await conn.send(head + _body(sent))
        try:
            response = await conn.receive_response(timeout=10)
            statuses.append(response.status)
        finally:
            done.set()


async def _breaker_states(route: GatewayRoute) -> list[tuple[str, int]]:
    return [(t["breaker_state"], t["failures"]) for t in await route.targets_status()]


@bounded(30)
async def test_stalled_uploads_get_408_and_leave_the_pool_serving() -> None:
    async with backends("a", "b", "c") as targets:
        route = GatewayRoute("/up/{path:path}", targets=[t.url for t in targets],
                             timeout_ms=300, max_failures=2, client_body_timeout_ms=1500)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url, timeout=5) as c:
            statuses: list[int] = []
            async with trio.open_nursery() as nursery:
                events = []
                for _ in range(15):
                    done = trio.Event()
                    events.append(done)
                    nursery.start_soon(_stall, gw, MIB, 70_000, done, statuses)
                await trio.sleep(0.8)  # well past timeout_ms: the uploads are stalled now
                served = [(await c.get("/up/x")).status_code for _ in range(12)]
            after = [(await c.get("/up/x")).status_code for _ in range(6)]
            assert served == [200] * 12
            assert after == [200] * 6
            assert statuses == [408] * 15
            assert await _breaker_states(route) == [("closed", 0)] * 3


@bounded(30)
async def test_an_upload_stalled_in_its_first_part_holds_no_target_slot() -> None:
    async with backends("a") as (a,):
        route = GatewayRoute("/up/{path:path}", targets=[a.url], max_requests_per_target=1,
                             client_body_timeout_ms=1000)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url, timeout=5) as c:
            statuses: list[int] = []
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(_stall, gw, MIB, 10_000, trio.Event(), statuses)
                await trio.sleep(0.3)
                assert (await c.get("/up/x")).status_code == 200
                assert not any(r.method == "POST" for r in a.requests)
            assert statuses == [408] * 5


@bounded(30)
async def test_an_honest_slow_uploader_succeeds_and_does_not_count_against_its_target() -> None:
    data = _body(2 * MIB)

    async def slowly() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 128 * 1024):
            await trio.sleep(0.08)
            yield data[i:i + 128 * 1024]

    with stdlib_backend() as url:
        route = GatewayRoute("/up/{path:path}", targets=[url], timeout_ms=400)
        async with gateway(route) as gw, httpx.AsyncClient(timeout=20) as c:
            response = await c.post(f"{gw.url}/up/file", content=slowly(),
                                    headers={"Content-Length": str(len(data))})
            assert response.status_code == 200
            assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()
            [status] = await route.targets_status()
    assert status["failures"] == 0
    assert status["breaker_state"] == "closed"
    assert status["latency_ms"] < 400  # the upload's 1.3 s is the client's, not the target's


# ---- application errors do not take the pool offline --------------------------------------


def _buggy(name: str) -> Any:
    async def handler(request: Any) -> Any:
        if request.path.endswith("/buggy"):
            from velithon.testing import BackendResponse
            return BackendResponse.text("boom", status=500)
        return {"backend": name}
    return handler


@asynccontextmanager
async def _buggy_backends() -> AsyncIterator[list[Any]]:
    from velithon.testing import open_backend
    async with open_backend(_buggy("a"), name="a") as a, \
            open_backend(_buggy("b"), name="b") as b, open_backend(_buggy("c"), name="c") as c:
        yield [a, b, c]


@bounded(30)
async def test_application_500s_pass_through_without_opening_breakers() -> None:
    async with _buggy_backends() as targets:
        route = GatewayRoute("/api/{path:path}", targets=[t.url for t in targets], max_failures=2)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url, timeout=5) as c:
            buggy = [(await c.get("/api/buggy")).status_code for _ in range(30)]
            healthy = [await c.get("/api/fine") for _ in range(9)]
            states = await _breaker_states(route)
            ejected = [t["ejected"] for t in await route.targets_status()]
    assert buggy == [500] * 30
    assert [r.status_code for r in healthy] == [200] * 9
    # every target still serves: no breaker opened, nothing ejected
    assert sorted(r.json()["backend"] for r in healthy) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert [state for state, _ in states] == ["closed"] * 3
    assert ejected == [False] * 3


@bounded(30)
async def test_failure_statuses_make_chosen_statuses_count_as_failures(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="velithon.target")
    async with _buggy_backends() as targets:
        route = GatewayRoute("/api/{path:path}", targets=[t.url for t in targets], max_failures=2,
                             failure_statuses=(500, 502, 503, 504), panic_threshold=0,
                             max_retries=0)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url, timeout=5) as c:
            buggy = [(await c.get("/api/buggy")).status_code for _ in range(6)]
            after = (await c.get("/api/fine")).status_code
            states = await _breaker_states(route)
    assert buggy == [500] * 6
    assert after == 503
    assert [state for state, _ in states] == ["open"] * 3
    opened = [r for r in caplog.records
              if "event=breaker_open" in r.getMessage() and "previous=closed" in r.getMessage()]
    assert len(opened) == 3


@pytest.mark.parametrize("bad", [[600], [404], ["502"]])
def test_failure_statuses_must_be_5xx(bad: list[Any]) -> None:
    with pytest.raises(Exception, match="failure_statuses"):
        GatewayRoute("/x", targets=["http://127.0.0.1:1"], failure_statuses=bad)
