"""What starts a reload: SIGHUP, and (with ``--watch``) a change of the file's content.

Both only *ask* for a reload, through a channel of size 1: a request made while one is
already waiting adds nothing, because the waiting reload reads the file as it is when
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
    """Runs ``reload()`` when SIGHUP arrives (``signal``) or the file at ``path`` changes."""

    def __init__(self, path: str | None, reload: Callable[[], Awaitable[None]], *,
                 signal: bool, poll_interval: float) -> None:
        self.path = path
        self.reload = reload
        self.signal = signal
        self.poll_interval = poll_interval

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Watch until cancelled; ``started()`` once every trigger is armed."""
        if not (self.path is not None or (self.signal and _SIGHUP is not None)):
            task_status.started()  # nothing to watch, but a service runs until cancelled
            await trio.sleep_forever()
        send, receive = trio.open_memory_channel[None](1)
        async with trio.open_nursery() as nursery:
            async with send:
                if self.signal and _SIGHUP is not None:
                    await nursery.start(self._on_signal, send.clone())
                if self.path is not None:
                    await nursery.start(self._watch, self.path, send.clone())
            nursery.start_soon(self._run_reloads, receive)
            task_status.started()

    async def _run_reloads(self, receive: trio.MemoryReceiveChannel[None]) -> None:
        async with receive:
            async for _ in receive:
                await self.reload()

    @staticmethod
    def _ask(send: trio.MemorySendChannel[None]) -> None:
        try:
            send.send_nowait(None)
        except trio.WouldBlock:
            pass  # a reload is already waiting: it will read the file as it is then

    async def _on_signal(self, send: trio.MemorySendChannel[None], *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
        assert _SIGHUP is not None
        async with send:
            with trio.open_signal_receiver(_SIGHUP) as signals:
                task_status.started()
                async for _ in signals:
                    LOGGER.debug("SIGHUP received: reloading the configuration")
                    self._ask(send)

    async def _watch(self, path: str, send: trio.MemorySendChannel[None], *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with send:
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
                self._ask(send)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None
