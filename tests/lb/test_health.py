"""Active health-check thresholds and configuration."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon._lb.health import HealthCheckConfig, HealthState, parse_statuses

FAST = settings(max_examples=150, deadline=None)


def test_defaults_match_velithon() -> None:
    config = HealthCheckConfig()
    assert (config.path, config.interval, config.timeout, config.method) == (
        "/health", 30.0, 5.0, "GET")
    assert config.expected_statuses == frozenset(range(200, 300))
    h = HealthState(config)
    assert h.healthy  # every target starts healthy
    assert h.record(False, 1.0) is True and not h.healthy  # one failure marks it down
    assert h.record(True, 2.0) is True and h.healthy  # one success marks it up
    assert (h.last_checked, h.last_change) == (2.0, 2.0)


def test_rise_and_fall_thresholds_flip_on_exactly_the_nth_result() -> None:
    """HAProxy's fall 3 / rise 2."""
    h = HealthState(HealthCheckConfig(unhealthy_threshold=3, healthy_threshold=2))
    assert [h.record(False, t) for t in (1, 2, 3)] == [False, False, True]
    assert not h.healthy and h.last_change == 3
    assert [h.record(True, t) for t in (4, 5)] == [False, True]
    assert h.healthy and h.last_change == 5
    # an interrupted streak starts over
    results = [False, False, True, False, False]
    assert [h.record(v, t) for t, v in enumerate(results, 6)] == [False] * 5
    assert h.healthy and h.consecutive_fail == 2


@given(
    rise=st.integers(1, 4),
    fall=st.integers(1, 4),
    start=st.booleans(),
    results=st.lists(st.booleans(), max_size=40),
)
@FAST
def test_health_follows_the_consecutive_rule(
    rise: int, fall: int, start: bool, results: list[bool]
) -> None:
    config = HealthCheckConfig(healthy_threshold=rise, unhealthy_threshold=fall,
                               initially_healthy=start)
    h = HealthState(config)
    healthy, run_ok, run_fail = start, 0, 0
    for t, ok in enumerate(results):
        run_ok, run_fail = (run_ok + 1, 0) if ok else (0, run_fail + 1)
        before = healthy
        if ok and run_ok >= rise:
            healthy = True
        if not ok and run_fail >= fall:
            healthy = False
        assert h.record(ok, float(t)) is (healthy != before)
        assert h.healthy is healthy
        assert (h.consecutive_ok, h.consecutive_fail) == (run_ok, run_fail)
    stats = h.statistics()
    assert stats.checks == len(results) and stats.failed_checks == results.count(False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2xx", frozenset(range(200, 300))),
        ("200", frozenset({200})),
        ("200-204, 3XX", frozenset(range(200, 205)) | frozenset(range(300, 400))),
        (range(200, 400), frozenset(range(200, 400))),
        ([200, 204], frozenset({200, 204})),
        (204, frozenset({204})),
    ],
)
def test_expected_statuses_accepts_ranges_iterables_and_strings(
        value: object, expected: frozenset) -> None:
    config = HealthCheckConfig(expected_statuses=value)
    assert config.expected_statuses == expected
    assert HealthState(config).is_expected(min(expected)) and not config.is_expected(599)


def test_only_2xx_is_healthy_by_default() -> None:
    config = HealthCheckConfig()
    statuses = (199, 200, 299, 302, 503)
    assert [config.is_expected(s) for s in statuses] == [False, True, True, False, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "health"}, "Health check path must start with '/' (got 'health')"),
        ({"path": "/a b"}, "Health check path must not contain whitespace"),
        ({"interval": 0}, "health check interval must be a positive number (got 0)"),
        ({"timeout": -1.0}, "health check timeout must be a positive number (got -1.0)"),
        ({"healthy_threshold": 0}, "healthy_threshold must be an int >= 1 (got 0)"),
        ({"unhealthy_threshold": 1.5}, "unhealthy_threshold must be an int >= 1 (got 1.5)"),
        ({"expected_statuses": "abc"}, "Invalid expected_statuses entry 'abc'"),
        ({"expected_statuses": [200, 700]},
         "expected_statuses must be HTTP statuses 100..599 (got 700)"),
        ({"expected_statuses": "300-200"}, "expected_statuses range '300-200' is empty"),
        ({"expected_statuses": []}, "expected_statuses must not be empty"),
        ({"jitter": 1.0}, "health check jitter must be in [0, 1) (got 1.0)"),
        ({"method": "GE T"}, "Invalid health check method 'GE T'"),
    ],
)
def test_config_errors_are_clear(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        HealthCheckConfig(**kwargs)
    assert str(info.value).startswith(message)


def test_method_is_upper_cased_and_parse_statuses_is_public() -> None:
    assert HealthCheckConfig(method="head").method == "HEAD"
    assert parse_statuses("204") == frozenset({204})


@given(seed=st.integers(), last=st.floats(0, 1e6), jitter=st.floats(0, 0.9))
@FAST
def test_next_probe_is_within_the_jitter_band(seed: int, last: float, jitter: float) -> None:
    h = HealthState(HealthCheckConfig(interval=10.0, jitter=jitter))
    at = h.next_probe_at(last, random.Random(seed))
    assert last + 10.0 * (1 - jitter) - 1e-6 <= at <= last + 10.0 * (1 + jitter) + 1e-6
    assert h.next_probe_at(last, None) == last + 10.0


def test_jitter_spreads_probes() -> None:
    h = HealthState(HealthCheckConfig(interval=30.0, jitter=0.1))
    rng = random.Random(4)
    gaps = [h.next_probe_at(0.0, rng) for _ in range(200)]
    assert min(gaps) < 28.0 and max(gaps) > 32.0
    assert HealthState(HealthCheckConfig(jitter=0)).next_probe_at(5.0, rng) == 35.0


def test_healthy_can_be_set_and_repr_shows_the_counters() -> None:
    h = HealthState(HealthCheckConfig(healthy_threshold=2))
    h.healthy = False
    h.record(True, 1.0)
    assert repr(h) == "<HealthState unhealthy [ok 1/2, fail 0/1] checks=1>"
    assert h.record(True, 2.0) and h.healthy
    assert h.statistics().flips == 1
