"""Where a facade's balancer system runs: in a nursery, or just for one call.

Every facade (``GatewayRoute``, ``ProxyMiddleware``, ``ProxyLoadBalancer``,
``ProxyClient``) holds a :class:`BalancerHolder`. The system runs for real when

* the app's lifespan starts it (the holder is a *service*: ``run_service``), or
* the user enters ``async with facade:``.

Otherwise, as in the seed's examples that build a ``ProxyLoadBalancer`` inside
a handler and await it once, each call runs a *transient* system just for that
call. The durable :class:`~velithon._lb.system.BalancerState` is kept by the
holder, so health, breakers and the round-robin cursor carry over between
calls either way. Transient calls are serialised with a lock, so there is
never more than one writer of that state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import trio

from .._exceptions import NoTargetAvailable
from .._lb.probe import ProbeFn
from .._lb.snapshot import BalancerSnapshot, read_snapshot, take_snapshot
from .._lb.system import Balancer, BalancerConfig, BalancerState, open_balancer

_Self = TypeVar("_Self", bound="HolderBacked")


class BalancerHolder:
    """Owns a facade's durable balancer state and, while running, its system."""

    def __init__(self, config: BalancerConfig, *, probe: ProbeFn | None = None) -> None:
        self.config = config
        self.state = BalancerState.create(config)
        self._probe = probe
        self._running: Balancer | None = None
        self._lock: trio.Lock | None = None
        self._stop: trio.Event | None = None

    @property
    def running(self) -> Balancer | None:
        """The live system, or None when nothing runs it."""
        return self._running

    async def run_service(self, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the system until cancelled (the app's ServiceHost calls this)."""
        if self._running is not None:
            raise RuntimeError("this balancer is already running")
        stop = trio.Event()
        async with open_balancer(self.config, state=self.state, probe=self._probe) as balancer:
            self._running = balancer
            self._stop = stop
            try:
                task_status.started()
                await stop.wait()  # set by running_context for a graceful stop
            finally:
                self._running = None
                self._stop = None

    @asynccontextmanager
    async def running_context(self) -> AsyncIterator[Balancer]:
        """``async with facade:`` — the system runs for the block."""
        body_error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            await nursery.start(self.run_service)
            assert self._running is not None
            try:
                yield self._running
            except BaseException as exc:  # re-raised unwrapped, outside the nursery
                body_error = exc
            finally:
                if self._stop is not None:
                    self._stop.set()  # graceful: outcomes already reported are digested
                nursery.cancel_scope.deadline = trio.current_time() + self.config.shutdown_timeout
        if body_error is not None:
            raise body_error

    @asynccontextmanager
    async def balancer(self) -> AsyncIterator[Balancer]:
        """The running system, or a transient one for the duration of a call."""
        running = self._running
        if running is not None:
            yield running
            return
        if self._lock is None:
            self._lock = trio.Lock()
        async with self._lock:
            async with open_balancer(self.config, state=self.state, probe=self._probe) as balancer:
                yield balancer


class HolderBacked:
    """The lifecycle every facade shares: ``async with facade:`` or the app's lifespan.

    Subclasses set ``self._holder`` (a :class:`BalancerHolder`).
    """

    _holder: BalancerHolder
    _context: Any = None

    async def run_service(self, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run this facade's actors until cancelled (an app's lifespan calls this)."""
        await self._holder.run_service(task_status=task_status)

    async def __aenter__(self: _Self) -> _Self:
        if self._context is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        context = self._holder.running_context()
        await context.__aenter__()
        self._context = context
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        context, self._context = self._context, None
        return await context.__aexit__(exc_type, exc, tb)  # type: ignore[no-any-return]

    # ---- runtime membership: the same calls on every facade ------------------------

    @property
    def targets(self) -> list[str]:
        """Target URLs in constructor order (runtime additions at the end)."""
        return [m.url for m in self._holder.state.router.members]

    @property
    def target_weights(self) -> dict[str, int]:
        """Each target's weight as routing uses it now (runtime changes included)."""
        return {m.url: m.weight for m in self._holder.state.router.members}

    def discovery_status(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per dynamic source (``dns+srv://``, ``file://``, ...).

        Keys: ``source``, ``kind``, ``ready``, ``targets``, ``size``, ``lookups``,
        ``failures``, ``consecutive_failures``, ``last_success_at``,
        ``seconds_since_success``, ``last_error``, ``last_error_at``,
        ``next_lookup_in``, ``restarts`` (times on trio's clock). Empty for a static
        target list. Reads the durable state only, so it never waits.
        """
        now = trio.current_time()
        return [s.as_dict() for s in self._holder.state.discovery_statuses(now)]

    def discovery_ready(self) -> bool:
        """True once every dynamic source has had a successful lookup (or there is none)."""
        return all(d.last_success_at is not None for d in self._holder.state.discovery)

    async def add_target(self, url: str, weight: int = 1) -> None:
        """Start health checks for ``url`` and route to it from now on."""
        async with self._holder.balancer() as balancer:
            await balancer.add_target(url, weight)

    async def remove_target(self, url: str, *, drain_timeout: float = 30.0) -> None:
        """Stop routing to ``url``; its in-flight requests finish first (bounded)."""
        async with self._holder.balancer() as balancer:
            await balancer.remove_target(url, drain_timeout=drain_timeout)

    async def set_weights(self, weights: Sequence[int]) -> None:
        """New weights, one per target in :attr:`targets` order."""
        async with self._holder.balancer() as balancer:
            await balancer.set_weights(weights)

    async def drain(self, url: str, draining: bool = True) -> None:
        """Send ``url`` no new requests (``draining=False`` undoes it); in-flight ones finish."""
        async with self._holder.balancer() as balancer:
            await balancer.drain(url, draining)

    async def reset_breaker(self, url: str) -> None:
        """Close ``url``'s circuit breaker and forget its failure streak."""
        async with self._holder.balancer() as balancer:
            await balancer.reset_breaker(url)

    async def snapshot(self) -> BalancerSnapshot:
        """Every target's state and counters, without starting anything.

        A running system is asked through its actors; otherwise the state kept
        between runs is read as it stands (in-flight counts are then 0), as it is when
        the router cannot take the question (its inbox is full, or it is stopping).
        """
        running = self._holder.running
        if running is not None:
            try:
                return await take_snapshot(running)
            except NoTargetAvailable:  # Overloaded too: a status page must still answer
                pass
        await trio.lowlevel.checkpoint()
        return read_snapshot(self._holder.state, trio.current_time(),
                             running=running is not None)
