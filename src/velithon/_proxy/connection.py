"""One keep-alive HTTP/1.1 connection to an upstream, and a response streamed from it.

The pool (:mod:`velithon._proxy.pool`) decides *which* connection to use; this module
owns what happens *on* one: serialising the request with h11, reading and
policing the response head, streaming the body, and deciding at the end whether
the connection may be reused.

Reuse rule: a connection goes back to the pool only if both h11 sides are ``DONE``
(which also excludes ``Connection: close`` either way), ``trailing_data == (b"", False)``
(no bytes past the declared end: extra bytes after Content-Length, a body on
204/304/HEAD), the request was sent in full, and nothing failed. Everything else closes
the socket.

Closing is synchronous (the trio socket is closed directly, like
``trio.aclose_forcefully``), so cancelled code and ``finally`` blocks can clean up
without awaiting.
"""

from __future__ import annotations

import re
import select
from collections.abc import AsyncIterable, Callable
from typing import Any, cast

import h11
import trio

from .._exceptions import (
    UpstreamBodyError,
    UpstreamProtocolError,
    UpstreamRequestError,
    UpstreamResetError,
)
from .._http11 import HEAD_CTL, ChunkedBodyError, ChunkedFraming

__all__ = ["Connection", "UpstreamResponse", "receive_head", "send_request"]

RECEIVE_SIZE = 65536
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
_BYTES = (bytes, bytearray, memoryview)
NETWORK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_EOM = h11.EndOfMessage()  # events are immutable: one instance serves every request

Body = bytes | bytearray | memoryview | AsyncIterable[bytes] | None
# What h11.Connection.next_event returns.
_Event = h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]


class Connection:
    """A TCP (or TLS) stream plus the h11 state machine that lives as long as it does."""

    __slots__ = ("stream", "h11", "idle_since", "keep", "framing", "_socket", "_plain",
                 "_poller")

    def __init__(self, stream: trio.abc.Stream, *, max_head_bytes: int) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head_bytes)
        self.idle_since = 0.0
        # Cleared when the request was cut short, so h11 saying DONE is not enough.
        self.keep = True
        # The chunk framing check of the response body being read, handed from
        # receive_head (which already fed it the body bytes read with the head) to
        # UpstreamResponse; None when the body is not chunked.
        self.framing: ChunkedFraming | None = None
        self._plain = not isinstance(stream, trio.SSLStream)
        transport: Any = stream if self._plain else stream.transport_stream  # type: ignore[attr-defined]
        self._socket: trio.socket.SocketType = transport.socket
        self._poller: Any = None  # a select.poll for looks_dropped, made on first use

    def close(self) -> None:
        """Close the socket now, without a checkpoint (no TLS close_notify)."""
        self.keep = False
        self._socket.close()

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

    def reusable(self) -> bool:
        h = self.h11
        return (
            self.keep
            and h.our_state is h11.DONE
            and h.their_state is h11.DONE
            and h.trailing_data == (b"", False)
        )


def local_error(exc: h11.LocalProtocolError, url: str) -> UpstreamRequestError:
    return UpstreamRequestError(f"Cannot send the request to {url}: {exc}")


async def send_request(
    conn: Connection,
    request: h11.Request,
    body: Body,
    *,
    url: str,
    max_head_bytes: int,
    max_headers: int,
    extra: bytes = b"",
) -> h11.Response:
    """Send ``request`` (and its body) on ``conn``; return the final response head.

    ``extra``: header lines already checked and serialised (see
    :func:`~velithon._proxy.headers.split_for_h11`), written after the request's one ``Host``
    line, where h11 would have written them.

    Small bytes bodies go out in one ``send_all`` with no task. Large and
    streaming bodies are sent by a child task while this one waits for the head;
    if the head arrives first the upload stops and the connection is marked
    not reusable (an early answer such as 413 before the upload is complete).
    """
    if body is None or (isinstance(body, _BYTES) and len(body) <= INLINE_BODY_LIMIT):
        h = conn.h11
        try:
            payload = _with_extra(h.send(request), extra)
            if body:
                payload += h.send(h11.Data(data=cast(bytes, body)))
            payload += h.send(_EOM)
        except h11.LocalProtocolError as exc:
            raise local_error(exc, url) from None
        try:
            await conn.stream.send_all(payload)
        except NETWORK_ERRORS:
            # The upstream may have answered and closed already: read what it said.
            conn.keep = False
        return await receive_head(conn, url=url, max_head_bytes=max_head_bytes,
                                  max_headers=max_headers, method=request.method)
    return await _send_concurrently(conn, request, body, url=url,
                                    max_head_bytes=max_head_bytes, max_headers=max_headers,
                                    extra=extra)


def _with_extra(head: bytes, extra: bytes) -> bytes:
    """Insert serialised header lines after the request line and the Host line."""
    if not extra:
        return head
    after_host = head.index(b"\r\n", head.index(b"\r\n") + 2) + 2
    return head[:after_host] + extra + head[after_host:]


async def _send_concurrently(
    conn: Connection, request: h11.Request, body: Body, *, url: str,
    max_head_bytes: int, max_headers: int, extra: bytes = b"",
) -> h11.Response:
    h = conn.h11
    try:
        head = _with_extra(h.send(request), extra)
    except h11.LocalProtocolError as exc:
        raise local_error(exc, url) from None
    sent_all = False
    send_error: Exception | None = None

    async def sender(cancel_scope: trio.CancelScope) -> None:
        nonlocal sent_all, send_error
        stream = conn.stream
        try:
            await stream.send_all(head)
            send_error = await _send_body(stream, h, body)
            if send_error is None:
                tail = h.send(_EOM)
                if tail:
                    await stream.send_all(tail)
                sent_all = True
        except h11.LocalProtocolError as exc:
            send_error = local_error(exc, url)
        except NETWORK_ERRORS:
            pass  # the upstream stopped reading; the head reader finds out why
        except Exception as exc:  # the caller's body iterator failed
            send_error = exc
        if send_error is not None:
            cancel_scope.cancel()

    event: h11.Response | None = None
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender, nursery.cancel_scope)
        try:
            event = await receive_head(conn, url=url, max_head_bytes=max_head_bytes,
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


async def _send_body(stream: trio.abc.Stream, h: h11.Connection, body: Body
                     ) -> Exception | None:
    """Write ``body`` (not ``None``) through ``h``, without the end of the message.

    Returns the exception of a failing body iterator instead of raising it: the
    caller's body failed (the client went away...), which is not the upstream's
    fault and must never pass for a network error, even when it is an ``OSError``.
    """
    if isinstance(body, _BYTES):
        for piece in h.send_with_data_passthrough(h11.Data(data=cast(bytes, body))) or ():
            await stream.send_all(piece)
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
            await stream.send_all(h.send(h11.Data(data=chunk)))


async def receive_head(
    conn: Connection, *, url: str, max_head_bytes: int, max_headers: int, method: bytes
) -> h11.Response:
    """Read until the final (non-1xx) response head, enforcing our own head limits.

    h11 checks ``max_incomplete_event_size`` only while a head is incomplete,
    silently unfolds obs-fold and accepts most control characters in field
    values, so the head bytes are checked here as well. For a chunked body the
    body bytes that came with the head are checked before anything is relayed
    (``method`` says whether a body follows at all), so a response whose first
    chunk is already malformed is refused as a whole.
    """
    h = conn.h11
    conn.framing = None
    buffered, closed = h.trailing_data
    buf = buffered  # the raw bytes seen so far, h11's buffer included; usually one receive
    pos = 0  # where the current head starts in buf
    interim = 0
    # Usually nothing is buffered yet: read first instead of asking h11 (saves ~2 µs).
    event: _Event | None = h11.NEED_DATA if not buffered and not closed else None
    while True:
        if event is None:
            event = _next_event(h, buf, pos, url)
        if event is h11.NEED_DATA:
            buf = await _receive_head_bytes(conn, buf, pos, url)
            event = None
            continue
        if not isinstance(event, (h11.Response, h11.InformationalResponse)):
            raise UpstreamProtocolError(f"{url} sent an unexpected {type(event).__name__}")
        head_start, pos = pos, _check_head(event, buf, pos, url=url,
                                           max_head_bytes=max_head_bytes,
                                           max_headers=max_headers)
        if type(event) is h11.Response:
            if _chunked_body(event.status_code, method, buf, head_start, pos):
                conn.framing = _chunked_framing(buf[pos:], url)
            return event
        interim += 1  # 100 Continue, 102, 103: skipped
        if interim > _MAX_INTERIM:
            raise UpstreamProtocolError(f"{url} sent more than {_MAX_INTERIM} 1xx responses")
        event = None


def _next_event(h: h11.Connection, buf: bytes, pos: int, url: str) -> _Event:
    """h11's next event; its parse errors become :class:`UpstreamProtocolError`."""
    try:
        return h.next_event()
    except h11.RemoteProtocolError as exc:
        if _SWITCHING.match(buf, pos):
            raise UpstreamProtocolError(
                f"{url} sent an unsolicited 101 Switching Protocols") from None
        raise UpstreamProtocolError(f"{url} sent a malformed response head: {exc}") from None


async def _receive_head_bytes(conn: Connection, buf: bytes, pos: int, url: str) -> bytes:
    """Read more of the head into h11; return ``buf`` with the new bytes appended.

    A read that fails or finds the end of the stream before any byte of the head
    is a reset (``request_sent``: the upstream may have acted on it); in the middle
    of the head it is a protocol error. Bytes that cannot begin ``HTTP/`` are
    refused at once.
    """
    try:
        data = cast(bytes, await conn.stream.receive_some(RECEIVE_SIZE))
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
    conn.h11.receive_data(data)
    return buf


def _check_head(event: h11.Response | h11.InformationalResponse, buf: bytes, pos: int, *,
                url: str, max_head_bytes: int, max_headers: int) -> int:
    """Check the raw head h11 parsed as ``event``, starting at ``buf[pos]``; return its end.

    Raises:
        UpstreamProtocolError: a head over ``max_head_bytes`` or ``max_headers``, an
            obs-folded line or a control character.
    """
    match = _HEAD_END.search(buf, pos)
    end = match.end() if match else len(buf)
    if end - pos > max_head_bytes:
        raise UpstreamProtocolError(
            f"{url} sent a response head of {end - pos} bytes (limit {max_head_bytes})"
        )
    if len(event.headers) > max_headers:
        raise UpstreamProtocolError(
            f"{url} sent {len(event.headers)} response headers (limit {max_headers})"
        )
    if _OBS_FOLD.search(buf, pos, end):
        raise UpstreamProtocolError(f"{url} sent an obsolete folded header line")
    if HEAD_CTL.search(buf, pos, end):
        raise UpstreamProtocolError(f"{url} sent a control character in the response head")
    return end


def _chunked_framing(body_start: bytes, url: str) -> ChunkedFraming:
    """A chunk framing check already fed the body bytes that came with the head."""
    framing = ChunkedFraming(MAX_CHUNK_LINE)
    try:
        framing.feed(body_start)
    except ChunkedBodyError as exc:
        raise UpstreamProtocolError(f"{url} sent a malformed chunked body: {exc}") from None
    return framing


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
                 "_conn", "_release", "_url", "_done", "_error", "_framing")

    def __init__(self, event: h11.Response, conn: Connection,
                 release: Callable[[Connection, bool], None], url: str) -> None:
        self.status: int = event.status_code
        self.reason: bytes = bytes(event.reason)
        self.http_version: str = event.http_version.decode("ascii")
        # h11 lowercases names exactly like bytes.lower(); raw_items() avoids the generic
        # (per-item __getitem__) Sequence iteration of h11's Headers.
        headers: list[tuple[bytes, bytes]] = [
            (name.lower(), value) for name, value in event.headers.raw_items()]
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
        self.headers = headers
        self.content_length = length
        #: True once the body ended cleanly and the connection went back to the pool.
        self.reusable = False
        self._conn: Connection | None = conn
        self._release = release
        self._url = url
        self._done = False
        self._error: BaseException | None = None
        self._framing = conn.framing

    def __repr__(self) -> str:
        state = "done" if self._done else ("failed" if self._error else
                                           "open" if self._conn else "closed")
        return f"<UpstreamResponse {self.status} {self.reason.decode('latin-1')} [{state}]>"

    @property
    def complete(self) -> bool:
        """True once the whole body was read (the connection is already released)."""
        return self._done

    def receive_buffered(self) -> bytes | None:
        """Like :meth:`receive_some` but without I/O: the next body bytes h11 already
        holds (``b""`` at the clean end), or ``None`` when a socket read is needed.

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
        """Drain the body events h11 holds; ``None`` if there are none and it needs data."""
        h = conn.h11
        chunks: list[Any] = []
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(UpstreamBodyError(f"{self._url}: incomplete response body: {exc}"))
                if chunks:
                    return b"".join(chunks)
                raise self._error from None  # type: ignore[misc]
            kind = type(event)
            if kind is h11.Data:
                chunks.append(event.data)  # type: ignore[union-attr]
            elif kind is h11.EndOfMessage:
                self._finish(conn)
                return b"".join(chunks)
            elif event is h11.NEED_DATA:
                if chunks:
                    return b"".join(chunks)
                return None
            else:
                self._fail(UpstreamBodyError(f"{self._url}: unexpected {event!r}"))
                raise self._error  # type: ignore[misc]

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
                    data = cast(bytes, await conn.stream.receive_some(RECEIVE_SIZE))
                except NETWORK_ERRORS as exc:
                    self._fail(UpstreamBodyError(
                        f"{self._url}: connection broke during the response body: {exc}"))
                    raise self._error from exc  # type: ignore[misc]
                framing = self._framing
                if framing is not None and data and not framing.done:
                    # checked before h11 parses it: a bad size line would make h11
                    # hand out the following bytes as chunk data
                    try:
                        framing.feed(data)
                    except ChunkedBodyError as exc:
                        self._fail(UpstreamBodyError(
                            f"{self._url}: malformed chunked response body: {exc}"))
                        raise self._error from None  # type: ignore[misc]
                conn.h11.receive_data(data)
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
