"""A listener that must never be contacted, for SSRF and host-routing tests.

Point a crafted request at the canary's address (by default on ``127.0.0.2``, another
loopback address on Linux, so "some other host" really is another host) and assert
afterwards that nothing connected to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio

from ._net import (
    NETWORK_ERRORS,
    ListeningPeer,
    RestartableListener,
    owning_nursery,
)

__all__ = ["Canary", "open_canary"]

_PEEK_TIMEOUT = 0.2
_PEEK_SIZE = 65536


class Canary(ListeningPeer):
    """A running canary; get one from :func:`open_canary`.

    Attributes:
        accepted: how many connections reached it.
        received: the first bytes each connection sent (read for at most 0.2 s), to
            show in a failure message what leaked.
    """

    def __init__(self, nursery: trio.Nursery, *, host: str, port: int) -> None:
        self.accepted = 0
        self.received: list[bytes] = []
        self._listener = RestartableListener(nursery, self._on_connection, host=host, port=port)

    def __repr__(self) -> str:
        return f"<Canary {self.url} accepted={self.accepted}>"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def assert_untouched(self) -> None:
        """Raise ``AssertionError`` (showing what arrived) if anything connected."""
        if self.accepted:
            raise AssertionError(
                f"canary {self.url} was contacted {self.accepted} time(s): {self.received!r}"
            )

    async def _on_connection(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        data = b""
        with trio.move_on_after(_PEEK_TIMEOUT), contextlib.suppress(*NETWORK_ERRORS):
            data = await stream.receive_some(_PEEK_SIZE)
        self.received.append(data)


@contextlib.asynccontextmanager
async def open_canary(host: str = "127.0.0.2", *, port: int = 0) -> AsyncIterator[Canary]:
    """Run a canary listener for the ``async with`` block."""
    async with owning_nursery() as nursery:
        canary = Canary(nursery, host=host, port=port)
        canary._listener.open()
        try:
            yield canary
        finally:
            canary._listener.close()
