"""Reading a request body for forwarding.

Two things decide whether an upload survives a gateway:

* **Framing.** A body with a known length is forwarded with that
  ``Content-Length``, streamed. Many backends (Python's ``http.server``, several
  WSGI servers) never read a chunked request body and would see an empty one,
  answer 200, and leave the client believing its upload arrived. Chunked
  framing is used only when the client sent chunked; a chunked body that fits
  the buffer limit is read whole and sent with its length instead, which every
  backend understands.
* **Whose time it is.** Waiting for a slow or stalled client is not the
  upstream's fault. :class:`ClientWait` measures every wait for client bytes
  and moves the try's deadline out by that much, so request timeouts count
  only time spent on the upstream; a client that sends nothing for
  ``idle_timeout`` seconds gets :class:`ClientBodyTimeout` (a 408), which no
  breaker, outlier detector or latency figure ever sees.

The first part of every body (all of a small one) is read *before* a target is
picked, so a client that stalls early holds no upstream connection and no
per-target concurrency slot.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NamedTuple

import trio

from .._exceptions import ClientDisconnected
from .._lb.alarms import Alarm

__all__ = ["ClientBodyTimeout", "ClientDisconnected", "ClientWait", "RequestBody",
           "bodiless_request", "read_request_body"]

Receive = Callable[[], Awaitable[Mapping[str, Any]]]

_BODYLESS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"DELETE"})


class ClientBodyTimeout(Exception):
    """The client stopped sending its request body for longer than allowed."""


class ClientWait:
    """Time spent waiting for the client, kept out of the upstream's budget.

    While a try is in flight, :meth:`attach` hands over its alarm: every wait for
    client bytes holds that alarm for the duration of the wait and then sets it
    back later by exactly the time waited. ``total`` is
    the sum of all waits, which callers add to their own deadlines and subtract
    from measured latencies.
    """

    __slots__ = ("_alarm", "idle_timeout", "total")

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.total = 0.0
        self._alarm: Alarm | None = None

    def attach(self, alarm: Alarm | None) -> None:
        """Extend ``alarm`` by future waits (``None`` detaches)."""
        self._alarm = alarm

    async def receive(self, receive: Receive) -> Mapping[str, Any]:
        """One ``receive()`` under the idle timeout, its duration accounted for.

        Raises:
            ClientBodyTimeout: nothing arrived within ``idle_timeout`` seconds.
            ClientDisconnected: the client went away.
        """
        start = trio.current_time()
        alarm = self._alarm
        saved = math.inf
        if alarm is not None:
            saved = alarm.deadline
            alarm.move_to(math.inf)
        message: Mapping[str, Any] | None = None
        try:
            with trio.move_on_at(start + self.idle_timeout):
                message = await receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ClientDisconnected() from exc
        finally:
            waited = trio.current_time() - start
            self.total += waited
            if alarm is not None:
                alarm.move_to(saved + waited)
        if message is None:
            raise ClientBodyTimeout(
                f"no request body bytes for {self.idle_timeout:g} s")
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        return message


class RequestBody(NamedTuple):
    """What the gateway holds of a request body when it picks a target.

    Attributes:
        body: ``None`` (no body), the whole body as bytes, or an iterator that
            yields the part already read and then streams the rest.
        replayable: the whole body is held, so a retry can send it again.
        length: the declared ``Content-Length`` of a streamed body (``None``
            for bytes bodies, which carry their own length, and for chunked
            streams).
    """

    body: bytes | AsyncIterator[bytes] | None
    replayable: bool
    length: int | None = None

    def framing_headers(self) -> list[tuple[bytes, bytes]]:
        """The ``Content-Length`` line a streamed body must be sent with, if any."""
        if self.length is None:
            return []
        return [(b"content-length", b"%d" % self.length)]


def _declared_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    length: int | None = None
    chunked = False
    for key, value in headers:
        if key == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif key == b"transfer-encoding":
            chunked = True
    return length, chunked


def bodiless_request(headers: list[tuple[bytes, bytes]], method: bytes) -> RequestBody | None:
    """The body of a request whose head declares none, or ``None`` when it declares one.

    No framing means no body (RFC 9112 §6.3): most requests need nothing read, and
    knowing it without a coroutine saves one on each of them.
    """
    length, chunked = _declared_framing(headers)
    return _bodiless(length, chunked, method)


def _bodiless(length: int | None, chunked: bool, method: bytes) -> RequestBody | None:
    if chunked or length:
        return None
    return RequestBody(b"" if length == 0 and method not in _BODYLESS else None, True)


async def read_request_body(
    headers: list[tuple[bytes, bytes]],
    receive: Receive,
    method: bytes,
    wait: ClientWait,
    *,
    buffer_limit: int,
    chunked_buffer_limit: int,
) -> RequestBody:
    """Read the start of a request body (all of it when it fits) before a pick.

    Args:
        headers: the request's headers as the server parsed them (lower-case).
        buffer_limit: bodies up to this many bytes are read whole (replayable);
            of larger ones this many bytes are read before returning.
        chunked_buffer_limit: a chunked body up to this many bytes (or
            ``buffer_limit``, whichever is larger) is read whole and then
            forwarded with a ``Content-Length``.
    """
    length, chunked = _declared_framing(headers)
    bodiless = _bodiless(length, chunked, method)
    if bodiless is not None:
        return bodiless
    limit = max(buffer_limit, chunked_buffer_limit) if chunked else buffer_limit
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await wait.receive(receive)
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            return RequestBody(b"".join(chunks), True)
        if size >= limit:
            break
    return RequestBody(_stream(b"".join(chunks), receive, wait), False,
                       None if chunked else length)


async def _stream(head: bytes, receive: Receive, wait: ClientWait) -> AsyncIterator[bytes]:
    if head:
        yield head
    while True:
        message = await wait.receive(receive)
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
