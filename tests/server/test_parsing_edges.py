"""Parsing edges h11 lets through, on both sides of the gateway, over raw sockets.

Request side (our server): chunk sizes past 2^63 or padded with zeros, a bare CR in a
chunk extension, control characters in the head, a ``#fragment`` in the target, and
error bodies that must not reflect what the client sent. Response side (the upstream
client): the same chunk and control-character rules, which make an upstream response
invalid (502 when nothing was relayed yet, an aborted response otherwise), and never
relay bytes that a bad chunk-size line would have turned into body data. Last,
configured header edits that could never be sent are refused at construction.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from velithon._exceptions import ConfigError, UpstreamBodyError, UpstreamProtocolError
from velithon._proxy.headers import validate_header_config
from velithon._proxy.pool import UpstreamPool
from velithon.gateway import GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware
from velithon.testing import (
    ReadRequest,
    Send,
    Sleep,
    open_backend,
    open_scripted_backend,
)

from support.catalogue import assert_gateway_error, bounded, gateway, request_bytes
from support.raw_backend import Reader, Scripted, serve
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
CHUNKED = b"POST /x HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
TAIL = b"\r\nhello\r\n0\r\n\r\n"  # what h11 used to hand the app as chunk data


async def rejected(raw: bytes, status: int = 400, **options: Any) -> tuple[Recorder, bytes]:
    """Send ``raw``; require one JSON ``status`` error with ``Connection: close`` and an app
    that was never called, then a server that still serves."""
    app = Recorder()
    async with running_server(app, **options) as server:
        data = await raw_exchange(server, raw)
        [resp] = parse_responses(data, method=b"POST")
        assert resp.status == status, data
        assert resp.headers[b"connection"] == b"close"
        assert resp.json()["status"] == status
        assert app.requests == []
        await assert_still_serving(server)
    return app, data


# ---- chunk sizes -----------------------------------------------------------------------

HUGE_SIZES = {
    "18-hex-digits": b"ffffffffffffffffff",
    "20-hex-digits": b"f" * 20,
    "2^63": b"8000000000000000",
    "2^64-1": b"ffffffffffffffff",
    "17-digits-leading-zeros": b"0" * 16 + b"5",
    "20-digits-leading-zeros": b"0" * 19 + b"5",
    "zero-padded-last-chunk": b"0" * 20,
}


@pytest.mark.parametrize("size", list(HUGE_SIZES.values()), ids=list(HUGE_SIZES))
async def test_request_chunk_size_beyond_2_63_or_zero_padded_is_400(size: bytes) -> None:
    await rejected(CHUNKED + size + TAIL)


@pytest.mark.parametrize("size", [b"0000000000000005", b"5"])
async def test_request_chunk_size_of_16_digits_is_accepted(size: bytes) -> None:
    app = Recorder()
    async with running_server(app) as server:
        raw = CHUNKED.replace(H, H + b"Connection: close\r\n") + size + TAIL
        [resp] = parse_responses(await raw_exchange(server, raw), method=b"POST")
    assert resp.status == 200
    assert app.requests[0]["body"] == b"hello"


async def test_request_chunk_size_just_below_2_63_is_a_length_not_an_error() -> None:
    """A legal (if absurd) size: what follows is chunk data, and the server waits for the
    rest of it instead of answering 400."""
    async with running_server(Recorder()) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(CHUNKED + b"7fffffffffffffff" + TAIL)
            with trio.move_on_after(0.3) as waited:
                await stream.receive_some(65536)
            assert waited.cancelled_caught


async def test_a_huge_chunk_size_arriving_later_never_reaches_the_app() -> None:
    """The body's first chunk is fine; the bad size line comes in a later read, while the
    app is already reading the body: it must not receive the following bytes as data."""
    received: list[bytes] = []
    done = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        done.set()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async with running_server(app) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(CHUNKED + b"5\r\nfirst\r\n")
            await trio.sleep(0.1)
            await stream.send_all(b"ffffffffffffffffff" + TAIL)
            with trio.fail_after(3):
                await done.wait()
            data = await read_until_closed(stream)
        await assert_still_serving(server)
    assert b"".join(received) == b"first"
    assert b"hello" not in data and b"200 OK" not in data


@pytest.mark.parametrize(("body", "why"), [
    (b"5;a\rb\r\nhello\r\n0\r\n\r\n", "bare CR inside an extension"),
    (b"5;\r\r\nhello\r\n0\r\n\r\n", "bare CR before the line end"),
    (b"5\r\nhello\r\n0;x\ry\r\n\r\n", "bare CR in the last chunk's extension"),
    (b"5;" + b"a" * 5000, "an extension line past the limit, without its line end"),
    (b"5\nhello\r\n0\r\n\r\n", "a size line ended by a bare LF"),
])
async def test_request_chunk_line_framing_is_400(body: bytes, why: str) -> None:
    await rejected(CHUNKED + body)


@pytest.mark.parametrize("body", [
    b"5;name=value\r\nhello\r\n0\r\n\r\n",
    b"5;a\x00b\r\nhello\r\n0\r\n\r\n",  # extensions are dropped: only line ends matter
    b"5;\tq=\"x y\"\r\nhello\r\n0\r\n\r\n",
    b"5 \r\nhello\r\n0 \r\n\r\n",
])
async def test_request_chunk_extensions_that_keep_the_line_intact_are_accepted(
        body: bytes) -> None:
    app = Recorder()
    async with running_server(app) as server:
        [resp] = parse_responses(await raw_exchange(
            server, CHUNKED.replace(H, H + b"Connection: close\r\n") + body), method=b"POST")
    assert resp.status == 200
    assert app.requests[0]["body"] == b"hello"


# ---- control characters in the head ----------------------------------------------------

CONTROL = [b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x1f", b"\x7f"]


@pytest.mark.parametrize("ctl", CONTROL, ids=[f"0x{c[0]:02x}" for c in CONTROL])
async def test_request_control_character_in_a_header_value_is_400(ctl: bytes) -> None:
    await rejected(get("/", b"X-Data: a" + ctl + b"b\r\n"))
    await rejected(get("/", b"Cookie: s=" + ctl + b"\r\n"))


async def test_request_tab_and_obs_text_in_header_values_are_accepted() -> None:
    app = Recorder()
    async with running_server(app) as server:
        data = await raw_exchange(server, get("/", b"X-A: a\tb\r\nX-B: caf\xe9\r\n"
                                                   b"Connection: close\r\n"))
    [resp] = parse_responses(data)
    assert resp.status == 200
    headers = dict(app.requests[0]["scope"]["headers"])
    assert headers[b"x-a"] == b"a\tb" and headers[b"x-b"] == b"caf\xe9"


# ---- fragments -------------------------------------------------------------------------


@pytest.mark.parametrize("target", [b"/a#frag", b"/#", b"/a?b=1#c", b"/a%20b#",
                                    b"http://gw/a#frag"])
async def test_request_target_with_a_fragment_is_400(target: bytes) -> None:
    await rejected(b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\n")


async def test_an_encoded_hash_is_not_a_fragment() -> None:
    app = Recorder()
    async with running_server(app) as server:
        [resp] = parse_responses(await raw_exchange(
            server, get("/a%23b?c=%23", b"Connection: close\r\n")))
    assert resp.status == 200
    assert app.requests[0]["scope"]["raw_path"] == b"/a%23b"


# ---- error bodies reflect nothing ------------------------------------------------------

MARK = b"<script>zq9</script>"
REFLECTION = {
    "request-line": (b"GET /" + MARK + b" HTTP/1.1 x\r\n" + H + b"\r\n", 400),
    "target-bytes": (b"GET /\x01" + MARK + b" HTTP/1.1\r\n" + H + b"\r\n", 400),
    "method": (MARK + b" / HTTP/1.1\r\n" + H + b"\r\n", 400),
    "version": (b"GET / HTTP/1." + MARK + b"\r\n" + H + b"\r\n", 400),
    "garbage": (b"\x16\x03\x01" + MARK + b"\r\n\r\n", 400),
    "header-name": (get("/", MARK + b": v\r\n"), 400),
    "header-line": (get("/", b"X" + MARK + b"\r\n"), 400),
    "header-value-nul": (get("/", b"X: " + MARK + b"\x00\r\n"), 400),
    "host": (b"GET / HTTP/1.1\r\nHost: " + MARK + b"\r\n\r\n", 400),
    "content-length": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: " + MARK + b"\r\n\r\n",
                       400),
    "transfer-encoding": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: " + MARK
                          + b"\r\n\r\n", 501),
    "chunk-line": (CHUNKED + MARK + b"\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-footer": (CHUNKED + b"5\r\nhello" + MARK + b"\r\n0\r\n\r\n", 400),
    "http-2.0": (b"GET /" + MARK + b" HTTP/2.0\r\n" + H + b"\r\n", 505),
    "connect": (b"CONNECT " + MARK + b":443 HTTP/1.1\r\n" + H + b"\r\n", 405),
    "uri-too-long": (get("/" + "a" * 9000 + MARK.decode()), 414),
    "header-too-large": (get("/", b"X-Big: " + MARK * 2000 + b"\r\n"), 431),
    "too-many-headers": (get("/", b"".join(b"X-%d: %s\r\n" % (i, MARK) for i in range(101))),
                         431),
    "body-too-large": (b"POST /" + MARK + b" HTTP/1.1\r\n" + H + b"Content-Length: 5000\r\n\r\n",
                       413),
    "fragment": (b"GET /#" + MARK + b" HTTP/1.1\r\n" + H + b"\r\n", 400),
}


@pytest.mark.parametrize(("raw", "status"), list(REFLECTION.values()), ids=list(REFLECTION))
async def test_error_responses_reflect_nothing_the_client_sent(raw: bytes, status: int) -> None:
    _, data = await rejected(raw, status, max_body_size=1000)
    lowered = data.lower()
    for probe in (MARK.lower(), b"zq9", b"bytearray", b"\\x"):
        assert probe not in lowered, data
    [resp] = parse_responses(data, method=b"POST")
    assert set(resp.json()) == {"error", "status", "detail"}


async def test_timeout_errors_reflect_nothing_either() -> None:
    async with running_server(Recorder(), header_timeout=0.2) as server:
        data = await raw_exchange(server, b"GET /" + MARK + b" HTTP/1.1\r\nX: " + MARK)
    [resp] = parse_responses(data)
    assert resp.status == 408
    assert b"zq9" not in data


# ---- the upstream side: pool ------------------------------------------------------------

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def host(port: int) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"127.0.0.1:%d" % port)]


BAD_RESPONSES = {
    "chunk-18-hex-digits": CHUNKED_HEAD + b"ffffffffffffffffff" + TAIL,
    "chunk-2^63": CHUNKED_HEAD + b"8000000000000000" + TAIL,
    "chunk-zero-padded": CHUNKED_HEAD + b"0" * 19 + b"5" + TAIL,
    "chunk-bare-cr-in-extension": CHUNKED_HEAD + b"5;a\rb" + TAIL,
    "chunk-lowercase-te-field": b"HTTP/1.1 200 OK\r\nX: y\r\ntransfer-encoding: chunked\r\n"
                                b"\r\nffffffffffffffffff" + TAIL,
    "bad-size-after-a-good-chunk": CHUNKED_HEAD + b"5\r\nfirst\r\nffffffffffffffffff" + TAIL,
    "ctl-0x01-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    "ctl-0x7f-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\nContent-Length: 2\r\n\r\nok",
    "ctl-0x1b-in-value": b"HTTP/1.1 200 OK\r\nSet-Cookie: s=\x1b[0m\r\nContent-Length: 2\r\n\r\nok",
    "ctl-in-reason": b"HTTP/1.1 200 O\x07K\r\nContent-Length: 2\r\n\r\nok",
    "ctl-in-interim": b"HTTP/1.1 103 Early\r\nLink: \x01\r\n\r\nHTTP/1.1 200 OK\r\n"
                      b"Content-Length: 2\r\n\r\nok",
}


@pytest.mark.parametrize("raw", list(BAD_RESPONSES.values()), ids=list(BAD_RESPONSES))
async def test_invalid_upstream_response_is_refused_before_any_byte(raw: bytes) -> None:
    backend = Scripted([raw])
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        with pytest.raises(UpstreamProtocolError) as info:
            await pool.request(b"GET", b"/", host(port))
        assert pool.statistics().idle == 0  # never pooled
    assert "hello" not in str(info.value) and "\x01" not in str(info.value)


@pytest.mark.parametrize("raw", [
    CHUNKED_HEAD + b"7fffffffffffffff\r\n",  # legal size; the body is just incomplete
    CHUNKED_HEAD + b"0000000000000005;a=b \r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: a\tb\r\nX-B: caf\xe9\r\nContent-Length: 2\r\n\r\nok",
])
async def test_upstream_edges_that_are_valid_are_relayed(raw: bytes) -> None:
    backend = Scripted([raw])
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(b"GET", b"/", host(port))
        assert response.status == 200
        chunk = response.receive_buffered()
        assert chunk is None or b"0\r\n" not in chunk


@pytest.mark.parametrize("method", [b"HEAD", b"GET"])
async def test_no_chunk_checks_where_no_body_can_follow(method: bytes) -> None:
    """After HEAD (and a 204/304) the body is empty whatever the fields say: the bytes
    after the head are not chunk lines, so they cannot make the response invalid."""
    status = b"200 OK" if method == b"HEAD" else b"204 No Content"
    raw = b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    backend = Scripted([raw + b"ffffffffffffffffff\r\n"])
    async with serve(backend) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(method, b"/", host(port))
        assert await response.read() == b""
        assert not response.reusable  # the stray bytes still keep it out of the pool


async def test_a_bad_chunk_size_arriving_later_fails_without_relaying_its_data() -> None:
    go_on = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        await Reader(stream).request()
        await stream.send_all(CHUNKED_HEAD + b"5\r\nfirst\r\n")
        await go_on.wait()
        await stream.send_all(b"ffffffffffffffffff" + TAIL)
        await trio.sleep_forever()

    async with serve(handler) as port, UpstreamPool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.request(b"GET", b"/", host(port))
        assert await response.receive_some() == b"first"
        go_on.set()
        with pytest.raises(UpstreamBodyError, match="malformed chunked"):
            await response.receive_some()
        with pytest.raises(UpstreamBodyError):
            await response.receive_some()
        assert pool.statistics().idle == 0


# ---- the upstream side: through the gateway ----------------------------------------------


@pytest.mark.parametrize("raw", list(BAD_RESPONSES.values()), ids=list(BAD_RESPONSES))
@bounded(10)
async def test_gateway_answers_502_for_an_invalid_upstream_response(raw: bytes) -> None:
    async with open_scripted_backend([ReadRequest(), Send(raw)], strict=False) as b:
        route = GatewayRoute("/api/{path:path}", [b.url], max_retries=0)
        async with gateway(route) as gw:
            response = await gw.raw(request_bytes("GET", "/api/x"))
            assert_gateway_error(response, 502)
            await gw.assert_serves()
    assert b"hello" not in response.body and b"first" not in response.body


@pytest.mark.parametrize(("first", "relayed"), [
    (CHUNKED_HEAD, b""),
    (CHUNKED_HEAD + b"5\r\nfirst\r\n", b"first"),
])
@bounded(10)
async def test_gateway_never_relays_what_a_late_bad_chunk_size_would_frame(
        first: bytes, relayed: bytes) -> None:
    script = [ReadRequest(), Send(first), Sleep(0.2), Send(b"ffffffffffffffffff" + TAIL)]
    async with open_scripted_backend(script, strict=False) as b:
        route = GatewayRoute("/api/{path:path}", [b.url], max_retries=0)
        async with gateway(route) as gw:
            async with gw.connect() as conn:
                await conn.send(request_bytes("GET", "/api/x"))
                response = await conn.receive_response(timeout=3)
                assert await conn.wait_closed(2.0)
            await gw.assert_serves()
    assert b"hello" not in response.body
    if relayed:  # the head went out already: the response is cut, never completed
        assert response.status == 200 and response.body == relayed
        assert not response.complete
    else:  # nothing went out: an error, never a 200 that looks complete
        assert response.status >= 500 and response.complete


@bounded(10)
async def test_gateway_refuses_a_bad_request_chunk_before_forwarding() -> None:
    async with open_backend() as b, gateway(GatewayRoute("/api/{path:path}", [b.url])) as gw:
        for size in (b"ffffffffffffffffff", b"0" * 19 + b"5"):
            response = await gw.raw(b"POST /api/x HTTP/1.1\r\nHost: gw\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n" + size + TAIL)
            assert response.status == 400
        response = await gw.raw(request_bytes("GET", "/api/x", [("X-A", "a\x01b")]))
        assert response.status == 400
        response = await gw.raw(request_bytes("GET", "/api/x#frag"))
        assert response.status == 400
        await gw.assert_serves()
    assert b.requests == []


# ---- configured header edits -------------------------------------------------------------

BAD_ADDS = {
    "crlf-in-value": ({"X-Trace": "a\r\nX-Injected: 1"}, "'X-Trace'.*control character"),
    "lf-in-value": ({"X-Trace": "a\nb"}, "'X-Trace'.*control character"),
    "nul-in-value": ({"X-Trace": "a\x00b"}, "'X-Trace'.*control character"),
    "ctl-in-value": ({"X-Trace": "a\x01b"}, "'X-Trace'.*control character"),
    "edge-space": ({"X-Trace": " a"}, "'X-Trace'.*whitespace"),
    "colon-in-name": ({"X-Trace:": "a"}, "'X-Trace:'.*HTTP token"),
    "space-in-name": ({"X Trace": "a"}, "'X Trace'.*HTTP token"),
    "crlf-in-name": ({"X-A\r\nX-B": "a"}, ".*HTTP token"),
    "empty-name": ({"": "a"}, "'': .*HTTP token"),
    "non-latin-1": ({"X-Trace": "\u2603"}, "'X-Trace'.*Latin-1"),
    "not-a-string": ({"X-Trace": 5}, "'X-Trace'.*Latin-1"),
    "framing": ({"Content-Length": "5"}, "'Content-Length'.*framing"),
    "te": ({"transfer-encoding": "chunked"}, "'transfer-encoding'.*framing"),
    "connection": ({"Connection": "close"}, "'Connection'.*hop-by-hop"),
    "upgrade": ({"upgrade": "x"}, "'upgrade'.*hop-by-hop"),
    "keep-alive": ({"Keep-Alive": "1"}, "'Keep-Alive'.*hop-by-hop"),
}


@pytest.mark.parametrize(("add", "message"), list(BAD_ADDS.values()), ids=list(BAD_ADDS))
@pytest.mark.parametrize("direction", ["request", "response"])
def test_header_config_is_refused_with_the_header_named(add: dict[str, Any], message: str,
                                                        direction: str) -> None:
    with pytest.raises(ConfigError, match=f"Invalid {direction} header to add {message}"):
        validate_header_config(add, None, direction=direction)


@pytest.mark.parametrize("remove", [["X A"], ["X-A:"], [""], ["X\r\nY"]])
def test_header_names_to_remove_must_be_tokens(remove: list[str]) -> None:
    with pytest.raises(ConfigError, match="Invalid request header to remove"):
        validate_header_config(None, remove, direction="request")


def test_good_header_config_passes() -> None:
    validate_header_config({"X-Trace": "a b\tc", "X-Empty": "", "X-Bytes": b"v",
                            "X-Latin": "caf\xe9", "Host": "override.example"},
                           ["X-Secret", "server"], direction="request")
    validate_header_config(None, None, direction="response")


def _bad_route() -> GatewayRoute:
    return GatewayRoute("/api/{path:path}", ["http://127.0.0.1:9"],
                        headers_to_add={"X-Trace": "a\r\nb"})


@pytest.mark.parametrize("build", [
    _bad_route,
    lambda: ProxyMiddleware(None, targets=["http://127.0.0.1:9"],
                            add_request_headers={"X-Trace": "a\nb"}),
    lambda: ProxyMiddleware(None, targets=["http://127.0.0.1:9"],
                            add_response_headers={"X Bad": "v"}),
], ids=["route", "middleware-request", "middleware-response"])
def test_facades_refuse_unsendable_header_edits_at_construction(build: Any) -> None:
    with pytest.raises(ConfigError, match="Invalid (request|response) header to add"):
        build()
