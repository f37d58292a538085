"""Responses (headers, lengths, HEAD, streaming, disconnects) and the header/query types."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon import (
    Headers,
    HTMLResponse,
    JSONResponse,
    MutableHeaders,
    PlainTextResponse,
    QueryParams,
    Request,
    Response,
    StreamingResponse,
    Velithon,
)

from support.asgi_client import ASGIClient


def app_returning(response: Response) -> Velithon:
    app = Velithon()
    app.add_route("/", lambda: response, methods=["GET", "POST"])
    return app


async def test_list_of_pairs_keeps_duplicate_headers_in_order() -> None:
    response = PlainTextResponse("x", headers=[("Set-Cookie", "a=1"), ("set-cookie", "b=2"),
                                               ("X-One", "1")])
    got = await ASGIClient(app_returning(response)).get("/")
    assert got.headers.getlist("set-cookie") == ["a=1", "b=2"]
    assert got.raw_headers[:3] == [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"),
                                   (b"x-one", b"1")]


async def test_content_length_and_type_computed_unless_given() -> None:
    got = await ASGIClient(app_returning(HTMLResponse("héllo"))).get("/")
    assert got.headers["content-length"] == str(len("héllo".encode()))
    assert got.headers["content-type"] == "text/html; charset=utf-8"
    custom = JSONResponse({"a": 1}, 201, headers={"Content-Type": "application/vnd.x+json"})
    got = await ASGIClient(app_returning(custom)).get("/")
    assert got.status == 201
    assert got.headers.getlist("content-type") == ["application/vnd.x+json"]


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        Response(b"", headers={"x-evil": "a\r\nSet-Cookie: pwned=1"})
    with pytest.raises(ValueError, match="invalid header name"):
        Response(b"", headers=[("bad name:", "x")])


def test_response_content_type_errors_are_clear() -> None:
    with pytest.raises(TypeError, match="must be bytes or str, got int"):
        Response(5)
    with pytest.raises(ValueError, match="Out of range float"):
        JSONResponse({"x": float("nan")})
    with pytest.raises(TypeError, match="iterator of chunks"):
        StreamingResponse(b"not an iterator")


async def test_head_gets_headers_without_body() -> None:
    got = await ASGIClient(app_returning(PlainTextResponse("hello"))).head("/")
    assert got.status == 200
    assert got.headers["content-length"] == "5"
    assert got.body == b""


def test_mutable_headers_view_writes_through() -> None:
    response = Response(b"abc")
    response.headers["X-A"] = "1"
    response.headers.append("set-cookie", "a=1")
    response.headers.append("set-cookie", "b=2")
    response.headers["content-length"] = "3"
    assert response.raw_headers == [(b"content-length", b"3"), (b"x-a", b"1"),
                                    (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
    del response.headers["set-cookie"]
    assert "set-cookie" not in response.headers
    assert response.headers.setdefault("x-a", "2") == "1"


async def test_streaming_from_async_and_sync_iterators() -> None:
    async def agen() -> AsyncIterator[bytes | str]:
        yield b"a"
        yield "é"
        yield b""
        yield b"c"

    def gen() -> Iterator[bytes]:
        yield from (b"x", b"y")

    client = ASGIClient(app_returning(StreamingResponse(agen(), media_type="text/plain")))
    got = await client.get("/")
    assert got.chunks == [b"a", "é".encode(), b"c"]
    assert got.headers["content-type"] == "text/plain; charset=utf-8"
    assert "content-length" not in got.headers
    got = await ASGIClient(app_returning(StreamingResponse(gen()))).get("/")
    assert got.chunks == [b"x", b"y"]


async def test_streaming_head_does_not_run_the_iterator() -> None:
    ran: list[str] = []

    async def agen() -> AsyncIterator[bytes]:
        ran.append("started")
        yield b"x"

    got = await ASGIClient(app_returning(StreamingResponse(agen()))).head("/")
    assert (got.status, got.body, ran) == (200, b"", [])


def _ticker(log: list[Any]) -> AsyncIterator[bytes]:
    async def ticks() -> AsyncIterator[bytes]:
        try:
            n = 0
            while True:
                yield f"tick {n}\n".encode()
                n += 1
                await trio.sleep(1)
        finally:
            log.append(("closed", trio.current_time()))
    return ticks()


@pytest.mark.parametrize("with_request", [False, True])
async def test_infinite_stream_stops_when_client_disconnects(
        autojump_clock: trio.testing.MockClock, with_request: bool) -> None:
    """Even when the server silently drops sends after a disconnect (as hypercorn does)."""
    app = Velithon()
    log: list[Any] = []
    if with_request:
        app.add_route("/events", lambda request: StreamingResponse(_ticker(log)))
    else:
        app.add_route("/events", lambda: StreamingResponse(_ticker(log)))
    received: list[bytes] = []
    with trio.fail_after(100):
        async with ASGIClient(app).stream("GET", "/events") as response:
            async for chunk in response.iter_chunks():
                received.append(chunk)
                if len(received) == 3:
                    break
    assert received == [b"tick 0\n", b"tick 1\n", b"tick 2\n"]
    assert log == [("closed", 2.0)]


async def test_streaming_echo_of_request_body_is_not_disturbed_by_disconnect_watch() -> None:
    app = Velithon()

    @app.post("/echo")
    async def echo(request: Request) -> StreamingResponse:
        return StreamingResponse(request.stream())

    got = await ASGIClient(app).post("/echo", body=[b"one", b"two", b"three"])
    assert got.chunks == [b"one", b"two", b"three"]


async def test_streaming_after_body_read_still_watches_disconnect(
        autojump_clock: trio.testing.MockClock) -> None:
    app = Velithon()
    log: list[Any] = []

    @app.post("/upload-then-stream")
    async def handler(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(_ticker(log))

    with trio.fail_after(100):
        async with ASGIClient(app).stream("POST", "/upload-then-stream",
                                          body=[b"a", b"b"]) as response:
            async for _ in response.iter_chunks():
                break
    assert log == [("closed", 0.0)]


def test_headers_are_case_insensitive_multi_dict() -> None:
    headers = Headers([("Accept", "a"), ("X-Forwarded-For", "1.1.1.1"),
                       ("x-forwarded-for", "2.2.2.2")])
    assert headers["X-FORWARDED-FOR"] == "1.1.1.1"
    assert headers.getlist("x-forwarded-for") == ["1.1.1.1", "2.2.2.2"]
    assert headers.get("missing") is None and headers.get("missing", "d") == "d"
    assert list(headers) == ["accept", "x-forwarded-for"] and len(headers) == 2
    assert headers.items()[-1] == ("x-forwarded-for", "2.2.2.2")
    assert "ACCEPT" in headers and 3 not in headers
    with pytest.raises(KeyError):
        headers["nope"]
    assert headers == Headers(raw=list(reversed(headers.raw)))
    mutable = MutableHeaders(raw=list(headers.raw))
    mutable["x-forwarded-for"] = "3.3.3.3"
    assert mutable.getlist("x-forwarded-for") == ["3.3.3.3"]


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)


@settings(deadline=None, max_examples=80)
@given(pairs=st.lists(st.tuples(_text.filter(bool), _text), max_size=6))
def test_query_params_round_trip_through_urlencode(pairs: list[tuple[str, str]]) -> None:
    from urllib.parse import urlencode
    params = QueryParams(urlencode(pairs).encode())
    assert params.items() == pairs
    for key, _ in pairs:
        values = [v for k, v in pairs if k == key]
        assert params.getlist(key) == values
        assert params[key] == values[0] == params.get(key)
