"""Attacks with many connections: a connect/close flood, and idle keep-alive hoarding.

**Flood**: a few tasks open connections as fast as a shared rate limit allows and end
each one at once, cycling through four styles a server has to survive: close without
a byte, half a request line then RST, a full request then close, RST without a byte.
RSTs also keep the runner from filling its ephemeral ports with TIME_WAIT sockets.

**Idle keep-alive**: open ``count`` connections (bounded by the descriptor limit, see
``scenarios``) as fast as ``open_rate`` allows, half of them after one complete request
(keep-alive idle, as browsers leave them), half with no request at all, and hold them.
A connection the gateway closes (its keep-alive or header timeout) is not reopened:
reopening thousands of them would turn this into a connection flood, already a
scenario of its own, and would saturate the single process that also measures the
well-behaved client. How long the gateway let them live is part of the report. At the
end, every connection still open is closed by us.

The requests go to ``/idle`` and ``/flood``, paths no route matches: the gateway's
own server answers ``404``, so these attacks load the gateway, not the backends.
"""

from __future__ import annotations

import itertools

import trio
from benchmarks.attacks.rawnet import (
    NETWORK_ERRORS,
    AttackStats,
    RateLimiter,
    connect,
    read_status,
    reset,
)

__all__ = ["flood", "idle_keepalive"]


async def _flood_slot(host: str, port: int, first_style: int, until: float,
                      limiter: RateLimiter, stats: AttackStats, budget: list[int]) -> None:
    request = f"GET /flood HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    for style in itertools.islice(itertools.count(first_style), budget[0]):
        await limiter.acquire()
        if trio.current_time() >= until or budget[0] <= 0:
            return
        budget[0] -= 1
        stream = await connect(host, port, stats)
        if stream is None:
            continue
        try:
            if style % 4 == 1:
                await stream.send_all(b"GET /flo")
                reset(stream)
            elif style % 4 == 2:
                await stream.send_all(request)
                with trio.move_on_after(2.0):
                    status = read_status(await stream.receive_some(4096))
                    if status is not None:
                        stats.statuses[status] += 1
            elif style % 4 == 3:
                reset(stream)
        except NETWORK_ERRORS:
            pass
        finally:
            stats.closed_one(by_gateway=False)
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def flood(host: str, port: int, *, seconds: float, rate: float, tasks: int = 16,
                max_opens: int = 200_000) -> AttackStats:
    """Open and end connections at ``rate`` per second for ``seconds``."""
    stats = AttackStats()
    until = trio.current_time() + seconds
    limiter, budget = RateLimiter(rate), [max_opens]
    async with trio.open_nursery() as nursery:
        for index in range(tasks):
            nursery.start_soon(_flood_slot, host, port, index, until, limiter, stats, budget)
    return stats


async def _hold_until_closed(stream: trio.SocketStream, until: float) -> bool:
    """Read and drop whatever comes until ``until``; True if the gateway closed first."""
    with trio.move_on_at(until):
        try:
            while await stream.receive_some(65536):  # bounded: ends at EOF or ``until``
                pass
        except NETWORK_ERRORS:
            pass
        return True
    return False


async def _idle_slot(host: str, port: int, with_request: bool, until: float,
                     opener: RateLimiter, stats: AttackStats, lifetimes: list[float]) -> None:
    request = f"GET /idle HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    await opener.acquire()
    if trio.current_time() >= until:
        return
    stream = await connect(host, port, stats)
    if stream is None:
        return
    opened = trio.current_time()
    by_gateway = True
    try:
        if with_request:
            await stream.send_all(request)
            with trio.move_on_at(until):
                status = read_status(await stream.receive_some(65536))
                if status is not None:
                    stats.statuses[status] += 1
        by_gateway = await _hold_until_closed(stream, until)
    except NETWORK_ERRORS:
        pass
    finally:
        stats.closed_one(by_gateway=by_gateway)
        if by_gateway:
            lifetimes.append(trio.current_time() - opened)
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def idle_keepalive(host: str, port: int, *, seconds: float, count: int,
                         open_rate: float = 2000.0) -> tuple[AttackStats, str]:
    """Open ``count`` idle connections and hold them for ``seconds``.

    Returns the counters and a note on how long the gateway let its closed ones live.
    """
    stats = AttackStats()
    lifetimes: list[float] = []
    until = trio.current_time() + seconds
    opener = RateLimiter(open_rate)
    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(_idle_slot, host, port, index % 2 == 0, until, opener, stats,
                               lifetimes)
    lifetimes.sort()
    note = (f"; the gateway closed its ones after {lifetimes[0]:.1f}–{lifetimes[-1]:.1f} s "
            f"(median {lifetimes[len(lifetimes) // 2]:.1f} s)" if lifetimes else "")
    return stats, note
