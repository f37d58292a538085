"""SlidingCounts: exact counts over the slices inside the window."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from velithon._lb.window import SlidingCounts


def test_events_leave_the_window_one_slice_at_a_time() -> None:
    counts = SlidingCounts(10.0, 10)
    counts.add(0.5, first=2)
    counts.add(3.2, second=1)
    assert counts.totals() == (2, 1)
    counts.advance(9.99)  # slice [0, 1) is still the oldest inside
    assert counts.totals() == (2, 1)
    counts.advance(10.0)
    assert counts.totals() == (0, 1)
    counts.advance(12.99)
    assert counts.totals() == (0, 1)
    counts.advance(13.0)
    assert counts.totals() == (0, 0)


def test_time_never_moves_back() -> None:
    counts = SlidingCounts(10.0, 10)
    counts.add(50.0, first=1)
    counts.add(1.0, second=1)  # counted at 50.0, not resurrecting slice [1, 2)
    assert counts.totals() == (1, 1)


@pytest.mark.parametrize(("span", "slices"), [(0.0, 10), (math.inf, 10), (10.0, 0)])
def test_bad_windows_are_refused(span: float, slices: int) -> None:
    with pytest.raises(ValueError, match="sliding window"):
        SlidingCounts(span, slices)


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(0, 3), st.integers(0, 3)), max_size=60))
def test_totals_match_a_brute_force_count(events: list[tuple[float, int, int]]) -> None:
    counts = SlidingCounts(10.0, 10)
    now = 0.0
    seen: list[tuple[float, int, int]] = []
    for dt, first, second in events:
        now += dt
        counts.add(now, first=first, second=second)
        seen.append((now, first, second))
        oldest = math.floor(now) - 9  # whole slices of one second
        inside = [(a, b) for t, a, b in seen if math.floor(t) >= oldest]
        assert counts.totals() == (sum(a for a, _ in inside), sum(b for _, b in inside))


def test_reading_at_a_later_time_changes_nothing() -> None:
    counts = SlidingCounts(10.0, 10)
    counts.add(0.5, first=1)
    assert counts.totals(20.0) == (0, 0)  # as seen from later...
    assert counts.totals() == (1, 0)  # ...without forgetting anything
