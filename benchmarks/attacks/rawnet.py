"""Raw sockets for the attackers, and the counters every attack reports.

Attackers must write exactly the bytes they mean (half a request line, a head without
its final CRLF, a body that stops), so they use plain trio socket streams instead of
an HTTP client. What they observe goes into an :class:`AttackStats`, printed in the
report next to the scenario it belongs to.
"""

from __future__ import annotations

import collections
import socket
import struct

import attrs
import trio

__all__ = ["AttackStats", "RateLimiter", "connect", "read_status", "reset"]

_CONNECT_TIMEOUT = 5.0
NETWORK_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


@attrs.define
class AttackStats:
    """What one attack did and what the gateway did to it."""

    opened: int = 0
    connect_failures: int = 0
    closed_by_gateway: int = 0
    closed_by_us: int = 0
    open_now: int = 0
    peak_open: int = 0
    statuses: collections.Counter[int] = attrs.field(factory=collections.Counter)

    def opened_one(self) -> None:
        self.opened += 1
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)

    def closed_one(self, *, by_gateway: bool) -> None:
        self.open_now -= 1
        if by_gateway:
            self.closed_by_gateway += 1
        else:
            self.closed_by_us += 1

    def summary(self) -> str:
        """One line for the report."""
        answers = ", ".join(f"{code}×{n}" for code, n in sorted(self.statuses.items()))
        return (f"opened {self.opened} (peak {self.peak_open} at once), "
                f"connect failures {self.connect_failures}, closed by gateway "
                f"{self.closed_by_gateway}, by us {self.closed_by_us}"
                + (f"; gateway answered {answers}" if answers else ""))


class RateLimiter:
    """At most ``rate`` acquisitions per second across all tasks sharing it."""

    def __init__(self, rate: float) -> None:
        self.period = 1.0 / rate
        self._next = 0.0

    async def acquire(self) -> None:
        now = trio.current_time()
        slot = max(now, self._next)
        self._next = slot + self.period
        await trio.sleep_until(slot)


async def connect(host: str, port: int, stats: AttackStats) -> trio.SocketStream | None:
    """Open a connection, counting it; ``None`` (and a counted failure) if refused or slow."""
    try:
        with trio.fail_after(_CONNECT_TIMEOUT):
            stream = await trio.open_tcp_stream(host, port)
    except (*NETWORK_ERRORS, trio.TooSlowError):
        stats.connect_failures += 1
        return None
    stats.opened_one()
    return stream


def reset(stream: trio.SocketStream) -> None:
    """Abort with an RST (``SO_LINGER`` 0): no FIN, no TIME_WAIT left on our side."""
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    stream.socket.close()


def read_status(data: bytes) -> int | None:
    """The status code of a response that starts with ``data``, if it is one."""
    if not data.startswith(b"HTTP/1."):
        return None
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
