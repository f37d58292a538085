# Passive outlier detection (Envoy / gRPC A50 semantics): pure and synchronous.
#
# Split by owner, as the actors are:
#   FailureStreak    per target, owned by the target actor.  Counts consecutive
#                    failures and says when an ejection should be *requested*.
#   OutlierDetector  per router, owned by the router actor.  Decides ejections
#                    across targets (it alone knows how many are ejected).
#
# FailureStreak, by outcome kind (Envoy ``putHttpResponseCode``):
#   kind       consecutive_5xx   consecutive_gateway   notes
#   success    reset             reset
#   5xx        += 1              reset                 500, 501, 505, ... (Envoy)
#   gateway    += 1              += 1                  502, 503, 504
#   local      += 1              += 1                  connect/reset/timeout (Envoy maps
#                                                      local-origin errors to 503/504)
#   neutral    -                 -                     4xx, client went away
# ``record`` returns True while either streak is at or above its threshold (a
# threshold of 0 disables that detector), so a request refused by the
# percentage cap is asked again on the next failure.  The target calls
# ``reset()`` once it is ejected.
#
# OutlierDetector, per target: ejected_until, times_ejected (the multiplier).
#   request_ejection(i, now): refused (None) when ejection is disabled, or when
#     ``(ejected + 1) > max_ejection_percent% of targets`` unless nothing is
#     ejected yet (Envoy: "will eject at least one host regardless";
#     ``max_ejection_percent=0`` disables ejection instead).  Otherwise
#     times_ejected += 1 and the target is out for
#     ``min(base × times_ejected, max(base, max_ejection_time))``.
#   Expiry is lazy: any call with ``now`` un-ejects targets whose time passed.
#   Decay (A50): the multiplier drops by one per full ``interval`` spent not
#     ejected, computed from time (not from how often ``tick`` runs).

from __future__ import annotations

import math
from typing import Any

import attrs

from .._exceptions import ConfigError

__all__ = [
    "FailureStreak",
    "OutlierConfig",
    "OutlierDetector",
    "OutlierStatistics",
    "OUTCOME_KINDS",
]

OUTCOME_KINDS = ("success", "5xx", "gateway", "local", "neutral")


def _count(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is bool or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{attribute.name} must be an int >= 0 (got {value!r})")


def _seconds(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is bool or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"{attribute.name} must be a positive number of seconds (got {value!r})")


def _percent(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is bool or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ConfigError(f"max_ejection_percent must be in 0..100 (got {value!r})")


def _bool(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bool:
        raise ConfigError(f"{attribute.name} must be True or False (got {value!r})")


@attrs.frozen
class OutlierConfig:
    """Envoy's shape: 5 consecutive gateway failures, 30 s × n ejections up to 300 s, 10 %.

    ``consecutive_5xx`` is off (0) by default, unlike Envoy: a 5xx the application
    chose to send is its answer, and one buggy endpoint (which fails on every target
    alike) must not take targets out of rotation. Set it to eject on plain 5xx runs too.
    """

    consecutive_5xx: int = attrs.field(default=0, validator=_count)
    consecutive_gateway_failure: int = attrs.field(default=5, validator=_count)
    base_ejection_time: float = attrs.field(default=30.0, validator=_seconds)
    max_ejection_time: float = attrs.field(default=300.0, validator=_seconds)
    max_ejection_percent: float = attrs.field(default=10, validator=_percent)
    interval: float = attrs.field(default=10.0, validator=_seconds)
    enabled: bool = attrs.field(default=True, validator=_bool)

    @property
    def ejection_cap(self) -> float:
        """The longest ejection: ``max(base, max_ejection_time)`` (A50)."""
        return max(self.base_ejection_time, self.max_ejection_time)


class FailureStreak:
    """Consecutive-failure counters of one target."""

    __slots__ = ("config", "consecutive_5xx", "consecutive_gateway")

    def __init__(self, config: OutlierConfig | None = None) -> None:
        self.config = config if config is not None else OutlierConfig()
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0

    def record(self, kind: str) -> bool:
        """Count one outcome; True when an ejection should be requested."""
        if kind == "success":
            self.consecutive_5xx = self.consecutive_gateway = 0
            return False
        if kind in ("gateway", "local"):
            self.consecutive_5xx += 1
            self.consecutive_gateway += 1
        elif kind == "5xx":
            self.consecutive_5xx += 1
            self.consecutive_gateway = 0
        elif kind == "neutral":
            return False
        else:
            kinds = ", ".join(OUTCOME_KINDS)
            raise ValueError(f"Invalid outcome kind {kind!r}. Use one of {kinds}")
        c = self.config
        if not c.enabled:
            return False
        return (0 < c.consecutive_5xx <= self.consecutive_5xx) or (
            0 < c.consecutive_gateway_failure <= self.consecutive_gateway
        )

    def reset(self) -> None:
        self.consecutive_5xx = self.consecutive_gateway = 0

    def __repr__(self) -> str:
        return f"<FailureStreak 5xx={self.consecutive_5xx} gateway={self.consecutive_gateway}>"


@attrs.frozen
class OutlierStatistics:
    targets: int
    ejected: int  # as of the last call that passed ``now``
    ejections: int  # granted ejection requests, ever
    refused: int  # requests refused by the percentage cap
    max_ejected: int  # what the cap allows right now


@attrs.define
class _Slot:
    ejected_until: float | None = None
    times_ejected: int = 0
    decay_from: float | None = None  # start of the current un-ejected stretch


class OutlierDetector:
    """Router-level ejection bookkeeping over ``n_targets`` indexed targets."""

    def __init__(self, config: OutlierConfig | None = None, n_targets: int = 0) -> None:
        if type(n_targets) is bool or not isinstance(n_targets, int) or n_targets < 0:
            raise ValueError(f"n_targets must be an int >= 0 (got {n_targets!r})")
        self.config = config if config is not None else OutlierConfig()
        self._slots = [_Slot() for _ in range(n_targets)]
        self._ejected = 0
        self.ejections = 0
        self.refused = 0

    def _settle(self, slot: _Slot, now: float) -> None:
        """Lazily expire an ejection and apply the multiplier decay up to ``now``."""
        until = slot.ejected_until
        if until is not None:
            if now < until:
                return
            slot.ejected_until = None
            slot.decay_from = until
            self._ejected -= 1
        if slot.times_ejected:
            if slot.decay_from is None:
                slot.decay_from = now
            steps = int((now - slot.decay_from) // self.config.interval)
            if steps > 0:
                taken = min(steps, slot.times_ejected)
                slot.times_ejected -= taken
                slot.decay_from += taken * self.config.interval

    def _max_ejected(self) -> int:
        """How many targets may be ejected at once (at least one, unless 0 %)."""
        pct = self.config.max_ejection_percent
        if not pct or not self._slots:
            return 0
        return max(1, math.floor(len(self._slots) * pct / 100.0 + 1e-9))

    def request_ejection(self, i: int, now: float) -> float | None:
        """Eject target ``i``; returns when it comes back, or None if refused.

        A target already ejected stays as it is and its current end is returned.
        """
        slot = self._slots[i]
        self._settle(slot, now)
        if slot.ejected_until is not None:
            return slot.ejected_until
        if not self.config.enabled:
            return None
        for other in self._slots:
            if other.ejected_until is not None:
                self._settle(other, now)
        if self._ejected + 1 > self._max_ejected():
            self.refused += 1
            return None
        c = self.config
        slot.times_ejected += 1
        slot.ejected_until = now + min(c.base_ejection_time * slot.times_ejected, c.ejection_cap)
        slot.decay_from = None
        self._ejected += 1
        self.ejections += 1
        return slot.ejected_until

    def is_ejected(self, i: int, now: float) -> bool:
        slot = self._slots[i]
        self._settle(slot, now)
        return slot.ejected_until is not None

    def tick(self, now: float) -> list[int]:
        """Expire ejections and decay multipliers; returns the indices un-ejected now."""
        if not self.ejections:
            return []  # nothing was ever ejected: no state to expire (every pick calls this)
        back = []
        for i, slot in enumerate(self._slots):
            was = slot.ejected_until is not None
            self._settle(slot, now)
            if was and slot.ejected_until is None:
                back.append(i)
        return back

    def uneject(self, i: int, now: float | None = None) -> None:
        """End an ejection early (e.g. an active health check passed)."""
        slot = self._slots[i]
        if slot.ejected_until is not None:
            slot.ejected_until = None
            slot.decay_from = now
            self._ejected -= 1

    def add_target(self) -> int:
        """Track one more target (appended); returns its index."""
        self._slots.append(_Slot())
        return len(self._slots) - 1

    def remove_target(self, i: int) -> None:
        """Forget target ``i``; later indices shift down by one."""
        slot = self._slots.pop(i)
        if slot.ejected_until is not None:
            self._ejected -= 1

    def status(self, i: int, now: float) -> tuple[float | None, int]:
        """``(ejected_until or None, times_ejected)`` for target ``i``."""
        slot = self._slots[i]
        self._settle(slot, now)
        return slot.ejected_until, slot.times_ejected

    def statistics(self) -> OutlierStatistics:
        return OutlierStatistics(
            targets=len(self._slots),
            ejected=self._ejected,
            ejections=self.ejections,
            refused=self.refused,
            max_ejected=self._max_ejected(),
        )

    def __repr__(self) -> str:
        return (
            f"<OutlierDetector [{self._ejected}/{len(self._slots)} ejected, "
            f"cap {self._max_ejected()}] ejections={self.ejections} refused={self.refused}>"
        )
