"""The target actor: one supervised task per backend.

It owns everything about one backend that changes over time: active health
(:class:`~velithon._lb.health.HealthState`), the circuit breaker, the passive
outlier streak and the counters. Its inbox receives request outcomes
(forwarded by the router), probe results from its own probe loop, and queries.
State is only ever mutated by the synchronous :meth:`TargetActor._handle`, so
no checkpoint can interleave with an update.

Whenever routing-relevant state changes (health flips, breaker transitions,
new half-open trial credits) the actor publishes a frozen
:class:`~velithon._lb.messages.TargetReport` to the router.

Half-open admission is credit based: on entering half-open the actor asks its
breaker for trial slots (``allow``) and tells the router how many trials it
granted in this breaker epoch; the router leases at most that many. Each
trial outcome frees a slot and, while still half-open, grants the next one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .._logfmt import logfmt
from .breaker import BreakerConfig, BreakerState, CircuitBreaker
from .health import HealthCheckConfig, HealthState
from .messages import (
    Ejected,
    EjectRequest,
    Outcome,
    ProbeNow,
    ProbeResult,
    ResetBreaker,
    RouterMsg,
    Sync,
    TargetMsg,
    TargetReport,
    TargetStatusQuery,
)
from .outlier import FailureStreak, OutlierConfig
from .reply import answer_failed

LOGGER = logging.getLogger("velithon.target")

_NEVER = float("inf")

#: outcome kinds a breaker counts as failures: the target could not be reached or
#: answered with one of the configured failure statuses
_BREAKER_FAILURES = frozenset({"gateway", "local"})
#: messages handled per wake-up before the actor yields
_BATCH = 128

#: ``probe(url, config) -> ProbeResult``; the default lives in ``_probe.py``.
ProbeFn = Callable[[str, HealthCheckConfig], Awaitable[ProbeResult]]


@attrs.frozen
class TargetStatus:
    """A point-in-time view of one target, as its actor sees it."""

    url: str
    healthy: bool
    breaker_state: str
    failure_count: int
    ms_since_last_failure: int | None
    requests: int
    failures: int
    successes: int
    last_probe_status: int | None
    last_probe_detail: str | None
    ejected_until: float | None
    probes: int
    restarts: int


@attrs.define
class TargetState:
    """Mutable state of one target; only its running actor mutates it.

    It outlives actor incarnations (a restarted actor continues where the
    crashed one stopped) and balancer instances (``ProxyLoadBalancer`` used
    without ``async with`` keeps its targets' health between calls).
    """

    target_id: int
    url: str
    health: HealthState
    breaker: CircuitBreaker
    streak: FailureStreak
    requests: int = 0
    failures: int = 0
    successes: int = 0
    probes: int = 0
    last_probe_status: int | None = None
    last_probe_detail: str | None = None
    ejected_until: float | None = None
    trial_credits: int = 0
    credit_epoch: int = -1
    restarts: int = 0
    breaker_seen: BreakerState = BreakerState.CLOSED  # last state logged

    @classmethod
    def new(
        cls,
        target_id: int,
        url: str,
        *,
        health: HealthCheckConfig,
        breaker: BreakerConfig,
        outlier: OutlierConfig,
    ) -> TargetState:
        return cls(
            target_id=target_id,
            url=url,
            health=HealthState(health),
            breaker=CircuitBreaker(breaker),
            streak=FailureStreak(outlier),
        )

    def status(self, now: float) -> TargetStatus:
        state, count, elapsed = self.breaker.status(now)
        return TargetStatus(
            url=self.url,
            healthy=self.health.healthy,
            breaker_state=state,
            failure_count=count,
            ms_since_last_failure=elapsed,
            requests=self.requests,
            failures=self.failures,
            successes=self.successes,
            last_probe_status=self.last_probe_status,
            last_probe_detail=self.last_probe_detail,
            ejected_until=self.ejected_until,
            probes=self.probes,
            restarts=self.restarts,
        )


@attrs.frozen
class TargetActorStatistics:
    url: str
    healthy: bool
    breaker_state: str
    requests: int
    failures: int
    probes: int
    restarts: int
    inbox_used: int
    inbox_size: int


@attrs.frozen
class _Answer:
    """A reply queued behind the reports it depends on."""

    reply: Any
    value: Any


class TargetActor:
    """The async shell around :class:`TargetState`: timers, probes, messages."""

    def __init__(
        self,
        state: TargetState,
        *,
        inbox: trio.MemoryReceiveChannel[TargetMsg],
        self_send: trio.MemorySendChannel[TargetMsg],
        router_send: trio.MemorySendChannel[RouterMsg],
        probe: ProbeFn | None,
        health_config: HealthCheckConfig,
        run_probe_loop: bool,
        rng: random.Random | None = None,
        pool: Any = None,
        route: str = "balancer",
    ) -> None:
        self.state = state
        self.route = route  # the route or middleware, as the logs name it
        self._inbox = inbox
        self._self_send = self_send
        self._router = router_send
        self._probe = probe
        self._health_config = health_config
        self._run_probe_loop = run_probe_loop and probe is not None
        self._rng = rng or random.Random()
        self._pool = pool  # swept of dead idle connections after each probe
        self._outbox: list[Any] = []
        self._last_report: TargetReport | None = None
        self._self_send_live: trio.MemorySendChannel[TargetMsg] = self_send

    def __repr__(self) -> str:
        s = self.state
        state = s.breaker.state(trio.current_time()).value
        return (
            f"<TargetActor {s.url} [{'healthy' if s.health.healthy else 'unhealthy'}, "
            f"breaker {state}, {s.requests} requests]>"
        )

    def statistics(self) -> TargetActorStatistics:
        s = self.state
        inbox = self._inbox.statistics()
        return TargetActorStatistics(
            url=s.url, healthy=s.health.healthy,
            breaker_state=s.breaker.state(trio.current_time()).value,
            requests=s.requests, failures=s.failures, probes=s.probes, restarts=s.restarts,
            inbox_used=inbox.current_buffer_used, inbox_size=int(inbox.max_buffer_size),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the inbox until cancelled. The inbox belongs to the supervisor."""
        self_send = self._self_send.clone()
        async with self_send, trio.open_nursery() as nursery:
            self._self_send_live = self_send
            if self._run_probe_loop:
                await nursery.start(self._probe_loop, self_send.clone())
            self._publish(trio.current_time())
            await self._flush()
            task_status.started()
            receive = self._inbox.receive
            receive_nowait = self._inbox.receive_nowait
            while True:
                deadline = self._next_deadline()
                msg = None
                if deadline == _NEVER:
                    msg = await receive()
                else:
                    with trio.move_on_at(deadline):
                        msg = await receive()
                now = trio.current_time()
                if msg is None:
                    self._on_timer(now)
                else:
                    self._handle_batch(msg, now, nursery, receive_nowait)
                if self._outbox:
                    await self._flush()

    def _handle_batch(self, msg: TargetMsg, now: float, nursery: trio.Nursery,
                      receive_nowait: Callable[[], TargetMsg]) -> None:
        """Handle ``msg`` and whatever is already queued, without a task switch each."""
        current: TargetMsg | None = msg
        try:
            self._handle(msg, now, nursery)
            for _ in range(_BATCH):
                try:
                    current = receive_nowait()
                except trio.WouldBlock:
                    return
                self._handle(current, now, nursery)
        except Exception:
            # the request in hand gets an answer before the supervisor restarts us
            answer_failed(current, RuntimeError(f"target actor {self.state.url} failed"))
            raise

    # ---- synchronous state transitions ----------------------------------------

    def _next_deadline(self) -> float:
        at = self.state.breaker.next_transition_at()
        return at if at is not None else _NEVER

    def _on_timer(self, now: float) -> None:
        self._publish(now)  # breaker.state(now) moves open -> half-open lazily

    def _handle(self, msg: TargetMsg, now: float, nursery: trio.Nursery) -> None:
        s = self.state
        match msg:
            case Outcome():
                self._on_outcome(msg, now)
            case ProbeResult(reply=reply):
                self._on_probe(msg, now)
                if reply is not None:
                    self._outbox.append(_Answer(reply, s.health.healthy))
            case ProbeNow(reply=reply):
                if self._probe is None:
                    reply.send(s.health.healthy)
                else:
                    nursery.start_soon(self._probe_once, reply, self._self_send_live.clone())
            case Ejected(until=until):
                s.ejected_until = until
                if until is not None:
                    s.streak.reset()
            case TargetStatusQuery(reply=reply):
                reply.send(s.status(now))
            case ResetBreaker(reply=reply):
                s.breaker.reset()
                s.streak.reset()
                self._publish(now)
                reply.send(None)
            case Sync(reply=reply):
                self._outbox.append(_Answer(reply, None))
            case _:  # a programming error: the actor crashes and its supervisor restarts it
                raise TypeError(f"unexpected message {msg!r}")

    def _on_outcome(self, msg: Outcome, now: float) -> None:
        s = self.state
        breaker = s.breaker
        count = msg.count
        if msg.kind != "neutral":
            s.requests += count
        if msg.kind == "success":
            s.successes += count
        elif msg.kind != "neutral":
            s.failures += count
        if msg.epoch == breaker.epoch:
            if msg.kind == "neutral":
                breaker.release(now)
            elif msg.kind in _BREAKER_FAILURES:
                breaker.record_failure(now)
            else:  # the target answered: an application's own 5xx is not an outage
                for _ in range(count):
                    breaker.record_success(now)
        if msg.kind != "neutral" and s.streak.record(msg.kind):
            self._outbox.append(EjectRequest(s.target_id))
        self._publish(now)

    def _on_probe(self, msg: ProbeResult, now: float) -> None:
        if self._pool is not None:
            self._pool.sweep()
        s = self.state
        s.probes += 1
        s.last_probe_status = msg.status
        s.last_probe_detail = msg.detail
        if s.health.record(msg.ok, now):
            up = s.health.healthy
            LOGGER.log(logging.INFO if up else logging.WARNING, "%s", logfmt(
                event="target_up" if up else "target_down", route=self.route, target=s.url,
                probe=msg.detail))
        self._publish(now, probe_ok=msg.ok, force=msg.ok)

    def _publish(self, now: float, *, probe_ok: bool = False, force: bool = False) -> None:
        """Queue a report for the router when routing-relevant state changed."""
        s = self.state
        breaker = s.breaker
        state = breaker.state(now)
        if state is not s.breaker_seen:
            _log_breaker(self.route, s, s.breaker_seen, state)
            s.breaker_seen = state
        if s.credit_epoch != breaker.epoch:
            s.credit_epoch = breaker.epoch
            s.trial_credits = 0
        if state is BreakerState.HALF_OPEN:
            while breaker.allow(now):
                s.trial_credits += 1
        report = TargetReport(
            target_id=s.target_id,
            healthy=s.health.healthy,
            breaker=state,
            epoch=breaker.epoch,
            trial_credits=s.trial_credits,
            probe_ok=probe_ok,
        )
        if force or report != self._last_report:
            self._last_report = report
            self._outbox.append(report)

    async def _flush(self) -> None:
        """Send queued reports, then answers; blocking is backpressure between actors."""
        while self._outbox:
            item = self._outbox.pop(0)
            if isinstance(item, _Answer):
                item.reply.send(item.value)
            else:
                try:
                    await self._router.send(item)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    # the balancer is shutting down: reports have no reader, answers still do
                    answers = [a for a in self._outbox if isinstance(a, _Answer)]
                    self._outbox.clear()
                    for answer in answers:
                        answer.reply.send(answer.value)
                    return

    # ---- probes ------------------------------------------------------------------

    async def _probe_loop(
        self,
        self_send: trio.MemorySendChannel[TargetMsg],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Probe at start, then every interval (± jitter), on deadlines, not sleeps."""
        assert self._probe is not None
        async with self_send:
            task_status.started()
            next_at = trio.current_time()
            while True:
                await trio.sleep_until(next_at)
                result = await self._probe_with_timeout()
                await self_send.send(result)
                next_at = self.state.health.next_probe_at(next_at, self._rng)

    async def _probe_once(self, reply: Any, self_send: trio.MemorySendChannel[TargetMsg]) -> None:
        """A manual probe: the result goes through the inbox like any other."""
        async with self_send:
            result = await self._probe_with_timeout()
            await self_send.send(attrs.evolve(result, reply=reply))

    async def _probe_with_timeout(self) -> ProbeResult:
        assert self._probe is not None
        config = self._health_config
        with trio.move_on_after(config.timeout):
            try:
                return await self._probe(self.state.url, config)
            except Exception as exc:  # a probe bug or I/O error is an unhealthy probe
                return ProbeResult(ok=False, status=None, detail=f"{type(exc).__name__}: {exc}")
        return ProbeResult(ok=False, status=None, detail=f"timeout after {config.timeout}s")


def _log_breaker(route: str, state: TargetState, before: BreakerState,
                 after: BreakerState) -> None:
    """Every breaker transition is an operator-visible event (WARNING when it opens)."""
    level = logging.WARNING if after is BreakerState.OPEN else logging.INFO
    LOGGER.log(level, "%s", logfmt(
        event=f"breaker_{after.value}", route=route, target=state.url, previous=before.value,
        failures=state.breaker.failure_count()))
