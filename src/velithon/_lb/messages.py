"""Messages exchanged between facades, the router actor and target actors.

All messages are frozen ``attrs`` classes. A message that expects an answer
carries its own :class:`~velithon._lb.reply.Reply`; reports carry none. Nobody
reads another actor's attributes: state moves only through these messages
(or as the immutable :class:`TargetReport` a target publishes to the router).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import attrs

from .breaker import BreakerState

if TYPE_CHECKING:
    from .reply import Reply

# ---- facade -> router ---------------------------------------------------------


@attrs.frozen
class Pick:
    """Ask for a lease on one target (``exclude``: ids already tried)."""

    reply: Reply[Any]
    key: bytes | None = None
    exclude: frozenset[int] = frozenset()
    retry: bool = False


@attrs.frozen
class Done:
    """A leased request ended; ``kind`` classifies the outcome.

    kinds: ``"success"``, ``"5xx"`` (status >= 500 other than gateway
    statuses), ``"gateway"`` (502/503/504 from upstream), ``"local"``
    (connect/reset/timeout/protocol failures), ``"neutral"`` (client went
    away, 4xx, or cancelled: no verdict about the target).
    """

    target_id: int
    epoch: int
    kind: str
    latency: float
    status: int | None = None


@attrs.frozen
class RouterStatus:
    """Ask the router for its view of every target (constructor order)."""

    reply: Reply[Any]


@attrs.frozen
class AddTarget:
    """Start routing to a new target (its actor is already running)."""

    reply: Reply[Any]
    entry: Any  # a TargetEntry


@attrs.frozen
class RemoveTarget:
    """Stop routing to a target; in-flight leases finish undisturbed."""

    reply: Reply[Any]
    url: str


@attrs.frozen
class SetWeights:
    reply: Reply[Any]
    weights: tuple[int, ...]


@attrs.frozen
class SetDraining:
    """Draining targets get no new requests but keep their in-flight ones."""

    reply: Reply[Any]
    url: str
    draining: bool


# ---- target -> router --------------------------------------------------------


@attrs.frozen
class TargetReport:
    """What a target actor publishes to the router whenever it changes.

    ``trial_credits`` counts the half-open trial requests the target has
    granted in its current breaker ``epoch``; the router may lease at most
    that many trials in that epoch.
    """

    target_id: int
    healthy: bool
    breaker: BreakerState
    epoch: int
    trial_credits: int = 0
    probe_ok: bool = False


@attrs.frozen
class EjectRequest:
    """Passive outlier detection asks the router to eject a target."""

    target_id: int


# ---- router -> target / anyone -> target ---------------------------------------


@attrs.frozen
class Outcome:
    """Forwarded by the router so the target updates breaker and counters."""

    kind: str
    epoch: int
    latency: float
    status: int | None = None
    count: int = 1  # the router folds runs of successes into one message


@attrs.frozen
class Ejected:
    """The router ejected (``until`` set) or un-ejected the target."""

    until: float | None


@attrs.frozen
class ProbeNow:
    """Run one active health probe now and reply with the new health."""

    reply: Reply[Any]


@attrs.frozen
class ProbeResult:
    """Sent by a target's own probe loop to its inbox."""

    ok: bool
    status: int | None
    detail: str
    reply: Reply[Any] | None = None


@attrs.frozen
class TargetStatusQuery:
    reply: Reply[Any]


@attrs.frozen
class ResetBreaker:
    reply: Reply[Any]


@attrs.frozen
class Close:
    """Sent once when the balancer shuts down: later picks are refused."""


@attrs.frozen
class Sync:
    """Answered after every message queued before it (graceful shutdown)."""

    reply: Reply[Any]


@attrs.frozen
class Crash:
    """Test hook: makes the receiving actor raise (for supervisor tests)."""

    message: str = "injected crash"


RouterMsg = Union[
    Pick,
    Done,
    RouterStatus,
    AddTarget,
    RemoveTarget,
    SetWeights,
    SetDraining,
    TargetReport,
    EjectRequest,
    Close,
    Crash,
]
TargetMsg = Union[
    Outcome, Ejected, ProbeNow, ProbeResult, TargetStatusQuery, ResetBreaker, Sync, Crash
]
