"""One-for-one supervision of actors on top of trio nurseries.

trio gives one-cancels-all nurseries and nothing else. A target actor that
crashes on a bug must not take its siblings or the router down, so every actor
runs under :func:`supervise`: a crash restarts that actor alone, after a
backoff, keeping its inbox (the supervisor owns the channel, so senders never
notice). More than ``max_restarts`` crashes inside ``window`` seconds means the
actor cannot recover by itself: the error escalates to the parent nursery,
which is trio's one-cancels-all.

Only ``Exception`` is caught: ``Cancelled`` and ``KeyboardInterrupt`` always
propagate.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .._structured import StartedFlag

LOGGER = logging.getLogger("velithon.supervisor")


@attrs.frozen
class SupervisorConfig:
    """Restart intensity: at most ``max_restarts`` within ``window`` seconds."""

    max_restarts: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    window: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    backoff: float = attrs.field(default=0.1, validator=attrs.validators.ge(0))
    max_backoff: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))


class RestartIntensityExceeded(RuntimeError):
    """An actor crashed more often than its supervisor allows."""


@attrs.define
class SupervisedStats:
    name: str
    restarts: int = 0
    last_error: str | None = None


async def supervise(
    run: Callable[..., Awaitable[Any]],
    *,
    name: str,
    config: SupervisorConfig,
    stats: SupervisedStats | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``run(task_status=...)`` and restart it when it raises.

    ``task_status.started()`` is passed through on the first incarnation only,
    so ``await nursery.start(supervise, ...)`` returns once the actor is ready.
    Backoff doubles with each restart inside the window, capped at
    ``config.max_backoff``.
    """
    recent: deque[float] = deque()
    first = True
    start = StartedFlag(task_status)
    while True:
        try:
            if first:
                await run(task_status=start)
            else:
                await run()
            return
        except Exception as exc:
            if first and not start.called:
                raise  # failed before it was ever ready: the caller's start() raises
            now = trio.current_time()
            recent.append(now)
            while recent and recent[0] <= now - config.window:
                recent.popleft()
            if stats is not None:
                stats.restarts += 1
                stats.last_error = f"{type(exc).__name__}: {exc}"
            if len(recent) > config.max_restarts:
                LOGGER.error("%s crashed %d times in %ss; escalating",
                             name, len(recent), config.window)
                raise RestartIntensityExceeded(
                    f"{name} crashed {len(recent)} times within {config.window}s"
                ) from exc
            delay = min(config.backoff * 2 ** (len(recent) - 1), config.max_backoff)
            LOGGER.warning("%s crashed (%s); restarting in %.3fs", name, exc, delay, exc_info=True)
            first = False
            await trio.sleep(delay)

