"""Messages exchanged between facades, the router actor and target actors.

All messages are immutable: frozen ``attrs`` classes, except the two every request
sends (:class:`Pick` and :class:`Done`), which are named tuples because building one
costs less than half as much. A message that expects an answer
carries its own :class:`~velithon._lb.reply.Reply`; reports carry none. Nobody
reads another actor's attributes: state moves only through these messages
(or as the immutable :class:`TargetReport` a target publishes to the router).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, NamedTuple

import attrs

from .breaker import BreakerState

if TYPE_CHECKING:
    from .reply import Reply
    from .router import Lease, RouterTargetView, TargetEntry
    from .target import TargetStatus


class OutcomeKind(enum.StrEnum):
    """What one leased request says about its target.

    Shared by the forwarder that classifies a result, the router that folds it into
    latency figures, and the target actor whose breaker and outlier streak count it.
    """

    SUCCESS = "success"
    #: a 5xx the application chose to send (not one of the failure statuses)
    APP_ERROR = "5xx"
    #: one of the failure statuses (502/503/504 by default) from the upstream
    GATEWAY = "gateway"
    #: the upstream could not be reached or broke the protocol: connect error,
    #: reset, timeout, invalid response
    LOCAL = "local"
    #: no verdict about the target: the client left or stalled, a 4xx, a cancellation
    NEUTRAL = "neutral"

# ---- facade -> router ---------------------------------------------------------


class Pick(NamedTuple):
    """Ask for a lease on one target (``exclude``: ids already tried)."""

    reply: Reply[Lease]
    key: bytes | None = None
    exclude: frozenset[int] = frozenset()
    retry: bool = False


class Done(NamedTuple):
    """A leased request ended; ``kind`` says what it tells about the target."""

    target_id: int
    epoch: int
    kind: OutcomeKind
    latency: float
    status: int | None = None


@attrs.frozen
class RouterStatus:
    """Ask the router for its view of every target (constructor order)."""

    reply: Reply[list[RouterTargetView]]


@attrs.frozen
class AddTarget:
    """Start routing to a new target (its actor is already running)."""

    reply: Reply[None]
    entry: TargetEntry


@attrs.frozen
class RemoveTarget:
    """Stop routing to a target; in-flight leases finish undisturbed."""

    reply: Reply[TargetEntry]
    url: str


@attrs.frozen
class SetWeights:
    reply: Reply[None]
    weights: tuple[int, ...]


@attrs.frozen
class SetTargetWeights:
    """New weights for the named targets only (discovery re-weighting what it found)."""

    reply: Reply[None]
    weights: tuple[tuple[str, int], ...]


@attrs.frozen
class SetDraining:
    """Draining targets get no new requests but keep their in-flight ones."""

    reply: Reply[None]
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

    kind: OutcomeKind
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

    reply: Reply[bool]


@attrs.frozen
class ProbeResult:
    """Sent by a target's own probe loop to its inbox."""

    ok: bool
    status: int | None
    detail: str
    reply: Reply[bool] | None = None


@attrs.frozen
class TargetStatusQuery:
    reply: Reply[TargetStatus]


@attrs.frozen
class ResetBreaker:
    reply: Reply[None]


@attrs.frozen
class Close:
    """Sent once when the balancer shuts down: later picks are refused."""


@attrs.frozen
class Sync:
    """Answered after every message queued before it (graceful shutdown)."""

    reply: Reply[None]


RouterMsg = (
    Pick | Done | RouterStatus | AddTarget | RemoveTarget | SetWeights | SetTargetWeights
    | SetDraining | TargetReport | EjectRequest | Close
)
TargetMsg = Outcome | Ejected | ProbeNow | ProbeResult | TargetStatusQuery | ResetBreaker | Sync
