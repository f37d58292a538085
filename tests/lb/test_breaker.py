"""Circuit breaker: exact-time transitions and a model-based state machine."""

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

from velithon._lb.breaker import BreakerConfig, BreakerState, CircuitBreaker

T0 = 1000.0


def tripped(config: BreakerConfig | None = None, at: float = T0) -> CircuitBreaker:
    breaker = CircuitBreaker(config or BreakerConfig())
    for _ in range(breaker.config.max_failures):
        assert breaker.allow(at)
        breaker.record_failure(at)
    assert breaker.state(at) is BreakerState.OPEN
    return breaker


# ---- config ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_failures": 0}, "max_failures must be an int >= 1 (got 0)"),
        ({"max_failures": True}, "max_failures must be an int >= 1 (got True)"),
        ({"recovery_timeout_ms": -1}, "recovery_timeout_ms must be an int >= 0 (got -1)"),
        ({"mode": "sliding"}, "Invalid breaker mode 'sliding'. Use 'consecutive' or 'ratio'"),
        ({"failure_ratio": 1.5}, "failure_ratio must be in (0, 1] (got 1.5)"),
        ({"window_s": 0}, "window_s must be a positive number (got 0)"),
        ({"min_requests": 0}, "min_requests must be an int >= 1 (got 0)"),
        ({"half_open_max_requests": 0}, "half_open_max_requests must be an int >= 1 (got 0)"),
        ({"success_threshold": 0}, "success_threshold must be an int >= 1 (got 0)"),
    ],
)
def test_config_is_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        BreakerConfig(**kwargs)
    assert str(info.value) == message


def test_defaults_are_velithons() -> None:
    config = BreakerConfig()
    assert (config.max_failures, config.recovery_timeout_ms, config.mode) == (
        5, 60000, "consecutive")
    assert config.recovery_timeout == 60.0
    assert CircuitBreaker().status(0.0) == ("closed", 0, None)


# ---- consecutive mode ------------------------------------------------------------


def test_a_success_resets_the_streak() -> None:
    """Envoy BasicFlow: 500, 200, 500 x4 stays closed; the next 500 opens."""
    b = CircuitBreaker()
    b.record_failure(T0)
    b.record_success(T0)
    for _ in range(4):
        b.record_failure(T0)
    assert b.status(T0 + 0.25) == ("closed", 4, 250)
    b.record_failure(T0 + 1)
    assert b.status(T0 + 1) == ("open", 5, 0)
    assert b.statistics().times_opened == 1


def test_half_open_exactly_at_recovery_time_with_one_trial() -> None:
    b = tripped()
    assert b.next_transition_at() == T0 + 60.0
    assert not b.allow(T0 + 59.999)
    assert b.state(T0 + 59.999) is BreakerState.OPEN
    assert b.allow(T0 + 60.000)  # the trial
    assert b.state(T0 + 60.0) is BreakerState.HALF_OPEN
    assert not b.allow(T0 + 60.0)  # a second concurrent trial is refused
    assert not b.allow(T0 + 61.0)
    assert b.next_transition_at() is None


def test_trial_success_closes_and_resets_counts() -> None:
    b = tripped()
    assert b.allow(T0 + 60)
    b.record_success(T0 + 60.5)
    assert b.state(T0 + 61) is BreakerState.CLOSED
    for _ in range(4):
        b.record_failure(T0 + 62)
    assert b.state(T0 + 62) is BreakerState.CLOSED  # 4 failures later still closed
    assert b.status(T0 + 62)[1] == 4


def test_trial_failure_reopens_for_a_new_full_period() -> None:
    b = tripped()
    assert b.allow(T0 + 60)
    b.record_failure(T0 + 65)
    assert b.state(T0 + 65) is BreakerState.OPEN
    assert b.next_transition_at() == T0 + 125
    assert not b.allow(T0 + 124.999)
    assert b.allow(T0 + 125)


def test_success_threshold_needs_that_many_trials() -> None:
    b = tripped(BreakerConfig(success_threshold=3, half_open_max_requests=2))
    t = T0 + 60
    assert b.allow(t) and b.allow(t) and not b.allow(t)
    b.record_success(t)
    assert b.state(t) is BreakerState.HALF_OPEN
    assert b.allow(t)  # the freed slot is granted again
    b.record_success(t)
    b.record_success(t)
    assert b.state(t) is BreakerState.CLOSED


def test_release_frees_a_half_open_slot_without_a_verdict() -> None:
    b = tripped()
    t = T0 + 60
    assert b.allow(t) and not b.allow(t)
    b.release(t)
    assert b.state(t) is BreakerState.HALF_OPEN
    assert b.allow(t)


def test_outcomes_admitted_before_a_transition_do_not_touch_the_trial() -> None:
    b = CircuitBreaker()
    closed_epoch = b.epoch
    for _ in range(6):
        assert b.allow(T0)
    for _ in range(5):
        b.record_failure(T0, epoch=closed_epoch)
    assert b.allow(T0 + 60)  # the trial, in the half-open epoch
    trial_epoch = b.epoch
    assert trial_epoch != closed_epoch
    b.record_success(T0 + 60.1, epoch=closed_epoch)  # the sixth, admitted while closed
    b.release(T0 + 60.1, epoch=closed_epoch)
    assert b.state(T0 + 60.1) is BreakerState.HALF_OPEN
    assert b.statistics().trials_in_flight == 1
    assert not b.allow(T0 + 60.1)
    assert b.statistics().stale_outcomes == 2
    b.record_success(T0 + 60.2, epoch=trial_epoch)
    assert b.state(T0 + 60.2) is BreakerState.CLOSED


def test_untagged_outcomes_with_no_trial_in_flight_are_ignored() -> None:
    b = tripped()
    b.record_failure(T0 + 1)  # a late failure while open: no new open period
    assert b.next_transition_at() == T0 + 60
    assert b.state(T0 + 60) is BreakerState.HALF_OPEN
    b.record_success(T0 + 60)  # no trial granted yet: stale
    b.record_failure(T0 + 60)
    assert b.state(T0 + 60) is BreakerState.HALF_OPEN
    assert b.status(T0 + 60) == ("half_open", 5, 0)  # last failure time still recorded


def test_reset_closes_and_forgets() -> None:
    b = tripped()
    epoch = b.epoch
    b.reset()
    assert b.status(T0) == ("closed", 0, None)
    assert b.epoch == epoch + 1
    assert b.next_transition_at() is None


def test_time_going_backwards_is_clamped() -> None:
    b = tripped()
    assert b.allow(T0 + 60)
    assert b.state(T0) is BreakerState.HALF_OPEN


# ---- ratio mode --------------------------------------------------------------------


RATIO = BreakerConfig(mode="ratio", failure_ratio=0.5, window_s=10.0, min_requests=10)


def test_ratio_mode_needs_volume_and_ratio() -> None:
    b = CircuitBreaker(RATIO)
    for _ in range(9):
        b.record_failure(T0)
    assert b.state(T0) is BreakerState.CLOSED  # 9 requests < min_requests
    b.record_failure(T0)
    assert b.state(T0) is BreakerState.OPEN

    b = CircuitBreaker(RATIO)
    for _ in range(6):
        b.record_success(T0)
    for _ in range(5):
        b.record_failure(T0)
    assert b.state(T0) is BreakerState.CLOSED  # 5 / 11 < 0.5
    b.record_failure(T0)
    assert b.state(T0) is BreakerState.OPEN  # 6 / 12 = 0.5


def test_ratio_window_forgets_old_outcomes() -> None:
    b = CircuitBreaker(RATIO)
    for _ in range(9):
        b.record_failure(T0)
    assert b.statistics().window_failures == 9
    b.record_failure(T0 + 10.0)  # a whole window later: the 9 are gone
    stats = b.statistics()
    assert (stats.state, stats.window_requests, stats.window_failures) == (
        BreakerState.CLOSED,
        1,
        1,
    )
    assert b.status(T0 + 10.0)[1] == 1


# ---- model-based state machine -------------------------------------------------------


class Model:
    """A plain reference breaker: event list instead of buckets, no tables."""

    def __init__(self, config: BreakerConfig) -> None:
        self.c = config
        self.state = "closed"
        self.streak = 0
        self.events: list[tuple[float, bool]] = []
        self.opened_at = 0.0
        self.trials = 0
        self.passed = 0
        self.epoch = 0
        self.last_failure: float | None = None

    def tick(self, now: float) -> None:
        if self.state == "open" and now >= self.opened_at + self.c.recovery_timeout_ms / 1000:
            self.state, self.trials, self.passed = "half_open", 0, 0
            self.epoch += 1

    def open(self, now: float) -> None:
        self.state, self.opened_at = "open", now
        self.epoch += 1

    def close(self) -> None:
        self.state, self.streak, self.events, self.trials, self.passed = "closed", 0, [], 0, 0
        self.epoch += 1

    def window(self, now: float) -> tuple[int, int]:
        width = self.c.window_s / 10
        oldest = math.floor(now / width) - 10
        recent = [ok for t, ok in self.events if math.floor(t / width) > oldest]
        return len(recent), recent.count(False)

    def stale(self, epoch: int | None) -> bool:
        return (
            (epoch is not None and epoch != self.epoch)
            or self.state == "open"
            or (self.state == "half_open" and self.trials == 0)
        )

    def allow(self, now: float) -> bool:
        self.tick(now)
        if self.state == "closed":
            return True
        if self.state == "half_open" and self.trials < self.c.half_open_max_requests:
            self.trials += 1
            return True
        return False

    def success(self, now: float, epoch: int | None) -> None:
        self.tick(now)
        if self.stale(epoch):
            return
        if self.state == "closed":
            self.streak = 0
            if self.c.mode == "ratio":
                self.events.append((now, True))
        else:
            self.trials -= 1
            self.passed += 1
            if self.passed >= self.c.success_threshold:
                self.close()

    def failure(self, now: float, epoch: int | None) -> None:
        self.tick(now)
        self.last_failure = now
        if self.stale(epoch):
            return
        self.streak += 1
        if self.state == "half_open":
            self.open(now)
        elif self.c.mode == "consecutive":
            if self.streak >= self.c.max_failures:
                self.open(now)
        else:
            self.events.append((now, False))
            requests, failures = self.window(now)
            if requests >= self.c.min_requests and failures >= self.c.failure_ratio * requests:
                self.open(now)

    def release(self, now: float, epoch: int | None) -> None:
        self.tick(now)
        if self.state == "half_open" and not self.stale(epoch):
            self.trials -= 1

    def failure_count(self, now: float) -> int:
        return self.window(now)[1] if self.c.mode == "ratio" else self.streak


configs = st.builds(
    BreakerConfig,
    max_failures=st.integers(1, 4),
    recovery_timeout_ms=st.sampled_from([0, 500, 3000, 60000]),
    mode=st.sampled_from(["consecutive", "ratio"]),
    failure_ratio=st.sampled_from([0.25, 0.5, 1.0]),
    window_s=st.sampled_from([1.0, 10.0]),
    min_requests=st.integers(1, 5),
    half_open_max_requests=st.integers(1, 3),
    success_threshold=st.integers(1, 3),
)


class BreakerMachine(RuleBasedStateMachine):
    """Rules: allow, success, failure, release, advance(dt), reset.

    Each granted ``allow`` leaves a ticket (the epoch at admission); outcome
    rules finish the newest ticket or an older one, tagged with its epoch or
    not, so late outcomes from earlier states are exercised too.
    """

    @initialize(config=configs)
    def setup(self, config: BreakerConfig) -> None:
        self.now = T0
        self.sut = CircuitBreaker(config)
        self.model = Model(config)
        self.tickets: list[int] = []

    @rule(dt=st.sampled_from([0.0, 0.001, 0.25, 0.5, 1.0, 2.999, 3.0, 10.0, 59.999, 60.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def advance_to_recovery(self) -> None:
        at = self.sut.next_transition_at()
        if at is not None:
            self.now = max(self.now, at)

    @rule()
    def allow(self) -> None:
        granted = self.sut.allow(self.now)
        assert granted == self.model.allow(self.now)
        if granted:
            self.tickets.append(self.sut.epoch)

    def _finish(self, which: int, tagged: bool) -> int | None:
        ticket = self.tickets.pop(-1 - which % len(self.tickets))
        return ticket if tagged else None

    @precondition(lambda self: self.tickets)
    @rule(which=st.sampled_from([0, 0, 1, 2, 7]), tagged=st.booleans())
    def success(self, which: int, tagged: bool) -> None:
        epoch = self._finish(which, tagged)
        self.sut.record_success(self.now, epoch=epoch)
        self.model.success(self.now, epoch)

    @precondition(lambda self: self.tickets)
    @rule(which=st.sampled_from([0, 0, 1, 2, 7]), tagged=st.booleans())
    def failure(self, which: int, tagged: bool) -> None:
        epoch = self._finish(which, tagged)
        self.sut.record_failure(self.now, epoch=epoch)
        self.model.failure(self.now, epoch)

    @precondition(lambda self: self.tickets)
    @rule(which=st.sampled_from([0, 0, 1, 2, 7]), tagged=st.booleans())
    def release(self, which: int, tagged: bool) -> None:
        epoch = self._finish(which, tagged)
        self.sut.release(self.now, epoch=epoch)
        self.model.release(self.now, epoch)

    @rule()
    def fail_until_open(self) -> None:
        """A burst of admitted, failing requests (reaches OPEN quickly)."""
        for _ in range(64):
            if not self.model.allow(self.now):
                break
            assert self.sut.allow(self.now)
            self.sut.record_failure(self.now, epoch=self.sut.epoch)
            self.model.failure(self.now, self.model.epoch)
            if self.model.state == "open":
                break

    @rule()
    def reset(self) -> None:
        self.sut.reset()
        self.model.close()
        self.model.last_failure = None

    @invariant()
    def agrees_with_the_model(self) -> None:
        model = self.model
        model.tick(self.now)
        assert self.sut.state(self.now).value == model.state
        assert self.sut.epoch == model.epoch
        last = model.last_failure
        elapsed = None if last is None else int((self.now - last) * 1000)
        assert self.sut.status(self.now) == (model.state, model.failure_count(self.now), elapsed)
        stats = self.sut.statistics()
        assert 0 <= stats.trials_in_flight <= self.sut.config.half_open_max_requests
        if model.state == "open":
            recovery = model.c.recovery_timeout_ms / 1000
            assert self.sut.next_transition_at() == model.opened_at + recovery
            assert self.now < self.sut.next_transition_at()  # type: ignore[operator]
        else:
            assert self.sut.next_transition_at() is None


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)


def test_repr_and_statistics_describe_the_state() -> None:
    b = tripped()
    assert repr(b) == "<CircuitBreaker open [consecutive, failures 5, until 1060] epoch=1>"
    b.allow(T0 + 60)
    assert repr(b) == "<CircuitBreaker half_open [consecutive, failures 5, trials 1/1] epoch=2>"
    stats = b.statistics()
    assert (stats.state, stats.trials_in_flight, stats.opened_at) == (
        BreakerState.HALF_OPEN,
        1,
        T0,
    )
