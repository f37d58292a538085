"""RouterState under any sequence of picks, outcomes, reports, ejections and drains.

A hypothesis state machine drives the router's synchronous core the way the actor does
and checks, after every step, the invariants the rest of the system relies on.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from velithon._exceptions import NoTargetAvailable, Overloaded
from velithon._lb.breaker import BreakerState
from velithon._lb.messages import Done, OutcomeKind, TargetReport
from velithon._lb.outlier import OutlierConfig, OutlierDetector
from velithon._lb.router import RouterState, TargetEntry
from velithon._lb.strategies import create_strategy

N = 4
CAP = 2
KINDS = list(OutcomeKind)


class RouterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        urls = [f"http://t{i}.test" for i in range(N)]
        self.router = RouterState(
            strategy=create_strategy("least_request", urls, rng=random.Random(0)),
            outlier=OutlierDetector(OutlierConfig(max_ejection_percent=50), N),
            max_requests=CAP, panic_threshold=50.0)
        for i, url in enumerate(urls):
            self.router.entries.append(TargetEntry(i, url, 1))
        self.router.publish_members()
        self.now = 0.0
        self.leases: list[TargetEntry] = []  # one item per lease in flight

    def _entry(self, i: int) -> TargetEntry:
        return self.router.entries[i]

    @rule(dt=st.floats(0, 5))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(exclude=st.frozensets(st.integers(0, N - 1), max_size=N))
    def pick(self, exclude: frozenset[int]) -> None:
        eligible_before = list(self.router.eligible(self.now))
        try:
            entry = self.router.pick(self.now, None, exclude)
        except Overloaded:
            # shed only when something was routable and everything routable is at the cap
            assert any(eligible_before)
            assert all(e.in_flight >= CAP for ok, e in
                       zip(eligible_before, self.router.entries, strict=True) if ok)
            return
        except NoTargetAvailable:
            assert not any(eligible_before)
            return
        assert entry.healthy and not entry.draining
        assert entry.in_flight <= CAP
        if entry.breaker is BreakerState.OPEN:
            assert self.router.panicking  # only panic mode looks past an open breaker
        if entry.breaker is BreakerState.HALF_OPEN and not self.router.panicking:
            assert entry.trials_used <= entry.trial_credits  # a trial needs a credit
        if not self.router.panicking and any(
                ok and e.target_id not in exclude and e.in_flight < CAP
                for ok, e in zip(eligible_before, self.router.entries, strict=True)
                if e is not entry):
            assert entry.target_id not in exclude  # exclusion is honoured when possible
        self.leases.append(entry)

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), kind=st.sampled_from(KINDS))
    def finish(self, data: st.DataObject, kind: OutcomeKind) -> None:
        entry = self.leases.pop(data.draw(st.integers(0, len(self.leases) - 1)))
        self.router.done(Done(entry.target_id, entry.epoch, kind, 0.01), self.now)

    @rule(i=st.integers(0, N - 1), healthy=st.booleans(),
          breaker=st.sampled_from(list(BreakerState)), credits=st.integers(0, 2))
    def report(self, i: int, healthy: bool, breaker: BreakerState, credits: int) -> None:
        entry = self._entry(i)
        self.router.report(TargetReport(entry.target_id, healthy, breaker, entry.epoch + 1,
                                        trial_credits=credits))

    @rule(i=st.integers(0, N - 1))
    def eject(self, i: int) -> None:
        self.router.eject(self._entry(i).target_id, self.now)

    @rule(i=st.integers(0, N - 1), draining=st.booleans())
    def drain(self, i: int, draining: bool) -> None:
        self._entry(i).draining = draining
        self.router.invalidate()

    @invariant()
    def in_flight_counts_every_lease_exactly(self) -> None:
        for entry in self.router.entries:
            assert entry.in_flight == sum(1 for e in self.leases if e is entry)

    @invariant()
    def members_mirror_the_entries(self) -> None:
        assert [m.url for m in self.router.members] == [e.url for e in self.router.entries]

    @invariant()
    def ejections_respect_the_cap(self) -> None:
        ejected = sum(e.ejected_until is not None and e.ejected_until > self.now
                      for e in self.router.entries)
        assert ejected <= N // 2


TestRouterState = RouterMachine.TestCase
