"""One keep-alive HTTP/1.1 connection to an upstream, and a response streamed from it.

The pool (:mod:`velithon._proxy.pool`) decides *which* connection to use; this module
owns what happens *on* one: serialising the request, reading and policing the response
head, streaming the body, and deciding at the end whether the connection may be reused.
Two kinds of connection do this with the two parsers: :class:`LlhttpConnection` (llhttp
reads the head, the body is framed here; the fast default) and :class:`H11Connection`
(h11 for everything, the pure-Python fallback). Both apply the same head rules (size,
field count, obs-fold, control bytes, status range, no unsolicited 101) and the same
chunk decoder, so an upstream answer is accepted or refused alike in both modes.

Reuse rule: a connection goes back to the pool only if the request was sent in full,
the response ended where its framing says, no byte came after it (extra bytes after
Content-Length, a body on 204/304/HEAD), neither side said ``Connection: close``, and
nothing failed. Everything else closes the socket.

Closing is synchronous (the trio socket is closed directly, like
``trio.aclose_forcefully``), so cancelled code and ``finally`` blocks can clean up
without awaiting.
"""

from __future__ import annotations

import operator
import re
import select
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, NamedTuple, cast

import h11
import trio

from .._exceptions import (
    UpstreamBodyError,
    UpstreamProtocolError,
    UpstreamRequestError,
    UpstreamResetError,
)
from .._http11 import (
    H11_REQUEST_FIELDS,
    HEAD_CTL,
    CheckedFields,
    ChunkedBodyError,
    ChunkedDecoder,
    invalid_field,
    is_checked,
    split_for_h11,
    valid_length,
)
from .._http11.llhttp import LLHTTP_METHODS, HeadError, HttpParser, ResponseHeadReader
from .._sockio import FastSocket

__all__ = [
    "Connection",
    "H11Connection",
    "LlhttpConnection",
    "ResponseHead",
    "UpstreamResponse",
    "prepare_request",
    "send_request",
]

RECEIVE_SIZE = 65536
CHUNKED_READ_SIZE = 16384
# Bytes bodies up to this size are written inline (no task); bigger ones are sent
# concurrently with reading the head, so an early answer (413) cannot deadlock us.
INLINE_BODY_LIMIT = 65536
_MAX_INTERIM = 16
_HEAD_END = re.compile(rb"\n\r?\n")
_OBS_FOLD = re.compile(rb"\n[ \t]")
_SWITCHING = re.compile(rb"HTTP/1\.[01] 101\b")
# Longest chunk-size line (extension included) accepted from an upstream.
MAX_CHUNK_LINE = 4096
_TE_FIELD = re.compile(rb"\ntransfer-encoding:", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"\ncontent-length:([^\r\n]*)", re.IGNORECASE)
_VERSIONS = (b"HTTP/1.1 ", b"HTTP/1.0 ")
_BYTES = (bytes, bytearray, memoryview)
#: methods whose requests carry a Content-Length even without a body
_WANT_LENGTH = frozenset({b"POST", b"PUT", b"PATCH"})
NETWORK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_EOM = h11.EndOfMessage()  # events are immutable: one instance serves every request
# h11's grammar for what it sends: a method token and a target without NUL or whitespace.
_FIELD_NAME_OF = operator.itemgetter(0)
_H11_FIELDS_BUT_HOST = H11_REQUEST_FIELDS - {b"host"}
_METHOD = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+").fullmatch
_TARGET = re.compile(rb"[^\x00\s]+").fullmatch

Body = bytes | bytearray | memoryview | AsyncIterable[bytes] | None
# What h11.Connection.next_event returns.
_Event = h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]
# How a response body is framed.
_NONE, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)


class ResponseHead(NamedTuple):
    """A final response head, as either parser read it (field names lowercased)."""

    status: int
    reason: bytes
    http_version: str
    headers: list[tuple[bytes, bytes]]


class PreparedRequest(NamedTuple):
    """A request checked once, to be sent on one connection or, after a reset, another."""

    method: bytes
    #: llhttp mode: the whole serialised head. h11 mode: the header lines written next
    #: to h11's (see :func:`~velithon._http11.split_for_h11`).
    head: bytes
    #: h11 mode only: the event h11's state machine must send.
    event: h11.Request | None
    #: The declared length of a streaming body, which must then be kept (None: chunked).
    length: int | None
    chunked: bool
    #: False when the request itself asks to close the connection after the exchange.
    persistent: bool


def local_error(exc: Exception, url: str) -> UpstreamRequestError:
    return UpstreamRequestError(f"Cannot send the request to {url}: {exc}")


def frame_fields(method: bytes, headers: Iterable[tuple[bytes, bytes]], body: Body
                 ) -> list[tuple[bytes, bytes]]:
    """The caller's headers plus our framing; caller framing is dropped (never copied).

    Bytes bodies get their exact ``Content-Length``; streaming bodies keep a
    caller-declared ``Content-Length`` (h11 then enforces it) or go chunked.
    """
    streaming = body is not None and not isinstance(body, _BYTES)
    out: list[tuple[bytes, bytes]] = []
    declared = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length":
            if streaming and not declared:
                declared = True
                out.append((name, value))
        elif lname != b"transfer-encoding":
            out.append((name, value))
    _add_framing(out, method, body, streaming, declared)
    return out


def prepare_request(parser: HttpParser, method: bytes, target: bytes,
                    headers: list[tuple[bytes, bytes]], body: Body = None, *,
                    url: str) -> PreparedRequest:
    """Frame (see :func:`frame_fields`), check and serialise a request for ``parser``'s
    connections.

    Raises:
        UpstreamRequestError: a method, target or field that may not be sent (CR, LF or
            NUL in a value, no Host, ...), with the same rules in both modes.
    """
    if parser == "h11":
        return _prepare_h11(method, target, frame_fields(method, headers, body), url)
    _check_request_line(method, target, url)
    # One pass: the framing (as frame_fields does it: the caller's dropped, ours added
    # last), the Host count, and the order h11 mode writes the fields in (when the one
    # Host comes before the other fields h11 acts on: Host first, then every field h11
    # does not act on, then h11's), so both modes send the same bytes.
    checked = is_checked(headers)  # lowercase names, values of the grammar
    streaming = body is not None and not isinstance(body, _BYTES)
    if checked and _only_host_first(headers):
        # the gateway's usual list: the loop below would keep its order and add only
        # our framing at the end
        ordered = list(headers)
        length, chunked = _add_framing(ordered, method, body, streaming, False)
        return PreparedRequest(method, b"%s %s HTTP/1.1\r\n%s\r\n\r\n" % (
            method, target, b"\r\n".join(map(b": ".join, ordered))),
            None, length, chunked, True)
    own: list[tuple[bytes, bytes]] = []
    others: list[tuple[bytes, bytes]] = []
    length = None
    persistent = True
    hosts = 0
    for item in headers:
        lname = item[0] if checked else item[0].lower()
        if lname not in H11_REQUEST_FIELDS:
            others.append(item)
            continue
        if lname == b"host":
            hosts += 1
        elif lname == b"content-length":
            if not streaming or length is not None:
                continue  # ours replaces it, or a second one
            length = int(item[1])
        elif lname == b"transfer-encoding":
            continue  # ours replaces it
        elif lname == b"connection" and _asks_close(item[1]):
            persistent = False
        own.append(item)
    added, chunked = _add_framing(own, method, body, streaming, length is not None)
    if added is not None:
        length = added
    if hosts != 1:
        raise local_error(ValueError("a request needs exactly one Host header"), url)
    ordered = own
    if others:
        ordered = [own[0], *others, *own[1:]] if own[0][0].lower() == b"host" else \
            frame_fields(method, headers, body)  # as h11 mode writes them
    if not checked:
        bad = invalid_field(ordered)
        if bad is not None:
            raise local_error(ValueError(f"illegal header {bad[:40]!r}"), url)
    # map with a C callable: no Python frame per field
    head = b"%s %s HTTP/1.1\r\n%s\r\n\r\n" % (method, target,
                                               b"\r\n".join(map(b": ".join, ordered)))
    return PreparedRequest(method, head, None, length, chunked, persistent)


def _only_host_first(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether lowercase ``headers`` hold one Host, first, and no other field h11 acts on
    (framing, Connection, Upgrade, Expect). Checked in C: no Python step per field."""
    names = list(map(_FIELD_NAME_OF, headers))
    return (bool(names) and names[0] == b"host" and names.count(b"host") == 1
            and _H11_FIELDS_BUT_HOST.isdisjoint(names))


def _check_request_line(method: bytes, target: bytes, url: str) -> None:
    """Refuse a method or target h11 would not send either."""
    if method not in LLHTTP_METHODS and _METHOD(method) is None:  # known tokens skip the scan
        raise local_error(ValueError("illegal method"), url)
    if _TARGET(target) is None:
        raise local_error(ValueError("illegal request target"), url)


def _add_framing(fields: list[tuple[bytes, bytes]], method: bytes, body: Body,
                 streaming: bool, declared: bool) -> tuple[int | None, bool]:
    """Append our framing field to ``fields`` (none for a streaming body whose length
    the caller ``declared``); return ``(the Content-Length added, chunked)``."""
    if streaming:
        if declared:
            return None, False
        fields.append((b"transfer-encoding", b"chunked"))
        return None, True
    if body is not None:
        length = len(body)  # type: ignore[arg-type]
        fields.append((b"content-length", b"%d" % length))
        return length, False
    if method in _WANT_LENGTH:
        fields.append((b"content-length", b"0"))
        return 0, False
    return None, False


def _prepare_h11(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                 url: str) -> PreparedRequest:
    """:func:`prepare_request` for h11 connections (``headers`` framed)."""
    length, chunked, persistent = _request_framing(headers)
    # h11 validates every field it is given; it only needs the ones it acts on.
    split = split_for_h11(headers, H11_REQUEST_FIELDS)
    extra = b""
    framed = headers
    if split is not None and _one_host_first(split[0]):
        framed, extra = split
    try:
        event = h11.Request(method=method, target=target, headers=framed)
    except h11.LocalProtocolError as exc:
        raise local_error(exc, url) from None
    return PreparedRequest(method, extra, event, length, chunked, persistent)


def _asks_close(value: bytes) -> bool:
    """Whether a ``Connection`` value holds the ``close`` option."""
    return any(token.strip().lower() == b"close" for token in value.split(b","))


def _request_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool, bool]:
    """``(declared length, chunked, persistent)`` of a framed request."""
    length: int | None = None
    chunked = False
    persistent = True
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding":
            chunked = True
        elif lname == b"connection" and _asks_close(value):
            persistent = False
    return length, chunked, persistent


def _one_host_first(fields: list[tuple[bytes, bytes]]) -> bool:
    """h11 writes Host lines first: with exactly one, the others can follow it."""
    if not fields or fields[0][0].lower() != b"host":
        return False
    return all(name.lower() != b"host" for name, _ in fields[1:])


def _check_head(buf: bytes, pos: int, end: int, field_count: int, *, url: str,
                max_head_bytes: int, max_headers: int, parsed_strictly: bool = False) -> None:
    """Check the raw response head ``buf[pos:end]`` that was parsed with ``field_count``.

    ``parsed_strictly``: llhttp's strict mode accepted the head, so only what it lets
    through is looked at (size, a control byte in the status line, the version): it
    refuses obs-folded lines, bare LFs, control bytes in fields and a repeated, listed
    or malformed ``Content-Length`` by itself (a hypothesis property holds this).

    Raises:
        UpstreamProtocolError: a head over ``max_head_bytes`` or ``max_headers``, an
            obs-folded line, a control character, a bare LF, a version other than
            1.0/1.1, or a repeated, listed or oversized ``Content-Length`` (llhttp
            refuses those, so h11 mode must too).
    """
    if end - pos > max_head_bytes:
        raise UpstreamProtocolError(
            f"{url} sent a response head of {end - pos} bytes (limit {max_head_bytes})"
        )
    if field_count > max_headers:
        raise UpstreamProtocolError(
            f"{url} sent {field_count} response headers (limit {max_headers})"
        )
    if not parsed_strictly and _OBS_FOLD.search(buf, pos, end):
        raise UpstreamProtocolError(f"{url} sent an obsolete folded header line")
    ctl_end = buf.find(b"\n", pos, end) if parsed_strictly else end
    if HEAD_CTL.search(buf, pos, ctl_end):
        raise UpstreamProtocolError(f"{url} sent a control character in the response head")
    if not parsed_strictly and buf.count(b"\n", pos, end) != buf.count(b"\r\n", pos, end):
        raise UpstreamProtocolError(f"{url} sent a line ended by a bare LF in the response head")
    if buf[pos : pos + 9] not in _VERSIONS:
        raise UpstreamProtocolError(f"{url} sent a status line without HTTP/1.1 or HTTP/1.0")
    if parsed_strictly:
        return
    lengths = _CONTENT_LENGTH.findall(buf, pos, end)
    if lengths and (len(lengths) > 1 or not valid_length(lengths[0])):
        raise UpstreamProtocolError(f"{url} sent an invalid or repeated Content-Length")


def _check_status(status: int, url: str) -> None:
    if status == 101:
        raise UpstreamProtocolError(f"{url} sent an unsolicited 101 Switching Protocols")
    if not 100 <= status <= 599:
        raise UpstreamProtocolError(f"{url} sent a status code out of range: {status}")


async def _receive_head_bytes(conn: Connection, buf: bytes, pos: int, url: str) -> bytes:
    """Read more of a response head; return ``buf`` with the new bytes appended.

    A read that fails or finds the end of the stream before any byte of the head
    is a reset (``request_sent``: the upstream may have acted on it); in the middle
    of the head it is a protocol error. Bytes that cannot begin ``HTTP/`` are
    refused at once.
    """
    try:
        io = conn.io
        if buf or not isinstance(io, FastSocket):
            data = cast(bytes, await io.receive_some(RECEIVE_SIZE))
        else:  # the response to a request just sent is rarely there yet
            data = await io.receive_when_ready(RECEIVE_SIZE)
    except NETWORK_ERRORS as exc:
        if buf:
            raise UpstreamProtocolError(
                f"{url} broke the connection in the middle of the response head"
            ) from exc
        raise UpstreamResetError(
            f"{url} reset the connection before sending a response: {exc}",
            request_sent=True,
        ) from exc
    if not data:
        if buf:
            raise UpstreamProtocolError(
                f"{url} closed the connection in the middle of the response head"
            )
        raise UpstreamResetError(
            f"{url} closed the connection before sending a response", request_sent=True
        )
    buf = buf + data if buf else data
    start = buf[pos : pos + 5]
    if start != b"HTTP/"[: len(start)]:
        raise UpstreamProtocolError(f"{url} did not answer with HTTP: {start!r}...")
    return buf


def _decoder_fed(body_start: bytes, url: str) -> tuple[ChunkedDecoder, bytes, int]:
    """A chunk decoder already fed the body bytes that came with the head.

    Returns ``(decoder, data decoded, bytes used)``; a malformed start is refused as a
    head error, so nothing of such a response is relayed.
    """
    decoder = ChunkedDecoder(MAX_CHUNK_LINE)
    try:
        data, used = decoder.feed(body_start)
    except ChunkedBodyError as exc:
        raise UpstreamProtocolError(f"{url} sent a malformed chunked body: {exc}") from None
    return decoder, data, used


class Connection:
    """A TCP (or TLS) stream to an upstream, and the parser state that lives as long as it.

    Subclasses (one per parser) serialise requests and read responses; this base holds
    what both need: the socket, the idle clock, and whether the request went out whole.
    """

    __slots__ = ("_plain", "_poller", "_socket", "idle_since", "io", "keep", "stream")

    def __init__(self, stream: trio.abc.Stream, *, max_head_bytes: int) -> None:
        self.stream = stream
        self.idle_since = 0.0
        # Cleared when the request was cut short or the response broke the reuse rule.
        self.keep = True
        self._plain = not isinstance(stream, trio.SSLStream)
        transport: Any = stream if self._plain else stream.transport_stream  # type: ignore[attr-defined]
        self._socket: trio.socket.SocketType = transport.socket
        # plain TCP skips trio's per-call scheduling (see FastSocket); TLS needs the stream
        self.io: FastSocket | trio.abc.Stream = FastSocket(transport) if self._plain else stream
        self._poller: Any = None  # a select.poll for looks_dropped, made on first use

    def close(self) -> None:
        """Close the socket now, without a checkpoint (no TLS close_notify)."""
        self.keep = False
        self._socket.close()

    def abort(self) -> None:
        """Make this connection's I/O fail from now on, from any task: a task waiting on
        it wakes to an error. The descriptor stays open until its owner closes it, so its
        number cannot be reused under that owner."""
        self.keep = False
        try:
            self._socket.shutdown(trio.socket.SHUT_RDWR)
        except OSError:
            pass  # already shut down or never connected: the owner's I/O fails anyway

    def taken(self) -> None:
        """An idle connection is taken up for a request (its I/O clock restarts)."""
        if isinstance(self.io, FastSocket):
            self.io.restart_clock()

    def body_read_size(self) -> int:
        """How much to read at once for the body: less for a chunked one, whose decoding
        costs Python time per chunk, so one read of tiny chunks cannot hold the event
        loop for long."""
        return CHUNKED_READ_SIZE if self.chunked_body() else RECEIVE_SIZE

    def chunked_body(self) -> bool:
        """Whether the response body being read is chunked."""
        raise NotImplementedError

    def looks_dropped(self) -> bool:
        """True if an idle plain-TCP connection is readable: the upstream closed it or sent junk.

        Catches the common stale keep-alive case (the upstream's idle timeout is
        shorter than ours) before a non-idempotent request is spent on it. TLS
        connections can be readable for harmless reasons (session tickets), so
        they rely on the retry path instead.
        """
        if not self._plain:
            return False
        try:
            poller = self._poller
            if poller is None:
                poller = self._poller = select.poll()
                poller.register(self._socket.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    # -- what each parser implements --------------------------------------------------
    def start_request(self, request: PreparedRequest) -> bytes:
        """The request head to write on this connection."""
        raise NotImplementedError

    def encode_data(self, data: bytes) -> bytes:
        """Request body bytes as framed on the wire."""
        raise NotImplementedError

    def encode_end(self) -> bytes:
        """The end of the request body (the last chunk, or nothing)."""
        raise NotImplementedError

    async def read_head(self, *, url: str, max_head_bytes: int, max_headers: int,
                        method: bytes) -> ResponseHead:
        """Read until the final (non-1xx) response head, enforcing our own head limits.

        Parsers check too little on their own (h11 checks its size limit only while a
        head is incomplete, unfolds obs-fold and accepts most control characters;
        llhttp has no size limit), so the raw head bytes are checked as well. For a
        chunked body the body bytes that came with the head are decoded before anything
        is relayed (``method`` says whether a body follows at all), so a response whose
        first chunk is already malformed is refused as a whole.
        """
        raise NotImplementedError

    def pull_body(self) -> tuple[bytes, bool] | None:
        """Body bytes already read, and whether the body ended with them; ``None``
        when a read is needed. Raises :class:`ChunkedBodyError` or ``ValueError``."""
        raise NotImplementedError

    def feed_body(self, data: bytes) -> None:
        """Bytes read from the socket during the body (``b""``: the upstream closed)."""
        raise NotImplementedError

    def reusable(self) -> bool:
        """Whether the ended exchange leaves the connection fit for another request."""
        raise NotImplementedError

    def recycle(self) -> None:
        """Ready the parser for the next exchange (the connection was found reusable)."""


class H11Connection(Connection):
    """An upstream connection whose messages h11 writes and parses."""

    __slots__ = ("decoder", "h11")

    def __init__(self, stream: trio.abc.Stream, *, max_head_bytes: int) -> None:
        super().__init__(stream, max_head_bytes=max_head_bytes)
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head_bytes)
        # The chunk check of the response body being read: fed the body bytes that came
        # with the head, then every later read before h11 parses it. None: not chunked.
        self.decoder: ChunkedDecoder | None = None

    def start_request(self, request: PreparedRequest) -> bytes:
        assert request.event is not None
        head = self.h11.send(request.event)
        extra = request.head
        if not extra:
            return head
        # after the request line and the Host line, where h11 would have written them
        after_host = head.index(b"\r\n", head.index(b"\r\n") + 2) + 2
        return head[:after_host] + extra + head[after_host:]

    def encode_data(self, data: bytes) -> bytes:
        return self.h11.send(h11.Data(data=data))

    def encode_end(self) -> bytes:
        return self.h11.send(_EOM)

    async def read_head(self, *, url: str, max_head_bytes: int, max_headers: int,
                        method: bytes) -> ResponseHead:
        h = self.h11
        self.decoder = None
        buffered, closed = h.trailing_data
        buf = buffered  # the raw bytes seen so far, h11's buffer included
        pos = 0  # where the current head starts in buf
        interim = 0
        # Usually nothing is buffered yet: read first instead of asking h11 (saves ~2 µs).
        event: _Event | None = h11.NEED_DATA if not buffered and not closed else None
        while True:
            if event is None:
                event = self._next_event(buf, pos, url)
            if event is h11.NEED_DATA:
                before = len(buf)
                buf = await _receive_head_bytes(self, buf, pos, url)
                h.receive_data(buf[before:])
                event = None
                continue
            if not isinstance(event, (h11.Response, h11.InformationalResponse)):
                raise UpstreamProtocolError(f"{url} sent an unexpected {type(event).__name__}")
            match = _HEAD_END.search(buf, pos)
            head_start, pos = pos, match.end() if match else len(buf)
            _check_head(buf, head_start, pos, len(event.headers), url=url,
                        max_head_bytes=max_head_bytes, max_headers=max_headers)
            _check_status(event.status_code, url)
            if type(event) is h11.Response:
                if _chunked_body(event.status_code, method, buf, head_start, pos):
                    self.decoder = _decoder_fed(buf[pos:], url)[0]
                return ResponseHead(event.status_code, bytes(event.reason),
                                    event.http_version.decode("ascii"),
                                    list(event.headers))  # names lowercased
            interim += 1  # 100 Continue, 102, 103: skipped
            if interim > _MAX_INTERIM:
                raise UpstreamProtocolError(
                    f"{url} sent more than {_MAX_INTERIM} 1xx responses")
            event = None

    def _next_event(self, buf: bytes, pos: int, url: str) -> _Event:
        """h11's next event; its parse errors become :class:`UpstreamProtocolError`."""
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            if _SWITCHING.match(buf, pos):
                raise UpstreamProtocolError(
                    f"{url} sent an unsolicited 101 Switching Protocols") from None
            raise UpstreamProtocolError(
                f"{url} sent a malformed response head: {exc}") from None

    def pull_body(self) -> tuple[bytes, bool] | None:
        h = self.h11
        chunks: list[Any] = []
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                if chunks:  # what came before the failure first; it fails again next time
                    return b"".join(chunks), False
                raise ValueError(str(exc)) from None
            kind = type(event)
            if kind is h11.Data:
                chunks.append(event.data)  # type: ignore[union-attr]
            elif kind is h11.EndOfMessage:
                return b"".join(chunks), True
            elif event is h11.NEED_DATA:
                return (b"".join(chunks), False) if chunks else None
            else:
                raise ValueError(f"unexpected {event!r}")

    def chunked_body(self) -> bool:
        return self.decoder is not None

    def feed_body(self, data: bytes) -> None:
        decoder = self.decoder
        if decoder is not None and data and not decoder.done:
            # checked before h11 parses it: a bad size line would make h11 hand out the
            # following bytes as chunk data
            decoder.feed(data)
        self.h11.receive_data(data)

    def reusable(self) -> bool:
        h = self.h11
        return (
            self.keep
            and h.our_state is h11.DONE
            and h.their_state is h11.DONE
            and h.trailing_data == (b"", False)
        )

    def recycle(self) -> None:
        self.h11.start_next_cycle()


def _chunked_body(status: int, method: bytes, buf: bytes, start: int, end: int) -> bool:
    """True if a chunked body follows the head in ``buf[start:end]``, as h11 frames it.

    RFC 9112 §6.3: no body after a HEAD request, a 204 or a 304, whatever the
    fields say; otherwise any ``Transfer-Encoding`` means chunked (h11 refuses
    every other coding). The head was parsed by h11 already, so a line that
    starts with the field name is that field; searching the raw bytes avoids
    walking h11's header list on every response.
    """
    if method == b"HEAD" or status == 204 or status == 304:
        return False
    return _TE_FIELD.search(buf, start, end) is not None


class LlhttpConnection(Connection):
    """An upstream connection whose response heads llhttp parses; bodies are framed here.

    Requests go out as :func:`prepare_request` serialised them. The bytes read but not
    yet used sit in one buffer: the head is cut from it at its blank line, checked raw,
    parsed by llhttp, and the body is then taken by count, by the chunk decoder, or up
    to the end of the stream, exactly as the head's framing says.
    """

    __slots__ = ("_buf", "_decoder", "_eof", "_framing", "_left", "_persistent", "_reader",
                 "_ready", "_send_chunked", "_send_left")

    def __init__(self, stream: trio.abc.Stream, *, max_head_bytes: int) -> None:
        super().__init__(stream, max_head_bytes=max_head_bytes)
        self._buf = b""
        self._reader = ResponseHeadReader()
        self._eof = False
        self._framing = _NONE
        self._left = 0  # body bytes the Content-Length still promises
        self._decoder: ChunkedDecoder | None = None
        self._ready = b""  # decoded chunk data not yet handed out
        self._persistent = False  # the upstream keeps the connection open after this
        self._send_chunked = False
        self._send_left: int | None = None

    def close(self) -> None:
        super().close()
        self._reader.release()  # its parser and it refer to each other

    def start_request(self, request: PreparedRequest) -> bytes:
        self.keep = self.keep and request.persistent
        self._send_chunked = request.chunked
        self._send_left = request.length
        return request.head

    def encode_data(self, data: bytes) -> bytes:
        if self._send_chunked:
            return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        left = self._send_left
        if left is not None:
            if len(data) > left:
                raise UpstreamRequestError("the request body is longer than its Content-Length")
            self._send_left = left - len(data)
        return bytes(data)

    def encode_end(self) -> bytes:
        if self._send_chunked:
            return b"0\r\n\r\n"
        if self._send_left:
            raise UpstreamRequestError("the request body is shorter than its Content-Length")
        return b""

    async def read_head(self, *, url: str, max_head_bytes: int, max_headers: int,
                        method: bytes) -> ResponseHead:
        buf = self._buf
        reader = self._reader
        interim = 0
        while True:
            match = _HEAD_END.search(buf)
            if match is None:
                if len(buf) > max_head_bytes:
                    raise UpstreamProtocolError(
                        f"{url} sent a response head over {max_head_bytes} bytes")
                buf = await _receive_head_bytes(self, buf, 0, url)
                continue
            stop = match.end()
            reader.begin()
            try:
                reader.feed(buf[:stop])
            except HeadError as exc:
                # our own words first, for what both parser modes refuse alike
                _check_head(buf, 0, stop, 0, url=url, max_head_bytes=max_head_bytes,
                            max_headers=max_headers)
                raise UpstreamProtocolError(
                    f"{url} sent a malformed response head: {exc.message}") from None
            _check_head(buf, 0, stop, 0, url=url, max_head_bytes=max_head_bytes,
                        max_headers=max_headers, parsed_strictly=True)
            headers = reader.headers
            if len(headers) > max_headers:
                raise UpstreamProtocolError(
                    f"{url} sent {len(headers)} response headers (limit {max_headers})")
            status = reader.status
            _check_status(status, url)
            buf = buf[stop:]
            if status >= 200:
                version = reader.version
                self._buf = b""
                self._start_body(status, method, version, headers, buf, url)
                return ResponseHead(status, reader.reason, version.decode("ascii"), headers)
            interim += 1  # 100 Continue, 102, 103: skipped
            if interim > _MAX_INTERIM:
                raise UpstreamProtocolError(
                    f"{url} sent more than {_MAX_INTERIM} 1xx responses")

    def _start_body(self, status: int, method: bytes, version: bytes,
                    headers: list[tuple[bytes, bytes]], rest: bytes, url: str) -> None:
        """Work out the body's framing (RFC 9112 §6.3) and take the bytes already read."""
        length: bytes | None = None
        coding: bytes | None = None
        connection = b""
        for name, value in headers:  # names lowercased by the reader
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                coding = value if coding is None else coding + b", " + value
            elif name == b"connection":
                connection += b"," + value.lower()
        self._persistent = version == b"1.1" and not (connection and any(
            token.strip() == b"close" for token in connection.split(b",")))
        self._eof = False
        self._decoder = None
        self._ready = b""
        if coding is not None and coding.lower() != b"chunked":
            # refused whatever the status or method, as h11 mode does
            raise UpstreamProtocolError(f"{url} sent an unsupported transfer coding")
        if method == b"HEAD" or status == 204 or status == 304:
            self._framing = _NONE
            self._buf = rest
        elif coding is not None:
            self._framing = _CHUNKED
            self._decoder, self._ready, used = _decoder_fed(rest, url)
            self._buf = rest[used:]
        elif length is not None:
            self._framing = _LENGTH
            self._left = int(length)
            self._buf = rest
        else:
            self._framing = _UNTIL_CLOSE
            self._buf = rest

    def pull_body(self) -> tuple[bytes, bool] | None:
        framing = self._framing
        if framing == _LENGTH:
            buf, left = self._buf, self._left
            if len(buf) > left:
                data, self._buf = buf[:left], buf[left:]
            else:
                data, self._buf = buf, b""
            self._left = left = left - len(data)
            if not left:
                return data, True
            if self._eof:
                raise ValueError("the upstream closed before the end of its Content-Length")
            return (data, False) if data else None
        if framing == _CHUNKED:
            data, self._ready = self._ready, b""
            assert self._decoder is not None
            if self._decoder.done:
                return data, True
            if self._eof:
                raise ValueError("the upstream closed in the middle of a chunked body")
            return (data, False) if data else None
        if framing == _UNTIL_CLOSE:
            data, self._buf = self._buf, b""
            if self._eof:
                return data, True
            return (data, False) if data else None
        return b"", True

    def chunked_body(self) -> bool:
        return self._decoder is not None

    def feed_body(self, data: bytes) -> None:
        if not data:
            self._eof = True
            return
        decoder = self._decoder
        if decoder is not None and not decoder.done:
            decoded, used = decoder.feed(data)
            self._ready += decoded
            if used < len(data):
                self._buf += data[used:]
        else:
            self._buf += data

    def reusable(self) -> bool:
        return (self.keep and self._persistent and not self._buf and not self._eof
                and self._framing != _UNTIL_CLOSE)


def connection_type(parser: HttpParser) -> type[Connection]:
    """The upstream connection that speaks with ``parser``."""
    return LlhttpConnection if parser == "httptools" else H11Connection


async def send_request(
    conn: Connection,
    request: PreparedRequest,
    body: Body,
    *,
    url: str,
    max_head_bytes: int,
    max_headers: int,
) -> ResponseHead:
    """Send ``request`` (and its body) on ``conn``; return the final response head.

    Small bytes bodies go out in one ``send_all`` with no task. Large and
    streaming bodies are sent by a child task while this one waits for the head;
    if the head arrives first the upload stops and the connection is marked
    not reusable (an early answer such as 413 before the upload is complete).
    """
    if body is None or (isinstance(body, _BYTES) and len(body) <= INLINE_BODY_LIMIT):
        try:
            payload = conn.start_request(request)
            if body:
                payload += conn.encode_data(cast(bytes, body))
            payload += conn.encode_end()
        except h11.LocalProtocolError as exc:
            raise local_error(exc, url) from None
        try:
            await conn.io.send_all(payload)
        except NETWORK_ERRORS:
            # The upstream may have answered and closed already: read what it said.
            conn.keep = False
        return await conn.read_head(url=url, max_head_bytes=max_head_bytes,
                                    max_headers=max_headers, method=request.method)
    return await _send_concurrently(conn, request, body, url=url,
                                    max_head_bytes=max_head_bytes, max_headers=max_headers)


async def _send_concurrently(
    conn: Connection, request: PreparedRequest, body: Body, *, url: str,
    max_head_bytes: int, max_headers: int,
) -> ResponseHead:
    try:
        head = conn.start_request(request)
    except h11.LocalProtocolError as exc:
        raise local_error(exc, url) from None
    sent_all = False
    send_error: Exception | None = None

    async def sender(cancel_scope: trio.CancelScope) -> None:
        nonlocal sent_all, send_error
        stream = conn.io
        try:
            await stream.send_all(head)
            send_error = await _send_body(stream, conn, body)
            if send_error is None:
                tail = conn.encode_end()
                if tail:
                    await stream.send_all(tail)
                sent_all = True
        except h11.LocalProtocolError as exc:
            send_error = local_error(exc, url)
        except UpstreamRequestError as exc:
            send_error = local_error(exc, url)
        except NETWORK_ERRORS:
            pass  # the upstream stopped reading; the head reader finds out why
        except Exception as exc:  # the caller's body iterator failed
            send_error = exc
        if send_error is not None:
            cancel_scope.cancel()

    event: ResponseHead | None = None
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender, nursery.cancel_scope)
        try:
            event = await conn.read_head(url=url, max_head_bytes=max_head_bytes,
                                         max_headers=max_headers, method=request.method)
        except Exception as exc:
            failure = exc
        nursery.cancel_scope.cancel()
    if send_error is not None:
        raise send_error
    if failure is not None:
        raise failure
    assert event is not None
    if not sent_all:
        conn.keep = False  # answered before the upload finished: never reuse
    return event


async def _send_body(stream: FastSocket | trio.abc.Stream, conn: Connection, body: Body
                     ) -> Exception | None:
    """Write ``body`` (not ``None``) through ``conn``, without the end of the message.

    Returns the exception of a failing body iterator instead of raising it: the
    caller's body failed (the client went away...), which is not the upstream's
    fault and must never pass for a network error, even when it is an ``OSError``.
    """
    if isinstance(body, _BYTES):
        view = memoryview(body)
        for start in range(0, len(view), RECEIVE_SIZE):
            await stream.send_all(conn.encode_data(bytes(view[start : start + RECEIVE_SIZE])))
        return None
    assert body is not None
    chunks = body.__aiter__()
    while True:
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return None
        except Exception as exc:
            return exc
        if chunk:
            await stream.send_all(conn.encode_data(chunk))


class UpstreamResponse:
    """A response head plus its body, streamed from a pooled connection.

    Read the body with ``receive_some()`` (``b""`` at the clean end), ``async for``,
    or ``read()``. The connection goes back to the pool as soon as the body ends
    cleanly; ``aclose()`` (or leaving ``async with``) before that closes it.
    ``content_length`` is the declared ``Content-Length`` (``None`` when chunked,
    read-until-close, or on a 204, where the field is forbidden and dropped from
    ``headers``); HEAD and 304 responses keep it but have no body.
    """

    __slots__ = ("status", "reason", "headers", "http_version", "content_length", "reusable",
                 "_conn", "_release", "_url", "_done", "_error")

    def __init__(self, head: ResponseHead, conn: Connection,
                 release: Callable[[Connection, bool], None], url: str) -> None:
        self.status: int = head.status
        self.reason: bytes = head.reason
        self.http_version: str = head.http_version
        # Names lowercased by either parser, and every field of the grammar: h11 checks
        # its own, and what llhttp's strict mode accepts after ``_check_head`` is too
        # (no control byte but tab, no bare CR or LF, token names, edge whitespace gone).
        # So whoever writes them on (the gateway's server) need not check them again.
        headers = head.headers
        length: int | None = None
        chunked = False
        for name, value in headers:
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None and (chunked or self.status == 204):
            # TE + CL: chunked wins (RFC 9112 §6.3), and never reuse such a connection.
            # 204 + CL: forbidden (RFC 9110 §8.6). Either way the CL is not passed on.
            headers = [item for item in headers if item[0] != b"content-length"]
            length = None
            conn.keep = conn.keep and not chunked
        self.headers = CheckedFields(headers)
        self.content_length = length
        #: True once the body ended cleanly and the connection went back to the pool.
        self.reusable = False
        self._conn: Connection | None = conn
        self._release = release
        self._url = url
        self._done = False
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "done" if self._done else ("failed" if self._error else
                                           "open" if self._conn else "closed")
        return f"<UpstreamResponse {self.status} {self.reason.decode('latin-1')} [{state}]>"

    @property
    def complete(self) -> bool:
        """True once the whole body was read (the connection is already released)."""
        return self._done

    def receive_buffered(self) -> bytes | None:
        """Like :meth:`receive_some` but without I/O: the next body bytes already read
        (``b""`` at the clean end), or ``None`` when a socket read is needed.

        Raises the same errors as :meth:`receive_some`.
        """
        conn = self._live_connection()
        if conn is None:
            return b""
        try:
            return self._pull(conn)
        except BaseException:
            if self._conn is not None:
                self._abort()
            raise

    def _live_connection(self) -> Connection | None:
        """The connection to read from; None after a clean end; raises if failed or closed."""
        if self._error is not None:
            raise self._error
        conn = self._conn
        if conn is None and not self._done:
            raise trio.ClosedResourceError("this upstream response was closed")
        return conn

    def _pull(self, conn: Connection) -> bytes | None:
        """The body bytes already read; ``None`` if there are none and a read is needed."""
        try:
            pulled = conn.pull_body()
        except ValueError as exc:  # ChunkedBodyError included
            self._fail(UpstreamBodyError(f"{self._url}: incomplete response body: {exc}"))
            raise self._error from None  # type: ignore[misc]
        if pulled is None:
            return None
        data, ended = pulled
        if ended:
            self._finish(conn)
            return data
        return data or None

    async def receive_some(self) -> bytes:
        """Return the next body bytes, ``b""`` at the clean end.

        Raises:
            UpstreamBodyError: the upstream closed or broke framing before the end.
                Bytes received before the failure are returned first.
            trio.ClosedResourceError: the response was closed before its end.
        """
        conn = self._live_connection()
        if conn is None:
            return b""
        try:
            while True:
                chunk = self._pull(conn)
                if chunk is not None:
                    return chunk
                try:
                    data = cast(bytes, await conn.io.receive_some(conn.body_read_size()))
                except NETWORK_ERRORS as exc:
                    self._fail(UpstreamBodyError(
                        f"{self._url}: connection broke during the response body: {exc}"))
                    raise self._error from exc  # type: ignore[misc]
                try:
                    conn.feed_body(data)
                except ChunkedBodyError as exc:
                    self._fail(UpstreamBodyError(
                        f"{self._url}: malformed chunked response body: {exc}"))
                    raise self._error from None  # type: ignore[misc]
        except BaseException:
            # Cancelled, or anything above: a half-read connection is never reused.
            if self._conn is not None:
                self._abort()
            raise

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.receive_some()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def read(self) -> bytes:
        """The whole remaining body (buffers it: for small responses)."""
        chunks = []
        while chunk := await self.receive_some():
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Release the connection: back to the pool if the body ended cleanly, else closed."""
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """:meth:`aclose` without the checkpoint (for callers that just did I/O)."""
        if self._conn is not None:
            self._abort()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- internals -----------------------------------------------------------------

    def _finish(self, conn: Connection) -> None:
        self._done = True
        self._conn = None
        self.reusable = conn.reusable()
        self._release(conn, self.reusable)

    def _abort(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._release(conn, False)

    def _fail(self, exc: UpstreamBodyError) -> None:
        self._error = exc
        self._abort()
