"""FastSocket: the hot path's socket I/O must lose nothing to a cancellation."""

from __future__ import annotations

import socket
import struct

import trio

from velithon._sockio import YIELD_AFTER, FastSocket


async def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def test_a_read_cancelled_at_its_yield_consumes_nothing() -> None:
    ours, theirs = await _pair()
    fast = FastSocket(ours)
    await theirs.send_all(b"request bytes")
    fast._waited -= 10 * YIELD_AFTER  # a yield is due: it comes before the read
    with trio.CancelScope() as scope:
        scope.cancel()
        await fast.receive_some(1024)
    assert scope.cancelled_caught  # the checkpoint came, and came first
    assert await fast.receive_some(1024) == b"request bytes"  # nothing was lost


async def test_a_write_cancelled_at_its_yield_writes_nothing() -> None:
    ours, theirs = await _pair()
    fast = FastSocket(ours)
    fast._waited -= 10 * YIELD_AFTER
    with trio.CancelScope() as scope:
        scope.cancel()
        await fast.send_all(b"never sent")
    assert scope.cancelled_caught
    await fast.send_all(b"sent")
    assert await theirs.receive_some(1024) == b"sent"


async def test_errors_are_trios() -> None:
    ours, theirs = await _pair()
    fast = FastSocket(ours)
    theirs.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await theirs.send_all(b"x")
    theirs.socket.close()  # RST
    assert await fast.receive_some(10) in (b"x", b"")
    ours.socket.close()
    try:
        await fast.receive_some(10)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass
    else:
        raise AssertionError("a closed socket must raise")
