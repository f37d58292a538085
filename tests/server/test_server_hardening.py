"""Reliability catalogue A (parsing / smuggling) and D (timeouts / slow clients) against
velithon.server, over raw sockets. Every rejected request must get a JSON error with
``Connection: close``, the connection must close, the app must not be called, and the
server must go on serving (invariant I1)."""

from __future__ import annotations

import logging
import socket
import struct
from typing import Any

import pytest
import trio
import trio.lowlevel

from support.server import (
    Recorder,
    assert_still_serving,
    connect,
    get,
    parse_responses,
    raw_exchange,
    read_until_closed,
    running_server,
)

H = b"Host: gw\r\n"


def post(headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST /x HTTP/" + version + b"\r\n" + headers + b"\r\n" + body


CHUNKED = H + b"Transfer-Encoding: chunked\r\n"

REJECTED = {
    # A1 CL.TE / TE.CL smuggling
    "cl-te": (
        post(
            H + b"Content-Length: 35\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: gw\r\n\r\n",
        ),
        400,
    ),
    "te-cl": (
        post(
            H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            b"5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
        ),
        400,
    ),
    # A2 Content-Length conflicts and malformed values
    "cl-two-lines": (post(H + b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), 400),
    "cl-list": (post(H + b"Content-Length: 5, 6\r\n", b"hello!"), 400),
    # identical repeats are refused too (RFC 9112 §6.3 allows either), as llhttp does
    "cl-duplicate-identical": (post(H + b"Content-Length: 5\r\nContent-Length: 5\r\n",
                                    b"hello"), 400),
    "cl-list-identical": (post(H + b"Content-Length: 5, 5\r\n", b"hello"), 400),
    "cl-plus": (post(H + b"Content-Length: +5\r\n", b"hello"), 400),
    "cl-negative": (post(H + b"Content-Length: -1\r\n", b"hello"), 400),
    "cl-hex": (post(H + b"Content-Length: 0x5\r\n", b"hello"), 400),
    "cl-underscore": (post(H + b"Content-Length: 1_0\r\n", b"hello"), 400),
    "cl-empty": (post(H + b"Content-Length: \r\n", b"hello"), 400),
    "cl-space": (post(H + b"Content-Length: 5 5\r\n", b"hello"), 400),
    "cl-21-digits": (post(H + b"Content-Length: " + b"1" * 21 + b"\r\n", b"hello"), 400),
    "cl-21-chars-leading-zeros": (post(H + b"Content-Length: " + b"0" * 20 + b"5\r\n",
                                       b"hello"), 400),
    "cl-over-2-64": (post(H + b"Content-Length: 99999999999999999999\r\n", b"hello"), 400),
    # A3 bad Transfer-Encoding
    "te-xchunked": (post(H + b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 501),
    "te-chunked-twice": (post(H + b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"), 501),
    "te-gzip-chunked": (post(H + b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
    "te-identity": (post(H + b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n"), 501),
    "te-two-lines": (post(CHUNKED + b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 501),
    "te-vtab": (post(H + b"Transfer-Encoding: chunked\x0b\r\n", b"0\r\n\r\n"), 400),
    "te-http10": (post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"1.0"), 400),
    # A4 field-line syntax
    "space-before-colon": (post(H + b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), 400),
    "space-in-name": (get("/", b"X Y: z\r\n"), 400),
    "at-in-name": (get("/", b"X@Y: z\r\n"), 400),
    "empty-name": (get("/", b": z\r\n"), 400),
    "no-colon": (get("/", b"NoColonHere\r\n"), 400),
    "cr-in-value": (get("/", b"X: a\rb\r\n"), 400),
    "nul-in-value": (get("/", b"X: a\x00b\r\n"), 400),
    # A5 obs-fold and leading whitespace (strict by default)
    "obs-fold": (get("/", b"X-Test: v1\r\n continuation\r\n"), 400),
    "obs-fold-te": (post(H + b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"), 400),
    "obs-fold-tab": (get("/", b"X-Test: v1\r\n\tcontinuation\r\n"), 400),
    "ws-before-first-header": (b"GET / HTTP/1.1\r\n Host: gw\r\n\r\n", 400),
    # A6 chunk framing
    "chunk-0x": (post(CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-negative": (post(CHUNKED, b"-1\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-plus": (post(CHUNKED, b"+5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-leading-space": (post(CHUNKED, b" 5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-underscore": (post(CHUNKED, b"1_0\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-21-hex": (post(CHUNKED, b"f" * 21 + b"\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-data-mismatch": (post(CHUNKED, b"3\r\nxxx__1a\r\n"), 400),
    "chunk-spill": (post(CHUNKED, b"5\r\nhello!!\r\n0\r\n\r\n"), 400),
    "chunk-lf-only": (post(CHUNKED, b"5\r\nhello\n0\r\n\r\n"), 400),
    # A7 an overlong chunk-extension line
    "chunk-ext-20k": (post(CHUNKED, b"5;" + b"a" * 20480 + b"\r\nhello\r\n0\r\n\r\n"), 400),
    # A8 request line, target form, Host, version
    "absolute-form-other-host": (b"GET http://127.0.0.2:9/ HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    "authority-form": (b"GET evil.example:80 HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    "asterisk-with-get": (b"GET * HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    "relative-target": (b"GET admin HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    "connect": (b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n", 405),
    "http-2.0": (b"GET / HTTP/2.0\r\nHost: gw\r\n\r\n", 505),
    "http-1.10": (b"GET / HTTP/1.10\r\nHost: gw\r\n\r\n", 400),
    "lowercase-version": (b"GET / http/1.1\r\nHost: gw\r\n\r\n", 400),
    "double-space": (b"GET  / HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    "missing-host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: gw\r\nHost: gw\r\n\r\n", 400),
    "host-userinfo": (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
    "host-slash": (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    "host-space": (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    "host-empty": (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
    "host-port-too-big": (b"GET / HTTP/1.1\r\nHost: gw:65536\r\n\r\n", 400),
    # A9 limits h11 does not enforce on complete input (each sent in one send_all)
    "uri-9k": (get("/" + "a" * 9 * 1024), 414),
    "header-40k": (get("/", b"X-Big: " + b"a" * 40 * 1024 + b"\r\n"), 431),
    "101-headers": (get("/", b"".join(b"X-%d: v\r\n" % i for i in range(101))), 431),
    "header-block-64k": (
        get("/", b"".join(b"X-%d: %s\r\n" % (i, b"v" * 600) for i in range(99))),
        431,
    ),
    "declared-body-too-large": (post(H + b"Content-Length: 2000\r\n", b"x" * 2000), 413),
    "chunked-body-too-large": (post(CHUNKED, b"7d0\r\n" + b"x" * 2000 + b"\r\n0\r\n\r\n"), 413),
    # A10 garbage
    "tls-client-hello": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32, 400),
    "nul-byte": (b"\x00", 400),
}


@pytest.mark.parametrize(("raw", "status"), list(REJECTED.values()), ids=list(REJECTED))
async def test_rejected_without_calling_the_app(raw: bytes, status: int) -> None:
    app = Recorder()
    async with running_server(app, max_body_size=1000) as server:
        data = await raw_exchange(server, raw)  # returns only once the server closed
        [resp] = parse_responses(data, method=b"POST")
        assert resp.status == status
        assert resp.headers[b"connection"] == b"close"
        assert resp.headers[b"content-type"] == b"application/json"
        assert resp.json()["status"] == status and resp.json()["error"]
        assert app.requests == []
        await assert_still_serving(server)


ACCEPTED = {
    "cl-leading-zeros": post(H + b"Content-Length: 005\r\n", b"hello"),
    "te-mixed-case": post(H + b"Transfer-Encoding: ChUnKeD\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
}


@pytest.mark.parametrize("raw", list(ACCEPTED.values()), ids=list(ACCEPTED))
async def test_unusual_but_unambiguous_framing_is_accepted(raw: bytes) -> None:
    app = Recorder()
    async with running_server(app) as server:
        [resp] = parse_responses(
            await raw_exchange(server, raw + get("/", b"Connection: close\r\n"))
        )[:1]
    assert resp.status == 200
    assert app.requests[0]["body"] == b"hello"
    assert app.requests[1]["scope"]["path"] == "/"  # the next request is parsed fresh
    lengths = [v for k, v in app.requests[0]["scope"]["headers"] if k == b"content-length"]
    assert len(lengths) <= 1


async def test_chunk_extensions_and_trailers_are_dropped() -> None:
    app = Recorder()
    body = (
        b"5;a\x00b\r\nhello\r\n5;\r\nworld\r\n0\r\n"
        b"Content-Length: 99\r\nHost: evil\r\nX-Ok: 1\r\n\r\n"
    )
    async with running_server(app) as server:
        data = await raw_exchange(server, post(CHUNKED + b"Connection: close\r\n", body))
    [resp] = parse_responses(data, method=b"POST")
    assert resp.status == 200
    assert app.requests[0]["body"] == b"helloworld"
    headers = dict(app.requests[0]["scope"]["headers"])
    assert headers[b"host"] == b"gw" and b"x-ok" not in headers and b"content-length" not in headers


async def test_absolute_form_matching_host_is_served_as_origin_form() -> None:
    app = Recorder()
    async with running_server(app) as server:
        data = await raw_exchange(
            server, b"GET http://gw/p/q?x=1 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        )
    assert parse_responses(data)[0].status == 200
    scope = app.requests[0]["scope"]
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/p/q", b"/p/q", b"x=1")


async def test_options_asterisk_is_allowed() -> None:
    app = Recorder()
    async with running_server(app) as server:
        data = await raw_exchange(
            server, b"OPTIONS * HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        )
    assert parse_responses(data)[0].status == 200
    assert app.requests[0]["scope"]["raw_path"] == b"*"


async def test_obs_fold_lenient_mode_unfolds() -> None:
    app = Recorder()
    async with running_server(app, strict_obs_fold=False) as server:
        data = await raw_exchange(
            server, get("/", b"X-Test: v1\r\n continuation\r\nConnection: close\r\n")
        )
    assert parse_responses(data)[0].status == 200
    assert dict(app.requests[0]["scope"]["headers"])[b"x-test"] == b"v1 continuation"


@pytest.mark.parametrize(
    ("prefix", "filler", "status"),
    [
        (b"GET /", b"a" * 1024, 414),  # a request line that never ends
        (b"GET / HTTP/1.1\r\nHost: gw\r\nX: ", b"a" * 1024, 431),  # a header that never ends
        (b"GET / HTTP/1.1\r\nHost: gw\r\n", b"X: v\r\n" * 100, 431),  # endless header lines
    ],
    ids=["uri", "header", "header-count"],
)
async def test_oversize_head_in_pieces_rejected_early(
    prefix: bytes, filler: bytes, status: int
) -> None:
    async with running_server(Recorder()) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(prefix)
            with trio.move_on_after(3):
                try:
                    for _ in range(48 * 1024 // len(filler)):  # the head never completes
                        await stream.send_all(filler)
                        await trio.lowlevel.checkpoint()
                except trio.BrokenResourceError:
                    pass
            data = await read_until_closed(stream)
        [resp] = parse_responses(data)
        assert resp.status == status  # answered from the incomplete head
        await assert_still_serving(server)


async def test_bad_chunk_after_response_started_aborts() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"streaming", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        await send({"type": "http.response.body", "body": b"never"})

    async with running_server(app) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(post(CHUNKED))
            with trio.fail_after(2):
                first = await stream.receive_some(65536)
            assert first.startswith(b"HTTP/1.1 200 ")
            await stream.send_all(
                b"5\r\nhello!!\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: gw\r\n\r\n"
            )
            rest = await read_until_closed(stream)
        assert b"never" not in rest and b"HTTP/1.1" not in rest  # cut, and /admin never served
        assert parse_responses(first + rest) == []


async def test_pipelined_get_with_body_is_not_glued_to_next_request() -> None:
    app = Recorder()
    async with running_server(app) as server:
        data = await raw_exchange(
            server,
            b"GET / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"
            + get("/2", b"Connection: close\r\n"),
        )
    assert [r.status for r in parse_responses(data)] == [200, 200]
    assert [(r["scope"]["path"], r["body"]) for r in app.requests] == [("/", b"hello"), ("/2", b"")]


async def test_garbage_is_refused_promptly() -> None:
    async with running_server(Recorder(), header_timeout=30) as server:
        with trio.fail_after(1.0):  # not after the header timeout
            data = await raw_exchange(server, b"\x16\x03\x01\x00\xa5\x01\x00")
    assert parse_responses(data)[0].status == 400


async def test_connect_and_close_logs_nothing(caplog: Any) -> None:
    async with running_server(Recorder()) as server:
        with caplog.at_level(logging.DEBUG, logger="velithon"):
            for _ in range(3):
                stream = await connect(server)
                await stream.aclose()
            await assert_still_serving(server)
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


# -- D. timeouts and slow clients (small real timeouts; the watchdog ticks at 1/10) --------


async def test_slowloris_gets_408_at_header_deadline_from_first_byte() -> None:
    async with running_server(Recorder(), header_timeout=0.4, keepalive_timeout=5) as server:
        stream = await connect(server)
        async with stream:

            async def trickle() -> None:  # one byte every 40 ms: inactivity never triggers
                try:
                    for byte in b"X-a: b\r\n" * 50:
                        await stream.send_all(bytes([byte]))
                        await trio.sleep(0.04)
                except trio.BrokenResourceError:
                    pass

            start = trio.current_time()
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: gw\r\n")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                with trio.fail_after(2):
                    first = await stream.receive_some(65536)
                elapsed = trio.current_time() - start
                nursery.cancel_scope.cancel()
            data = first + await read_until_closed(stream)
        [resp] = parse_responses(data)
        assert resp.status == 408 and resp.headers[b"connection"] == b"close"
        assert 0.35 < elapsed < 1.0
        await assert_still_serving(server)


async def test_slow_body_gets_408() -> None:
    app = Recorder()
    async with running_server(app, body_timeout=0.3) as server:
        stream = await connect(server)
        async with stream:
            start = trio.current_time()
            await stream.send_all(post(H + b"Content-Length: 1000000\r\n", b"x" * 10))
            data = await read_until_closed(stream)
            elapsed = trio.current_time() - start
        [resp] = parse_responses(data, method=b"POST")
        assert resp.status == 408 and resp.headers[b"connection"] == b"close"
        assert 0.25 < elapsed < 1.0
        assert app.requests == []  # the app was cancelled while still reading
        await assert_still_serving(server)


async def test_idle_keep_alive_closed_silently() -> None:
    async with running_server(Recorder(), keepalive_timeout=0.3) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(get())
            with trio.fail_after(1):
                first = await stream.receive_some(65536)
            assert first.startswith(b"HTTP/1.1 200 ")
            start = trio.current_time()
            rest = await read_until_closed(stream)
            elapsed = trio.current_time() - start
        assert rest == b"" and 0.25 < elapsed < 1.0


async def test_keep_alive_timer_does_not_cut_a_slow_request() -> None:
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan")
        await trio.sleep(0.5)
        await Recorder()(scope, receive, send)

    async with running_server(slow, keepalive_timeout=0.2, header_timeout=0.2) as server:
        data = await raw_exchange(server, get("/", b"Connection: close\r\n"))
    assert parse_responses(data)[0].status == 200


async def test_client_that_never_reads_is_cut_after_send_timeout() -> None:
    finished = trio.Event()

    async def flood(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/ok":
            return await Recorder()(scope, receive, send)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while True:
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        finally:
            finished.set()

    async with running_server(flood, send_timeout=0.3) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(get("/flood"))
            with trio.fail_after(3):
                await finished.wait()  # the app's send was interrupted; the client read nothing
        await assert_still_serving(server)


async def test_limit_concurrency_stops_accepting_until_a_slot_frees() -> None:
    async with running_server(Recorder(), limit_concurrency=1) as server:
        first = await connect(server)
        await first.send_all(get("/first"))
        with trio.fail_after(1):
            assert (await first.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
        second = await connect(server)  # completes in the kernel backlog, not served yet
        async with second:
            await second.send_all(get("/second", b"Connection: close\r\n"))
            with trio.move_on_after(0.3) as waited:
                await second.receive_some(65536)
            assert waited.cancelled_caught  # no answer while the slot is taken
            await first.aclose()
            data = await read_until_closed(second)
        assert parse_responses(data)[0].json()["path"] == "/second"


async def test_slowloris_at_scale_frees_slots_by_header_timeout() -> None:
    async with running_server(Recorder(), limit_concurrency=3, header_timeout=0.3) as server:
        lorises = []
        for _ in range(3):  # take every slot with a head that never completes
            stream = await connect(server)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: gw\r\n")
            lorises.append(stream)
        start = trio.current_time()
        data = await raw_exchange(server, get("/normal", b"Connection: close\r\n"))
        elapsed = trio.current_time() - start
        assert parse_responses(data)[0].json()["path"] == "/normal"
        assert 0.2 < elapsed < 1.5  # served once the header deadline closed a loris
        for stream in lorises:
            [resp] = parse_responses(await read_until_closed(stream))
            assert resp.status == 408
            await stream.aclose()


async def test_client_reset_mid_response_interrupts_the_app() -> None:
    outcome: list[str] = []
    finished = trio.Event()

    async def big(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan")
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(160):  # 10 MiB
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            outcome.append("completed")
        except OSError:
            outcome.append("send raised OSError")
            raise
        finally:
            finished.set()

    async with running_server(big) as server:
        stream = await connect(server)
        await stream.send_all(get())
        with trio.fail_after(2):
            assert len(await stream.receive_some(512)) > 0
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()  # RST
        with trio.fail_after(2):
            await finished.wait()
        assert outcome == ["send raised OSError"]
        await assert_still_serving(server)
