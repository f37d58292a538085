"""The router actor: owns the strategy and its view of every target.

Facades send :class:`~velithon._lb.messages.Pick` and get back a :class:`Lease`;
when the request ends the lease sends :class:`~velithon._lb.messages.Done`, which
the router uses for in-flight counts and latency, then forwards to the owning
target actor. Targets publish :class:`~velithon._lb.messages.TargetReport` when
their health or breaker changes. The router never does I/O; its decisions are
the synchronous methods of :class:`RouterState`.

A target is *routable* when it is healthy, not ejected, not draining, and its
breaker is closed or half-open with an unused trial credit.

**Panic mode.** Breakers and outlier ejection are passive guesses; when they
leave fewer than ``panic_threshold`` percent of the (non-draining) targets
routable, trusting them would fail most of the traffic, so the router spreads
requests over every target whose health checks pass, breakers and ejections
ignored (Envoy's panic threshold, 50 % by default; 0 disables it). Active
health checks stay authoritative, and a pool of one target never panics: its
open breaker keeps failing fast. When no target passes its health checks the
``none_healthy`` policy decides: ``"fail"`` (503, the default) or ``"panic"``
(spread over every target whose breaker is not open).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import attrs
import trio

from .._exceptions import NoTargetAvailable, Overloaded
from .._logfmt import logfmt
from .breaker import BreakerState
from .messages import (
    AddTarget,
    Close,
    Done,
    Ejected,
    EjectRequest,
    Outcome,
    OutcomeKind,
    Pick,
    RemoveTarget,
    RouterMsg,
    RouterStatus,
    SetDraining,
    SetTargetWeights,
    SetWeights,
    TargetMsg,
    TargetReport,
)
from .outlier import OutlierDetector
from .reply import Reply, answer_failed
from .retry import RetryBudget
from .strategies import LatencyEwma, Strategy

LOGGER = logging.getLogger("velithon.router")

NONE_HEALTHY_POLICIES = ("fail", "panic")

#: messages handled per wake-up before the router yields to other tasks
_BATCH = 256
#: reports kept for targets not added yet (only additions in progress need them)
_EARLY_REPORTS = 64

#: upper bounds, in seconds, of the request-duration histogram the router keeps per
#: target (Prometheus' default buckets); a last, unbounded bucket follows them
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                   7.5, 10.0)


def _empty_histogram() -> list[int]:
    return [0] * (len(LATENCY_BUCKETS) + 1)


@attrs.frozen
class TargetMember:
    """One target as others may see it: an immutable record the router publishes."""

    target_id: int
    url: str
    weight: int


@attrs.define(eq=False)
class TargetEntry:
    """The router's view of one target (the router is its only writer)."""

    target_id: int
    url: str
    weight: int
    pool: Any = None
    inbox: trio.MemorySendChannel[TargetMsg] | None = None
    healthy: bool = True
    breaker: BreakerState = BreakerState.CLOSED
    epoch: int = 0
    trial_credits: int = 0
    trials_used: int = 0
    draining: bool = False
    ejected_until: float | None = None
    in_flight: int = 0
    leased: int = 0
    outcomes_dropped: int = 0
    ewma: LatencyEwma = attrs.field(factory=LatencyEwma)
    drained: Any = None  # a Reply waiting for in_flight to reach 0 (removal)
    pending_successes: int = 0  # folded into one Outcome at the end of a batch
    pending_epoch: int = 0
    #: requests that ended with a verdict, by upstream status (0: no complete response)
    responses: defaultdict[int, int] = attrs.field(factory=lambda: defaultdict(int))
    #: the same requests' durations: one count per bucket of LATENCY_BUCKETS, and the sum
    latency_counts: list[int] = attrs.field(factory=_empty_histogram)
    latency_sum: float = 0.0
    ejections: int = 0  # times passive outlier detection ejected this target

    def routable(self, now: float) -> bool:
        if not self.healthy or self.draining:
            return False
        if self.ejected_until is not None and now < self.ejected_until:
            return False
        if self.breaker is BreakerState.OPEN:
            return False
        if self.breaker is BreakerState.HALF_OPEN:
            return self.trials_used < self.trial_credits
        return True


@attrs.frozen
class RouterTargetView:
    """One row of :meth:`RouterState.view`."""

    target_id: int
    url: str
    weight: int
    healthy: bool
    breaker_state: str
    draining: bool
    ejected_until: float | None
    in_flight: int
    leased: int
    latency_ms: float
    ejections: int
    #: ``(status, count)`` pairs in status order; status 0 counts requests that got no
    #: complete response (connect failure, reset, timeout, invalid or cut-off answer)
    responses: tuple[tuple[int, int], ...]
    #: per-bucket counts over :data:`LATENCY_BUCKETS` (not cumulative), then the sum
    latency_counts: tuple[int, ...]
    latency_sum: float
    pool_idle: int  # idle keep-alive connections in the target's pool
    pool_open: int  # open connections: idle plus in use


@attrs.define(eq=False)
class Lease:
    """The right to send one request to one target.

    Use it as an async context manager. Leaving the block always gives the lease back,
    whatever happened inside (an error, a cancellation): the router's in-flight count
    and the per-target concurrency cap can never leak. The outcome reported is the last
    one :meth:`report` recorded, or :attr:`OutcomeKind.NEUTRAL` (no verdict about the
    target) when the block ended without one.
    """

    target_id: int
    url: str
    pool: Any
    epoch: int
    started_at: float
    _router: trio.MemorySendChannel[RouterMsg]
    #: trio's clock, read in one call (the router's; ``trio.current_time()`` is three)
    _clock: Callable[[], float]
    _kind: OutcomeKind = OutcomeKind.NEUTRAL
    _status: int | None = None
    _client_time: float = 0.0
    _finished: bool = False

    def report(self, kind: OutcomeKind, status: int | None = None, *,
               client_time: float = 0.0) -> None:
        """Record what the request told about the target (sent when the block ends).

        ``client_time`` is time spent waiting for the client during the lease; it is
        left out of the latency the target is judged by.
        """
        self._kind = kind
        self._status = status
        self._client_time = client_time

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._finished:
            return
        self._finished = True
        latency = max(self._clock() - self.started_at - self._client_time, 0.0)
        done = Done(self.target_id, self.epoch, self._kind, latency, self._status)
        try:
            self._router.send_nowait(done)  # the usual case: no wait, no cancel scope
        except trio.WouldBlock:
            # The router drains its inbox continuously (a restarting router resumes
            # where it stopped); waiting is bounded by the balancer's shutdown, which
            # closes the channel. Shielded: a cancelled request still gives its lease back.
            with trio.CancelScope(shield=True):
                try:
                    await self._router.send(done)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    pass  # the balancer shut down: nobody is left to count
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the balancer shut down: nobody is left to count


@attrs.define(eq=False)
class RouterState:
    """Everything the router decides with; persists across router restarts."""

    strategy: Strategy
    outlier: OutlierDetector
    none_healthy: str = "fail"
    panic_threshold: float = 50.0
    budget: RetryBudget | None = None
    max_requests: int | None = None  # per-target concurrency cap (Envoy's max_requests)
    name: str = "balancer"  # the route or middleware, as the logs name it
    entries: list[TargetEntry] = attrs.field(factory=list)
    #: removed targets whose leases are still out, by id: their ``Done`` must still
    #: reach them so the removal's drain can finish
    retired: dict[int, TargetEntry] = attrs.field(factory=dict)
    #: the latest report of each target whose actor started before its AddTarget
    #: arrived (a runtime addition probes at once), applied when the AddTarget does
    early_reports: dict[int, TargetReport] = attrs.field(factory=dict)
    picks: int = 0
    retries: int = 0
    retries_denied: int = 0
    overflows: int = 0
    rejected: int = 0
    panic_picks: int = 0
    panicking: bool = False
    #: the current membership, replaced (never changed in place) whenever targets are
    #: added, removed or re-weighted: what facades read instead of the router's entries
    members: tuple[TargetMember, ...] = ()
    _eligible: list[bool] | None = None
    _in_flight: list[int] = attrs.field(factory=list)
    _recheck_at: float = float("inf")

    def invalidate(self) -> None:
        self._eligible = None

    def by_id(self, target_id: int) -> TargetEntry | None:
        for entry in self.entries:
            if entry.target_id == target_id:
                return entry
        return None

    def eligible(self, now: float) -> list[bool]:
        """Routability per entry, cached until something relevant changes."""
        if self._eligible is None or now >= self._recheck_at:
            self._recheck_at = float("inf")
            for entry in self.entries:
                until = entry.ejected_until
                if until is not None:
                    if now >= until or not self.outlier.is_ejected(self._index(entry), now):
                        entry.ejected_until = None
                        self._log_return(entry, "ejection_time_elapsed")
                    else:
                        self._recheck_at = min(self._recheck_at, until)
            eligible = [e.routable(now) for e in self.entries]
            self._in_flight = [e.in_flight for e in self.entries]
            panicking = self._below_panic_threshold(eligible)
            if panicking:
                eligible = [e.healthy and not e.draining for e in self.entries]
            if panicking is not self.panicking:
                self.panicking = panicking
                LOGGER.log(logging.WARNING if panicking else logging.INFO, "%s", logfmt(
                    event="panic_mode_entered" if panicking else "panic_mode_left",
                    route=self.name, routable=sum(e.routable(now) for e in self.entries),
                    targets=sum(not e.draining for e in self.entries),
                    threshold_percent=self.panic_threshold))
            self._eligible = eligible
        return self._eligible

    def _log_return(self, entry: TargetEntry, reason: str) -> None:
        """An ejected target is routable again."""
        LOGGER.info("%s", logfmt(event="target_returned", route=self.name, target=entry.url,
                                 reason=reason))

    def _below_panic_threshold(self, routable: list[bool]) -> bool:
        threshold = self.panic_threshold
        if threshold <= 0:
            return False
        live = sum(not e.draining for e in self.entries)
        # a lone target has nothing to spread over: its breaker keeps failing fast
        return live > 1 and sum(routable) * 100.0 < threshold * live

    def _index(self, entry: TargetEntry) -> int:
        return self.entries.index(entry)

    def pick(self, now: float, key: bytes | None, exclude: frozenset[int],
             retry: bool = False) -> TargetEntry:
        """Choose a target or raise :class:`NoTargetAvailable`.

        A retry must first withdraw from the retry budget, so retries cannot
        multiply an outage.
        """
        if self.budget is not None:
            if not retry:
                self.budget.deposit(now)
            elif not self.budget.try_withdraw(now):
                self.retries_denied += 1
                raise NoTargetAvailable("Retry budget exhausted")
        if retry:
            self.retries += 1
        self.outlier.tick(now)
        eligible = self.eligible(now)
        cap = self.max_requests
        if cap is not None:
            capped = [ok and e.in_flight < cap
                      for ok, e in zip(eligible, self.entries, strict=True)]
            if not any(capped) and any(eligible):
                # overload, not failure: shed without touching any breaker or health state
                self.overflows += 1
                raise Overloaded("Every available target is at its max_requests limit")
            eligible = capped
        if exclude:
            narrowed = [ok and e.target_id not in exclude
                        for ok, e in zip(eligible, self.entries, strict=True)]
            if any(narrowed):
                eligible = narrowed
        latency = ([e.ewma.value(now) for e in self.entries]
                   if self.strategy.name == "peak_ewma" else ())
        index = self.strategy.pick(eligible, self._in_flight, latency, key)
        if index is None:
            index = self._panic_pick(now, key)
        elif self.panicking:
            self.panic_picks += 1
        entry = self.entries[index]
        entry.in_flight += 1
        entry.leased += 1
        self._in_flight[index] = entry.in_flight
        if entry.breaker is BreakerState.HALF_OPEN:
            entry.trials_used += 1
            self.invalidate()
        self.picks += 1
        return entry

    def _panic_pick(self, now: float, key: bytes | None) -> int:
        if self.none_healthy == "panic":
            candidates = [not e.draining and e.breaker is not BreakerState.OPEN
                          for e in self.entries]
            index = self.strategy.pick(candidates, self._in_flight, (), key)
            if index is not None:
                self.panic_picks += 1
                return index
        self.rejected += 1
        raise NoTargetAvailable(self.unavailable_reason(now))

    def unavailable_reason(self, now: float) -> str:
        entries = [e for e in self.entries if not e.draining]
        if not entries:
            return "No targets yet: none configured, or none discovered so far"
        if all(e.breaker is BreakerState.OPEN for e in entries):
            return "Circuit breaker is open for every target"
        if all(not e.healthy for e in entries):
            return "No healthy targets available"
        return "No target available (unhealthy, ejected or circuit breaker open)"

    def done(self, msg: Done, now: float) -> TargetEntry | None:
        entry = self.by_id(msg.target_id)
        if entry is None:
            entry = self.retired.get(msg.target_id)
            if entry is not None:  # a removed target draining: only its count matters now
                entry.in_flight -= 1
                if entry.in_flight <= 0:
                    del self.retired[msg.target_id]
            return entry
        entry.in_flight -= 1
        if self._eligible is not None:
            try:
                self._in_flight[self.entries.index(entry)] = entry.in_flight
            except (ValueError, IndexError):  # pragma: no cover - defensive
                self.invalidate()
        kind = msg.kind
        latency = msg.latency
        if kind == "success":
            entry.ewma.observe(latency, now)
        elif kind == "neutral":
            return entry
        else:
            entry.ewma.penalise(now)
        # counted for status and metrics: two integer increments and a float sum
        entry.responses[msg.status or 0] += 1
        entry.latency_counts[bisect_left(LATENCY_BUCKETS, latency)] += 1
        entry.latency_sum += latency
        return entry

    def report(self, msg: TargetReport) -> TargetEntry | None:
        entry = self.by_id(msg.target_id)
        if entry is None:
            if msg.target_id not in self.retired:
                self.early_reports.pop(msg.target_id, None)
                self.early_reports[msg.target_id] = msg
                while len(self.early_reports) > _EARLY_REPORTS:  # a gone target's last words
                    del self.early_reports[next(iter(self.early_reports))]
            return None
        if msg.epoch != entry.epoch:
            entry.trials_used = 0
        entry.healthy = msg.healthy
        entry.breaker = msg.breaker
        entry.epoch = msg.epoch
        entry.trial_credits = msg.trial_credits
        if msg.probe_ok and entry.ejected_until is not None:
            self.outlier.uneject(self._index(entry))
            entry.ejected_until = None
            self._log_return(entry, "probe_passed")
        self.invalidate()
        return entry

    def eject(self, target_id: int, now: float) -> TargetEntry | None:
        entry = self.by_id(target_id)
        if entry is None:
            return None
        granted = self.outlier.ejections
        until = self.outlier.request_ejection(self._index(entry), now)
        if until is None:
            return None
        if self.outlier.ejections != granted:  # a new ejection, not the current one again
            entry.ejections += 1
        entry.ejected_until = until
        self.invalidate()
        return entry

    def add(self, entry: TargetEntry) -> None:
        if any(e.url == entry.url for e in self.entries):
            raise ValueError(f"Target already present: {entry.url}")
        self.entries.append(entry)
        self.outlier.add_target()
        self._reconfigure()
        early = self.early_reports.pop(entry.target_id, None)
        if early is not None:
            self.report(early)

    def remove(self, url: str) -> TargetEntry:
        for i, entry in enumerate(self.entries):
            if entry.url == url:
                del self.entries[i]
                self.outlier.remove_target(i)
                self._reconfigure()
                return entry
        raise ValueError(f"Unknown target: {url}")

    def set_weights(self, weights: tuple[int, ...]) -> None:
        if len(weights) != len(self.entries):
            raise ValueError(
                f"Weights length must match targets length "
                f"(got {len(weights)} weights for {len(self.entries)} targets)"
            )
        self.strategy.reconfigure([e.url for e in self.entries], list(weights))
        for entry, weight in zip(self.entries, weights, strict=True):
            entry.weight = weight
        self.publish_members()

    def set_target_weights(self, weights: tuple[tuple[str, int], ...]) -> None:
        """New weights for the named targets; names no longer present are skipped."""
        wanted = dict(weights)
        self.set_weights(tuple(wanted.get(e.url, e.weight) for e in self.entries))

    def set_draining(self, url: str, draining: bool) -> None:
        for entry in self.entries:
            if entry.url == url:
                entry.draining = draining
                self.invalidate()
                return
        raise ValueError(f"Unknown target: {url}")

    def _reconfigure(self) -> None:
        self.strategy.reconfigure([e.url for e in self.entries], [e.weight for e in self.entries])
        self.publish_members()

    def publish_members(self) -> None:
        """Replace :attr:`members` after the membership changed."""
        self.members = tuple(TargetMember(e.target_id, e.url, e.weight) for e in self.entries)
        self.invalidate()

    def view(self, now: float) -> list[RouterTargetView]:
        return [self._view(e, now) for e in self.entries]

    @staticmethod
    def _view(e: TargetEntry, now: float) -> RouterTargetView:
        pool = e.pool.statistics() if e.pool is not None else None
        return RouterTargetView(
            target_id=e.target_id,
            url=e.url,
            weight=e.weight,
            healthy=e.healthy,
            breaker_state=e.breaker.value,
            draining=e.draining,
            ejected_until=(e.ejected_until if e.ejected_until and e.ejected_until > now
                           else None),
            in_flight=e.in_flight,
            leased=e.leased,
            latency_ms=round(e.ewma.value(now) * 1000.0, 3),
            ejections=e.ejections,
            responses=tuple(sorted(e.responses.items())),
            latency_counts=tuple(e.latency_counts),
            latency_sum=e.latency_sum,
            pool_idle=pool.idle if pool is not None else 0,
            pool_open=pool.idle + pool.active if pool is not None else 0,
        )


@attrs.frozen
class RouterStatistics:
    strategy: str
    targets: int
    routable: int
    picks: int
    retries: int
    retries_denied: int
    rejected: int
    overflows: int
    panic_picks: int
    inbox_used: int
    inbox_size: int
    #: outcomes the router could not hand to a target whose inbox was full
    outcomes_dropped: int


class RouterActor:
    """The async shell: drains the inbox and calls :class:`RouterState`."""

    def __init__(self, state: RouterState, inbox: trio.MemoryReceiveChannel[RouterMsg],
                 self_send: trio.MemorySendChannel[RouterMsg]) -> None:
        self.state = state
        self._inbox = inbox
        self._self_send = self_send
        self._pending: list[TargetEntry] = []
        self._closing = False
        self._clock: Callable[[], float] = trio.current_time  # the run's own, once running

    def __repr__(self) -> str:
        entries = self.state.entries
        healthy = sum(e.healthy for e in entries)
        opened = sum(e.breaker is BreakerState.OPEN for e in entries)
        stats = self._inbox.statistics()
        return (
            f"<RouterActor {self.state.strategy.name} [targets: {len(entries)}, {healthy} healthy, "
            f"{opened} open] inbox: {stats.current_buffer_used}/{stats.max_buffer_size}>"
        )

    def statistics(self) -> RouterStatistics:
        state = self.state
        inbox = self._inbox.statistics()
        now = trio.current_time()
        return RouterStatistics(
            strategy=state.strategy.name, targets=len(state.entries),
            routable=sum(e.routable(now) for e in state.entries), picks=state.picks,
            retries=state.retries, retries_denied=state.retries_denied, rejected=state.rejected,
            overflows=state.overflows,
            panic_picks=state.panic_picks, inbox_used=inbox.current_buffer_used,
            inbox_size=int(inbox.max_buffer_size),
            outcomes_dropped=sum(e.outcomes_dropped for e in state.entries),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._clock = clock = trio.lowlevel.current_clock().current_time
        task_status.started()
        receive = self._inbox.receive
        receive_nowait = self._inbox.receive_nowait
        handle = self._handle
        msg: RouterMsg | None = None
        try:
            while True:
                try:
                    msg = await receive()
                except trio.EndOfChannel:
                    return  # intake closed: the balancer is shutting down
                now = clock()
                handle(msg, now)
                # Drain what is already queued without yielding: under load one wake-up
                # serves a whole batch of picks instead of paying a task switch each.
                for _ in range(_BATCH):
                    try:
                        msg = receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    handle(msg, now)
                msg = None
                if self._pending:
                    self.flush_all()
        except Exception:
            if msg is not None:  # the request in hand gets an answer before the restart
                answer_failed(msg, NoTargetAvailable("The load balancer failed; try again"))
            raise

    def _handle(self, msg: RouterMsg, now: float) -> None:
        state = self.state
        match msg:
            case Pick():
                self._on_pick(msg, now)
            case Done():
                self._on_done(msg, now)
            case TargetReport():
                state.report(msg)
            case EjectRequest(target_id=target_id):
                known = state.by_id(target_id)
                was_ejected = known is not None and (known.ejected_until or now) > now
                ejected = state.eject(target_id, now)
                if ejected is not None:
                    if not was_ejected:  # log the transition, not every report that follows
                        LOGGER.warning("%s", logfmt(
                            event="target_ejected", route=state.name, target=ejected.url,
                            seconds=(ejected.ejected_until or now) - now))
                    self._forward(ejected, Ejected(ejected.ejected_until))
            case RouterStatus(reply=reply):
                self.flush_all()  # so target counters are current for the status that follows
                reply.send(state.view(now))
            case AddTarget(reply=reply, entry=new_entry):
                _answer(reply, lambda: state.add(new_entry))
            case RemoveTarget(reply=reply, url=url):
                self._on_remove(reply, url)
            case SetWeights(reply=reply, weights=weights):
                _answer(reply, lambda: state.set_weights(weights))
            case SetTargetWeights(reply=reply, weights=named):
                _answer(reply, lambda: state.set_target_weights(named))
            case SetDraining(reply=reply, url=url, draining=draining):
                _answer(reply, lambda: state.set_draining(url, draining))
            case Close():
                self._closing = True
            case _:  # a programming error: the actor crashes and its supervisor restarts it
                raise TypeError(f"unexpected message {msg!r}")

    def _on_pick(self, msg: Pick, now: float) -> None:
        reply = msg.reply
        if reply.abandoned:
            return
        if self._closing:
            reply.send_error(NoTargetAvailable("The load balancer is shutting down"))
            return
        try:
            entry = self.state.pick(now, msg.key, msg.exclude, msg.retry)
        except NoTargetAvailable as exc:
            reply.send_error(exc)
            return
        lease = Lease(entry.target_id, entry.url, entry.pool, entry.epoch, now,
                      self._self_send, self._clock)
        if not reply.send(lease):  # the requester left: undo the grant
            self._on_done(Done(entry.target_id, entry.epoch, OutcomeKind.NEUTRAL, 0.0), now)

    def _on_done(self, msg: Done, now: float) -> None:
        entry = self.state.done(msg, now)
        if entry is None:
            return
        if msg.kind is OutcomeKind.SUCCESS and (entry.pending_successes == 0
                                                or entry.pending_epoch == msg.epoch):
            if entry.pending_successes == 0:
                self._pending.append(entry)
            entry.pending_successes += 1
            entry.pending_epoch = msg.epoch
        else:
            self._flush_successes(entry)
            self._forward(entry, Outcome(msg.kind, msg.epoch, msg.latency, msg.status))
        if entry.drained is not None and entry.in_flight <= 0:
            entry.drained.send(None)
            entry.drained = None

    def _on_remove(self, reply: Reply[TargetEntry], url: str) -> None:
        try:
            entry = self.state.remove(url)
        except ValueError as exc:
            reply.send_error(exc)
            return
        if entry.in_flight <= 0:
            reply.send(entry)
        else:
            self.state.retired[entry.target_id] = entry
            entry.drained = _DrainWaiter(reply, entry)

    def flush_all(self) -> None:
        """Send every target its folded successes (once per batch)."""
        pending, self._pending = self._pending, []
        for entry in pending:
            self._flush_successes(entry)

    def _flush_successes(self, entry: TargetEntry) -> None:
        count = entry.pending_successes
        if count:
            entry.pending_successes = 0
            self._forward(entry, Outcome(OutcomeKind.SUCCESS, entry.pending_epoch, 0.0, 200,
                                         count))

    def _forward(self, entry: TargetEntry, msg: Any) -> None:
        """Never block the router on a slow target: drop and count instead."""
        if entry.inbox is None:
            return
        try:
            entry.inbox.send_nowait(msg)
        except trio.WouldBlock:
            entry.outcomes_dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


def _answer(reply: Reply[None], change: Callable[[], None]) -> None:
    """Apply a reconfiguration and tell the requester how it went."""
    try:
        change()
    except ValueError as exc:
        reply.send_error(exc)
    else:
        reply.send(None)


@attrs.frozen
class _DrainWaiter:
    reply: Any
    entry: TargetEntry

    def send(self, _: object) -> None:
        self.reply.send(self.entry)
