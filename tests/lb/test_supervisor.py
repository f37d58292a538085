"""One-for-one supervision: restarts, intensity window, escalation (virtual time)."""

from __future__ import annotations

import pytest
import trio

from velithon._lb.supervisor import (
    RestartIntensityExceeded,
    SupervisedStats,
    SupervisorConfig,
    supervise,
)


async def test_crashing_actor_restarts_with_doubling_backoff(
        autojump_clock: trio.abc.Clock) -> None:
    starts: list[float] = []

    async def actor(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        task_status.started()
        if len(starts) < 4:
            raise RuntimeError("boom")
        await trio.sleep_forever()

    stats = SupervisedStats("a")
    config = SupervisorConfig(max_restarts=5, window=60, backoff=1.0, max_backoff=10)
    with trio.move_on_after(100):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: supervise(
                actor, name="a", config=config, stats=stats, task_status=task_status))
    assert starts == [0.0, 1.0, 3.0, 7.0]
    assert stats.restarts == 3
    assert stats.last_error == "RuntimeError: boom"


async def test_too_many_crashes_escalate(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    async def actor(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal calls
        calls += 1
        task_status.started()
        raise ValueError("always")

    config = SupervisorConfig(max_restarts=2, window=60, backoff=0.5)
    with pytest.RaisesGroup(RestartIntensityExceeded):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: supervise(actor, name="a", config=config,
                                                              task_status=task_status))
    assert calls == 3
    assert trio.current_time() == 1.5  # backoffs 0.5 + 1.0


async def test_crash_before_ready_fails_the_start() -> None:
    async def actor(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise KeyError("config")

    async with trio.open_nursery() as nursery:
        with pytest.raises(KeyError):
            await nursery.start(lambda task_status: supervise(
                actor, name="a", config=SupervisorConfig(), task_status=task_status))


async def test_cancellation_is_never_restarted(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    async def actor(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal calls
        calls += 1
        task_status.started()
        await trio.sleep_forever()

    with trio.move_on_after(10):
        await supervise(actor, name="a", config=SupervisorConfig())
    assert calls == 1
    assert trio.current_time() == 10


async def test_crashes_outside_the_window_do_not_accumulate(autojump_clock: trio.abc.Clock) -> None:
    crash_times: list[float] = []

    async def actor(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(30)
        crash_times.append(trio.current_time())
        if len(crash_times) < 5:
            raise RuntimeError("periodic")

    config = SupervisorConfig(max_restarts=1, window=20, backoff=0)
    await supervise(actor, name="a", config=config)
    # five crashes 30 s apart never put two inside one 20 s window
    assert crash_times == [30.0, 60.0, 90.0, 120.0, 150.0]
