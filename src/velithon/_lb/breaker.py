# The per-target circuit breaker: a pure, synchronous state machine.
#
# Rule 1: everything that decides a state transition lives in this file.
# Rule 2: no clock and no I/O.  Every call takes ``now`` (seconds, e.g.
#   ``trio.current_time()``); ``now`` never goes backwards (an earlier value is
#   treated as the latest one seen).  The owning target actor is the only caller.
#
# Theory of operation
# -------------------
#   state      allow(now)                      on success              on failure
#   ---------  ------------------------------  ----------------------  -----------------
#   CLOSED     True                            streak = 0              TRIP if threshold
#   OPEN       False until opened_at+recovery  ignored                 ignored
#   HALF_OPEN  True while trials < max; the    successes += 1;         TRIAL_FAILED
#              granted trial is counted        TRIALS_PASSED at
#                                              success_threshold
#
# Event-triggered transitions are the table ``_TRANSITIONS`` below; ``_fire``
# applies one, runs the new state's setup and bumps ``epoch``.  OPEN -> HALF_OPEN is
# time-triggered: every call first applies RECOVERY_ELAPSED when
# ``now >= opened_at + recovery`` (lazily; ``next_transition_at()`` tells the
# actor when to wake up so it can publish the change).
#
# Thresholds (CLOSED -> TRIP):
#   consecutive  ``max_failures`` failures with no success in between.  The
#                streak is bounded by construction (it trips at the threshold).
#   ratio        over the sliding ``window_s`` (10 buckets, O(1) memory), at
#                least ``min_requests`` outcomes and failures / outcomes >=
#                ``failure_ratio``; evaluated when a failure is recorded.
#                Older buckets are forgotten, so counts never grow unbounded.
#
# Late outcomes: a request admitted in one state may finish in another.  Pass
# the ``epoch`` read at admission to ``record_*``/``release``: an outcome from an
# older epoch changes nothing (counted as ``stale_outcomes``).  Without an
# epoch, outcomes reaching an OPEN breaker are ignored, and outcomes reaching a
# HALF_OPEN breaker with no trial in flight are ignored as stale; with trials in
# flight they are taken as a trial's outcome.  ``last_failure_at`` records every
# failure, stale or not (it only feeds ``status``).

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

import attrs

from .._exceptions import ConfigError
from .window import SlidingCounts

__all__ = ["BreakerConfig", "BreakerState", "BreakerStatistics", "CircuitBreaker"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class _Event(enum.Enum):
    TRIP = "trip"
    RECOVERY_ELAPSED = "recovery_elapsed"
    TRIAL_FAILED = "trial_failed"
    TRIALS_PASSED = "trials_passed"
    RESET = "reset"


CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

_TRANSITIONS: dict[tuple[BreakerState, _Event], BreakerState] = {
    (CLOSED, _Event.TRIP): OPEN,
    (OPEN, _Event.RECOVERY_ELAPSED): HALF_OPEN,
    (HALF_OPEN, _Event.TRIAL_FAILED): OPEN,
    (HALF_OPEN, _Event.TRIALS_PASSED): CLOSED,
    (CLOSED, _Event.RESET): CLOSED,
    (OPEN, _Event.RESET): CLOSED,
    (HALF_OPEN, _Event.RESET): CLOSED,
}

_BUCKETS = 10
_MODES = ("consecutive", "ratio")


_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _int_at_least(minimum: int) -> _Validator:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is bool or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{attribute.name} must be an int >= {minimum} (got {value!r})")

    return check


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is bool or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"{attribute.name} must be a positive number (got {value!r})")


@attrs.frozen
class BreakerConfig:
    """Circuit breaker settings; Velithon's defaults (5 failures, 60 s)."""

    max_failures: int = attrs.field(default=5, validator=_int_at_least(1))
    recovery_timeout_ms: int = attrs.field(default=60000, validator=_int_at_least(0))
    mode: str = attrs.field(default="consecutive")
    failure_ratio: float = attrs.field(default=0.5)
    window_s: float = attrs.field(default=10.0, validator=_positive)
    min_requests: int = attrs.field(default=10, validator=_int_at_least(1))
    half_open_max_requests: int = attrs.field(default=1, validator=_int_at_least(1))
    success_threshold: int = attrs.field(default=1, validator=_int_at_least(1))

    @mode.validator
    def _check_mode(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in _MODES:
            raise ConfigError(f"Invalid breaker mode {value!r}. Use 'consecutive' or 'ratio'")

    @failure_ratio.validator
    def _check_ratio(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is bool or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ConfigError(f"failure_ratio must be in (0, 1] (got {value!r})")

    @property
    def recovery_timeout(self) -> float:
        """The open period in seconds."""
        return self.recovery_timeout_ms / 1000.0


@attrs.frozen
class BreakerStatistics:
    state: BreakerState
    epoch: int
    failure_count: int
    window_requests: int
    window_failures: int
    trials_in_flight: int
    trial_successes: int
    times_opened: int
    stale_outcomes: int
    opened_at: float | None
    last_failure_at: float | None


class CircuitBreaker:
    """closed → open → half-open → closed, with a bounded number of trials.

    An open breaker is not a dead end: once ``recovery_timeout_ms`` has passed,
    the next ``allow`` turns it half-open and grants up to
    ``half_open_max_requests`` concurrent trials.
    """

    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config if config is not None else BreakerConfig()
        self._recovery = self.config.recovery_timeout
        self.epoch = 0
        self.times_opened = 0
        self.stale_outcomes = 0
        self._now = -math.inf
        self._clear()

    def _clear(self) -> None:
        self._state = CLOSED
        self._streak = 0
        self._counts = SlidingCounts(self.config.window_s, _BUCKETS)  # (successes, failures)
        self._trials = 0
        self._trial_successes = 0
        self._opened_at: float | None = None
        self.last_failure_at: float | None = None

    # ---- transitions ----------------------------------------------------------

    def _fire(self, event: _Event, now: float) -> None:
        new = _TRANSITIONS[(self._state, event)]
        if event is _Event.RESET:
            self._clear()
        elif new is OPEN:
            self._opened_at = now
            self._trials = self._trial_successes = 0
            self.times_opened += 1
        elif new is HALF_OPEN:
            self._trials = self._trial_successes = 0
        else:  # CLOSED after passing trials: a fresh start
            last = self.last_failure_at
            self._clear()
            self.last_failure_at = last
        self._state = new
        self.epoch += 1

    def _advance(self, now: float) -> float:
        """Clamp ``now`` to be monotonic and apply the time-triggered transition."""
        if now < self._now:
            now = self._now
        self._now = now
        opened_at = self._opened_at
        if self._state is OPEN and opened_at is not None and now >= opened_at + self._recovery:
            self._fire(_Event.RECOVERY_ELAPSED, now)
        return now

    def _stale(self, epoch: int | None) -> bool:
        stale = (
            (epoch is not None and epoch != self.epoch)
            or self._state is OPEN
            or (self._state is HALF_OPEN and self._trials == 0)
        )
        if stale:
            self.stale_outcomes += 1
        return stale

    # ---- the ratio window -------------------------------------------------------

    def _window(self) -> tuple[int, int]:
        """(requests, failures) inside the window."""
        successes, failures = self._counts.totals(self._now)
        return successes + failures, failures

    # ---- public API ---------------------------------------------------------------

    def allow(self, now: float) -> bool:
        """May a request go to the target now?  A half-open grant is a trial."""
        self._advance(now)
        if self._state is CLOSED:
            return True
        if self._state is HALF_OPEN and self._trials < self.config.half_open_max_requests:
            self._trials += 1
            return True
        return False

    def record_success(self, now: float, *, epoch: int | None = None) -> None:
        now = self._advance(now)
        if self._stale(epoch):
            return
        if self._state is CLOSED:
            self._streak = 0
            if self.config.mode == "ratio":
                self._counts.add(now, first=1)
            return
        self._trials -= 1
        self._trial_successes += 1
        if self._trial_successes >= self.config.success_threshold:
            self._fire(_Event.TRIALS_PASSED, now)

    def record_failure(self, now: float, *, epoch: int | None = None) -> None:
        now = self._advance(now)
        self.last_failure_at = now
        if self._stale(epoch):
            return
        self._streak += 1
        if self._state is HALF_OPEN:
            self._fire(_Event.TRIAL_FAILED, now)
            return
        config = self.config
        if config.mode == "consecutive":
            if self._streak >= config.max_failures:
                self._fire(_Event.TRIP, now)
            return
        self._counts.add(now, second=1)
        requests, failures = self._window()
        if requests >= config.min_requests and failures >= config.failure_ratio * requests:
            self._fire(_Event.TRIP, now)

    def release(self, now: float, *, epoch: int | None = None) -> None:
        """An admitted request ended without a verdict: free its half-open slot."""
        self._advance(now)
        if self._state is HALF_OPEN and not self._stale(epoch):
            self._trials -= 1

    def reset(self) -> None:
        """Back to closed with all counts forgotten (outstanding outcomes go stale)."""
        self._fire(_Event.RESET, self._now)

    def state(self, now: float) -> BreakerState:
        self._advance(now)
        return self._state

    def failure_count(self) -> int:
        """Consecutive failures (consecutive mode) or failures in the window (ratio)."""
        if self.config.mode == "ratio":
            return self._window()[1]
        return self._streak

    def status(self, now: float) -> tuple[str, int, int | None]:
        """Velithon's ``(state, failure_count, ms since the last failure or None)``."""
        now = self._advance(now)
        last = self.last_failure_at
        elapsed = None if last is None else int((now - last) * 1000.0)
        return self._state.value, self.failure_count(), elapsed

    def next_transition_at(self) -> float | None:
        """When an open breaker turns half-open (None unless open)."""
        if self._state is OPEN and self._opened_at is not None:
            return self._opened_at + self._recovery
        return None

    def statistics(self) -> BreakerStatistics:
        requests, failures = self._window()
        return BreakerStatistics(
            state=self._state,
            epoch=self.epoch,
            failure_count=self.failure_count(),
            window_requests=requests,
            window_failures=failures,
            trials_in_flight=self._trials,
            trial_successes=self._trial_successes,
            times_opened=self.times_opened,
            stale_outcomes=self.stale_outcomes,
            opened_at=self._opened_at,
            last_failure_at=self.last_failure_at,
        )

    def __repr__(self) -> str:
        extra = ""
        if self._state is HALF_OPEN:
            extra = f", trials {self._trials}/{self.config.half_open_max_requests}"
        elif self._state is OPEN:
            extra = f", until {self.next_transition_at():g}"
        return (
            f"<CircuitBreaker {self._state.value} [{self.config.mode}, "
            f"failures {self.failure_count()}{extra}] epoch={self.epoch}>"
        )
