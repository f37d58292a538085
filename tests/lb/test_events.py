"""State-change events: each logged once, at INFO or above, naming the route and the target.

The actor system runs with a fake probe on virtual time (MockClock); the lines are read
back as an operator's script would (``event=... route=... target=...``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from velithon._lb.breaker import BreakerConfig
from velithon._lb.health import HealthCheckConfig
from velithon._lb.messages import ProbeResult
from velithon._lb.outlier import OutlierConfig
from velithon._lb.system import Balancer, BalancerConfig, open_balancer

from support.leases import give_back
from support.logs import events, parse

A, B, C = "http://a.test:8001", "http://b.test:8002", "http://c.test:8003"
ROUTE = "orders"


class Probe:
    """Answers probes from a dict the test flips."""

    def __init__(self, *urls: str) -> None:
        self.up = dict.fromkeys(urls, True)

    async def __call__(self, url: str, config: HealthCheckConfig) -> ProbeResult:
        ok = self.up[url]
        return ProbeResult(ok=ok, status=200 if ok else 503, detail=f"HTTP {200 if ok else 503}")


@asynccontextmanager
async def balancer(probe: Probe, **kwargs: object) -> AsyncIterator[Balancer]:
    config = BalancerConfig(targets=tuple(probe.up), name=ROUTE, panic_threshold=0,
                            **kwargs)  # type: ignore[arg-type]
    async with open_balancer(config, probe=probe) as running:
        yield running


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="velithon")
    return caplog


def once(logs: pytest.LogCaptureFixture, event: str, level: int, target: str,
         **fields: str) -> dict[str, str]:
    """The single line of ``event``, at ``level``, naming the route and ``target``."""
    records = events(logs, event)
    assert len(records) == 1, [r.getMessage() for r in logs.records]
    [record] = records
    assert record.levelno == level and record.levelno >= logging.INFO
    line = parse(record.getMessage())
    assert line["route"] == ROUTE and line["target"] == target
    for key, value in fields.items():
        assert line[key] == value, line
    return line


async def lease_to(b: Balancer, url: str, kind: str, status: int | None = None) -> None:
    """Pick until ``url`` comes up (giving the others back untouched), then report ``kind``."""
    for _ in range(20):
        lease = await b.pick()
        if lease.url == url:
            await give_back(lease, kind, status)
            await trio.testing.wait_all_tasks_blocked()
            return
        await give_back(lease, "success", 200)
    pytest.fail(f"{url} was never picked")


async def test_target_down_and_up(autojump_clock: trio.abc.Clock,
                                  logs: pytest.LogCaptureFixture) -> None:
    probe = Probe(A, B)
    health = HealthCheckConfig(interval=10.0, jitter=0.0)
    async with balancer(probe, health=health, active_health_checks=True):
        await trio.sleep(5)
        probe.up[B] = False
        await trio.sleep(20)  # two failing probes: still one DOWN line
        probe.up[B] = True
        await trio.sleep(20)  # two passing probes: one UP line
    once(logs, "target_down", logging.WARNING, B, probe="HTTP 503")
    once(logs, "target_up", logging.INFO, B, probe="HTTP 200")
    assert not any(B not in r.getMessage() for r in events(logs, "target_down"))


async def test_breaker_open_half_open_closed(autojump_clock: trio.abc.Clock,
                                             logs: pytest.LogCaptureFixture) -> None:
    breaker = BreakerConfig(max_failures=2, recovery_timeout_ms=1000)
    async with balancer(Probe(A, B), breaker=breaker) as b:
        await lease_to(b, A, "local")
        await lease_to(b, A, "local")  # second consecutive failure: open
        await trio.sleep(1.5)  # recovery elapsed: half-open, published without a request
        await lease_to(b, A, "success")  # the trial succeeds: closed
    once(logs, "breaker_open", logging.WARNING, A, previous="closed", failures="2")
    once(logs, "breaker_half_open", logging.INFO, A, previous="open")
    once(logs, "breaker_closed", logging.INFO, A, previous="half_open")


async def test_outlier_ejection_and_return(autojump_clock: trio.abc.Clock,
                                           logs: pytest.LogCaptureFixture) -> None:
    outlier = OutlierConfig(consecutive_gateway_failure=1, base_ejection_time=30.0)
    async with balancer(Probe(A, B, C), outlier=outlier,
                        breaker=BreakerConfig(max_failures=1000)) as b:
        held = await b.pick()  # a request in flight while A gets ejected
        assert held.url == A
        await lease_to(b, A, "gateway", 502)
        await give_back(held, "gateway", 502)  # asks again while ejected: no second line
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(31)
        await lease_to(b, B, "success", 200)  # the router looks again: A is back
    once(logs, "target_ejected", logging.WARNING, A, seconds="30.000")
    once(logs, "target_returned", logging.INFO, A, reason="ejection_time_elapsed")


async def test_a_passing_probe_returns_an_ejected_target_early(
        autojump_clock: trio.abc.Clock, logs: pytest.LogCaptureFixture) -> None:
    outlier = OutlierConfig(consecutive_gateway_failure=1, base_ejection_time=30.0)
    async with balancer(Probe(A, B, C), outlier=outlier,
                        breaker=BreakerConfig(max_failures=1000)) as b:
        await lease_to(b, A, "gateway", 502)
        await b.health_check()
        await trio.testing.wait_all_tasks_blocked()
    once(logs, "target_returned", logging.INFO, A, reason="probe_passed")


async def test_membership_changes(autojump_clock: trio.abc.Clock,
                                  logs: pytest.LogCaptureFixture) -> None:
    async with balancer(Probe(A, B)) as b:
        await b.add_target(C, weight=2)
        await b.drain(A)
        await b.drain(A, draining=False)
        await b.set_weights([1, 1, 3])
        await b.remove_target(B)
    once(logs, "target_added", logging.INFO, C, weight="2")
    once(logs, "target_draining", logging.INFO, A)
    once(logs, "target_undrained", logging.INFO, A)
    once(logs, "target_removed", logging.INFO, B, drained="yes")
    [weights] = events(logs, "weights_set")
    assert parse(weights.getMessage()) == {"event": "weights_set", "route": ROUTE,
                                           "weights": "1,1,3"}


async def test_removing_a_busy_target_says_it_did_not_drain(
        autojump_clock: trio.abc.Clock, logs: pytest.LogCaptureFixture) -> None:
    async with balancer(Probe(A, B)) as b:
        held = await b.pick()
        assert held.url == A
        await b.remove_target(A, drain_timeout=2.0)
        await give_back(held, "success", 200)
    once(logs, "target_removed", logging.INFO, A, drained="no", in_flight="1")


async def test_panic_mode_entered_and_left(autojump_clock: trio.abc.Clock,
                                           logs: pytest.LogCaptureFixture) -> None:
    breaker = BreakerConfig(max_failures=1, recovery_timeout_ms=10_000)
    config = BalancerConfig(targets=(A, B, C), name=ROUTE, breaker=breaker,
                            panic_threshold=50.0)
    async with open_balancer(config, probe=Probe(A, B, C)) as b:
        await lease_to(b, A, "local")
        await lease_to(b, B, "local")  # 1 of 3 routable: below 50 %
        await give_back(await b.pick(), "success", 200)
        await b.reset_breakers()
        await trio.testing.wait_all_tasks_blocked()
        await give_back(await b.pick(), "success", 200)
    [entered] = events(logs, "panic_mode_entered")
    [left] = events(logs, "panic_mode_left")
    assert entered.levelno == logging.WARNING and left.levelno == logging.INFO
    assert parse(entered.getMessage()) == {"event": "panic_mode_entered", "route": ROUTE,
                                           "routable": "1", "targets": "3",
                                           "threshold_percent": "50.000"}
