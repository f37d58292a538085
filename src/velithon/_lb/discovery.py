"""Discovery actors: one per dynamic target source (DNS records, a watched file).

A source says, when asked, which targets exist right now and with which weights.
Its actor asks on a schedule the source chooses (a DNS answer's TTL, a file's poll
interval), diffs each answer against the set it applied last
(:func:`~velithon._lb.membership.plan_membership`), and applies the difference through
the balancer: new targets get a target actor and a pool like static ones (health
checks, breaker, outlier detection all apply), re-weighted ones get their new weight,
and removed ones stop receiving requests while their in-flight requests finish.

Failure handling: a failed, timed-out or empty lookup changes nothing (the last good
set keeps serving), is counted, and is logged at WARNING once per streak of failures,
then at INFO when a lookup succeeds again. A lookup that raises something other than
:class:`DiscoveryError` (the resolver library misbehaving) is a failure too, logged at
ERROR with its traceback; a bug in the actor itself crashes it, and the supervisor
restarts it with its state (the next lookup then waits the retry delay).

A source whose first lookup fails leaves its share of the pool empty: requests that
find no target get a 503 with ``Retry-After`` until a lookup succeeds.

The state of a source (the set it applied, counters, the time of its next lookup)
lives in a :class:`DiscoveryState` that outlives actor incarnations and balancer
systems, like the router's and targets' states. Only the running actor writes it;
status readers get a frozen :class:`DiscoveryStatus`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import attrs
import trio

from .membership import AddMember, RemoveMember, Reweight, plan_membership
from .supervisor import SupervisedStats, SupervisorConfig, supervise

LOGGER = logging.getLogger("velithon.discovery")

__all__ = [
    "Discovered",
    "DiscoveryActor",
    "DiscoveryError",
    "DiscoveryPort",
    "DiscoverySource",
    "DiscoveryState",
    "DiscoveryStatus",
    "Lookup",
    "run_discovery",
]


class DiscoveryError(Exception):
    """A lookup failed; the message says why in one line (shown in logs and status)."""


@attrs.frozen
class Discovered:
    """One lookup's answer: ``(url, weight)`` pairs, and how long it stays valid."""

    targets: tuple[tuple[str, int], ...]
    #: seconds the answer is valid for (a DNS TTL), when the source knows it
    ttl: float | None = None


#: one lookup: returns the current targets or raises :class:`DiscoveryError`
Lookup = Callable[[], Awaitable[Discovered]]


class DiscoverySource(Protocol):
    """A dynamic target source, as configured; the engine knows nothing else about it."""

    @property
    def name(self) -> str:
        """The source as the user wrote it (``dns+srv://...``, ``file://...``)."""

    @property
    def kind(self) -> str:
        """``"dns-srv"``, ``"dns-a"`` or ``"file"``: what status pages label it."""

    @property
    def timeout(self) -> float:
        """Seconds one lookup may take before it counts as failed."""

    def open(self) -> Lookup:
        """A lookup function, with whatever state it keeps between calls (must not raise)."""

    def refresh_after(self, ttl: float | None) -> float:
        """Seconds from a successful lookup to the next one."""

    def retry_after(self, failures: int) -> float:
        """Seconds from the ``failures``-th failed lookup in a row to the next try."""


class DiscoveryPort(Protocol):
    """What a discovery actor needs of its balancer (``Balancer`` provides it)."""

    @property
    def targets(self) -> list[str]: ...

    async def add_target(self, url: str, weight: int = 1) -> None: ...

    async def retire_target(self, url: str) -> object: ...

    async def set_target_weights(self, weights: Sequence[tuple[str, int]]) -> None: ...


@attrs.frozen
class DiscoveryStatus:
    """One source as status pages and metrics show it.

    Times are on trio's clock (``trio.current_time()``); the ``seconds_since_*`` and
    ``next_lookup_in`` fields are relative to the moment the status was taken.
    """

    source: str
    kind: str
    #: a lookup has succeeded at least once (this source contributed targets)
    ready: bool
    targets: tuple[str, ...]
    lookups: int
    failures: int
    consecutive_failures: int
    last_success_at: float | None
    seconds_since_success: float | None
    last_error: str | None
    last_error_at: float | None
    next_lookup_in: float | None
    restarts: int

    @property
    def size(self) -> int:
        return len(self.targets)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, with ``size`` included."""
        return {**attrs.asdict(self, recurse=False), "targets": list(self.targets),
                "size": self.size}


@attrs.define(eq=False)
class DiscoveryState:
    """Everything one source's actor knows; survives restarts and successive systems."""

    source: DiscoverySource
    #: the targets this source added and still owns: url -> weight
    members: dict[str, int] = attrs.field(factory=dict)
    lookups: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    next_lookup_at: float = -math.inf
    restarts: int = 0
    #: targets another source (or the static list) already holds: warned about once
    refused: set[str] = attrs.field(factory=set)

    def record_success(self, started: float, ttl: float | None) -> bool:
        """Count a good lookup begun at ``started``; True when it ends a failure streak."""
        recovered = self.consecutive_failures > 0
        self.consecutive_failures = 0
        self.last_success_at = started
        self.next_lookup_at = started + self.source.refresh_after(ttl)
        return recovered

    def record_failure(self, started: float, error: str) -> bool:
        """Count a failed lookup begun at ``started``; True when it starts a streak."""
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = error
        self.last_error_at = started
        self.next_lookup_at = started + self.source.retry_after(self.consecutive_failures)
        return self.consecutive_failures == 1

    def status(self, now: float) -> DiscoveryStatus:
        since = None if self.last_success_at is None else max(now - self.last_success_at, 0.0)
        due = self.next_lookup_at
        return DiscoveryStatus(
            source=self.source.name, kind=self.source.kind,
            ready=self.last_success_at is not None, targets=tuple(self.members),
            lookups=self.lookups, failures=self.failures,
            consecutive_failures=self.consecutive_failures,
            last_success_at=self.last_success_at, seconds_since_success=since,
            last_error=self.last_error, last_error_at=self.last_error_at,
            next_lookup_in=None if due == -math.inf else max(due - now, 0.0),
            restarts=self.restarts,
        )


class DiscoveryActor:
    """The async shell around one source: look up, diff, apply, sleep."""

    def __init__(self, state: DiscoveryState, port: DiscoveryPort) -> None:
        self.state = state
        self._port = port

    def __repr__(self) -> str:
        state = self.state
        return (f"<DiscoveryActor {state.source.name} [{len(state.members)} targets] "
                f"lookups={state.lookups} failures={state.failures}>")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Look up at once if a lookup is due (so a route starts with its targets
        whenever the source answers), report started, then follow the schedule."""
        lookup = self.state.source.open()
        if trio.current_time() >= self.state.next_lookup_at:
            await self.lookup_once(lookup)
        task_status.started()
        while True:
            await trio.sleep_until(self.state.next_lookup_at)
            await self.lookup_once(lookup)

    async def lookup_once(self, lookup: Lookup) -> None:
        state = self.state
        source = state.source
        started = trio.current_time()
        state.lookups += 1
        # if this incarnation crashes below, its successor waits before asking again
        state.next_lookup_at = started + source.retry_after(state.consecutive_failures + 1)
        try:
            with trio.fail_after(source.timeout):
                result = await lookup()
            if not result.targets:
                raise DiscoveryError("the answer holds no targets")
        except trio.TooSlowError:
            self._failed(started, f"no answer within {source.timeout:g}s")
            return
        except DiscoveryError as exc:
            self._failed(started, str(exc) or type(exc).__name__)
            return
        except Exception as exc:  # the resolver library misbehaved: a failure, logged loudly
            self._failed(started, f"{type(exc).__name__}: {exc}", unexpected=True)
            return
        await self._apply(result.targets)
        failures = state.consecutive_failures
        if state.record_success(started, result.ttl):
            LOGGER.info("%s: lookup succeeded again after %d failed; %d targets",
                        source.name, failures, len(state.members))

    def _failed(self, started: float, error: str, *, unexpected: bool = False) -> None:
        state = self.state
        if state.record_failure(started, error):
            if unexpected:
                LOGGER.error("%s: lookup failed unexpectedly (%s); keeping the last %d targets",
                             state.source.name, error, len(state.members), exc_info=True)
            else:
                LOGGER.warning("%s: lookup failed (%s); keeping the last %d targets",
                               state.source.name, error, len(state.members))
        else:
            LOGGER.debug("%s: lookup failed again (%s)", state.source.name, error)

    async def _apply(self, found: tuple[tuple[str, int], ...]) -> None:
        state = self.state
        port = self._port
        present = set(port.targets)  # a target removed by hand is no longer ours
        state.members = {u: w for u, w in state.members.items() if u in present}
        added: list[str] = []
        removed: list[str] = []
        for action in plan_membership(state.members, found):
            match action:
                case AddMember(url=url, weight=weight):
                    state.members[url] = weight  # owned before the await: a cancel cannot orphan it
                    try:
                        await port.add_target(url, weight)
                    except ValueError as exc:  # held by another source or the static list
                        del state.members[url]
                        if url not in state.refused:
                            state.refused.add(url)
                            LOGGER.warning("%s: not adding %s: %s", state.source.name, url, exc)
                        continue
                    state.refused.discard(url)
                    added.append(url)
                case Reweight(weights=weights):
                    await port.set_target_weights(weights)
                    state.members.update(weights)
                case RemoveMember(url=url):
                    del state.members[url]
                    try:
                        await port.retire_target(url)
                    except ValueError:
                        continue  # already gone
                    removed.append(url)
        state.refused &= {url for url, _ in found}
        if added or removed:
            LOGGER.info("%s: %d targets (added %s; removed %s)", state.source.name,
                        len(state.members), _listing(added), _listing(removed))


async def run_discovery(state: DiscoveryState, port: DiscoveryPort, config: SupervisorConfig, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a source's actor under :func:`supervise` until cancelled (restarts kept in state)."""
    stats = SupervisedStats(state.source.name, restarts=state.restarts)

    async def incarnation(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        state.restarts = stats.restarts
        await DiscoveryActor(state, port).run(task_status=task_status)

    await supervise(incarnation, name=f"discovery {state.source.name}", config=config,
                    stats=stats, task_status=task_status)


def _listing(urls: list[str], shown: int = 5) -> str:
    if not urls:
        return "none"
    more = f" and {len(urls) - shown} more" if len(urls) > shown else ""
    return ", ".join(urls[:shown]) + more
