"""A backend that replays raw byte scripts, one per connection (VTest style).

Some upstream bugs can't be produced by a well-behaved HTTP library: a wrong
``Content-Length``, ``Transfer-Encoding`` together with ``Content-Length``, a garbage
status line, bytes after the body, a ``101`` nobody asked for, a response before the
request was read. A script states exactly which bytes go out and when, and the backend
records exactly which bytes came in.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import attrs
import h11
import trio

from ._http import MAX_HEAD_SIZE
from ._net import (
    ChangeSignal,
    RestartableListener,
    RestartablePeer,
    close_gracefully,
    owning_nursery,
    reset_now,
)

__all__ = [
    "Close",
    "Expect",
    "ReadRequest",
    "Reset",
    "ScriptError",
    "ScriptedBackend",
    "ScriptedConnection",
    "Send",
    "Sleep",
    "Step",
    "open_scripted_backend",
]

_RECEIVE_SIZE = 65536


@attrs.frozen
class ReadRequest:
    """Read one complete request (head and body, as h11 frames it)."""


@attrs.frozen
class Expect:
    """Read ``len(data)`` bytes and require them to equal ``data``."""

    data: bytes


@attrs.frozen
class Send:
    """Write ``data`` as is."""

    data: bytes


@attrs.frozen
class Sleep:
    seconds: float


@attrs.frozen
class Reset:
    """Abort the connection with an RST."""


@attrs.frozen
class Close:
    """Close the connection with a FIN."""


Step = ReadRequest | Expect | Send | Sleep | Reset | Close
Script = Sequence[Step] | Callable[[int], Sequence[Step]]


class ScriptError(AssertionError):
    """The peer did not send what the script expected."""


@attrs.define
class ScriptedConnection:
    """What happened on one connection.

    ``received`` is every byte that arrived (including while the final close drains);
    ``requests`` holds the raw bytes of each request read by ``ReadRequest``.
    ``completed`` turns True when the last step ran (before the closing FIN has
    drained); it stays False if the peer closed first, or on a mismatch (then
    ``error`` says what was wrong).
    """

    index: int
    received: bytearray = attrs.Factory(bytearray)
    requests: list[bytes] = attrs.Factory(list)
    steps_done: int = 0
    completed: bool = False
    error: str | None = None


class _PeerClosed(Exception):
    pass


class _Reader:
    """Buffers incoming bytes so ``Expect`` and ``ReadRequest`` can share them."""

    def __init__(self, stream: trio.SocketStream, record: ScriptedConnection) -> None:
        self._stream = stream
        self.record = record
        self.buffer = bytearray()

    async def fill(self) -> None:
        data = await self._stream.receive_some(_RECEIVE_SIZE)
        if not data:
            raise _PeerClosed
        self.record.received += data
        self.buffer += data

    async def expect(self, wanted: bytes) -> None:
        while len(self.buffer) < len(wanted):  # bounded: each turn reads or raises
            await self.fill()
        got = bytes(self.buffer[: len(wanted)])
        if got != wanted:
            raise ScriptError(f"expected {wanted!r}, got {got!r}")
        del self.buffer[: len(wanted)]

    async def read_request(self) -> bytes:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
        if self.buffer:  # h11 reads an empty feed as EOF
            conn.receive_data(bytes(self.buffer))
        fed = len(self.buffer)
        try:
            while not isinstance(event := conn.next_event(), h11.EndOfMessage):  # one event a turn
                if event is h11.NEED_DATA:
                    await self.fill()
                    conn.receive_data(bytes(self.buffer[fed:]))
                    fed = len(self.buffer)
                elif isinstance(event, h11.ConnectionClosed):
                    raise _PeerClosed
        except h11.RemoteProtocolError as exc:
            raise ScriptError(f"malformed request: {exc}") from None
        leftover = conn.trailing_data[0]
        raw = bytes(self.buffer[: len(self.buffer) - len(leftover)])
        self.buffer = bytearray(leftover)
        return raw


class ScriptedBackend(RestartablePeer):
    """A running scripted backend; get one from :func:`open_scripted_backend`."""

    def __init__(self, nursery: trio.Nursery, script: Script, *, host: str, port: int) -> None:
        self.connections: list[ScriptedConnection] = []
        self._script = script
        self._changed = ChangeSignal()
        self._listener = RestartableListener(nursery, self._serve_connection, host=host, port=port)

    def __repr__(self) -> str:
        return f"<ScriptedBackend {self.url} connections={len(self.connections)}>"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def connections_accepted(self) -> int:
        return len(self.connections)

    @property
    def errors(self) -> list[str]:
        """Every script mismatch, in connection order."""
        return [c.error for c in self.connections if c.error is not None]

    def _steps_for(self, index: int) -> Sequence[Step]:
        return self._script(index) if callable(self._script) else self._script

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        record = ScriptedConnection(len(self.connections))
        self.connections.append(record)
        self._changed.notify()
        reader = _Reader(stream, record)
        ending: Step = Close()
        try:
            for step in self._steps_for(record.index):
                if isinstance(step, Reset | Close):
                    ending = step
                    record.steps_done += 1
                    break
                await self._play(step, stream, reader)
                record.steps_done += 1
                self._changed.notify()
            record.completed = True
        except _PeerClosed:
            pass
        except ScriptError as exc:
            record.error = str(exc)
        self._changed.notify()
        if isinstance(ending, Reset):
            reset_now(stream)
        else:
            await close_gracefully(stream, sink=record.received.extend)

    async def _play(self, step: Step, stream: trio.SocketStream, reader: _Reader) -> None:
        match step:
            case Send(data=data):
                await stream.send_all(data)
            case Sleep(seconds=seconds):
                await trio.sleep(seconds)
            case Expect(data=data):
                await reader.expect(data)
            case ReadRequest():
                reader.record.requests.append(await reader.read_request())
            case _:
                raise TypeError(f"not a script step: {step!r}")


@contextlib.asynccontextmanager
async def open_scripted_backend(
    script: Script, *, host: str = "127.0.0.1", port: int = 0, strict: bool = True
) -> AsyncIterator[ScriptedBackend]:
    """Run ``script`` on every accepted connection for the ``async with`` block.

    ``script`` is a list of steps (the same for every connection) or a callable
    ``connection_index -> list of steps``. A script that runs out of steps closes the
    connection with a FIN.

    Error handling: a mismatch (``Expect`` got other bytes, ``ReadRequest`` got a
    malformed request) closes that connection; with ``strict`` it is raised as
    :class:`ScriptError` when the block exits normally.
    """
    async with owning_nursery() as nursery:
        backend = ScriptedBackend(nursery, script, host=host, port=port)
        backend._listener.open()
        try:
            yield backend
        finally:
            backend._listener.close()
    if strict and backend.errors:
        raise ScriptError("; ".join(backend.errors))
