"""The actor system with a fake probe and exact virtual times (MockClock).

No sockets here: targets are never contacted, only leased, and the probe is
a function whose answers the test controls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from velithon._exceptions import NoTargetAvailable
from velithon._lb.breaker import BreakerConfig
from velithon._lb.health import HealthCheckConfig
from velithon._lb.messages import ProbeResult
from velithon._lb.outlier import OutlierConfig
from velithon._lb.supervisor import RestartIntensityExceeded, SupervisorConfig
from velithon._lb.system import Balancer, BalancerConfig, open_balancer
from velithon._proxy.pool import PoolConfig

from support.crash import inject_crash
from support.leases import give_back

A, B, C = "http://a.test:8001", "http://b.test:8002", "http://c.test:8003"


class FakeProbe:
    """Answers probes from a dict the test flips; records probe times."""

    def __init__(self, *urls: str) -> None:
        self.up = {url: True for url in urls}
        self.calls: list[tuple[float, str]] = []

    async def __call__(self, url: str, config: HealthCheckConfig) -> ProbeResult:
        self.calls.append((trio.current_time(), url))
        ok = self.up[url]
        return ProbeResult(ok=ok, status=200 if ok else 503, detail=f"HTTP {200 if ok else 503}")

    def times(self, url: str) -> list[float]:
        return [t for t, u in self.calls if u == url]


@asynccontextmanager
async def balancer(probe: FakeProbe, **kwargs: object) -> AsyncIterator[Balancer]:
    config = BalancerConfig(targets=tuple(probe.up), **kwargs)  # type: ignore[arg-type]
    async with open_balancer(config, probe=probe) as running:
        yield running


async def pick_urls(b: Balancer, n: int, kind: str = "success") -> list[str]:
    urls = []
    for _ in range(n):
        lease = await b.pick()
        urls.append(lease.url)
        await give_back(lease, kind, 200 if kind == "success" else 502)
    return urls


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_round_robin_in_constructor_order(autojump_clock: trio.abc.Clock) -> None:
    async with balancer(FakeProbe(A, B, C)) as b:
        assert await pick_urls(b, 7) == [A, B, C, A, B, C, A]


async def test_weighted_is_smooth_and_exact(autojump_clock: trio.abc.Clock) -> None:
    async with balancer(FakeProbe(A, B, C), strategy="weighted", weights=(3, 2, 1)) as b:
        picks = await pick_urls(b, 600)
    assert (picks.count(A), picks.count(B), picks.count(C)) == (300, 200, 100)
    assert picks[:6] != [A, A, A, B, B, C]  # interleaved, not blocks
    letters = "".join("abc"[[A, B, C].index(u)] for u in picks)
    assert max(len(run) for run in letters.split("b")) <= 3


async def test_health_checks_run_every_interval_and_flip_state(
        autojump_clock: trio.abc.Clock) -> None:
    probe = FakeProbe(A, B)
    health = HealthCheckConfig(interval=10.0, jitter=0.0)
    async with balancer(probe, health=health, active_health_checks=True) as b:
        await trio.sleep(25)
        assert probe.times(A) == [0.0, 10.0, 20.0]
        probe.up[B] = False
        await trio.sleep(5.5)  # t = 30.5: the probe at t=30 saw it
        assert await b.get_health_status() == [(A, True), (B, False)]
        assert await pick_urls(b, 3) == [A, A, A]
        probe.up[B] = True
        await trio.sleep(10)  # t = 40.5
        assert await b.get_health_status() == [(A, True), (B, True)]
        assert sorted(await pick_urls(b, 2)) == [A, B]


async def test_unhealthy_threshold_needs_consecutive_failures(
        autojump_clock: trio.abc.Clock) -> None:
    probe = FakeProbe(A, B)
    health = HealthCheckConfig(interval=2.0, jitter=0.0, unhealthy_threshold=3, healthy_threshold=2)
    async with balancer(probe, health=health, active_health_checks=True) as b:
        await trio.sleep(0.5)
        probe.up[A] = False
        await trio.sleep(2)  # probe at 2: 1st failure
        await trio.sleep(2)  # probe at 4: 2nd failure
        assert (await b.get_health_status())[0] == (A, True)
        await trio.sleep(2)  # probe at 6: 3rd failure -> down
        assert (await b.get_health_status())[0] == (A, False)
        probe.up[A] = True
        await trio.sleep(2)  # probe at 8: 1st success, still down
        assert (await b.get_health_status())[0] == (A, False)
        await trio.sleep(2)  # probe at 10: 2nd success -> up
        assert (await b.get_health_status())[0] == (A, True)


async def test_manual_health_check_probes_all_targets_now(autojump_clock: trio.abc.Clock) -> None:
    probe = FakeProbe(A, B, C)
    probe.up[B] = False
    async with balancer(probe) as b:
        assert probe.calls == []  # no active checks configured
        assert await b.health_check() == [(A, True), (B, False), (C, True)]
        assert await b.get_health_status() == [(A, True), (B, False), (C, True)]


async def test_none_healthy_fails_fast_with_clear_reason(autojump_clock: trio.abc.Clock) -> None:
    probe = FakeProbe(A, B)
    probe.up[A] = probe.up[B] = False
    async with balancer(probe) as b:
        await b.health_check()
        with pytest.raises(NoTargetAvailable, match="No healthy targets available"):
            await b.pick()
        assert b.statistics().rejected == 1


async def test_panic_mode_spreads_over_all_targets(autojump_clock: trio.abc.Clock) -> None:
    probe = FakeProbe(A, B)
    probe.up[A] = probe.up[B] = False
    async with balancer(probe, none_healthy="panic") as b:
        await b.health_check()
        assert await pick_urls(b, 4) == [A, B, A, B]
        assert b.statistics().panic_picks == 4


async def test_breaker_opens_then_half_opens_exactly_at_recovery(
        autojump_clock: trio.abc.Clock) -> None:
    probe = FakeProbe(A, B)
    breaker = BreakerConfig(max_failures=3, recovery_timeout_ms=60000)
    async with balancer(probe, breaker=breaker, outlier=OutlierConfig(enabled=False)) as b:
        for _ in range(3):  # three consecutive failures on A (round robin alternates A, B)
            lease = await b.pick()
            assert lease.url == A
            await give_back(lease, "local")
            lease = await b.pick()
            await give_back(lease, "success", 200)
        await settle()
        opened_at = trio.current_time()
        statuses = {s.url: s for s in await b.target_statuses()}
        assert statuses[A].breaker_state == "open"
        assert await pick_urls(b, 4) == [B, B, B, B]
        await trio.sleep_until(opened_at + 59.999)
        assert await pick_urls(b, 2) == [B, B]
        await trio.sleep_until(opened_at + 60.0)
        await settle()
        trial = await b.pick()
        assert trial.url == A  # exactly one trial is let through
        assert await pick_urls(b, 3) == [B, B, B]
        await give_back(trial, "success", 200)
        await settle()
        assert sorted(await pick_urls(b, 2)) == [A, B]  # closed again
        statuses = {s.url: s for s in await b.target_statuses()}
        assert statuses[A].breaker_state == "closed"


async def test_failed_trial_reopens_the_breaker(autojump_clock: trio.abc.Clock) -> None:
    probe = FakeProbe(A)
    breaker = BreakerConfig(max_failures=1, recovery_timeout_ms=1000)
    async with balancer(probe, breaker=breaker, outlier=OutlierConfig(enabled=False)) as b:
        await pick_urls(b, 1, kind="local")
        await settle()
        with pytest.raises(NoTargetAvailable, match="Circuit breaker is open"):
            await b.pick()
        await trio.sleep(1.0)
        await settle()
        await pick_urls(b, 1, kind="local")  # the trial fails
        await settle()
        with pytest.raises(NoTargetAvailable):
            await b.pick()
        await trio.sleep(1.0)
        await settle()
        assert await pick_urls(b, 1) == [A]  # tried again after another recovery period


async def test_outlier_ejection_respects_max_percent(autojump_clock: trio.abc.Clock) -> None:
    urls = [f"http://t{i}.test:80" for i in range(10)]
    probe = FakeProbe(*urls)
    outlier = OutlierConfig(consecutive_5xx=2, base_ejection_time=30.0, max_ejection_percent=10)
    async with balancer(probe, outlier=outlier, breaker=BreakerConfig(max_failures=1000)) as b:
        for _ in range(2):
            for _ in range(10):
                lease = await b.pick()
                await give_back(lease, "5xx", 500)
        await settle()
        ejected = [v for v in await b.router_view() if v.ejected_until is not None]
        assert len(ejected) == 1  # 10 % of 10 targets, although all ten asked
        assert ejected[0].ejected_until == pytest.approx(trio.current_time() + 30.0, abs=0.01)


async def test_target_actor_crash_restarts_without_disturbing_others(
        autojump_clock: trio.abc.Clock) -> None:
    probe = FakeProbe(A, B)
    supervisor = SupervisorConfig(max_restarts=3, window=60, backoff=0.5)
    async with balancer(probe, supervisor=supervisor) as b:
        await inject_crash(b, A)
        assert await pick_urls(b, 4) == [A, B, A, B]  # the router keeps serving meanwhile
        await trio.sleep(1)
        statuses = {s.url: s for s in await b.target_statuses()}
        assert statuses[A].restarts == 1
        assert statuses[B].restarts == 0
        assert statuses[A].requests == 2  # state survived the restart
        assert b.statistics().target_restarts == 1


async def test_router_crash_restarts_and_keeps_its_view(autojump_clock: trio.abc.Clock) -> None:
    probe = FakeProbe(A, B)
    probe.up[B] = False
    async with balancer(probe) as b:
        await b.health_check()
        await inject_crash(b)
        assert await pick_urls(b, 3) == [A, A, A]
        assert b.statistics().router_restarts == 1


async def test_repeated_crashes_escalate(autojump_clock: trio.abc.Clock) -> None:
    probe = FakeProbe(A)
    supervisor = SupervisorConfig(max_restarts=2, window=60, backoff=0.1)
    with pytest.raises(RestartIntensityExceeded):  # unwrapped: one failure, told as itself
        async with balancer(probe, supervisor=supervisor) as b:
            for _ in range(3):
                await inject_crash(b, A)
                await trio.sleep(1)


async def test_runtime_add_remove_reweight_and_drain(autojump_clock: trio.abc.Clock) -> None:
    async with balancer(FakeProbe(A, B)) as b:
        await b.add_target(C)
        assert await pick_urls(b, 3) == [A, B, C]
        held = await b.pick()
        assert held.url == A
        removal_done = trio.Event()

        async def remove() -> None:
            await b.remove_target(A)
            removal_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(remove)
            await settle()
            assert not removal_done.is_set()  # waits for the in-flight request on A
            assert set(await pick_urls(b, 4)) == {B, C}
            await give_back(held, "success", 200)
        assert removal_done.is_set()
        assert b.targets == [B, C]
        await b.set_weights([1, 3])
        with pytest.raises(ValueError, match="Weights length must match"):
            await b.set_weights([1])
        await b.drain(B)
        assert await pick_urls(b, 3) == [C, C, C]


async def test_pick_cancelled_while_queued_leaves_no_lease(autojump_clock: trio.abc.Clock) -> None:
    async with balancer(FakeProbe(A)) as b:
        with trio.CancelScope() as scope:
            scope.cancel()
            await b.pick()
        await settle()
        assert (await b.router_view())[0].in_flight == 0


async def test_shutdown_fails_pending_picks_and_leaves_no_tasks() -> None:
    async with balancer(FakeProbe(A, B)) as b:
        lease = await b.pick()
    with pytest.raises(NoTargetAvailable, match="shutting down"):
        await b.pick()
    await give_back(lease, "success", 200)  # a late finish after shutdown is harmless


async def test_config_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="At least one target is required"):
        BalancerConfig(targets=())
    with pytest.raises(ValueError, match="Invalid strategy 'fastest'"):
        BalancerConfig(targets=(A,), strategy="fastest")
    with pytest.raises(ValueError, match="Weights length must match"):
        BalancerConfig(targets=(A, B), strategy="weighted", weights=(1,))
    with pytest.raises(ValueError, match="Duplicate target"):
        BalancerConfig(targets=(A, A))
    with pytest.raises(ValueError, match="Invalid target URL"):
        BalancerConfig(targets=("server1",), pools=PoolConfig())
    with pytest.raises(ValueError, match="non-empty string"):
        BalancerConfig(targets=("",))
    with pytest.raises(ValueError, match="none_healthy"):
        BalancerConfig(targets=(A,), none_healthy="pray")


def test_actor_statistics_and_reprs() -> None:
    async def main() -> None:
        probe = FakeProbe(A, B)
        async with balancer(probe) as b:
            await pick_urls(b, 3)
            from velithon._lb.router import RouterActor
            from velithon._lb.target import TargetActor, TargetState

            send, receive = trio.open_memory_channel[object](8)
            router = RouterActor(b.state.router, receive, send)  # type: ignore[arg-type]
            stats = router.statistics()
            summary = (stats.strategy, stats.targets, stats.routable, stats.picks)
            assert summary == ("round_robin", 2, 2, 3)
            assert repr(router).startswith(
                "<RouterActor round_robin [targets: 2, 2 healthy, 0 open]")
            tstate: TargetState = b.state.targets[A]
            actor = TargetActor(tstate, inbox=receive, self_send=send, router_send=send,  # type: ignore[arg-type]
                                probe=None, health_config=b.config.health, run_probe_loop=False)
            await trio.testing.wait_all_tasks_blocked()
            tstats = actor.statistics()
            assert (tstats.url, tstats.healthy, tstats.breaker_state) == (A, True, "closed")
            assert "breaker closed" in repr(actor)
            assert repr(b) == "<Balancer round_robin [2 targets, 2 healthy]>"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
