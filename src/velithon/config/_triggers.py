"""What starts a reload: SIGHUP, (with ``--watch``) a change of the file's content, or a
request from code that handles SIGHUP itself (``velithon gateway``'s server, which reloads
its TLS certificate on the same signal).

All of them only *ask* for a reload, through a channel of size 1: a request made while one
is already waiting adds nothing, because the waiting reload reads the file as it is when
it runs. Reloads themselves run one at a time in a single task, so a burst of signals
or of editor saves becomes at most two reloads, never concurrent ones.

The file is compared by content, read every ``poll_interval`` seconds: touching it
changes nothing, and an editor that saves by renaming a new file into place is seen
like any other change. A file that cannot be read for a moment (mid-rename) is tried
again at the next poll. The read is a plain blocking one: a configuration file is a few
kilobytes on a local disk, read once a second, which costs less than handing it to a
worker thread and keeps each poll one step of the event loop.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable

import trio

__all__ = ["ReloadTriggers"]

LOGGER = logging.getLogger("velithon.config")
_SIGHUP: int | None = getattr(signal, "SIGHUP", None)  # absent on Windows


class ReloadTriggers:
    """Runs ``reload()`` when SIGHUP arrives (``signal``), the file at ``path`` changes, or
    :meth:`ask` is called.

    :meth:`ask` is the entry point of whoever else decides that a reload is due, such as a
    server that handles SIGHUP itself because it reloads its TLS certificate on the same
    signal (only one receiver gets a signal, so exactly one place may listen for it). A
    request made before :meth:`run` starts waits in the channel and is served as soon as
    it does.
    """

    def __init__(self, path: str | None, reload: Callable[[], Awaitable[None]], *,
                 signal: bool, poll_interval: float) -> None:
        self.path = path
        self.reload = reload
        self.signal = signal
        self.poll_interval = poll_interval
        self._requests, self._pending = trio.open_memory_channel[None](1)

    def ask(self) -> None:
        """Ask for a reload without waiting for it (sync, in the trio thread or before the
        triggers run); a request while one is already waiting adds nothing, because the
        waiting reload reads the file as it is when it runs."""
        try:
            self._requests.send_nowait(None)
        except trio.WouldBlock:
            pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Watch and reload until cancelled; ``started()`` once every trigger is armed."""
        async with trio.open_nursery() as nursery:
            if self.signal and _SIGHUP is not None:
                await nursery.start(self._on_signal)
            if self.path is not None:
                await nursery.start(self._watch, self.path)
            task_status.started()
            async for _ in self._pending:
                await self.reload()

    async def _on_signal(self, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert _SIGHUP is not None
        with trio.open_signal_receiver(_SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                LOGGER.debug("SIGHUP received: reloading the configuration")
                self.ask()

    async def _watch(self, path: str, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        last = _read(path)
        task_status.started()
        while True:
            await trio.sleep(self.poll_interval)
            content = _read(path)
            if content is None or content == last:
                continue
            # An editor or a script may write the file in several steps: reload only
            # once the content stayed the same for one more poll.
            await trio.sleep(self.poll_interval)
            if _read(path) != content:
                continue
            last = content
            LOGGER.debug("%s changed: reloading the configuration", path)
            self.ask()


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None
