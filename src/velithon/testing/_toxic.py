"""An in-process TCP proxy that degrades the link to an upstream (toxiproxy in trio).

Put it between a gateway and a backend to test what no well-behaved backend does on its
own: a slow or sliced link, a connection cut after N bytes, an RST in the middle of a
keep-alive, a link that goes silent. Toxics are added and removed while traffic flows.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Callable, Iterator

import attrs
import trio

from ._net import (
    NETWORK_ERRORS,
    ChangeSignal,
    ListeningPeer,
    RestartableListener,
    owning_nursery,
    reset_now,
)
from ._toxics import (
    Bandwidth,
    Direction,
    Down,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    Timeout,
    Toxic,
)

__all__ = ["ToxicProxy", "open_toxic_proxy"]

_RECEIVE_SIZE = 65536
#: Bandwidth is enforced in slices of 1/20 s, so throughput stays smooth.
_BANDWIDTH_SLICES_PER_SECOND = 20


@attrs.define(eq=False)
class _Link:
    """One proxied connection: client side, upstream side, and its toxic draws."""

    client: trio.SocketStream
    upstream: trio.SocketStream
    opened_at: float
    scope: trio.CancelScope
    affected: dict[str, bool] = attrs.Factory(dict)
    sent: dict[str, int] = attrs.Factory(lambda: {"upstream": 0, "downstream": 0})


def _is_reset(exc: BaseException) -> bool:
    return isinstance(exc.__cause__, ConnectionResetError) or isinstance(exc, ConnectionResetError)


class ToxicProxy(ListeningPeer):
    """A running proxy; get one from :func:`open_toxic_proxy`.

    Attributes:
        upstream: ``(host, port)`` new connections go to; may be changed at runtime.
        connections_accepted, connections_active, upstream_connect_failures: counts.
        bytes_upstream, bytes_downstream: bytes forwarded in each direction.
        resets, timeouts, limit_closes: connections ended by that toxic.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        upstream: tuple[str, int],
        *,
        host: str,
        port: int,
        seed: int,
    ) -> None:
        self.upstream = upstream
        self.connections_accepted = 0
        self.connections_active = 0
        self.upstream_connect_failures = 0
        self.bytes_upstream = 0
        self.bytes_downstream = 0
        self.resets = 0
        self.timeouts = 0
        self.limit_closes = 0
        self._rng = random.Random(seed)
        self._toxics: dict[str, Toxic] = {}
        self._added_at: dict[str, float] = {}
        self._names = itertools.count(1)
        self._changed = ChangeSignal()
        self._listener = RestartableListener(nursery, self._serve_connection, host=host, port=port)

    def __repr__(self) -> str:
        return (
            f"<ToxicProxy {self.url} -> {self.upstream[0]}:{self.upstream[1]}"
            f" toxics={sorted(self._toxics)} active={self.connections_active}>"
        )

    @property
    def url(self) -> str:
        """``http://host:port``: point the gateway (or client) here instead of upstream."""
        return f"http://{self.host}:{self.port}"

    @property
    def toxics(self) -> dict[str, Toxic]:
        """A copy of the active toxics by name."""
        return dict(self._toxics)

    def add_toxic(self, toxic: Toxic, *, name: str | None = None) -> str:
        """Activate ``toxic`` now, for open and future connections; returns its name.

        Raises:
            ValueError: a toxic with that name is already active.
        """
        if name is None:
            name = f"{toxic.kind}_{toxic.direction}_{next(self._names)}"
        if name in self._toxics:
            raise ValueError(f"toxic {name!r} already exists")
        self._toxics[name] = toxic
        self._added_at[name] = trio.current_time()
        if isinstance(toxic, Down):
            self._listener.close()
        self._changed.notify()
        return name

    def remove_toxic(self, name: str) -> None:
        """Deactivate a toxic (removing the last ``down`` listens again, same port).

        Raises:
            KeyError: no such toxic.
        """
        toxic = self._toxics.pop(name)
        del self._added_at[name]
        if isinstance(toxic, Down) and not any(isinstance(t, Down) for t in self._toxics.values()):
            self._listener.open()
        self._changed.notify()

    def clear_toxics(self) -> None:
        for name in list(self._toxics):
            self.remove_toxic(name)

    async def wait_until(self, predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; re-checked whenever a counter changes.

        Raises:
            trio.TooSlowError: still false after ``timeout`` seconds.
        """
        await self._changed.wait_until(predicate, timeout)

    def _applies(self, link: _Link, name: str, toxic: Toxic) -> bool:
        decided = link.affected.get(name)
        if decided is None:
            decided = toxic.toxicity >= 1.0 or self._rng.random() < toxic.toxicity
            link.affected[name] = decided
        return decided

    def _active(self, link: _Link, direction: Direction) -> list[Toxic]:
        return [
            toxic
            for name, toxic in self._toxics.items()
            if toxic.direction == direction and self._applies(link, name, toxic)
        ]

    def _next_deadline(self, link: _Link) -> tuple[float, Toxic | None]:
        """The earliest reset_peer/timeout that will end ``link``."""
        best: tuple[float, Toxic | None] = (float("inf"), None)
        for name, toxic in self._toxics.items():
            timed = isinstance(toxic, ResetPeer) or (isinstance(toxic, Timeout) and toxic.after)
            if timed and self._applies(link, name, toxic):
                assert isinstance(toxic, ResetPeer | Timeout)
                at = max(link.opened_at, self._added_at[name]) + toxic.after
                best = min(best, (at, toxic), key=lambda pair: pair[0])
        return best

    async def _watch(self, link: _Link) -> None:
        """Fire reset_peer/timeout toxics on time, re-planning when toxics change."""
        while True:  # ends by firing, or when the link's scope is cancelled
            deadline, toxic = self._next_deadline(link)
            with trio.move_on_at(deadline):
                await self._changed.wait()
                continue
            if isinstance(toxic, ResetPeer):
                reset_now(link.client if toxic.direction == "downstream" else link.upstream)
                self.resets += 1
            else:
                self.timeouts += 1
            link.scope.cancel()
            self._changed.notify()
            return

    def _pieces(self, toxics: list[Toxic], data: bytes) -> Iterator[tuple[float, bytes, float]]:
        """Split ``data`` into writes: (pause before, piece, pause after).

        Bandwidth waits *before* a piece (a piece can't arrive before its bytes had time
        to cross the link); the slicer's delay comes after, between pieces.
        """
        slicer = next((t for t in toxics if isinstance(t, Slicer)), None)
        rates = [t.rate for t in toxics if isinstance(t, Bandwidth)]
        rate = min(rates) if rates else None
        offset = 0
        while offset < len(data):  # bounded: every piece is at least one byte
            if slicer is not None:
                spread = min(slicer.size_variation, slicer.average_size - 1)
                size = slicer.average_size + self._rng.randint(-spread, spread)
            elif rate is not None:
                size = max(1, rate // _BANDWIDTH_SLICES_PER_SECOND)
            else:
                size = len(data)
            piece = data[offset : offset + size]
            offset += len(piece)
            yield (len(piece) / rate if rate else 0.0), piece, (slicer.delay if slicer else 0.0)

    async def _forward(
        self, link: _Link, dst: trio.SocketStream, direction: Direction, data: bytes
    ) -> bool:
        """Send ``data`` through the toxics; False when a limit_data toxic ends the link."""
        toxics = self._active(link, direction)
        if any(isinstance(t, Timeout) for t in toxics):
            return True  # the link is silent: data is dropped
        for toxic in toxics:
            if isinstance(toxic, Latency):
                jitter = self._rng.uniform(-toxic.jitter, toxic.jitter) if toxic.jitter else 0.0
                await trio.sleep(max(0.0, toxic.seconds + jitter))
        limits = [t.nbytes for t in toxics if isinstance(t, LimitData)]
        keep = True
        if limits:
            room = max(0, min(limits) - link.sent[direction])
            if len(data) >= room:
                data, keep = data[:room], False
        for before, piece, after in self._pieces(toxics, data):
            if before:
                await trio.sleep(before)
            await dst.send_all(piece)
            link.sent[direction] += len(piece)
            if direction == "upstream":
                self.bytes_upstream += len(piece)
            else:
                self.bytes_downstream += len(piece)
            self._changed.notify()  # wait_until() on the byte counters must wake up
            if after:
                await trio.sleep(after)
        if not keep:
            self.limit_closes += 1
        return keep

    async def _pump(
        self, link: _Link, src: trio.SocketStream, dst: trio.SocketStream, direction: Direction
    ) -> None:
        """Copy one direction; an RST on one side is passed on as an RST to the other."""
        while True:  # ends at EOF, an error, or a limit_data close
            try:
                data = await src.receive_some(_RECEIVE_SIZE)
            except NETWORK_ERRORS as exc:
                if _is_reset(exc):
                    reset_now(dst)
                link.scope.cancel()
                return
            if not data:
                with contextlib.suppress(*NETWORK_ERRORS):
                    await dst.send_eof()
                return
            try:
                keep = await self._forward(link, dst, direction, data)
            except NETWORK_ERRORS as exc:
                if _is_reset(exc):
                    reset_now(src)
                keep = False
            if not keep:
                link.scope.cancel()
                return

    async def _serve_connection(self, client: trio.SocketStream) -> None:
        self.connections_accepted += 1
        self._changed.notify()
        try:
            upstream = await trio.open_tcp_stream(*self.upstream)
        except OSError:
            self.upstream_connect_failures += 1
            self._changed.notify()
            return
        async with upstream:
            self.connections_active += 1
            try:
                with trio.CancelScope() as scope:
                    link = _Link(client, upstream, trio.current_time(), scope)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._watch, link)
                        async with trio.open_nursery() as pumps:
                            pumps.start_soon(self._pump, link, client, upstream, "upstream")
                            pumps.start_soon(self._pump, link, upstream, client, "downstream")
                        nursery.cancel_scope.cancel()
            finally:
                self.connections_active -= 1
                self._changed.notify()


@contextlib.asynccontextmanager
async def open_toxic_proxy(
    upstream_host: str,
    upstream_port: int,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
) -> AsyncIterator[ToxicProxy]:
    """Run a TCP proxy to ``upstream_host:upstream_port`` for the ``async with`` block.

    ``seed`` feeds the proxy's ``random.Random`` (toxicity draws, jitter, slice sizes),
    so a run with the same traffic is repeatable.
    """
    async with owning_nursery() as nursery:
        proxy = ToxicProxy(nursery, (upstream_host, upstream_port), host=host, port=port, seed=seed)
        proxy._listener.open()
        try:
            yield proxy
        finally:
            proxy._listener.close()
