"""A one-shot reply slot for request/reply messages between tasks.

Every pick on the hot path is a request to the router actor that waits for one
answer. A per-request memory channel works, but costs three objects and a
buffer; this slot parks the waiting task directly with trio's low-level
primitives and is woken exactly once. It keeps the two properties the actor
protocol needs:

* the actor never blocks on replying (:meth:`Reply.send` is synchronous), and
* the actor learns when the requester has gone away (``send`` returns False),
  so it can undo a grant made for a requester that was cancelled meanwhile.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import outcome
import trio

T = TypeVar("T")

_PENDING = 0
_DONE = 1
_ABANDONED = 2


class Reply(Generic[T]):
    """A single-use reply: one task waits, another sends once."""

    __slots__ = ("_task", "_state", "_value")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._state = _PENDING
        self._value: outcome.Outcome[T] | None = None

    @property
    def abandoned(self) -> bool:
        """True once the requester stopped waiting (cancelled or timed out)."""
        return self._state == _ABANDONED

    def send(self, value: T) -> bool:
        """Deliver ``value``; returns False if nobody will ever read it."""
        return self._deliver(outcome.Value(value))

    def send_error(self, error: BaseException) -> bool:
        """Make the waiter's :meth:`wait` raise ``error``."""
        return self._deliver(outcome.Error(error))

    def _deliver(self, result: outcome.Outcome[T]) -> bool:
        if self._state != _PENDING:
            return False
        self._state = _DONE
        if self._task is not None:
            task, self._task = self._task, None
            trio.lowlevel.reschedule(task, result)
        else:
            self._value = result
        return True

    async def wait(self) -> T:
        """Wait for the reply; a cancellation marks the reply abandoned."""
        if self._state == _DONE and self._value is not None:
            await trio.lowlevel.checkpoint()
            return self._value.unwrap()
        if self._task is not None:
            raise RuntimeError("a Reply can only be awaited by one task")
        self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._task = None
            self._state = _ABANDONED
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)  # type: ignore[no-any-return]


def answer_failed(msg: object, error: BaseException) -> None:
    """Give the waiter of a request message ``error``, if the message has one.

    An actor that crashes while handling a request calls this before its supervisor
    restarts it, so no caller waits forever for an answer that will never come.
    """
    reply = getattr(msg, "reply", None)
    if isinstance(reply, Reply):
        reply.send_error(error)
