"""Passive outlier detection: streaks, ejection times, the percentage cap."""

from __future__ import annotations

import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from velithon._lb.outlier import FailureStreak, OutlierConfig, OutlierDetector

# ---- FailureStreak ----------------------------------------------------------------


def run(streak: FailureStreak, kinds: str) -> list[bool]:
    names = {"s": "success", "5": "5xx", "g": "gateway", "l": "local", "n": "neutral"}
    return [streak.record(names[k]) for k in kinds]


def test_envoy_basic_flow_5xx() -> None:
    """500, 200, 500 x4: not yet; one more 500: request an ejection."""
    streak = FailureStreak(OutlierConfig(consecutive_5xx=5))
    assert run(streak, "5s5555") == [False] * 6
    assert run(streak, "5") == [True]
    assert run(streak, "5") == [True]  # still over: asks again (the cap may have refused)
    streak.reset()
    assert run(streak, "5555") == [False] * 4


@pytest.mark.parametrize(
    ("config", "kinds", "last"),
    [
        (OutlierConfig(), "ggggg", True),  # gateway errors count toward both
        (OutlierConfig(), "lllll", True),  # local-origin failures are gateway failures
        (OutlierConfig(consecutive_5xx=5), "gglg5", True),  # ... and each is a 5xx too
        # a plain 5xx breaks the gateway run
        (OutlierConfig(consecutive_5xx=0), "gggg5gggg", False),
        (OutlierConfig(consecutive_5xx=0), "gggg5ggggg", True),
        (OutlierConfig(consecutive_gateway_failure=0), "gggg", False),
        (OutlierConfig(consecutive_5xx=5), "5555n5", True),  # neutral: no verdict
        (OutlierConfig(consecutive_5xx=5), "5555s5", False),
        (OutlierConfig(), "5555555555", False),  # by default an app's own 5xx never ejects
        (OutlierConfig(enabled=False), "5555555555", False),
    ],
)
def test_streak_rules(config: OutlierConfig, kinds: str, last: bool) -> None:
    assert run(FailureStreak(config), kinds)[-1] is last


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="Invalid outcome kind '4xx'"):
        FailureStreak().record("4xx")


# ---- config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"consecutive_5xx": -1}, "consecutive_5xx must be an int >= 0 (got -1)"),
        ({"base_ejection_time": 0}, "base_ejection_time must be a positive number of seconds"),
        ({"interval": math.inf}, "interval must be a positive number of seconds (got inf)"),
        ({"max_ejection_percent": 101}, "max_ejection_percent must be in 0..100 (got 101)"),
        ({"enabled": "yes"}, "enabled must be True or False (got 'yes')"),
    ],
)
def test_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        OutlierConfig(**kwargs)
    assert str(info.value).startswith(message)


# ---- OutlierDetector ------------------------------------------------------------------


def test_ejection_lasts_base_time_exactly() -> None:
    d = OutlierDetector(OutlierConfig(), 10)
    assert d.request_ejection(3, 100.0) == 130.0
    assert d.is_ejected(3, 129.999)
    assert not d.is_ejected(3, 130.0)
    assert d.status(3, 130.0) == (None, 1)


def test_ejection_time_grows_with_each_ejection_and_caps() -> None:
    d = OutlierDetector(OutlierConfig(), 1)
    now, durations = 0.0, []
    for _ in range(12):  # re-ejected as soon as it comes back: no decay in between
        until = d.request_ejection(0, now)
        assert until is not None
        durations.append(until - now)
        now = until
    assert durations == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]


def test_cap_is_never_below_the_base_time() -> None:
    d = OutlierDetector(OutlierConfig(base_ejection_time=30.0, max_ejection_time=10.0), 1)
    assert d.request_ejection(0, 0.0) == 30.0
    assert d.request_ejection(0, 30.0) == 60.0  # capped at max(base, max) = 30


def test_multiplier_decays_by_one_per_interval_not_ejected() -> None:
    d = OutlierDetector(OutlierConfig(), 1)
    d.request_ejection(0, 0.0)  # until 30
    d.request_ejection(0, 30.0)  # times 2, until 90
    assert d.status(0, 99.999) == (None, 2)  # 9.999 s back: no full interval yet
    assert d.status(0, 100.0) == (None, 1)
    assert d.request_ejection(0, 100.0) == 160.0  # times 2 again: 60 s
    assert d.tick(160.0) == [0]
    assert d.tick(185.0) == [] and d.status(0, 185.0) == (None, 0)
    assert d.request_ejection(0, 185.0) == 215.0  # back to the base time


def test_max_ejection_percent_with_at_least_one() -> None:
    d = OutlierDetector(OutlierConfig(max_ejection_percent=10), 10)
    assert d.request_ejection(0, 0.0) is not None
    assert d.request_ejection(1, 0.0) is None  # 2 of 10 > 10 %
    assert d.statistics().refused == 1
    assert d.request_ejection(0, 1.0) == 30.0  # already ejected: unchanged
    small = OutlierDetector(OutlierConfig(max_ejection_percent=10), 3)
    assert small.request_ejection(2, 0.0) is not None  # at least one, regardless
    assert small.request_ejection(1, 0.0) is None
    assert small.tick(30.0) == [2]
    assert small.request_ejection(1, 30.0) is not None  # the slot is free again
    wide = OutlierDetector(OutlierConfig(max_ejection_percent=25), 20)
    assert sum(wide.request_ejection(i, 0.0) is not None for i in range(20)) == 5
    off = OutlierDetector(OutlierConfig(max_ejection_percent=0), 5)
    assert off.request_ejection(0, 0.0) is None  # 0 % means never


def test_disabled_detector_never_ejects() -> None:
    d = OutlierDetector(OutlierConfig(enabled=False), 4)
    assert d.request_ejection(0, 0.0) is None


def test_uneject_add_and_remove_targets() -> None:
    d = OutlierDetector(OutlierConfig(max_ejection_percent=50), 2)
    d.request_ejection(1, 0.0)
    d.uneject(1, 5.0)  # an active health check passed
    assert not d.is_ejected(1, 5.0) and d.status(1, 5.0) == (None, 1)
    assert d.status(1, 15.0) == (None, 0)  # decay counted from the early return
    assert d.add_target() == 2
    d.request_ejection(2, 20.0)
    d.remove_target(0)  # indices shift down
    assert d.is_ejected(1, 21.0)
    assert d.statistics().ejected == 1
    d.remove_target(1)
    assert d.statistics() == type(d.statistics())(
        targets=1, ejected=0, ejections=2, refused=0, max_ejected=1
    )
    assert repr(d) == "<OutlierDetector [0/1 ejected, cap 1] ejections=2 refused=0>"


def test_n_targets_is_validated() -> None:
    with pytest.raises(ValueError, match="n_targets must be an int >= 0"):
        OutlierDetector(OutlierConfig(), -1)


# ---- state machine ----------------------------------------------------------------------


class DetectorMachine(RuleBasedStateMachine):
    """Random ejections, time, un-ejections and target churn against the rules."""

    @initialize(
        n=st.integers(1, 12),
        pct=st.sampled_from([0, 10, 25, 50, 100]),
        base=st.sampled_from([1.0, 30.0]),
        cap=st.sampled_from([0.5, 5.0, 300.0]),
    )
    def setup(self, n: int, pct: int, base: float, cap: float) -> None:
        self.config = OutlierConfig(
            max_ejection_percent=pct, base_ejection_time=base, max_ejection_time=cap, interval=10.0
        )
        self.d = OutlierDetector(self.config, n)
        self.n = n
        self.now = 0.0
        self.until: list[float | None] = [None] * n  # what the detector promised

    def limit(self) -> int:
        pct = self.config.max_ejection_percent
        return 0 if pct == 0 else max(1, math.floor(self.n * pct / 100))

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0, 30.0, 120.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    def ejected(self) -> int:
        return sum(u is not None and self.now < u for u in self.until)

    @rule(i=st.integers(0, 11))
    def request(self, i: int) -> None:
        i %= self.n
        _, before = self.d.status(i, self.now)
        was_ejected = self.d.is_ejected(i, self.now)
        others = self.ejected() - was_ejected
        until = self.d.request_ejection(i, self.now)
        _, after = self.d.status(i, self.now)
        if was_ejected:
            assert until == self.until[i] and after == before
        elif until is not None:
            # granted: within the cap (the at-least-one rule is part of limit())
            assert others + 1 <= self.limit()
            assert after == before + 1
            cap = max(self.config.base_ejection_time, self.config.max_ejection_time)
            expected = min(self.config.base_ejection_time * after, cap)
            assert until - self.now == pytest.approx(expected)
            self.until[i] = until
        else:
            # refused only when the cap forces it
            assert others + 1 > self.limit()
            assert after == before

    @rule()
    def tick(self) -> None:
        back = self.d.tick(self.now)
        for i in back:
            assert self.until[i] is not None and self.until[i] <= self.now
            self.until[i] = None

    @rule(i=st.integers(0, 11))
    def uneject(self, i: int) -> None:
        i %= self.n
        self.d.uneject(i, self.now)
        self.until[i] = None

    @rule()
    def add(self) -> None:
        assert self.d.add_target() == self.n
        self.n += 1
        self.until.append(None)

    @precondition(lambda self: self.n > 1)
    @rule(i=st.integers(0, 11))
    def remove(self, i: int) -> None:
        i %= self.n
        self.d.remove_target(i)
        del self.until[i]
        self.n -= 1

    @invariant()
    def agrees_with_the_promised_times(self) -> None:
        for i in range(self.n):
            promised = self.until[i]
            assert self.d.is_ejected(i, self.now) is (promised is not None and self.now < promised)
        assert self.d.statistics().ejected == self.ejected()
        assert self.d.statistics().max_ejected == self.limit()


TestDetectorMachine = DetectorMachine.TestCase
TestDetectorMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
