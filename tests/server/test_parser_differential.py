"""Differential test of the two HTTP/1.1 parser modes, through a real gateway.

The same client bytes go to two gateways, one served with ``http="httptools"`` (llhttp
heads, our own body framing) and one with ``http="h11"``; each forwards with a
``GatewayRoute`` to its own recording backend. Both modes must give the same verdict:
the same status codes to the client, in the same order, and the same bytes forwarded
upstream (connection by connection, with the backend's port masked). A parser mode must
never accept what the other refuses, nor frame a body differently, since either would be
a request-smuggling gap between two deployments of the same gateway.

Each example runs in its own ``trio.run`` inside a sync ``@given`` test (hypothesis-trio
does not work with current Hypothesis); both modes run concurrently in it. The client
half-closes after sending, so every exchange ends when the gateway has nothing more to say.
Three families of inputs: valid requests, mutations of valid requests, and smuggling
shapes.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from velithon import Velithon
from velithon.gateway import GatewayRoute
from velithon.server import ServerConfig, serve_tcp

from support.raw_backend import Reader

MODES = ("httptools", "h11")
#: How long one client exchange may take before the mode's verdict is "hang".
EXCHANGE_LIMIT = 4.0
_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


@pytest.fixture(autouse=True)
def _both_parsers() -> None:
    """Replaces the directory's autouse fixture: each example already runs both modes."""


# ---- the harness ---------------------------------------------------------------------------


class _Recording:
    """A receive stream that keeps a copy of every byte it hands out."""

    def __init__(self, stream: trio.SocketStream, record: bytearray) -> None:
        self.stream = stream
        self.record = record

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.stream.receive_some(max_bytes)
        self.record += data
        return data


class RecordingBackend:
    """Answers every complete request with ``200 ok`` and records each connection's bytes."""

    def __init__(self) -> None:
        self.received: list[bytearray] = []
        self.open = 0
        self.all_closed = trio.Event()

    async def __call__(self, stream: trio.SocketStream) -> None:
        record = bytearray()
        self.received.append(record)
        self.open += 1
        self.all_closed = trio.Event()
        reader = Reader(_Recording(stream, record))  # type: ignore[arg-type]
        try:
            while (request := await reader.request()) is not None:
                await stream.send_all(_ANSWER if request.method == b"HEAD" else _ANSWER + b"ok")
        except (trio.BrokenResourceError, OSError, EOFError, ValueError):
            pass  # a reset, or a request this simple reader cannot frame: the bytes are kept
        finally:
            await trio.aclose_forcefully(stream)
            self.open -= 1
            if not self.open:
                self.all_closed.set()


async def _exchange(port: int, data: bytes) -> list[bytes]:
    """Send ``data``, half-close, read until the gateway closes; the status codes read."""
    out = bytearray()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        try:
            await stream.send_all(data)
            await stream.send_eof()
        except (trio.BrokenResourceError, OSError):
            pass
        with trio.move_on_after(EXCHANGE_LIMIT) as waited:
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except (trio.BrokenResourceError, OSError):
                    break  # reset
                if not chunk:
                    break
                out += chunk
    statuses = _STATUS.findall(bytes(out))
    return statuses + [b"hang"] if waited.cancelled_caught else statuses


async def _never_probed(target: str, config: Any) -> Any:
    """Active health checks are off; passing a probe also spares an httpx client per run."""
    raise AssertionError(f"unexpected health probe of {target}")


async def _run_mode(mode: str, data: bytes) -> tuple[list[bytes], list[bytes]]:
    """One gateway in ``mode`` in front of a fresh recording backend: the verdict on ``data``."""
    backend = RecordingBackend()
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, backend, 0, host="127.0.0.1"))
        backend_port = listener.socket.getsockname()[1]
        app = Velithon()
        app.routes.append(GatewayRoute(
            "/{path:path}", [f"http://127.0.0.1:{backend_port}"], max_retries=0,
            timeout_ms=3000, probe=_never_probed,
            request_id_header=None))  # random IDs would differ between the two modes
        stop = trio.Event()
        config = ServerConfig(host="127.0.0.1", port=0, http=mode)
        [(_, port)] = await nursery.start(
            partial(serve_tcp, app, config, shutdown_trigger=stop))
        statuses = await _exchange(port, data)
        stop.set()  # graceful: the app's lifespan ends and closes its upstream pool
        if backend.open:
            with trio.move_on_after(EXCHANGE_LIMIT):
                await backend.all_closed.wait()
        nursery.cancel_scope.cancel()
    authority = b"127.0.0.1:%d" % backend_port
    upstream = [bytes(record).replace(authority, b"127.0.0.1:<backend-port>")
                for record in backend.received]
    return statuses, upstream


def verdicts(data: bytes) -> dict[str, tuple[list[bytes], list[bytes]]]:
    """``{mode: (statuses, upstream bytes per connection)}`` for both modes, run together."""
    results: dict[str, tuple[list[bytes], list[bytes]]] = {}

    async def main() -> None:
        async def one(mode: str) -> None:
            results[mode] = await _run_mode(mode, data)

        async with trio.open_nursery() as nursery:
            for mode in MODES:
                nursery.start_soon(one, mode)

    trio.run(main)
    return results


def assert_same_verdict(data: bytes) -> None:
    """Both modes answer ``data`` with the same statuses and forward the same bytes, and
    neither leaves the client waiting."""
    results = verdicts(data)
    llhttp, h11 = (results[mode] for mode in MODES)
    assert llhttp == h11, (
        f"parser modes disagree on {data!r}:\n"
        f"  httptools: statuses={llhttp[0]!r} upstream={llhttp[1]!r}\n"
        f"  h11:       statuses={h11[0]!r} upstream={h11[1]!r}"
    )
    assert b"hang" not in llhttp[0], f"no answer within {EXCHANGE_LIMIT} s to {data!r}"


# ---- strategies: valid requests ------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
_UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
_FRAMING = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade",
            "te", "trailer", "keep-alive", "proxy-connection"}

methods = st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"])
_percent = st.integers(0x20, 0xFF).map(lambda c: f"%{c:02X}")
_segment = st.lists(st.one_of(st.sampled_from(_UNRESERVED), _percent), max_size=6).map("".join)
_query = st.lists(st.one_of(st.sampled_from(_UNRESERVED + "=&/?:@"), _percent),
                  max_size=10).map("".join)
targets = st.builds(
    lambda segments, query: ("/" + "/".join(segments)
                             + ("" if query is None else "?" + query)).encode("latin-1"),
    st.lists(_segment, max_size=4), st.none() | _query,
)
field_names = st.text(TCHAR, min_size=1, max_size=12).filter(lambda n: n.lower() not in _FRAMING)
field_values = st.builds(
    lambda words: " ".join(words).encode("ascii"),
    st.lists(st.text(VCHAR, min_size=1, max_size=10), max_size=3),
)
header_fields = st.lists(st.tuples(field_names, field_values), max_size=6)
bodies = st.binary(max_size=40)
chunk_extensions = st.sampled_from([b"", b";a=b", b"; x", b";name=\"q v\"", b";k"])
trailer_blocks = st.sampled_from([b"", b"X-Sum: 1\r\n", b"A: b\r\nC-D: e f\r\n"])


@st.composite
def chunked_bodies(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` as chunks cut at random places, with optional extensions and trailers."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=4))) | {0, len(body)})
    out = b""
    for start, end in zip(cuts, cuts[1:], strict=False):
        if end > start:
            size = b"%x" % (end - start)
            if draw(st.booleans()):
                size = size.upper()
            out += size + draw(chunk_extensions) + b"\r\n" + body[start:end] + b"\r\n"
    return out + b"0" + draw(chunk_extensions) + b"\r\n" + draw(trailer_blocks) + b"\r\n"


@st.composite
def valid_requests(draw: st.DrawFn) -> bytes:
    """One well-formed request: any listed method, target, fields, body framing, version."""
    method = draw(methods)
    version = draw(st.sampled_from([b"1.1", b"1.0"]))
    lines = [method + b" " + draw(targets) + b" HTTP/" + version]
    fields = [(name.encode(), value) for name, value in draw(header_fields)]
    if version == b"1.1" or draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), (b"Host", b"gw.test"))
    connection = draw(st.sampled_from([None, b"close", b"keep-alive"]))
    if connection is not None:
        fields.append((b"Connection", connection))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    if framing == "length" or (framing == "chunked" and version == b"1.0"):
        payload = draw(bodies)
        fields.append((b"Content-Length", b"%d" % len(payload)))
        body = payload
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", b"chunked"))
        body = draw(chunked_bodies(draw(bodies)))
    lines += [name + b": " + value for name, value in fields]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


#: One request, or two pipelined in one send.
request_streams = st.one_of(valid_requests(),
                            st.tuples(valid_requests(), valid_requests()).map(b"".join))


# ---- strategies: mutations -----------------------------------------------------------------

SPECIAL_BYTES = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b"\x7f", b"\xff"]


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A valid request stream with one to three bytes or lines flipped, added or removed."""
    data = bytearray(draw(request_streams))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "special", "delete", "dup-line",
                                     "drop-line"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=1))
        elif kind == "special":
            data[at:at] = draw(st.sampled_from(SPECIAL_BYTES))
        elif kind == "delete" and data:
            del data[at]
        elif kind in ("dup-line", "drop-line"):
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            if kind == "dup-line":
                lines.insert(i, lines[i])
            else:
                del lines[i]
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


# ---- strategies: smuggling shapes ----------------------------------------------------------

SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: gw.test\r\n\r\n"
TE_VALUES = [b"chunked", b"Chunked", b"CHUNKED", b" chunked", b"chunked ", b"chunked, gzip",
             b"gzip, chunked", b"chunked,", b", chunked", b"chunked\x0b", b"\x0bchunked",
             b"identity", b"chunked;q=1", b"xchunked", b"chunked\t", b"\"chunked\""]
CL_VALUES = [b"5", b"05", b"+5", b"-5", b"0x5", b" 5", b"5 ", b"5\t", b"5, 5", b"5,5", b"5, 6",
             b"", b"1e1", b"5 5", b"0", b"99", b"1" * 21, b"\x0b5"]
FRAMING_LINES = st.one_of(
    st.sampled_from(TE_VALUES).map(lambda v: b"Transfer-Encoding: " + v),
    st.sampled_from(CL_VALUES).map(lambda v: b"Content-Length: " + v),
    st.sampled_from([
        b"Transfer-Encoding : chunked", b"Transfer-Encoding:chunked", b"Transfer-Encoding:",
        b"Transfer-Encoding:\r\n chunked", b"Content-Length:\r\n 5", b"Content-Length : 5",
        b"Transfer_Encoding: chunked", b"Content_Length: 5", b"X-Fold: a\r\n b",
        b"X-Fold: a\r\n\tb", b"Expect: 100-continue", b"Expect: 100-Continue, foo",
        b"Connection: close", b"Connection: keep-alive, Transfer-Encoding",
        b"Connection: Content-Length", b"Upgrade: websocket", b"TE: trailers",
        b"Trailer: Content-Length", b"Host: other.test", b"Host: gw.test", b"Host:",
        b"Host: gw.test:99999", b"Host: a@b", b"X-Ctl: a\x01b", b"X-Del: a\x7fb",
        b"X-High: caf\xe9", b" X-Lead: 1", b"X-Trail : 1", b": empty-name", b"NoColon",
    ]),
)
CHUNK_BODIES = [
    b"5\r\nhello\r\n0\r\n\r\n", b"05\r\nhello\r\n0\r\n\r\n",
    b"0000000000000000005\r\nhello\r\n0\r\n\r\n", b"0x5\r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n", b"+5\r\nhello\r\n0\r\n\r\n", b" 5\r\nhello\r\n0\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n", b"5\t\r\nhello\r\n0\r\n\r\n",
    b"5;a\rb\r\nhello\r\n0\r\n\r\n", b"5;a=\"b\r\nc\"\r\nhello\r\n0\r\n\r\n",
    b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", b"8000000000000000\r\nhello\r\n0\r\n\r\n",
    b"5\nhello\n0\n\n", b"5\r\nhello\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n",
    b"5\r\nhello!!\r\n0\r\n\r\n", b"3\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n", b"0\r\n",
    b"0\r\nbad trailer\r\n\r\n", b"0\r\nX: a\r\n folded\r\n\r\n",
    b"0\r\nContent-Length: 5\r\n\r\nhello", b"0\r\nX: a\n\r\n", b"0;ext\r\n\r\n",
    b"0\r\n\r\n" + SMUGGLED, b"hello", b"", b"5\r\nhello\r\n", b"a\r\n0123456789\r\n0\r\n\r\n",
    b"A\r\n0123456789\r\n0\r\n\r\n",
]
REQUEST_LINES = st.one_of(
    st.builds(lambda m, t, v: m + b" " + t + b" " + v,
              st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"CONNECT",
                               b"TRACE", b"FOO", b"get", b"G@T", b"PROPFIND", b"M-SEARCH",
                               b"QUERY", b"PRI"]),
              st.sampled_from([b"/x", b"/", b"*", b"http://gw.test/x", b"HTTP://GW.TEST/x",
                               b"http://other.test/x", b"http://gw.test", b"https://gw.test/?q",
                               b"gw.test:443", b"x", b"/a#frag", b"/%2e%2e/admin",
                               b"/a b", b"//x", b"/\xff"]),
              st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP/2.0",
                               b"HTTP/1.10", b"HTTP/1", b"http/1.1", b"HTTP/3.0", b"HTTP/1.1 ",
                               b"HTTP/01.1"])),
    st.sampled_from([b"GET /x", b"GET  /x HTTP/1.1", b"GET /x  HTTP/1.1", b" GET /x HTTP/1.1",
                     b"GET\t/x HTTP/1.1", b"POST /x HTTP/1.1\x00", b"PRI * HTTP/2.0"]),
)


def _line_ends(data: bytes, style: str) -> bytes:
    if style == "lf":
        return data.replace(b"\r\n", b"\n")
    if style == "cr":
        return data.replace(b"\r\n", b"\r")
    if style == "one-lf":
        return data.replace(b"\r\n", b"\n", 1)
    return data


@st.composite
def smuggling_requests(draw: st.DrawFn) -> bytes:
    """A request line and fields from a catalogue of ambiguous shapes, a body from another,
    optionally odd line ends, leading empty lines and a smuggled request after it."""
    fields = draw(st.lists(FRAMING_LINES, max_size=4))
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), b"Host: gw.test")
    prefix = draw(st.sampled_from([b"", b"", b"\r\n", b"\n", b"\r\n\r\n"]))
    head = prefix + b"\r\n".join([draw(REQUEST_LINES), *fields]) + b"\r\n\r\n"
    head = _line_ends(head, draw(st.sampled_from(["crlf", "crlf", "lf", "cr", "one-lf"])))
    body = draw(st.sampled_from(CHUNK_BODIES))
    tail = draw(st.sampled_from([b"", SMUGGLED]))
    return head + body + tail


# ---- the tests -----------------------------------------------------------------------------

_SETTINGS = settings(deadline=None, max_examples=100,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(data=request_streams)
def test_valid_requests_get_the_same_verdict(data: bytes) -> None:
    assert_same_verdict(data)


@_SETTINGS
@given(data=mutated_requests())
def test_mutated_requests_get_the_same_verdict(data: bytes) -> None:
    assert_same_verdict(data)


def _post(fields: bytes, body: bytes, version: bytes = b"1.1") -> bytes:
    return b"POST /x HTTP/" + version + b"\r\nHost: gw.test\r\n" + fields + b"\r\n" + body


@_SETTINGS
@example(data=_post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                    b"0\r\n\r\n" + SMUGGLED)).via("CL.TE")
@example(data=_post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                    b"5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n")).via("TE.CL")
@example(data=_post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                    b"0\r\n\r\n" + SMUGGLED)).via("two TE lines")
@example(data=_post(b"Transfer-Encoding: chunked\x0b\r\n", b"0\r\n\r\n" + SMUGGLED)
         ).via("TE with a vertical tab")
@example(data=_post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED)
         ).via("space before the colon")
@example(data=_post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n" + SMUGGLED)
         ).via("obs-folded TE")
@example(data=_post(b"Content-Length: 5\r\nContent-Length: 40\r\n", b"hello" + SMUGGLED)
         ).via("two Content-Lengths")
@example(data=_post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED, b"1.0")
         ).via("HTTP/1.0 with TE")
@example(data=_post(b"Transfer-Encoding: chunked\r\n",
                    b"1" + b"0" * 16 + b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)
         ).via("chunk size past 2^64")
@example(data=_post(b"Transfer-Encoding: chunked\r\n",
                    b"5;a\rb\r\nhello\r\n0\r\n\r\n" + SMUGGLED)).via("bare CR in a chunk ext")
@example(data=b"GET /x HTTP/1.0\n\n" + SMUGGLED).via("bare-LF head")
@example(data=b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\n" + SMUGGLED).via("head ended by a bare LF")
@given(data=smuggling_requests())
def test_smuggling_shapes_get_the_same_verdict(data: bytes) -> None:
    assert_same_verdict(data)
