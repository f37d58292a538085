"""Discovery actors in a real balancer system, with a scripted source and virtual time.

No sockets: the source is a fake whose answer the test sets, the probe is a fake, and
targets are only leased. Times are exact (``autojump_clock``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from velithon._exceptions import NoTargetAvailable
from velithon._lb.discovery import Discovered, DiscoveryError, Lookup
from velithon._lb.health import HealthCheckConfig
from velithon._lb.messages import ProbeResult
from velithon._lb.system import Balancer, BalancerConfig, BalancerState, open_balancer

from support.leases import give_back

A, B, C = "http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"
HANG = "hang"


@attrs.define(eq=False)
class ScriptedSource:
    """A discovery source whose next answer the test sets: targets, an error, or a hang."""

    name: str = "fake+srv://api"
    kind: str = "dns-srv"
    timeout: float = 2.0
    refresh: float = 10.0
    answer: Any = attrs.field(factory=list)
    ttl: float | None = None
    calls: list[float] = attrs.field(factory=list)

    def open(self) -> Lookup:
        return self._lookup

    async def _lookup(self) -> Discovered:
        self.calls.append(trio.current_time())
        answer = self.answer
        if answer == HANG:
            await trio.sleep_forever()
        if isinstance(answer, BaseException):
            raise answer
        return Discovered(tuple(answer), self.ttl)

    def refresh_after(self, ttl: float | None) -> float:
        return ttl if ttl is not None else self.refresh

    def retry_after(self, failures: int) -> float:
        return min(self.refresh, 2.0 ** (failures - 1))


class UpProbe:
    """Every target healthy unless listed in ``down``."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.probed: list[str] = []

    async def __call__(self, url: str, config: HealthCheckConfig) -> ProbeResult:
        self.probed.append(url)
        ok = url not in self.down
        return ProbeResult(ok=ok, status=200 if ok else 503, detail="fake")


@asynccontextmanager
async def running(*sources: ScriptedSource, targets: tuple[str, ...] = (),
                  probe: UpProbe | None = None, **kwargs: Any) -> AsyncIterator[Balancer]:
    config = BalancerConfig(targets=targets, sources=sources, **kwargs)
    async with open_balancer(config, probe=probe or UpProbe()) as balancer:
        yield balancer


async def picks(balancer: Balancer, n: int) -> list[str]:
    urls = []
    for _ in range(n):
        lease = await balancer.pick()
        urls.append(lease.url)
        await give_back(lease, "success", 200)
    return urls


async def until(when: float) -> None:
    await trio.sleep_until(when)
    await trio.testing.wait_all_tasks_blocked()


async def test_a_pool_starts_with_its_first_answer(autojump_clock: trio.abc.Clock) -> None:
    source = ScriptedSource(answer=[(A, 1), (B, 1)])
    async with running(source) as balancer:
        assert balancer.targets == [A, B]  # looked up before the system reported ready
        assert balancer.discovery_ready()
        assert await picks(balancer, 4) == [A, B, A, B]
        [status] = balancer.discovery_statuses()
    assert (status.source, status.kind, status.ready, status.size) == (
        "fake+srv://api", "dns-srv", True, 2)
    assert (status.lookups, status.failures, status.last_success_at) == (1, 0, 0.0)


async def test_changes_apply_at_the_next_refresh(autojump_clock: trio.abc.Clock) -> None:
    source = ScriptedSource(answer=[(A, 1), (B, 1)])
    async with running(source) as balancer:
        source.answer = [(A, 1), (C, 1)]
        await until(9.9)
        assert balancer.targets == [A, B]
        await until(10.0)
        assert balancer.targets == [A, C]
        assert set(await picks(balancer, 4)) == {A, C}
        assert source.calls == [0.0, 10.0]


async def test_the_refresh_follows_the_answer_ttl(autojump_clock: trio.abc.Clock) -> None:
    source = ScriptedSource(answer=[(A, 1)], ttl=3.0)
    async with running(source):
        await until(10.0)
    assert source.calls == [0.0, 3.0, 6.0, 9.0]


async def test_a_removed_target_drains_and_goes_when_its_last_request_ends(
        autojump_clock: trio.abc.Clock) -> None:
    source = ScriptedSource(answer=[(A, 1), (B, 1)])
    async with running(source) as balancer:
        await picks(balancer, 1)  # A; the next pick is B
        held = await balancer.pick()
        assert held.url == B
        source.answer = [(A, 1)]
        await until(10.0)
        assert balancer.targets == [A]
        assert B in balancer.state.targets  # its actor and pool still serve the held request
        assert set(await picks(balancer, 3)) == {A}  # but no new request goes there
        await until(15.0)
        await give_back(held, "success", 200)
        await trio.testing.wait_all_tasks_blocked()
        assert B not in balancer.state.targets  # gone as soon as it drained, not at a timeout
        assert trio.current_time() == 15.0
        assert not balancer.state.router.retired


async def test_failures_keep_the_last_good_set(autojump_clock: trio.abc.Clock,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="velithon.discovery")
    source = ScriptedSource(answer=[(A, 1), (B, 1)])
    async with running(source) as balancer:
        source.answer = DiscoveryError("api: SERVFAIL")
        await until(10.0 + 1 + 2 + 4 + 0.5)  # failures at 10, 11, 13, 17
        assert balancer.targets == [A, B]
        assert await picks(balancer, 2) == [A, B]
        [status] = balancer.discovery_statuses()
        assert (status.failures, status.consecutive_failures, status.ready) == (4, 4, True)
        assert status.last_error == "api: SERVFAIL" and status.last_error_at == 17.0
        assert status.seconds_since_success == pytest.approx(17.5)
        source.answer = [(A, 1), (B, 1)]
        await until(25.0)  # the retry after the fourth failure (8 s, capped at 10 s)
        [status] = balancer.discovery_statuses()
        assert (status.consecutive_failures, status.last_success_at) == (0, 25.0)
    assert source.calls == [0.0, 10.0, 11.0, 13.0, 17.0, 25.0]
    records = [(r.levelname, r.getMessage()) for r in caplog.records
               if r.name == "velithon.discovery"]
    warnings = [m for level, m in records if level == "WARNING"]
    assert warnings == ["fake+srv://api: lookup failed (api: SERVFAIL); "
                        "keeping the last 2 targets"]  # once per streak
    assert ("INFO", "fake+srv://api: lookup succeeded again after 4 failed; 2 targets") in records


@pytest.mark.parametrize(("answer", "error", "failed_by"), [
    ([], "the answer holds no targets", 10.0),
    (HANG, "no answer within 2s", 12.0),  # the source's timeout
])
async def test_an_empty_or_silent_answer_is_a_failure(autojump_clock: trio.abc.Clock,
                                                      answer: Any, error: str,
                                                      failed_by: float) -> None:
    source = ScriptedSource(answer=[(A, 1)])
    async with running(source) as balancer:
        source.answer = answer
        await until(failed_by + 0.5)
        assert balancer.targets == [A]
        [status] = balancer.discovery_statuses()
        assert (status.failures, status.last_error) == (1, error)
        assert await picks(balancer, 1) == [A]


async def test_a_route_starts_before_its_first_successful_lookup(
        autojump_clock: trio.abc.Clock) -> None:
    source = ScriptedSource(answer=DiscoveryError("api: NXDOMAIN"))
    async with running(source) as balancer:
        assert balancer.targets == [] and not balancer.discovery_ready()
        with pytest.raises(NoTargetAvailable, match="none discovered so far"):
            await balancer.pick()
        source.answer = [(A, 1)]
        await until(1.0)  # the first retry
        assert balancer.targets == [A] and balancer.discovery_ready()
        assert await picks(balancer, 1) == [A]


async def test_an_unexpected_lookup_error_is_a_loud_failure(
        autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture) -> None:
    source = ScriptedSource(answer=[(A, 1), (B, 1)])
    async with running(source) as balancer:
        source.answer = RuntimeError("resolver library bug")
        await until(10.5)
        assert balancer.targets == [A, B]
        [status] = balancer.discovery_statuses()
        assert (status.failures, status.last_error) == (1, "RuntimeError: resolver library bug")
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert error.exc_info is not None  # with its traceback


async def test_a_crashed_actor_is_restarted_and_keeps_its_set(
        autojump_clock: trio.abc.Clock) -> None:
    source = ScriptedSource(answer=[(A, 1), (B, 1)])
    async with running(source) as balancer:
        source.answer = [(["unhashable"], 1)]  # a malformed answer breaks the diff: a crash
        await until(10.5)
        assert balancer.targets == [A, B]
        [status] = balancer.discovery_statuses()
        assert status.restarts == 1
        source.answer = [(B, 1)]
        await until(11.0)  # the restarted actor waited the retry delay (1 s), then asked
        assert balancer.targets == [B]
        assert source.calls == [0.0, 10.0, 11.0]


async def test_weights_follow_the_answer(autojump_clock: trio.abc.Clock) -> None:
    source = ScriptedSource(answer=[(A, 3), (B, 1)])
    async with running(source, strategy="weighted") as balancer:
        got = await picks(balancer, 8)
        assert (got.count(A), got.count(B)) == (6, 2)
        source.answer = [(A, 1), (B, 1)]
        await until(10.0)
        got = await picks(balancer, 8)
        assert (got.count(A), got.count(B)) == (4, 4)
        assert [m.weight for m in balancer.state.router.members] == [1, 1]


async def test_a_static_target_is_never_taken_over(autojump_clock: trio.abc.Clock,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    source = ScriptedSource(answer=[(A, 1), (B, 1)])
    async with running(source, targets=(A,)) as balancer:
        assert balancer.targets == [A, B]
        source.answer = [(B, 1)]
        await until(20.0)
        assert balancer.targets == [A, B]  # A was never the source's to remove
        [status] = balancer.discovery_statuses()
        assert status.targets == (B,)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"fake+srv://api: not adding {A}: Target already present: {A!r}"]


async def test_health_checks_apply_to_discovered_targets(autojump_clock: trio.abc.Clock) -> None:
    probe = UpProbe()
    probe.down.add(B)
    source = ScriptedSource(answer=[(A, 1), (B, 1)])
    async with running(source, probe=probe, active_health_checks=True,
                       health=HealthCheckConfig(interval=1.0, jitter=0.0)) as balancer:
        await until(2.0)
        assert A in probe.probed and B in probe.probed
        assert await picks(balancer, 4) == [A, A, A, A]


async def test_a_url_can_come_back_while_it_still_drains(autojump_clock: trio.abc.Clock) -> None:
    source = ScriptedSource(answer=[(A, 1), (B, 1)])
    async with running(source) as balancer:
        held = await balancer.pick()
        assert held.url == A
        source.answer = [(B, 1)]
        await until(10.0)
        source.answer = [(A, 1), (B, 1)]
        await until(20.0)  # A is back while its old incarnation still holds a request
        assert balancer.targets == [B, A]
        await give_back(held, "success", 200)
        await trio.testing.wait_all_tasks_blocked()
        assert A in balancer.state.targets  # the old one's cleanup left the new one alone
        assert set(await picks(balancer, 4)) == {A, B}


async def test_state_outlives_a_system(autojump_clock: trio.abc.Clock) -> None:
    """A facade without a lifespan runs one system per call: no lookup before it is due."""
    source = ScriptedSource(answer=[(A, 1)])
    config = BalancerConfig(targets=(), sources=(source,))
    state = BalancerState.create(config)
    for _ in range(4):  # at 0, 4, 8 and 12 s; the source is due every 10 s
        async with open_balancer(config, state=state, probe=UpProbe()) as balancer:
            assert await picks(balancer, 1) == [A]
        await trio.sleep(4.0)
    assert source.calls == [0.0, 12.0]


def test_a_config_needs_targets_or_sources() -> None:
    with pytest.raises(ValueError, match="At least one target is required"):
        BalancerConfig(targets=())
    source = ScriptedSource()
    with pytest.raises(ValueError, match="Duplicate target sources"):
        BalancerConfig(targets=(), sources=(source, ScriptedSource()))


async def test_an_added_target_s_first_probe_is_never_lost(autojump_clock: trio.abc.Clock) -> None:
    """A target's actor starts (and probes) before the router has its AddTarget: the
    report that races ahead is kept and applied when the target is added."""
    probe = UpProbe()
    added = [f"http://10.0.1.{i}:8080" for i in range(1, 21)]
    probe.down.update(added)
    async with running(ScriptedSource(answer=[(A, 1)]), probe=probe, active_health_checks=True,
                       health=HealthCheckConfig(interval=60.0, jitter=0.0)) as balancer:
        for url in added:  # trio shuffles task order, so both orders happen
            await balancer.add_target(url)
        await trio.testing.wait_all_tasks_blocked()
        view = {v.url: v.healthy for v in await balancer.router_view()}
    assert not any(view[url] for url in added)
    assert view[A]
