"""Reads and writes on a plain TCP socket without trio's per-call scheduling.

trio's ``SocketStream.send_all``/``receive_some`` yield to the scheduler on every call,
even when the kernel could take or give the bytes at once; on a proxied request
(four socket operations) that costs more than the system calls themselves (a send and
a receive: ~50 µs through the stream, ~4 µs as bare calls). :class:`FastSocket` makes
the call first and waits for readiness only when the kernel says it would block,
which is exactly when trio would have to wait anyway.

Skipping the yield must not let one busy connection starve the others, or delay its
own cancellation (deadlines and shutdown work by cancelling): after :data:`YIELD_EVERY`
operations in a row that did not wait, the next one takes a checkpoint first. A count,
not a clock: reading the clock on every operation cost more than the count, and an
operation moves at most one read or write buffer, so the count bounds the time too.
The checkpoint always comes *before* the system call, never after: a cancellation must
never land between bytes read (or written) and the caller learning of them, or a
request's bytes would silently vanish from the stream.

Errors match ``SocketStream``'s: a failed system call becomes
``trio.BrokenResourceError`` (the ``OSError`` as its cause), a closed socket
``trio.ClosedResourceError``.
"""

from __future__ import annotations

import errno
import os

import trio

__all__ = ["YIELD_EVERY", "FastSocket"]

#: Socket operations in a row without a wait after which the next one yields first.
YIELD_EVERY = 16


class FastSocket:
    """``send_all``/``receive_some`` for one connected, non-blocking TCP socket."""

    __slots__ = ("_fd", "_socket", "_streak")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._socket = stream.socket
        self._fd = stream.socket.fileno()
        self._streak = 0  # operations since this socket last waited or yielded

    def restart_clock(self) -> None:
        """Count from zero: the task just waited elsewhere (a pooled connection taken up
        by a request that waited for the router)."""
        self._streak = 0

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes, ``b""`` at the end of the stream."""
        # a checkpoint if this socket has not waited for a while, before any I/O
        # (written out here: a helper coroutine per call costs more than the check)
        if self._streak >= YIELD_EVERY:
            await trio.lowlevel.checkpoint()
            self._streak = 0
        else:
            self._streak += 1
        while True:
            try:
                return os.read(self._fd, max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
                self._streak = 0
            except OSError as exc:
                raise _broken(exc) from exc

    async def receive_when_ready(self, max_bytes: int) -> bytes:
        """:meth:`receive_some` for when bytes are unlikely to be there yet.

        The next request on a kept-alive connection, or the response to a request just
        sent, is almost never in the socket yet: trying first would cost a failed
        system call on every request, so this waits for readiness first.
        """
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            self._streak = 0
            try:
                return os.read(self._fd, max_bytes)
            except BlockingIOError:
                continue  # readable, then taken: wait again
            except OSError as exc:
                raise _broken(exc) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``, waiting for the socket to drain when it is full.

        A cancellation can only come before the first byte is written or while waiting
        for room, as with trio's own ``send_all``.
        """
        # a checkpoint if this socket has not waited for a while, before any I/O
        # (written out here: a helper coroutine per call costs more than the check)
        if self._streak >= YIELD_EVERY:
            await trio.lowlevel.checkpoint()
            self._streak = 0
        else:
            self._streak += 1
        try:  # the usual case: the kernel takes it all at once, no view needed
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _broken(exc) from exc
        if type(data) is bytes and sent == len(data):
            return
        view = memoryview(data).cast("B")
        total = len(view)
        while sent < total:
            try:
                sent += os.write(self._fd, view[sent:])
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._fd)
                self._streak = 0
            except OSError as exc:
                raise _broken(exc) from exc


def _broken(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket connection broke: {exc}")
