"""The alarm clock that keeps per-try deadlines without a cancel scope per try."""

from __future__ import annotations

import math

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon._lb.alarms import AlarmClock


async def _running_clock(nursery: trio.Nursery) -> AlarmClock:
    clock = AlarmClock()
    await nursery.start(clock.run)
    return clock


async def test_an_alarm_fires_at_its_deadline_and_runs_its_action(
        autojump_clock: trio.testing.MockClock) -> None:
    fired_at: list[float] = []
    async with trio.open_nursery() as nursery:
        clock = await _running_clock(nursery)
        alarm = clock.set(trio.current_time() + 5)
        alarm.action = lambda: fired_at.append(trio.current_time())
        await trio.sleep(4.999)
        assert not alarm.fired and fired_at == []
        await trio.sleep(0.002)
        assert alarm.fired and fired_at == [5.0]
        assert len(clock) == 0
        nursery.cancel_scope.cancel()


async def test_a_cleared_alarm_never_fires(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        clock = await _running_clock(nursery)
        alarm = clock.set(trio.current_time() + 1)
        clock.clear(alarm)
        await trio.sleep(10)
        assert not alarm.fired
        nursery.cancel_scope.cancel()


async def test_an_earlier_alarm_wakes_a_clock_sleeping_for_a_later_one(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        clock = await _running_clock(nursery)
        late = clock.set(100.0)
        await trio.sleep(1)  # the clock now sleeps until 100
        early = clock.set(3.0)
        await trio.sleep(2.5)
        assert early.fired and not late.fired
        nursery.cancel_scope.cancel()


async def test_a_held_alarm_set_back_later_still_fires(
        autojump_clock: trio.testing.MockClock) -> None:
    """An alarm held (deadline infinity) while the clock found nothing else to wait for
    must still fire once its deadline is restored: the client-wait pattern."""
    async with trio.open_nursery() as nursery:
        clock = await _running_clock(nursery)
        alarm = clock.set(10.0)
        await trio.sleep(2)
        alarm.move_to(math.inf)  # waiting for the client
        await trio.sleep(20)  # the clock woke at 10, found nothing due, slept for good
        assert not alarm.fired
        alarm.move_to(10.0 + 20)  # set back by the time waited
        await trio.sleep(7.9)
        assert not alarm.fired
        await trio.sleep(0.2)
        assert alarm.fired and trio.current_time() >= 30.0
        nursery.cancel_scope.cancel()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50), st.booleans()), min_size=1, max_size=20))
def test_exactly_the_uncleared_alarms_fire_each_at_its_deadline(
        plan: list[tuple[float, bool]]) -> None:
    fired_at: dict[int, float] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            clock = await _running_clock(nursery)
            alarms = []
            for i, (offset, _) in enumerate(plan):
                alarm = clock.set(offset)
                alarm.action = lambda i=i: fired_at.setdefault(i, trio.current_time())
                alarms.append(alarm)
            for alarm, (_, cleared) in zip(alarms, plan, strict=True):
                if cleared:
                    clock.clear(alarm)
            await trio.sleep(60)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    expected = {i for i, (_, cleared) in enumerate(plan) if not cleared}
    assert set(fired_at) == expected
    for i in expected:
        assert math.isclose(fired_at[i], plan[i][0], abs_tol=1e-9)  # MockClock rounding
