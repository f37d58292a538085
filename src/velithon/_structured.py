"""Small tools for trio's structured concurrency, shared by every layer.

* :class:`StartedFlag` remembers whether a task called ``task_status.started()``,
  so a supervisor can tell "failed while starting" from "failed later".
* :func:`owning_nursery` is a nursery that belongs to an ``async with`` block: it is
  cancelled when the block ends, and an error from the block (or one task) comes out
  as itself rather than wrapped in an ``ExceptionGroup``, so callers and
  ``pytest.raises`` see what was raised.
* :func:`first_leaf` digs the first real exception out of a group, for one-line
  error reports.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import trio

__all__ = ["StartedFlag", "all_leaves_are", "first_leaf", "owning_nursery"]

T = TypeVar("T")


class StartedFlag(Generic[T]):
    """Forwards ``started()`` to the real task status and remembers that it was called."""

    __slots__ = ("_inner", "called")

    def __init__(self, inner: trio.TaskStatus[T]) -> None:
        self._inner = inner
        self.called = False

    def started(self, value: T | None = None) -> None:
        self.called = True
        self._inner.started(value)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def owning_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery cancelled when the ``async with`` body ends; lone errors come out unwrapped.

    A group of exactly one exception is unwrapped (its chaining is kept as it was);
    several concurrent failures stay a group, since no single one tells the story.
    """
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        context, cause = exc.__context__, exc.__cause__
        try:
            raise exc
        finally:
            exc.__context__, exc.__cause__ = context, cause
            del exc, group


def all_leaves_are(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``error`` is a ``kind``, or a group (nested or not) of nothing else.

    An app that runs tasks in a nursery reports a client that went away as a group of
    :class:`~velithon.server.ClientDisconnected` errors; that is still a client gone
    away, not a failure of the app.
    """
    if isinstance(error, BaseExceptionGroup):
        return all(all_leaves_are(leaf, kind) for leaf in error.exceptions)
    return isinstance(error, kind)


def first_leaf(error: BaseException) -> BaseException:
    """The first exception that is not a group, depth first."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
