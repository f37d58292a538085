"""Socket plumbing shared by the test backends: a restartable listener and close styles.

A killed backend must refuse connections (``ECONNREFUSED``), and a restarted one must come
back on the port the gateway was configured with. :class:`RestartableListener` gives
every harness object that ``stop()``/``start()`` pair.

The two ways a peer can end a TCP connection matter to a proxy, so both are explicit here:
:func:`close_gracefully` sends a FIN (and drains, because closing a socket that still has
unread bytes makes the kernel send an RST instead), :func:`reset_now` sends an RST.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable

import trio

from .._structured import owning_nursery

__all__ = [
    "NETWORK_ERRORS",
    "ChangeSignal",
    "RestartableListener",
    "close_gracefully",
    "owning_nursery",
    "reset_now",
]

#: What a peer can make a socket operation raise; never includes ``trio.Cancelled``.
NETWORK_ERRORS: tuple[type[Exception], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)

_RECEIVE_SIZE = 65536
#: How long a FIN-closing side keeps reading so that late bytes don't turn into an RST.
_DRAIN_AFTER_FIN = 2.0

Handler = Callable[[trio.SocketStream], Awaitable[None]]


class ChangeSignal:
    """Lets a test wait for harness state to change, without polling or sleeping."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        """Wake every waiter; they re-check their predicate."""
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        """Wait for the next ``notify()``."""
        await self._event.wait()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once ``predicate()`` is true.

        Raises:
            trio.TooSlowError: it was still false after ``timeout`` seconds.
        """
        with trio.fail_after(timeout):
            while not predicate():  # bounded by the timeout
                await self._event.wait()


def reset_now(stream: trio.SocketStream) -> None:
    """Abort the connection: ``SO_LINGER`` with a zero timeout makes ``close()`` send RST."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


async def close_gracefully(
    stream: trio.SocketStream,
    *,
    drain_timeout: float = _DRAIN_AFTER_FIN,
    sink: Callable[[bytes], object] | None = None,
) -> None:
    """Send FIN, read until the peer closes (at most ``drain_timeout``), then close.

    Bytes read while draining go to ``sink`` if given, else they are dropped.
    """
    with contextlib.suppress(*NETWORK_ERRORS):
        await stream.send_eof()
        with trio.move_on_after(drain_timeout):
            while data := await stream.receive_some(_RECEIVE_SIZE):  # ends at EOF or timeout
                if sink is not None:
                    sink(data)
    await stream.aclose()


class RestartableListener:
    """A TCP accept loop that can be closed and reopened on the same port.

    ``open()`` binds and listens *synchronously*, so the port refuses or accepts the
    moment it returns; the accept loop is then a plain child of the owner's nursery
    (connections queue in the backlog until it runs, so there is no readiness race).
    ``close()`` closes the listening socket at once and cancels every connection
    handler; :meth:`wait_closed` returns when they have all unwound.

    Error handling: network errors raised by a handler end only that connection.
    Anything else is a bug and propagates into the owner's nursery.
    """

    def __init__(
        self, nursery: trio.Nursery, handler: Handler, *, host: str, port: int = 0
    ) -> None:
        self._nursery = nursery
        self._handler = handler
        self.host = host
        self._port = port
        self._socket: trio.socket.SocketType | None = None
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()
        self._done.set()

    @property
    def port(self) -> int:
        """The bound port; stays the same across ``close()``/``open()``."""
        return self._port

    @property
    def is_open(self) -> bool:
        return self._socket is not None

    def open(self) -> None:
        """Bind (reusing the previous port) and start accepting.

        Raises:
            OSError: the port is taken by someone else.
        """
        if self._socket is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        raw = socket.socket(family, socket.SOCK_STREAM)
        try:
            # REUSEADDR lets a restart bind while old connections sit in TIME_WAIT.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            raw.bind((self.host, self._port))
            raw.listen(128)
        except OSError:
            raw.close()
            raise
        self._port = raw.getsockname()[1]
        self._socket = trio.socket.from_stdlib_socket(raw)
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self._nursery.start_soon(
            self._accept_loop, trio.SocketListener(self._socket), self._scope, self._done
        )

    def close(self) -> None:
        """Refuse new connections now and cancel the open ones (they close with FIN)."""
        if self._socket is None:
            return
        assert self._scope is not None
        self._scope.cancel()
        self._socket.close()
        self._socket = None
        self._scope = None

    async def wait_closed(self) -> None:
        """Wait until every connection handler of the last incarnation has finished."""
        await self._done.wait()

    async def _accept_loop(
        self, listener: trio.SocketListener, scope: trio.CancelScope, done: trio.Event
    ) -> None:
        try:
            with scope:
                async with trio.open_nursery() as connections:
                    while True:  # ends when close() cancels `scope` and closes the socket
                        try:
                            stream = await listener.accept()
                        except trio.ClosedResourceError:
                            break
                        connections.start_soon(self._run_handler, stream)
        finally:
            listener.socket.close()
            done.set()

    async def _run_handler(self, stream: trio.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(*NETWORK_ERRORS):
                await self._handler(stream)


class ListeningPeer:
    """What every harness peer shares: an address that survives a restart.

    Subclasses set ``self._listener`` (a :class:`RestartableListener`).
    """

    _listener: RestartableListener

    @property
    def host(self) -> str:
        return self._listener.host

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def is_running(self) -> bool:
        return self._listener.is_open


class RestartablePeer(ListeningPeer):
    """A peer tests can kill and revive on the same port, and wait on.

    Subclasses also set ``self._changed`` (a :class:`ChangeSignal` they notify
    whenever they record something).
    """

    _changed: ChangeSignal

    async def stop(self) -> None:
        """Close the listener and every connection: new connections are refused."""
        self._listener.close()
        await self._listener.wait_closed()

    async def start(self) -> None:
        """Listen again on the same port (records and settings are kept)."""
        self._listener.open()
        await trio.lowlevel.checkpoint()

    async def wait_until(self, predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; re-checked whenever something is recorded.

        Raises:
            trio.TooSlowError: still false after ``timeout`` seconds.
        """
        await self._changed.wait_until(predicate, timeout)
