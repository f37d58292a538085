"""Deadlines for work in flight, kept by one task instead of a cancel scope each.

A cancel scope per forwarded try costs about as much as the rest of the try's
bookkeeping together (entering and leaving one is ~10 µs of Python). Tries almost
never time out, so the gateway keeps their deadlines the way its server keeps
connection deadlines: each try sets an :class:`Alarm` (a set insertion), and one
:class:`AlarmClock` task sleeps until the earliest deadline. When an alarm goes off
the clock marks it fired and runs the alarm's *action*, which interrupts whatever
the try is waiting on (the pool shuts the upstream socket down, or cancels a
connect). The try sees its I/O fail, finds the alarm fired, and reports a timeout.

The clock never closes a file descriptor itself: an action may only make the owner's
next system call fail. Closing belongs to the owning task, so a descriptor number is
never reused under a task that still holds it.

An alarm's deadline may be moved while it is set (time spent waiting for the client
is not the upstream's) with :meth:`Alarm.move_to`, which wakes the clock earlier
when needed; a deadline moved later needs nothing (the clock wakes at the old time,
finds nothing due, and sleeps again).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

__all__ = ["Alarm", "AlarmClock"]


class Alarm:
    """One deadline: ``fired`` once it passed while set; ``action`` runs when it fires."""

    __slots__ = ("_clock", "action", "deadline", "fired")

    def __init__(self, clock: AlarmClock, deadline: float) -> None:
        self._clock = clock
        self.deadline = deadline
        self.fired = False
        #: What interrupts the guarded work; replaced as the work moves on (connecting,
        #: then talking on a connection). Must not block and must not raise.
        self.action: Callable[[], None] | None = None

    def move_to(self, deadline: float) -> None:
        """A new deadline, earlier or later (``math.inf`` holds the alarm)."""
        self.deadline = deadline
        self._clock.wake_by(deadline)

    def fire(self) -> None:
        self.fired = True
        action = self.action
        if action is not None:
            action()

    def __repr__(self) -> str:
        return f"<Alarm at {self.deadline:.3f}{' fired' if self.fired else ''}>"


class AlarmClock:
    """Fires set alarms at their deadlines, from one task (:meth:`run`)."""

    __slots__ = ("_set", "_sleep")

    def __init__(self) -> None:
        self._set: set[Alarm] = set()
        self._sleep: trio.CancelScope | None = None  # the clock's current sleep

    def __len__(self) -> int:
        return len(self._set)

    def set(self, deadline: float) -> Alarm:
        """An alarm that fires at ``deadline`` unless :meth:`clear` comes first."""
        alarm = Alarm(self, deadline)
        self._set.add(alarm)
        self.wake_by(deadline)
        return alarm

    def clear(self, alarm: Alarm) -> None:
        """The guarded work finished: the alarm will not fire."""
        self._set.discard(alarm)

    def wake_by(self, deadline: float) -> None:
        """Make sure the clock is awake at ``deadline``."""
        sleep = self._sleep
        if sleep is not None and deadline < sleep.deadline:
            sleep.deadline = deadline

    def fire_due(self, now: float) -> None:
        """Fire every set alarm whose deadline is ``now`` or earlier."""
        due = [alarm for alarm in self._set if alarm.deadline <= now]
        for alarm in due:
            self._set.discard(alarm)
            alarm.fire()

    def next_deadline(self) -> float:
        return min((alarm.deadline for alarm in self._set), default=math.inf)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep time until cancelled."""
        task_status.started()
        while True:
            with trio.CancelScope(deadline=self.next_deadline()) as sleep:
                self._sleep = sleep
                try:
                    await trio.sleep_forever()
                finally:
                    self._sleep = None
            self.fire_due(trio.current_time())
