"""The pooled keep-alive HTTP/1.1 client on the forwarding hot path.

One :class:`UpstreamPool` per target. ``await pool.request(method, target, headers,
body)`` returns an :class:`~velithon._proxy.connection.UpstreamResponse` whose body
streams from the connection; the connection returns to the pool when the body
ends cleanly (see ``_upstream_conn`` for the reuse rule).

Why not httpx: on the hot path every microsecond is per request, and httpx
costs 3-9x more per request here (``benchmarks/bench_upstream.py``). This pool
is one parser (llhttp, or h11 as the fallback) per TCP connection (``TCP_NODELAY`` is
trio's default), LIFO reuse, no per-request task for small bytes bodies, and no
timeouts of its own besides ``connect_timeout``: callers wrap requests in
``trio.fail_after``, and cancellation anywhere closes the connection, which is
never returned half-used. Before a plain-TCP connection is reused, a zero-timeout
poll drops it if the upstream already closed it or sent bytes nobody asked for.

Error handling:
    * connect failure or ``connect_timeout`` → ``UpstreamConnectError``
      (``UpstreamConnectTimeout``); nothing was sent.
    * closed/reset before any response byte → ``UpstreamResetError``. When that
      happens on a *reused* connection (a stale keep-alive) and the request is
      idempotent with a bytes/None body, it is retried **once** on a fresh
      connection first.
    * malformed, oversized or unsolicited (101) head → ``UpstreamProtocolError``.
    * an unsendable request (CR/LF in a header value) → ``UpstreamRequestError``.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterable

import attrs
import trio

from .._exceptions import (
    ConfigError,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamResetError,
)
from .._http11.llhttp import resolve_parser
from .._lb.alarms import Alarm
from .._lb.retry import is_idempotent
from .connection import (
    Body,
    Connection,
    PreparedRequest,
    UpstreamResponse,
    connection_type,
    prepare_request,
    send_request,
)
from .origin import Origin

__all__ = ["Origin", "PoolConfig", "PoolStatistics", "UpstreamPool", "UpstreamResponse"]

_BYTES = (bytes, bytearray, memoryview)


@attrs.frozen
class PoolConfig:
    """Connection pool settings for every target of a route; opens their pools.

    This is what the balancing engine is given to reach its targets: it checks each
    target URL (:meth:`Origin.parse`) and opens one :class:`UpstreamPool` per target.
    ``ssl_context`` serves https targets and their health probes.
    """

    max_idle: int = 32
    idle_timeout: float = 60.0
    connect_timeout: float = 5.0
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, eq=False)
    #: The response parser: ``auto`` (httptools when installed), ``httptools`` or ``h11``.
    parser: str = "auto"

    def check(self, url: str) -> str:
        origin = Origin.parse(url)
        resolve_parser(self.parser)
        return origin.url

    def open(self, url: str) -> UpstreamPool:
        return UpstreamPool(Origin.parse(url), max_idle=self.max_idle,
                            idle_timeout=self.idle_timeout,
                            connect_timeout=self.connect_timeout, ssl_context=self.ssl_context,
                            parser=self.parser)


@attrs.frozen
class PoolStatistics:
    """A snapshot of one pool. ``discarded_total`` counts connections closed instead of
    reused (errors, early answers, expired or dropped idle ones), not those closed by
    ``aclose()``."""

    idle: int
    active: int
    opened_total: int
    reused_total: int
    discarded_total: int


class UpstreamPool:
    """Keep-alive connections to one origin, reused LIFO.

    Args:
        origin: an :class:`Origin` or a URL string for :meth:`Origin.parse`.
        max_idle: idle connections kept; beyond it the oldest is closed.
        idle_timeout: seconds an idle connection may wait before it is discarded
            (checked lazily when a connection is wanted).
        connect_timeout: seconds for TCP connect plus TLS handshake.
        ssl_context: for https; default ``ssl.create_default_context()``.
        max_head_bytes, max_headers: response head limits (→ ``UpstreamProtocolError``).
        parser: ``auto`` (httptools when installed), ``httptools`` or ``h11``.

    Use it as an async context manager, or call :meth:`aclose`.
    """

    def __init__(
        self,
        origin: Origin | str,
        *,
        max_idle: int = 32,
        idle_timeout: float = 60.0,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        max_head_bytes: int = 64 * 1024,
        max_headers: int = 100,
        parser: str = "auto",
    ) -> None:
        self.origin = origin if isinstance(origin, Origin) else Origin.parse(origin)
        if max_idle < 0 or idle_timeout < 0 or connect_timeout <= 0:
            raise ConfigError(
                "UpstreamPool needs max_idle >= 0, idle_timeout >= 0 and connect_timeout > 0, "
                f"got {max_idle}, {idle_timeout}, {connect_timeout}")
        if max_head_bytes < 1024 or max_headers < 1:
            raise ConfigError("UpstreamPool needs max_head_bytes >= 1024 and max_headers >= 1")
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._max_head_bytes = max_head_bytes
        self._max_headers = max_headers
        self._parser = resolve_parser(parser)
        self._connection_type = connection_type(self._parser)
        self._url = self.origin.url
        # Mutable state: the idle connections (oldest first) and four counters.
        self._idle: deque[Connection] = deque()
        self._active = 0
        self._opened = 0
        self._reused = 0
        self._discarded = 0
        self._closed = False

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context used for https (None until the first https connection)."""
        return self._ssl_context

    def __repr__(self) -> str:
        return f"<UpstreamPool {self._url} [{self._active} active, {len(self._idle)} idle]>"

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(len(self._idle), self._active, self._opened, self._reused,
                              self._discarded)

    async def __aenter__(self) -> UpstreamPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close idle connections now; active ones close when their response ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        await trio.lowlevel.checkpoint()

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None = None,
        alarm: Alarm | None = None,
    ) -> UpstreamResponse:
        """Send one request and return the response once its head has arrived.

        ``headers`` is the complete list (Host included); only framing is added.
        ``alarm`` bounds the exchange: when it fires, the connect is cancelled or the
        connection in use is shut down, and the call fails (the caller, holding the
        alarm, knows it was the deadline). A fired alarm also stops the stale
        connection replay below.

        Raises:
            UpstreamConnectError, UpstreamResetError, UpstreamProtocolError,
            UpstreamRequestError: see the module docstring.
            trio.ClosedResourceError: the pool was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"{self!r} is closed")
        request = prepare_request(self._parser, method, target, headers, body, url=self._url)
        conn = self._acquire()
        if conn is not None:
            try:
                return await self._exchange(conn, request, body, alarm)
            except UpstreamResetError:
                replayable = (is_idempotent(method.decode("latin-1"))
                              and (body is None or isinstance(body, _BYTES)))
                if not replayable or (alarm is not None and alarm.fired):
                    raise
                # A stale keep-alive connection: replay once on a fresh one.
        return await self._exchange(await self._connect(alarm), request, body, alarm)

    # ---- internals -----------------------------------------------------------------

    async def _exchange(self, conn: Connection, request: PreparedRequest, body: Body,
                        alarm: Alarm | None) -> UpstreamResponse:
        if alarm is not None:
            alarm.action = conn.abort
        try:
            head = await send_request(conn, request, body, url=self._url,
                                      max_head_bytes=self._max_head_bytes,
                                      max_headers=self._max_headers)
            return UpstreamResponse(head, conn, self._release, self._url)
        except BaseException:
            self._release(conn, False)
            raise

    def sweep(self) -> None:
        """Close idle connections that expired or that the upstream closed.

        Reuse checks both lazily; this lets a target that gets no requests (down, or
        ejected) give its sockets back, instead of holding them half-closed until its
        next request. Called by the target's actor after each health probe.
        """
        idle = self._idle
        if not idle:
            return
        oldest_allowed = trio.current_time() - self._idle_timeout
        kept = [conn for conn in idle
                if conn.idle_since >= oldest_allowed and not conn.looks_dropped()]
        if len(kept) < len(idle):
            for conn in idle:
                if conn not in kept:
                    conn.close()
                    self._discarded += 1
            idle.clear()
            idle.extend(kept)

    def _acquire(self) -> Connection | None:
        """Pop the most recently used live idle connection (LIFO), discarding dead ones.

        Every connection is polled before reuse, however briefly it was idle: readable
        means the upstream closed it or sent bytes nobody asked for (a late second
        response, a body after a HEAD answer), which would otherwise be read as the
        next request's response.
        """
        idle = self._idle
        if not idle:
            return None
        oldest_allowed = trio.current_time() - self._idle_timeout
        while idle and idle[0].idle_since < oldest_allowed:
            idle.popleft().close()
            self._discarded += 1
        while idle:
            conn = idle.pop()
            if conn.looks_dropped():
                conn.close()
                self._discarded += 1
                continue
            self._active += 1
            self._reused += 1
            conn.taken()
            return conn
        return None

    def _release(self, conn: Connection, reuse: bool) -> None:
        """Take a connection back from a finished exchange (sync: safe when cancelled)."""
        self._active -= 1
        if reuse and not self._closed and self._max_idle > 0:
            conn.recycle()
            conn.idle_since = trio.current_time()
            if len(self._idle) >= self._max_idle:
                self._idle.popleft().close()
                self._discarded += 1
            self._idle.append(conn)
        else:
            conn.close()
            if not self._closed or not reuse:
                self._discarded += 1

    async def _connect(self, alarm: Alarm | None = None) -> Connection:
        origin = self.origin
        tcp: trio.SocketStream | None = None
        try:
            with trio.fail_after(self._connect_timeout) as scope:
                if alarm is not None:
                    alarm.action = scope.cancel
                tcp = await trio.open_tcp_stream(origin.host, origin.port)
                stream: trio.abc.Stream = tcp
                if origin.scheme == "https":
                    if self._ssl_context is None:
                        self._ssl_context = ssl.create_default_context()
                    stream = trio.SSLStream(tcp, self._ssl_context, server_hostname=origin.host,
                                            https_compatible=True)
                    await stream.do_handshake()
        except trio.TooSlowError:
            _close_quietly(tcp)
            raise UpstreamConnectTimeout(
                f"Timed out connecting to {self._url} after {self._connect_timeout:g}s"
            ) from None
        except OSError as exc:
            _close_quietly(tcp)
            raise UpstreamConnectError(f"Cannot connect to {self._url}: {exc}") from exc
        except trio.BrokenResourceError as exc:
            _close_quietly(tcp)
            why = exc.__cause__ or exc
            raise UpstreamConnectError(f"TLS handshake with {self._url} failed: {why}") from exc
        except BaseException:
            _close_quietly(tcp)
            raise
        self._opened += 1
        self._active += 1
        return self._connection_type(stream, max_head_bytes=self._max_head_bytes)


def _close_quietly(stream: trio.SocketStream | None) -> None:
    if stream is not None:
        stream.socket.close()

