"""The target actor's half-open trial credits, under any sequence of outcomes and time.

A hypothesis state machine drives the target actor's synchronous core (outcomes,
timers) and reads the reports it queues for the router: the router may lease at most
``trial_credits`` trials per breaker epoch, so those credits must never exceed what the
breaker allows in half-open, and must start again from zero with every new epoch.
"""

from __future__ import annotations

from typing import Any

import trio
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from velithon._lb.breaker import BreakerConfig, BreakerState
from velithon._lb.health import HealthCheckConfig
from velithon._lb.messages import Outcome, OutcomeKind, TargetReport
from velithon._lb.outlier import OutlierConfig
from velithon._lb.target import TargetActor, TargetState

TRIALS = 2
CONFIG = BreakerConfig(max_failures=2, recovery_timeout_ms=1000, half_open_max_requests=TRIALS,
                       success_threshold=2)


class TargetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        state = TargetState.new(0, "http://t.test", health=HealthCheckConfig(),
                                breaker=CONFIG, outlier=OutlierConfig())
        send, receive = trio.open_memory_channel[Any](8)
        self.actor = TargetActor(state, inbox=receive, self_send=send, router_send=send,
                                 probe=None, health_config=HealthCheckConfig(),
                                 run_probe_loop=False)
        self.now = 0.0
        self.reports: list[TargetReport] = []
        self.settled: dict[int, int] = {}  # epoch -> outcomes that gave a trial back

    def _collect(self) -> None:
        outbox: list[Any] = self.actor._outbox
        self.reports.extend(m for m in outbox if isinstance(m, TargetReport))
        outbox.clear()

    @rule(dt=st.floats(0, 2))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.actor._on_timer(self.now)
        self._collect()

    @rule(kind=st.sampled_from(list(OutcomeKind)), stale=st.booleans())
    def outcome(self, kind: OutcomeKind, stale: bool) -> None:
        breaker = self.actor.state.breaker
        epoch = breaker.epoch - (1 if stale else 0)
        if not stale and breaker.state(self.now) is BreakerState.HALF_OPEN:
            self.settled[epoch] = self.settled.get(epoch, 0) + 1
        self.actor._on_outcome(Outcome(kind, epoch, 0.01), self.now)
        self._collect()

    @invariant()
    def outstanding_trials_never_exceed_the_half_open_limit(self) -> None:
        """Credits are cumulative per epoch; those not yet settled are trials in flight."""
        for report in self.reports:
            assert report.trial_credits - self.settled.get(report.epoch, 0) <= TRIALS

    @invariant()
    def credits_grow_within_an_epoch_and_restart_with_the_next(self) -> None:
        last: dict[int, int] = {}
        for report in self.reports:
            if report.epoch not in last:
                assert report.trial_credits <= TRIALS  # a new epoch starts from zero
            else:
                assert report.trial_credits >= last[report.epoch]
            last[report.epoch] = report.trial_credits

    @invariant()
    def credits_are_only_granted_in_half_open(self) -> None:
        for report in self.reports:
            if report.breaker is BreakerState.OPEN:
                assert report.trial_credits == 0

    @invariant()
    def epochs_only_move_forward(self) -> None:
        epochs = [r.epoch for r in self.reports]
        assert epochs == sorted(epochs)


TestTargetCredits = TargetMachine.TestCase
