"""HTTP/1.1 behaviour of velithon.server over real sockets: keep-alive, pipelining,
streaming both ways, 100-continue, HEAD, the ASGI scope, and app failures."""

from __future__ import annotations

import gc
import logging
import re
from typing import Any

import httpx
import pytest
import trio

from velithon._http11 import CheckedFields

from support.server import (
    Recorder,
    assert_still_serving,
    connect,
    get,
    hello,
    parse_responses,
    raw_exchange,
    read_until_closed,
    running_server,
)


async def test_keep_alive_reuses_one_connection() -> None:
    peers = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        peers.append(scope["client"])
        await hello(scope, receive, send)

    async with running_server(app) as server:
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                r = await client.get(server.url + "/")
                assert r.status_code == 200 and r.text == "hello"
    assert len(peers) == 3 and len(set(peers)) == 1  # same client port: one TCP connection


async def test_pipelined_requests_answered_in_order() -> None:
    app = Recorder()
    async with running_server(app) as server:
        data = await raw_exchange(
            server, get("/first") + get("/second") + get("/third", b"Connection: close\r\n")
        )
    paths = [r.json()["path"] for r in parse_responses(data)]
    assert paths == ["/first", "/second", "/third"]
    assert [r["scope"]["path"] for r in app.requests] == ["/first", "/second", "/third"]


async def test_scope_contents() -> None:
    app = Recorder()
    async with running_server(app, root_path="/api") as server:
        async with httpx.AsyncClient() as client:
            r = await client.get(server.url + "/a%20b/c?x=1&y=%20", headers={"X-Thing": "v"})
    assert r.status_code == 200
    scope = app.requests[0]["scope"]
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/a b/c"
    assert scope["raw_path"] == b"/a%20b/c"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == "/api"
    assert scope["server"] == (server.host, server.port)
    assert scope["client"][0] == "127.0.0.1"
    assert (b"x-thing", b"v") in scope["headers"]
    assert scope["state"] == {}


async def test_lifespan_state_is_copied_into_each_scope() -> None:
    seen = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["db"] = "conn"
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(dict(scope["state"]))
        scope["state"]["leak"] = True  # must not show up in the next request's state
        await hello(scope, receive, send)

    async with running_server(app) as server:
        async with httpx.AsyncClient() as client:
            await client.get(server.url)
            await client.get(server.url)
    assert seen[1] == {"db": "conn"}


async def test_chunked_request_body_streams_chunk_by_chunk() -> None:
    got: list[tuple[bytes, bool]] = []
    step = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            got.append((message["body"], message["more_body"]))
            step.set()
            if not message["more_body"]:
                break
        await hello(scope, receive, send)

    async with running_server(app) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(
                b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            )
            with trio.fail_after(2):
                await step.wait()  # the first chunk reached the app before the body ended
            assert got == [(b"hello", True)]
            await stream.send_all(b"6\r\n world\r\n0\r\n\r\n")
            await stream.send_eof()
            [resp] = parse_responses(await read_until_closed(stream))
    assert resp.status == 200
    assert b"".join(body for body, _ in got) == b"hello world"
    assert got[-1][1] is False


async def test_streamed_response_is_chunked_and_send_waits() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with running_server(app) as server:
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", server.url) as r:
                assert r.headers["transfer-encoding"] == "chunked"
                assert "content-length" not in r.headers
                assert await r.aread() == b"one two three"


async def test_expect_100_continue_sent_when_app_reads() -> None:
    async with running_server(Recorder()) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(
                b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            with trio.fail_after(2):
                interim = await stream.receive_some(65536)
            assert interim.startswith(b"HTTP/1.1 100 ")
            await stream.send_all(b"hello")
            with trio.fail_after(2):
                final = await stream.receive_some(65536)
    assert final.startswith(b"HTTP/1.1 200 ")
    assert final.endswith(b'"body": "hello"}')


async def test_expect_100_continue_not_sent_if_app_answers_first() -> None:
    async with running_server(hello) as server:
        data = await raw_exchange(
            server,
            b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
    assert data.startswith(b"HTTP/1.1 200 ")  # no interim 100; and the connection closes
    assert b"100 Continue" not in data


async def test_head_response_has_no_body() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})

    async with running_server(app) as server:
        data = await raw_exchange(
            server,
            b"HEAD / HTTP/1.1\r\nHost: gw\r\n\r\n" + get("/", b"Connection: close\r\n"),
        )
    head_part, _, rest = data.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 200 ") and b"content-length: 5" in head_part
    assert rest.startswith(b"HTTP/1.1 200 ")  # the next response follows directly, no body
    assert rest.endswith(b"\r\n\r\nhello")


async def test_response_without_content_length_gets_one() -> None:
    async with running_server(hello) as server:
        data = await raw_exchange(server, get("/", b"Connection: close\r\n"))
    assert b"\r\ncontent-length: 5\r\n" in data and b"transfer-encoding" not in data


async def test_app_exception_gives_500_and_server_keeps_serving(caplog: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise ValueError("kaboom")
        await hello(scope, receive, send)

    async with running_server(app) as server:
        with caplog.at_level(logging.ERROR, logger="velithon.server"):
            [resp] = parse_responses(await raw_exchange(server, get("/boom")))
        assert resp.status == 500
        assert resp.json() == {"error": "Internal Server Error", "status": 500,
                           "detail": "internal server error"}
        assert resp.headers[b"connection"] == b"close"
        assert "kaboom" in caplog.text
        await assert_still_serving(server)


async def test_exception_after_response_started_aborts_connection() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/ok":
            return await hello(scope, receive, send)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("late failure")

    async with running_server(app) as server:
        data = await raw_exchange(server, get())
        assert parse_responses(data) == []  # never a complete response
        assert data.startswith(b"HTTP/1.1 200 ")
        await assert_still_serving(server)


async def test_crlf_in_app_header_gives_500_not_a_split_response() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/ok":
            return await hello(scope, receive, send)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-evil", b"a\r\nSet-Cookie: pwned=1")]})
        await send({"type": "http.response.body", "body": b"x"})

    async with running_server(app) as server:
        data = await raw_exchange(server, get())
        [resp] = parse_responses(data)
        assert resp.status == 500 and b"pwned" not in data
        await assert_still_serving(server)


async def test_app_returning_without_response_gives_500() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/ok":
            await hello(scope, receive, send)

    async with running_server(app) as server:
        [resp] = parse_responses(await raw_exchange(server, get("/nothing")))
        assert resp.status == 500
        await assert_still_serving(server)


async def test_receive_reports_disconnect_when_client_leaves() -> None:
    outcome: list[str] = []
    done = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/ok":
            return await hello(scope, receive, send)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    outcome.append("disconnect")
                    return
        finally:
            done.set()

    async with running_server(app) as server:
        stream = await connect(server)
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nhalf")
        await trio.sleep(0.05)
        await stream.aclose()
        with trio.fail_after(2):
            await done.wait()
        assert outcome == ["disconnect"]
        await assert_still_serving(server)


async def test_unread_small_body_keeps_connection_alive() -> None:
    async with running_server(hello) as server:
        data = await raw_exchange(
            server,
            b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"
            + get("/2", b"Connection: close\r\n"),
        )
    assert [r.status for r in parse_responses(data)] == [200, 200]


async def test_http_10_request_is_answered_and_closed() -> None:
    async with running_server(hello) as server:
        data = await raw_exchange(server, b"GET / HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"hello")


async def test_a_closed_connection_is_freed_without_the_garbage_collector() -> None:
    # A connection that ends must not sit in a reference cycle (its parser's callbacks,
    # its own bound methods) until the collector's next pass: under load that memory
    # piles up between passes. With the collector's record of what it frees switched
    # on, nothing of the connections may turn up.
    async with running_server(hello) as server:
        await raw_exchange(server, get("/", b"Connection: close\r\n"))  # warm up
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(5):
                response = parse_responses(
                    await raw_exchange(server, get("/", b"Connection: close\r\n")))
                assert [r.status for r in response] == [200]
            await trio.sleep(0.1)  # the connection tasks end after the client's close
            gc.collect()
            freed = {type(o).__module__ for o in gc.garbage}
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert not {m for m in freed if m.startswith(("velithon", "trio", "httptools", "h11"))}


# A response head is written in one pass when its fields are known to be checked (a
# proxied response); it must be the very bytes the general path writes for the same list.
_FIELD_CASES: dict[str, tuple[int, list[tuple[bytes, bytes]], list[bytes]]] = {
    "length": (200, [(b"content-type", b"text/plain"), (b"content-length", b"5")], [b"hello"]),
    "no-length": (200, [(b"content-type", b"text/plain")], [b"hello"]),
    "date-and-server": (200, [(b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
                              (b"server", b"upstream"), (b"content-length", b"5")], [b"hello"]),
    "no-fields": (200, [], [b"hello"]),
    "streamed": (200, [(b"x-a", b"1")], [b"he", b"llo"]),
    "streamed-with-length": (200, [(b"content-length", b"5")], [b"he", b"llo"]),
    "chunked": (200, [(b"transfer-encoding", b"chunked")], [b"he", b"llo"]),
    "app-closes": (200, [(b"connection", b"close"), (b"content-length", b"5")], [b"hello"]),
    "no-content": (204, [(b"x-a", b"1")], [b""]),
    "not-modified": (304, [(b"content-length", b"5")], [b""]),
    "bad-length": (200, [(b"content-length", b"five")], [b"hello"]),
    "two-lengths": (200, [(b"content-length", b"5"), (b"content-length", b"5")], [b"hello"]),
}
_DATE_LINE = re.compile(rb"\r\ndate: [^\r]*")


@pytest.mark.parametrize("request_line", [
    b"GET /%s HTTP/1.1\r\nHost: gw\r\n\r\n",
    b"HEAD /%s HTTP/1.1\r\nHost: gw\r\n\r\n",
    b"GET /%s HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    b"GET /%s HTTP/1.0\r\n\r\n",
])
async def test_a_checked_field_list_is_written_as_the_same_list_unchecked(
        request_line: bytes) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        case, kind = scope["path"].strip("/").split("/")
        status, fields, body = _FIELD_CASES[case]
        headers = CheckedFields(fields) if kind == "checked" else list(fields)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, part in enumerate(body):
            await send({"type": "http.response.body", "body": part,
                        "more_body": i < len(body) - 1})

    async with running_server(app) as server:
        for case in _FIELD_CASES:
            answers = []
            for kind in ("checked", "plain"):
                request = request_line % f"{case}/{kind}".encode()
                async with await connect(server) as stream:
                    await stream.send_all(request)
                    await stream.send_eof()  # the answer then ends with the connection
                    answer = await read_until_closed(stream)
                answers.append(_DATE_LINE.sub(b"", answer))
            assert answers[0] == answers[1], case
            assert answers[0].startswith(b"HTTP/1.1 "), case
