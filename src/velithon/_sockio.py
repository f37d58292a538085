"""Reads and writes on a plain TCP socket without trio's per-call scheduling.

trio's ``SocketStream.send_all``/``receive_some`` yield to the scheduler on every call,
even when the kernel could take or give the bytes at once; on a proxied request
(four socket operations) that costs more than the system calls themselves (a send and
a receive: ~50 µs through the stream, ~4 µs as bare calls). :class:`FastSocket` makes
the call first and waits for readiness only when the kernel says it would block,
which is exactly when trio would have to wait anyway.

Skipping the yield must not let one busy connection starve the others, or delay its
own cancellation (deadlines and shutdown work by cancelling): every
:data:`YIELD_EVERY` operations that did not wait, one checkpoint is taken.

Errors match ``SocketStream``'s: a failed system call becomes
``trio.BrokenResourceError`` (the ``OSError`` as its cause), a closed socket
``trio.ClosedResourceError``.
"""

from __future__ import annotations

import errno
import os

import trio

__all__ = ["YIELD_EVERY", "FastSocket"]

#: Operations completed without waiting after which one checkpoint is taken anyway.
YIELD_EVERY = 16


class FastSocket:
    """``send_all``/``receive_some`` for one connected, non-blocking TCP socket."""

    __slots__ = ("_fd", "_socket", "_unyielded")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._socket = stream.socket
        self._fd = stream.socket.fileno()
        self._unyielded = 0

    async def _maybe_yield(self) -> None:
        self._unyielded += 1
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes, ``b""`` at the end of the stream."""
        while True:
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                self._unyielded = 0
                await trio.lowlevel.wait_readable(self._socket)
                continue
            except OSError as exc:
                raise _broken(exc) from exc
            await self._maybe_yield()
            return data

    async def receive_when_ready(self, max_bytes: int) -> bytes:
        """:meth:`receive_some` for when bytes are unlikely to be there yet.

        The next request on a kept-alive connection, or the response to a request just
        sent, is almost never in the socket yet: trying first would cost a failed
        system call on every request, so this waits for readiness first.
        """
        self._unyielded = 0
        await trio.lowlevel.wait_readable(self._socket)
        return await self.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``, waiting for the socket to drain when it is full."""
        view = memoryview(data)
        total = len(view)
        sent = 0
        while sent < total:
            try:
                sent += os.write(self._fd, view[sent:] if sent else view)
            except BlockingIOError:
                self._unyielded = 0
                await trio.lowlevel.wait_writable(self._socket)
                continue
            except OSError as exc:
                raise _broken(exc) from exc
        await self._maybe_yield()


def _broken(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket connection broke: {exc}")
