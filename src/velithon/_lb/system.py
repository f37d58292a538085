"""The balancer system: router actor + one target actor per backend.

``async with open_balancer(config) as balancer:`` owns everything: a nursery
with the supervised router and target actors, one upstream connection pool
per target (opened by the :class:`TargetPools` the facade supplies), and the
httpx client used by health probes. Leaving the block
stops intake (pending picks fail with :class:`NoTargetAvailable`), cancels the
actors and closes the pools, within a bounded time. No task outlives it.

State that must survive the system (health, breakers, strategy cursor) lives
in a :class:`BalancerState`, which a facade may keep and hand to the next
system: this is how ``ProxyLoadBalancer`` works without ``async with``.

Dynamic targets come from :class:`~velithon._lb.discovery.DiscoverySource` objects
in ``BalancerConfig.sources``: each gets a supervised discovery actor that adds,
re-weights and retires targets through this module's :class:`Balancer`.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import attrs
import httpx
import trio

from .._exceptions import ConfigError, NoTargetAvailable, Overloaded, warn_config
from .._logfmt import logfmt
from .._structured import owning_nursery
from .alarms import AlarmClock
from .breaker import BreakerConfig
from .discovery import DiscoverySource, DiscoveryState, DiscoveryStatus, run_discovery
from .health import HealthCheckConfig
from .messages import (
    AddTarget,
    Close,
    Done,
    Pick,
    ProbeNow,
    RemoveTarget,
    ResetBreaker,
    RouterMsg,
    RouterStatus,
    SetDraining,
    SetTargetWeights,
    SetWeights,
    Sync,
    TargetMsg,
    TargetStatusQuery,
)
from .outlier import OutlierConfig, OutlierDetector
from .probe import ProbeFn, make_http_probe
from .reply import Reply
from .retry import RetryBudget
from .router import (
    NONE_HEALTHY_POLICIES,
    Lease,
    RouterActor,
    RouterState,
    RouterTargetView,
    TargetEntry,
)
from .strategies import create_strategy, uses_weights
from .supervisor import SupervisedStats, SupervisorConfig, supervise
from .target import TargetActor, TargetState, TargetStatus

LOGGER = logging.getLogger("velithon.balancer")


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _tuple_or_none(value: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(value)


def _sources(value: Iterable[DiscoverySource]) -> tuple[DiscoverySource, ...]:
    return tuple(value)


#: how long a target that discovery dropped may keep its in-flight requests
DISCOVERY_DRAIN_TIMEOUT = 30.0


class PoolCounts(Protocol):
    """The connection counts the engine reports for a pool (status and metrics)."""

    @property
    def idle(self) -> int: ...

    @property
    def active(self) -> int: ...


class TargetPool(Protocol):
    """What the engine needs of a target's connection pool: a way to close it, one
    to drop idle connections that died (called after each health probe, so a dead or
    ejected target's sockets do not wait for its next request), and its counts."""

    async def aclose(self) -> None: ...

    def sweep(self) -> None: ...

    def statistics(self) -> PoolCounts: ...


class TargetPools(Protocol):
    """How targets are reached, supplied by the layer that speaks HTTP.

    The engine balances targets it knows only by name; this object checks those
    names, opens one pool per target (handed out with every lease), and says which
    TLS context health probes use.
    """

    @property
    def ssl_context(self) -> ssl.SSLContext | None: ...

    def check(self, url: str) -> str:
        """Raise ``ConfigError`` when ``url`` cannot be a target; otherwise return its
        canonical form (two URLs with the same form reach the same backend)."""

    def open(self, url: str) -> TargetPool: ...


@attrs.frozen
class BalancerConfig:
    """Everything a balancer system needs; validated on construction."""

    targets: tuple[str, ...] = attrs.field(converter=_strings)
    strategy: str = "round_robin"
    weights: tuple[int, ...] | None = attrs.field(default=None, converter=_tuple_or_none)
    health: HealthCheckConfig = HealthCheckConfig()
    active_health_checks: bool = False
    breaker: BreakerConfig = BreakerConfig()
    outlier: OutlierConfig = OutlierConfig()
    none_healthy: str = "fail"
    panic_threshold: float = 50.0
    supervisor: SupervisorConfig = SupervisorConfig()
    inbox_size: int = 1024
    target_inbox_size: int = 256
    pools: TargetPools | None = attrs.field(default=None, eq=False)
    shutdown_timeout: float = 5.0
    retry_budget_ratio: float = 0.2
    retry_budget_min_per_second: float = 10.0
    max_requests_per_target: int | None = None
    #: the route or middleware these targets serve, as the state-change logs name it
    name: str = "balancer"
    #: dynamic target sources (DNS, watched files), each run by a discovery actor
    sources: tuple[DiscoverySource, ...] = attrs.field(default=(), converter=_sources, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.targets and not self.sources:
            raise ConfigError("At least one target is required")
        names = [source.name for source in self.sources]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"Duplicate target sources are not allowed: {', '.join(dupes)}")
        seen: dict[str, str] = {}
        for url in self.targets:
            canonical = self.check_target(url)
            if canonical in seen:
                raise ConfigError(_duplicate(seen[canonical], url, canonical))
            seen[canonical] = url
        if self.none_healthy not in NONE_HEALTHY_POLICIES:
            raise ConfigError(
                f"Invalid none_healthy policy {self.none_healthy!r}. Use 'fail' or 'panic'"
            )
        panic = self.panic_threshold
        if isinstance(panic, bool) or not isinstance(panic, (int, float)) or not 0 <= panic <= 100:
            raise ConfigError(f"panic_threshold must be a percentage in 0..100, got {panic!r}")
        cap = self.max_requests_per_target
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigError(f"max_requests_per_target must be a positive integer, got {cap!r}")
        if self.inbox_size < 1 or self.target_inbox_size < 1:
            raise ConfigError("inbox sizes must be at least 1")
        # strategy name and weights are validated by building one
        create_strategy(self.strategy, self.targets, self.weights,
                        allow_empty=bool(self.sources))
        if self.weights is not None and len(set(self.weights)) > 1 \
                and not uses_weights(self.strategy):
            warn_config(f"weights={list(self.weights)} have no effect: the {self.strategy!r} "
                        "strategy ignores weights. Use the 'weighted' strategy to split "
                        "traffic by weight, or leave weights out")

    def check_target(self, url: str) -> str:
        """A target must be a non-empty name, and one the pools accept; returns the
        name two targets are compared by (the pools' canonical URL, when there are
        pools)."""
        if not isinstance(url, str) or not url:
            raise ConfigError(f"A target must be a non-empty string, got {url!r}")
        if self.pools is not None:
            return self.pools.check(url)
        return url


def _duplicate(first: str, second: str, canonical: str) -> str:
    if first == second:
        return f"Duplicate target {first!r}: list each backend once"
    return (f"Duplicate targets {first!r} and {second!r}: both are {canonical!r} "
            "(scheme and host are case-insensitive, a trailing '/' and a default port "
            "change nothing); list each backend once")


@attrs.define(eq=False)
class BalancerState:
    """Durable state shared by successive systems of one facade."""

    config: BalancerConfig
    router: RouterState
    targets: dict[str, TargetState]
    #: one per dynamic source, in ``config.sources`` order
    discovery: tuple[DiscoveryState, ...] = ()
    _ids: Any = attrs.field(factory=itertools.count)

    @classmethod
    def create(cls, config: BalancerConfig, *, rng: random.Random | None = None) -> BalancerState:
        strategy = create_strategy(config.strategy, config.targets, config.weights, rng=rng,
                                   allow_empty=bool(config.sources))
        router = RouterState(
            strategy=strategy,
            outlier=OutlierDetector(config.outlier, len(config.targets)),
            none_healthy=config.none_healthy,
            panic_threshold=config.panic_threshold,
            budget=RetryBudget(ratio=config.retry_budget_ratio,
                               min_per_second=config.retry_budget_min_per_second),
            max_requests=config.max_requests_per_target,
            name=config.name,
        )
        self = cls(config=config, router=router, targets={},
                   discovery=tuple(DiscoveryState(source) for source in config.sources))
        weights = config.weights or (1,) * len(config.targets)
        for url, weight in zip(config.targets, weights, strict=True):
            tstate = self.new_target_state(url)
            router.entries.append(TargetEntry(tstate.target_id, url, weight))
        router.publish_members()
        return self

    def new_target_state(self, url: str) -> TargetState:
        config = self.config
        tstate = TargetState.new(
            next(self._ids), url, health=config.health, breaker=config.breaker,
            outlier=config.outlier,
        )
        tstate.health.healthy = config.health.initially_healthy
        self.targets[url] = tstate
        return tstate

    def discovery_statuses(self, now: float) -> list[DiscoveryStatus]:
        """Every dynamic source's state, in configuration order (reads only)."""
        return [d.status(now) for d in self.discovery]

    def source_of(self, url: str) -> str | None:
        """The source that discovered ``url``; None for a static or hand-added target."""
        for d in self.discovery:
            if url in d.members:
                return d.source.name
        return None


@asynccontextmanager
async def open_balancer(
    config: BalancerConfig,
    *,
    state: BalancerState | None = None,
    probe: ProbeFn | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[Balancer]:
    """Run a balancer system for the duration of the block."""
    if state is None:
        state = BalancerState.create(config, rng=rng)
    client: httpx.AsyncClient | None = None
    if probe is None:
        context = config.pools.ssl_context if config.pools is not None else None
        client = httpx.AsyncClient(verify=context if context is not None else True)
        probe = make_http_probe(client)
    try:
        async with owning_nursery() as nursery:  # errors from the body come out unwrapped
            balancer = Balancer(state, nursery, probe, rng or random.Random())
            await balancer._start()
            try:
                yield balancer
            finally:
                await balancer._close()
    finally:
        with trio.move_on_after(config.shutdown_timeout, shield=True):
            for entry in state.router.entries:
                if entry.pool is not None:
                    await entry.pool.aclose()
                entry.pool = None
                entry.inbox = None
                entry.in_flight = 0
            state.router.retired.clear()
            if client is not None:
                await client.aclose()
        state.router.invalidate()


class Balancer:
    """The handle facades use; every call is a message to an actor."""

    def __init__(self, state: BalancerState, nursery: trio.Nursery, probe: ProbeFn,
                 rng: random.Random) -> None:
        self.state = state
        self.config = state.config
        self._nursery = nursery
        self._probe = probe
        self._rng = rng
        send, receive = trio.open_memory_channel[RouterMsg](self.config.inbox_size)
        self._router_send: trio.MemorySendChannel[RouterMsg] = send
        self._router_receive: trio.MemoryReceiveChannel[RouterMsg] = receive
        self._target_scopes: dict[int, trio.CancelScope] = {}  # by target id
        self._discovery_scopes: list[trio.CancelScope] = []
        self._router_stats = SupervisedStats("router")
        self._router_done = trio.Event()
        self._closed = False
        #: Deadlines of tries in flight (see :mod:`velithon._lb.alarms`).
        self.alarms = AlarmClock()

    def __repr__(self) -> str:
        entries = self.state.router.entries
        return (
            f"<Balancer {self.config.strategy} [{len(entries)} targets, "
            f"{sum(e.healthy for e in entries)} healthy]{' closed' if self._closed else ''}>"
        )

    @property
    def targets(self) -> list[str]:
        return [m.url for m in self.state.router.members]

    # ---- lifecycle -------------------------------------------------------------

    async def _start(self) -> None:
        await self._nursery.start(self.alarms.run)
        for entry in self.state.router.entries:
            await self._start_target(entry)
        await self._nursery.start(self._run_router)
        for discovery in self.state.discovery:
            await self._nursery.start(self._run_discovery, discovery)

    async def _run_router(self, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def incarnation(
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            actor = RouterActor(self.state.router, self._router_receive, self._router_send)
            await actor.run(task_status=task_status)

        try:
            await supervise(incarnation, name="router", config=self.config.supervisor,
                            stats=self._router_stats, task_status=task_status)
        finally:
            self._router_done.set()

    async def _start_target(self, entry: TargetEntry) -> None:
        tstate = self.state.targets[entry.url]
        if entry.pool is None and self.config.pools is not None:
            entry.pool = self.config.pools.open(entry.url)
        send, receive = trio.open_memory_channel[TargetMsg](self.config.target_inbox_size)
        entry.inbox = send
        scope = trio.CancelScope()
        self._target_scopes[entry.target_id] = scope
        await self._nursery.start(self._run_target, tstate, send, receive, scope, entry.pool)

    async def _run_target(self, tstate: TargetState, send: trio.MemorySendChannel[TargetMsg],
                          receive: trio.MemoryReceiveChannel[TargetMsg],
                          scope: trio.CancelScope, pool: TargetPool | None, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        stats = SupervisedStats(tstate.url)

        async def incarnation(
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            tstate.restarts = stats.restarts
            actor = TargetActor(
                tstate,
                inbox=receive,
                self_send=send,
                router_send=self._router_send,
                probe=self._probe,
                health_config=config.health,
                run_probe_loop=config.active_health_checks,
                rng=self._rng,
                pool=pool,
                route=config.name,
            )
            await actor.run(task_status=task_status)

        with scope:
            async with receive:
                await supervise(incarnation, name=f"target {tstate.url}", config=config.supervisor,
                                stats=stats, task_status=task_status)

    async def _run_discovery(self, dstate: DiscoveryState, *,
                             task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        scope = trio.CancelScope()
        self._discovery_scopes.append(scope)
        with scope:
            await run_discovery(dstate, self, self.config.supervisor, task_status=task_status)

    async def _close(self) -> None:
        """Stop intake, then let the actors digest what is queued (bounded, shielded).

        Outcomes reported just before shutdown still reach the breakers: this is
        what lets a facade used without ``async with`` keep its state between calls.
        """
        self._closed = True
        for scope in self._discovery_scopes:  # no membership changes while shutting down
            scope.cancel()
        if trio.current_effective_deadline() == -math.inf:
            self._stop()  # we are being cancelled, and so are the actors: nothing can drain
            return
        try:
            self._router_send.send_nowait(Close())
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass
        self._router_send.close()
        with trio.move_on_after(self.config.shutdown_timeout, shield=True):
            await self._router_done.wait()
            for entry in self.state.router.entries:
                if entry.inbox is not None:
                    reply: Reply[Any] = Reply()
                    try:
                        await entry.inbox.send(Sync(reply))
                    except (trio.ClosedResourceError, trio.BrokenResourceError):
                        continue
                    await reply.wait()
        self._stop()

    def _stop(self) -> None:
        """Fail every request still queued (sync: safe when cancelled)."""
        self._closed = True
        self._router_send.close()
        while True:
            try:
                msg = self._router_receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if isinstance(msg, Pick):
                msg.reply.send_error(NoTargetAvailable("The load balancer is shutting down"))
            elif not isinstance(msg, Done) and hasattr(msg, "reply"):
                msg.reply.send_error(RuntimeError("The load balancer is shutting down"))

    # ---- requests ----------------------------------------------------------------

    def _post(self, msg: RouterMsg) -> None:
        """Put a request in the router's inbox without waiting (full: ``Overloaded``)."""
        try:
            self._router_send.send_nowait(msg)
        except trio.WouldBlock:
            raise Overloaded("The load balancer is overloaded") from None
        except trio.ClosedResourceError:
            raise NoTargetAvailable("The load balancer is shutting down") from None

    async def _ask(self, msg_type: Any, *args: Any, **kwargs: Any) -> Any:
        reply: Reply[Any] = Reply()
        self._post(msg_type(reply, *args, **kwargs))
        return await reply.wait()

    async def pick(self, key: bytes | None = None, exclude: frozenset[int] = frozenset(),
                   retry: bool = False) -> Lease:
        """Lease a target; raises :class:`NoTargetAvailable` (or ``Overloaded``).

        Not through :meth:`_ask`: this runs for every request, and one coroutine less on
        its way is measurable.
        """
        reply: Reply[Lease] = Reply()
        self._post(Pick(reply, key, exclude, retry))
        return await reply.wait()

    async def router_view(self) -> list[RouterTargetView]:
        return await self._ask(RouterStatus)  # type: ignore[no-any-return]

    async def _ask_target(self, url: str, msg_type: Any) -> Any:
        entry = self._entry(url)
        reply: Reply[Any] = Reply()
        assert entry.inbox is not None
        with trio.fail_after(self.config.shutdown_timeout + self.config.health.timeout):
            await entry.inbox.send(msg_type(reply))
            return await reply.wait()

    def _entry(self, url: str) -> TargetEntry:
        for entry in self.state.router.entries:
            if entry.url == url:
                return entry
        raise ValueError(f"Unknown target: {url}")

    async def target_statuses(self) -> list[TargetStatus]:
        return await self._for_each_target(TargetStatusQuery)

    async def target_status(self, url: str) -> TargetStatus:
        """One target actor's own status (``ValueError`` for an unknown target)."""
        return await self._ask_target(url, TargetStatusQuery)  # type: ignore[no-any-return]

    async def _for_each_target(self, msg_type: Any) -> list[Any]:
        urls = self.targets
        results: list[Any] = [None] * len(urls)

        async def one(i: int, url: str) -> None:
            results[i] = await self._ask_target(url, msg_type)

        async with trio.open_nursery() as nursery:
            for i, url in enumerate(urls):
                nursery.start_soon(one, i, url)
        return results

    async def health_check(self) -> list[tuple[str, bool]]:
        """Probe every target now (concurrently); returns ``(url, healthy)``."""
        healthy = await self._for_each_target(ProbeNow)
        return list(zip(self.targets, healthy, strict=True))

    async def get_health_status(self) -> list[tuple[str, bool]]:
        """``(url, healthy)`` in constructor order, as the router sees it."""
        return [(v.url, v.healthy) for v in await self.router_view()]

    async def reset_breakers(self) -> None:
        await self._for_each_target(ResetBreaker)

    async def reset_breaker(self, url: str) -> None:
        await self._ask_target(url, ResetBreaker)

    # ---- runtime reconfiguration -------------------------------------------------

    async def add_target(self, url: str, weight: int = 1) -> None:
        """Start an actor for ``url`` and begin routing to it."""
        canonical = self.config.check_target(url)
        for present in self.targets:
            if self.config.check_target(present) == canonical:
                raise ConfigError(f"Target already present: {url!r}"
                                  + ("" if present == url else f" (as {present!r})"))
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ConfigError(f"Invalid weight {weight!r}: weights must be non-negative integers")
        tstate = self.state.new_target_state(url)
        entry = TargetEntry(tstate.target_id, url, weight)
        await self._start_target(entry)
        try:
            await self._ask(AddTarget, entry)
        except BaseException:
            self._target_scopes.pop(entry.target_id).cancel()
            raise
        LOGGER.info("%s", logfmt(event="target_added", route=self.config.name, target=url,
                                 weight=weight))

    async def remove_target(self, url: str, *, drain_timeout: float = 30.0) -> None:
        """Stop routing to ``url``; its in-flight requests finish first (bounded)."""
        gone = await self.retire_target(url, drain_timeout=drain_timeout)
        await gone.wait()

    async def retire_target(self, url: str, *,
                            drain_timeout: float = DISCOVERY_DRAIN_TIMEOUT) -> trio.Event:
        """Stop routing to ``url`` now; drain and close it in the background.

        New requests stop at once. The target's actor and pool stay until its
        in-flight requests finish (at most ``drain_timeout`` seconds), in a task of
        this system's nursery; the returned event is set when they are gone.
        """
        entry = self._entry(url)
        reply: Reply[TargetEntry] = Reply()
        try:
            self._router_send.send_nowait(RemoveTarget(reply, url))
        except trio.WouldBlock:
            raise Overloaded("The load balancer is overloaded") from None
        except trio.ClosedResourceError:
            raise NoTargetAvailable("The load balancer is shutting down") from None
        gone = trio.Event()
        await self._nursery.start(self._finish_removal, entry, reply, drain_timeout, gone)
        return gone

    async def _finish_removal(self, entry: TargetEntry, reply: Reply[TargetEntry],
                              drain_timeout: float, gone: trio.Event, *,
                              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                              ) -> None:
        task_status.started()
        try:
            with trio.move_on_after(drain_timeout) as waited:
                try:
                    await reply.wait()
                except ValueError:
                    pass  # the router no longer knew it: removed concurrently
            LOGGER.info("%s", logfmt(
                event="target_removed", route=self.config.name, target=entry.url,
                drained="no" if waited.cancelled_caught else "yes",
                in_flight=entry.in_flight if waited.cancelled_caught else None))
        finally:
            scope = self._target_scopes.pop(entry.target_id, None)
            if scope is not None:
                scope.cancel()
            tstate = self.state.targets.get(entry.url)
            if tstate is not None and tstate.target_id == entry.target_id:
                del self.state.targets[entry.url]  # not a newer target at the same URL
            if entry.pool is not None:
                with trio.move_on_after(self.config.shutdown_timeout, shield=True):
                    await entry.pool.aclose()
            gone.set()

    async def set_weights(self, weights: Sequence[int]) -> None:
        await self._ask(SetWeights, tuple(weights))
        LOGGER.info("%s", logfmt(event="weights_set", route=self.config.name,
                                 weights=",".join(map(str, weights))))

    async def set_target_weights(self, weights: Sequence[tuple[str, int]]) -> None:
        """New weights for the named targets; the others keep theirs."""
        await self._ask(SetTargetWeights, tuple(weights))

    def discovery_statuses(self) -> list[DiscoveryStatus]:
        """Every dynamic source's state, in configuration order."""
        return self.state.discovery_statuses(trio.current_time())

    def discovery_ready(self) -> bool:
        """True when every dynamic source has had a successful lookup (or there is none)."""
        return all(d.last_success_at is not None for d in self.state.discovery)

    async def drain(self, url: str, draining: bool = True) -> None:
        """Draining targets get no new requests; in-flight ones finish."""
        await self._ask(SetDraining, url, draining)
        LOGGER.info("%s", logfmt(event="target_draining" if draining else "target_undrained",
                                 route=self.config.name, target=url))

    def statistics(self) -> BalancerStatistics:
        router = self.state.router
        return BalancerStatistics(
            strategy=self.config.strategy,
            targets=len(router.entries),
            healthy=sum(e.healthy for e in router.entries),
            in_flight=sum(e.in_flight for e in router.entries),
            picks=router.picks,
            rejected=router.rejected,
            overflows=router.overflows,
            panic_picks=router.panic_picks,
            router_restarts=self._router_stats.restarts,
            target_restarts=sum(t.restarts for t in self.state.targets.values()),
            inbox_used=self._router_send.statistics().current_buffer_used,
            discovery=tuple(self.discovery_statuses()),
        )


@attrs.frozen
class BalancerStatistics:
    strategy: str
    targets: int
    healthy: int
    in_flight: int
    picks: int
    rejected: int
    overflows: int
    panic_picks: int
    router_restarts: int
    target_restarts: int
    inbox_used: int
    #: one entry per dynamic target source (empty for a static target list)
    discovery: tuple[DiscoveryStatus, ...] = ()
