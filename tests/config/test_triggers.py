"""What starts a reload: a change of the file's content (polled), and SIGHUP."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from velithon.config._triggers import ReloadTriggers


async def test_a_changed_file_is_reloaded_once_per_change(autojump_clock: object,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("# one\n")
    send, reloads = trio.open_memory_channel[float](10)

    async def reload() -> None:
        send.send_nowait(trio.current_time())

    async def no_reload_for(seconds: float) -> None:
        with trio.move_on_after(seconds):
            pytest.fail(f"unexpected reload at {await reloads.receive()}")

    async def one_reload() -> None:
        with trio.fail_after(2.0):  # the next poll sees it, the one after confirms it
            await reloads.receive()
        await trio.sleep(0.5)  # half-way between polls: no write races a poll


    triggers = ReloadTriggers(str(path), reload, signal=False, poll_interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(triggers.run)
        await no_reload_for(2.5)  # unchanged (polls at whole seconds, writes between)
        path.write_text("# two\n")
        await one_reload()
        os.utime(path)  # touched, same content
        path.unlink()  # mid-rename: unreadable for a moment
        await no_reload_for(2.0)
        path.write_text("# two\n")
        await no_reload_for(2.0)
        path.write_text("# three\n")
        await one_reload()
        nursery.cancel_scope.cancel()


@pytest.fixture
def sighup_ignored() -> Iterator[None]:
    """A SIGHUP left pending when the receiver closes is re-delivered: never to pytest."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


async def test_requests_during_a_reload_coalesce(autojump_clock: object,
                                                 sighup_ignored: None) -> None:
    started = trio.Event()
    release = trio.Event()
    count = 0

    async def slow_reload() -> None:
        nonlocal count
        count += 1
        started.set()
        await release.wait()

    triggers = ReloadTriggers(None, slow_reload, signal=True, poll_interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(triggers.run)
        os.kill(os.getpid(), signal.SIGHUP)
        await started.wait()
        for _ in range(5):  # while one reload runs: at most one more is queued
            os.kill(os.getpid(), signal.SIGHUP)
            await trio.sleep(0.1)
        release.set()
        await trio.sleep(1.0)
        assert count == 2
        nursery.cancel_scope.cancel()


async def test_without_triggers_the_service_just_runs(autojump_clock: object) -> None:
    async def reload() -> None:
        pytest.fail("nothing may trigger a reload")

    with trio.move_on_after(3600) as scope:
        await ReloadTriggers(None, reload, signal=False, poll_interval=1.0).run()
    assert scope.cancelled_caught


async def test_a_file_written_in_two_steps_is_reloaded_once_whole(autojump_clock: object,
                                                                   tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("# one\n")
    seen: list[str] = []

    async def reload() -> None:
        seen.append(path.read_text())

    triggers = ReloadTriggers(str(path), reload, signal=False, poll_interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(triggers.run)
        await trio.sleep(0.5)
        with path.open("w") as file:  # in place, in two writes a poll apart
            file.write("# two, first half\n")
            file.flush()
            await trio.sleep(1.0)
            file.write("# two, second half\n")
        await trio.sleep(4.0)
        nursery.cancel_scope.cancel()
    assert seen == ["# two, first half\n# two, second half\n"]


async def test_asked_reloads_wait_for_the_start_and_coalesce(autojump_clock: object) -> None:
    running = trio.Event()
    release = trio.Event()
    count = 0

    async def slow_reload() -> None:
        nonlocal count
        count += 1
        running.set()
        await release.wait()

    triggers = ReloadTriggers(None, slow_reload, signal=False, poll_interval=1.0)
    triggers.ask()  # before the triggers run (a server's SIGHUP during the app's start-up)
    triggers.ask()
    async with trio.open_nursery() as nursery:
        await nursery.start(triggers.run)
        await running.wait()  # the request made before the start is carried out
        for _ in range(5):  # while one reload runs: at most one more is queued
            triggers.ask()
        release.set()
        await trio.sleep(1.0)
        assert count == 2
        nursery.cancel_scope.cancel()
