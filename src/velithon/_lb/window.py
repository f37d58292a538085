"""Two event counts over a sliding time window, in constant memory.

A breaker's failure ratio and a retry budget both ask "how many of these, and how
many of those, happened in the last N seconds". The window is cut into a fixed
number of slices; a slice that has fallen out of the window is recycled the next
time its slot is used, so memory never grows and old events are forgotten at the
granularity of one slice.
"""

from __future__ import annotations

import math

__all__ = ["SlidingCounts"]


class SlidingCounts:
    """Counts of two kinds of event over the last ``span`` seconds.

    Time only moves forward: a ``now`` earlier than one seen before is treated as the
    latest one (a clock that stepped back must not resurrect old slices).
    """

    __slots__ = ("_first", "_ids", "_now", "_second", "_slices", "_width")

    def __init__(self, span: float, slices: int = 10) -> None:
        if not 0 < span < math.inf or slices < 1:
            raise ValueError(
                f"a sliding window needs span > 0 and slices >= 1, got {span}, {slices}")
        self._slices = slices
        self._width = span / slices
        self._first = [0] * slices
        self._second = [0] * slices
        self._ids = [-1] * slices
        self._now = -math.inf

    def _slot(self, now: float) -> int:
        if now < self._now:
            now = self._now
        self._now = now
        slice_id = math.floor(now / self._width)
        slot = slice_id % self._slices
        if self._ids[slot] != slice_id:
            self._ids[slot] = slice_id
            self._first[slot] = self._second[slot] = 0
        return slot

    def add(self, now: float, first: int = 0, second: int = 0) -> None:
        """Count ``first`` and ``second`` events at ``now``."""
        slot = self._slot(now)
        self._first[slot] += first
        self._second[slot] += second

    def advance(self, now: float) -> None:
        """Move the window to ``now`` without counting anything."""
        self._slot(now)

    def totals(self, now: float | None = None) -> tuple[int, int]:
        """``(first, second)`` inside the window ending at ``now`` (default: the latest seen).

        Reading never changes the counts, so statistics can be taken at any time.
        """
        end = self._now if now is None else max(now, self._now)
        if end == -math.inf:
            return 0, 0
        oldest = math.floor(end / self._width) - self._slices + 1
        first = second = 0
        for slot in range(self._slices):
            if self._ids[slot] >= oldest:
                first += self._first[slot]
                second += self._second[slot]
        return first, second
