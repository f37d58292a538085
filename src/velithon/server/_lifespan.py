"""The ASGI lifespan protocol: startup before accepting, shutdown after draining.

The app's lifespan call runs as a long-lived task for the whole server life, so anything
it starts (background services) outlives every request. An app that raises or returns
before completing startup, without sending ``lifespan.startup.failed``, is taken not to
support lifespan (as uvicorn's "auto" mode does: many raw apps assume ``scope["type"] ==
"http"``); the server carries on, logging a warning with the traceback if the app had
already taken ``lifespan.startup``. ``lifespan.startup.failed`` stops the server with its
message.
"""

from __future__ import annotations

from typing import Any

import trio

from .._types import ASGIApp, Message
from ._state import logger

__all__ = ["Lifespan", "LifespanFailure"]


class LifespanFailure(Exception):
    """The app's lifespan startup failed; the message says why."""


class Lifespan:
    """Drives one app's lifespan task; ``state`` is the dict shared into every scope."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout
        self.state: dict[str, Any] = {}
        self.supported = True
        self._send_ch, self._recv_ch = trio.open_memory_channel[dict[str, Any]](1)
        self._asked = False
        self._shutdown_sent = False
        self._startup_done = trio.Event()
        self._shutdown_done = trio.Event()
        self._finished = trio.Event()
        self._error: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the app's lifespan call until it returns (or this task is cancelled)."""
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        task_status.started()
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:
            if not self._asked:
                self.supported = False
                logger.info("ASGI 'lifespan' protocol appears unsupported (%r)", exc)
            elif not self._startup_done.is_set() and self._error is None:
                self.supported = False
                logger.warning(
                    "the app raised on lifespan.startup; carrying on without lifespan",
                    exc_info=exc,
                )
            else:
                phase = "shutdown" if self._shutdown_sent else "startup"
                logger.error("exception in lifespan %s", phase, exc_info=exc)
                if self._error is None:
                    self._error = f"{type(exc).__name__}: {exc}"
        else:
            if not self._startup_done.is_set():
                self.supported = False
        finally:
            self._finished.set()
            self._startup_done.set()
            self._shutdown_done.set()

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer.

        Raises:
            LifespanFailure: the app reported or raised a startup failure, or timed out.
        """
        self._send_ch.send_nowait({"type": "lifespan.startup"})
        with trio.move_on_after(self.timeout) as scope:
            await self._startup_done.wait()
        if scope.cancelled_caught:
            raise LifespanFailure(f"lifespan startup did not complete within {self.timeout}s")
        if self._error is not None:
            raise LifespanFailure(self._error)

    async def shutdown(self) -> bool:
        """Send ``lifespan.shutdown`` and wait (bounded); return False if it failed."""
        if not self.supported or self._finished.is_set():
            return self._error is None
        try:
            self._send_ch.send_nowait({"type": "lifespan.shutdown"})
        except trio.WouldBlock:  # the app never took lifespan.startup: nothing to shut down
            return True
        self._shutdown_sent = True
        with trio.move_on_after(self.timeout) as scope:
            await self._shutdown_done.wait()
        if scope.cancelled_caught:
            logger.error("lifespan shutdown did not complete within %ss", self.timeout)
            return False
        if self._error is not None:
            logger.error("lifespan shutdown failed: %s", self._error)
            return False
        return True

    async def _receive(self) -> Message:
        self._asked = True
        return await self._recv_ch.receive()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._startup_done.set()
        elif kind == "lifespan.startup.failed":
            self._error = message.get("message") or "lifespan startup failed"
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self._error = message.get("message") or "lifespan shutdown failed"
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for a lifespan scope")
