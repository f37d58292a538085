"""A point-in-time picture of one balancer: every target as the router and its actor see it.

Status pages and metrics read this instead of the actors' state. While a system runs,
:func:`take_snapshot` asks the actors with their ordinary messages (``RouterStatus``,
then one ``TargetStatusQuery`` per target), so a picture costs the request path
nothing: the counters it reports are kept where outcomes already arrive. When no
system runs (a route appended after start-up that has had no request yet),
:func:`read_snapshot` reads the durable :class:`BalancerState` directly: no actor owns
it then, so nothing else is writing it. A running system whose router cannot take the
question (its inbox is full, or it is stopping) is read the same way, between two of
its router's wake-ups.

The router's retry and rejection totals are read from its state right after the
``RouterStatus`` answer, the way :meth:`Balancer.statistics` reads them: they are plain
integers that only grow.
"""

from __future__ import annotations

import attrs
import trio

from .discovery import DiscoveryStatus
from .router import RouterState, RouterTargetView
from .system import Balancer, BalancerState
from .target import TargetStatus


@attrs.frozen
class TargetSnapshot:
    """One target: the router's view of it and its own actor's status.

    ``status`` is None when the target left between the two questions (a removal
    racing the picture).
    """

    view: RouterTargetView
    status: TargetStatus | None


@attrs.frozen
class BalancerSnapshot:
    """Every target of one balancer, plus the router's own totals."""

    strategy: str
    running: bool
    targets: tuple[TargetSnapshot, ...]
    picks: int
    retries: int
    retries_denied: int  # retries the retry budget refused
    rejected: int  # picks answered "no target available"
    overflows: int  # picks refused by max_requests_per_target
    panic_picks: int
    panicking: bool
    #: the dynamic target sources (DNS, files), in configuration order
    discovery: tuple[DiscoveryStatus, ...] = ()


def _snapshot(strategy: str, running: bool, router: RouterState,
              targets: list[TargetSnapshot],
              discovery: list[DiscoveryStatus]) -> BalancerSnapshot:
    return BalancerSnapshot(
        strategy=strategy, running=running, targets=tuple(targets), picks=router.picks,
        retries=router.retries, retries_denied=router.retries_denied,
        rejected=router.rejected, overflows=router.overflows,
        panic_picks=router.panic_picks, panicking=router.panicking,
        discovery=tuple(discovery),
    )


async def take_snapshot(balancer: Balancer) -> BalancerSnapshot:
    """Ask a running system's actors (messages only; nothing is read behind their backs)."""
    views = await balancer.router_view()
    router = balancer.state.router
    totals = _snapshot(balancer.config.strategy, True, router, [],
                       balancer.discovery_statuses())
    targets = []
    for view in views:
        try:
            status: TargetStatus | None = await balancer.target_status(view.url)
        except (ValueError, trio.ClosedResourceError, trio.BrokenResourceError):
            status = None  # removed meanwhile, or the system is shutting down
        targets.append(TargetSnapshot(view, status))
    return attrs.evolve(totals, targets=tuple(targets))


def read_snapshot(state: BalancerState, now: float, *, running: bool = False
                  ) -> BalancerSnapshot:
    """The durable state of a balancer whose system is not running (or whose router
    cannot take a question now: ``running`` says which)."""
    router = state.router
    targets = []
    for view in router.view(now):
        tstate = state.targets.get(view.url)
        targets.append(TargetSnapshot(view, tstate.status(now) if tstate is not None else None))
    return _snapshot(state.config.strategy, running, router, targets,
                     state.discovery_statuses(now))
