"""What every connection of one server shares: the app, the config, the drain registry.

Timeouts and graceful shutdown need to reach live connections (close the idle ones, mark
the busy ones ``Connection: close``, send WebSockets a 1001, cancel what is left at the
deadline), so each
connection registers itself here for its lifetime. Only the connection's own task adds or
removes it; the server's watchdog and drain tasks only call the hooks of
:class:`Drainable`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._exceptions import ClientDisconnected
from .._types import ASGIApp
from ._config import ServerConfig

if TYPE_CHECKING:
    from ._tls import TLSCertificates

__all__ = ["ClientDisconnected", "Drainable", "ServerState"]

logger = logging.getLogger("velithon.server")
#: The ``Server`` field every response gets unless the app sent its own.
SERVER_FIELD = (b"server", b"velithon")
access_logger = logging.getLogger("velithon.access")


class Drainable(Protocol):
    deadline: float

    def check_deadline(self, now: float) -> None:
        """Watchdog tick: act on a passed deadline."""

    def begin_drain(self) -> None:
        """Shutdown started: close now if idle, else finish the current exchange and close."""

    def force_close(self) -> None:
        """The grace period is over: cancel the app (503 if nothing was sent yet)."""


class ServerState:
    """Per-server shared context, owned by the server task."""

    def __init__(self, app: ASGIApp, config: ServerConfig, lifespan_state: dict[str, Any],
                 tls: TLSCertificates | None = None) -> None:
        self.app = app
        self.config = config
        self.lifespan_state = lifespan_state
        self.tls = tls  # the certificate new connections get, on a TLS server
        self.draining = False
        self.connections: set[Drainable] = set()
        self._drained: trio.Event | None = None
        self._date_second = -1
        self._date = b""
        self._date_and_server = b""
        #: trio's clock (the run's own, so a test's MockClock too), read in one call:
        #: ``trio.current_time()`` goes through three Python frames, and a connection
        #: reads the clock for every deadline it sets
        self.now = trio.lowlevel.current_clock().current_time

    def register(self, conn: Drainable) -> None:
        self.connections.add(conn)
        if self.draining:
            conn.begin_drain()

    def unregister(self, conn: Drainable) -> None:
        self.connections.discard(conn)
        if not self.connections and self._drained is not None:
            self._drained.set()

    def begin_drain(self) -> None:
        self.draining = True
        self._drained = trio.Event()
        if not self.connections:
            self._drained.set()
        for conn in list(self.connections):
            conn.begin_drain()

    async def wait_drained(self) -> None:
        assert self._drained is not None, "begin_drain() first"
        await self._drained.wait()

    def check_deadlines(self) -> None:
        now = trio.current_time()
        for conn in list(self.connections):
            if now >= conn.deadline:
                conn.check_deadline(now)

    def force_close_all(self) -> None:
        for conn in list(self.connections):
            conn.force_close()

    def date_header(self) -> bytes:
        """The ``Date`` value, formatted once per second.

        This is the only wall-clock read in the server: ``Date`` is calendar time by
        definition; every timeout uses trio's clock.
        """
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
            self._date_and_server = b"date: %s\r\n%s: %s\r\n" % (self._date, *SERVER_FIELD)
        return self._date

    def date_and_server_lines(self) -> bytes:
        """Our ``Date`` and ``Server`` header lines, serialised (a response with neither)."""
        self.date_header()
        return self._date_and_server
