# Active health-check thresholds: a pure, synchronous rise/fall counter.
#
# Rule 1: this file decides when a target is healthy; the target actor only
#   runs the probe (I/O) and reports ``record(ok, now)``.
# Rule 2: no clock.  ``now`` comes in; ``next_probe_at`` returns a deadline.
#
#   healthy    probe ok    consecutive_ok += 1, consecutive_fail = 0
#   healthy    probe fail  consecutive_fail += 1; DOWN at unhealthy_threshold
#   unhealthy  probe ok    consecutive_ok += 1; UP at healthy_threshold
#   unhealthy  probe fail  consecutive_fail += 1, consecutive_ok = 0
#
# Defaults match Velithon: every target starts healthy, one failed probe marks
# it down and one good probe marks it up (thresholds 1/1), any 2xx is healthy.

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable
from typing import Any

import attrs

from .._exceptions import ConfigError

__all__ = ["HealthCheckConfig", "HealthState", "HealthStatistics", "parse_statuses"]

_CLASS = re.compile(r"^([1-5])xx$", re.IGNORECASE)
_RANGE = re.compile(r"^(\d{3})\s*-\s*(\d{3})$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def parse_statuses(value: Any) -> frozenset[int]:
    """Expected statuses from an int, a range/iterable of ints, or a string.

    Strings: ``"2xx"``, ``"200"``, ``"200-399"`` or a comma-separated mix
    (``"2xx,304"``).  Every status must be within 100..599.
    """
    statuses: set[int] = set()
    if isinstance(value, str):
        for part in value.split(","):
            part = part.strip()
            if m := _CLASS.match(part):
                first = int(m.group(1)) * 100
                statuses.update(range(first, first + 100))
            elif m := _RANGE.match(part):
                low, high = int(m.group(1)), int(m.group(2))
                if low > high:
                    raise ConfigError(f"expected_statuses range {part!r} is empty")
                statuses.update(range(low, high + 1))
            elif part.isdigit():
                statuses.add(int(part))
            else:
                raise ConfigError(
                    f"Invalid expected_statuses entry {part!r}: use e.g. '2xx', '200', "
                    "'200-399' or '2xx,304'"
                )
    elif isinstance(value, int) and type(value) is not bool:
        statuses.add(value)
    elif isinstance(value, Iterable):
        for status in value:
            if type(status) is bool or not isinstance(status, int):
                raise ConfigError(f"expected_statuses must contain ints (got {status!r})")
            statuses.add(status)
    else:
        raise ConfigError(f"expected_statuses must be a range, ints or a string (got {value!r})")
    if not statuses:
        raise ConfigError("expected_statuses must not be empty")
    bad = sorted(s for s in statuses if not 100 <= s <= 599)
    if bad:
        raise ConfigError(f"expected_statuses must be HTTP statuses 100..599 (got {bad[0]})")
    return frozenset(statuses)


def _method(value: Any) -> str:
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise ConfigError(f"Invalid health check method {value!r}")
    return value.upper()


def _path(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"Health check path must start with '/' (got {value!r})")
    if any(c.isspace() or ord(c) < 0x20 for c in value):
        raise ConfigError(f"Health check path must not contain whitespace (got {value!r})")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is bool or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"health check {attribute.name} must be a positive number "
                          f"(got {value!r})")


def _threshold(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is bool or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attribute.name} must be an int >= 1 (got {value!r})")


def _fraction(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is bool or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"health check jitter must be in [0, 1) (got {value!r})")


def _bool(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bool:
        raise ConfigError(f"{attribute.name} must be True or False (got {value!r})")


@attrs.frozen
class HealthCheckConfig:
    """Active probe settings: ``method path`` every ``interval`` ± jitter."""

    path: str = attrs.field(default="/health", validator=_path)
    interval: float = attrs.field(default=30.0, validator=_positive)
    timeout: float = attrs.field(default=5.0, validator=_positive)
    healthy_threshold: int = attrs.field(default=1, validator=_threshold)
    unhealthy_threshold: int = attrs.field(default=1, validator=_threshold)
    expected_statuses: frozenset[int] = attrs.field(
        default=frozenset(range(200, 300)), converter=parse_statuses
    )
    initially_healthy: bool = attrs.field(default=True, validator=_bool)
    jitter: float = attrs.field(default=0.1, validator=_fraction)
    method: str = attrs.field(default="GET", converter=_method)

    def is_expected(self, status: int) -> bool:
        """Does a probe answering ``status`` count as healthy?"""
        return status in self.expected_statuses


@attrs.frozen
class HealthStatistics:
    healthy: bool
    consecutive_ok: int
    consecutive_fail: int
    checks: int
    failed_checks: int
    flips: int
    last_checked: float | None
    last_change: float | None


class HealthState:
    """Rise/fall bookkeeping for one target (owned by its target actor).

    ``healthy`` may also be set directly (e.g. ``initially_healthy`` for a
    restored target); the counters then continue from there.
    """

    def __init__(self, config: HealthCheckConfig | None = None) -> None:
        self.config = config if config is not None else HealthCheckConfig()
        self.healthy: bool = self.config.initially_healthy
        self.consecutive_ok = 0
        self.consecutive_fail = 0
        self.checks = 0
        self.failed_checks = 0
        self.flips = 0
        self.last_checked: float | None = None
        self.last_change: float | None = None

    def record(self, ok: bool, now: float) -> bool:
        """Count one probe result; True when ``healthy`` flipped."""
        self.checks += 1
        self.last_checked = now
        if ok:
            self.consecutive_ok += 1
            self.consecutive_fail = 0
            flip = not self.healthy and self.consecutive_ok >= self.config.healthy_threshold
        else:
            self.failed_checks += 1
            self.consecutive_fail += 1
            self.consecutive_ok = 0
            flip = self.healthy and self.consecutive_fail >= self.config.unhealthy_threshold
        if flip:
            self.healthy = not self.healthy
            self.flips += 1
            self.last_change = now
        return flip

    def is_expected(self, status: int) -> bool:
        return self.config.is_expected(status)

    def next_probe_at(self, last: float, rng: random.Random | None = None) -> float:
        """The next probe deadline: ``last + interval × (1 ± jitter)``.

        Jitter spreads probes of many targets apart; ``rng=None`` disables it.
        """
        interval = self.config.interval
        jitter = self.config.jitter
        if rng is not None and jitter:
            interval *= 1.0 + rng.uniform(-jitter, jitter)
        return last + interval

    def statistics(self) -> HealthStatistics:
        return HealthStatistics(
            healthy=self.healthy,
            consecutive_ok=self.consecutive_ok,
            consecutive_fail=self.consecutive_fail,
            checks=self.checks,
            failed_checks=self.failed_checks,
            flips=self.flips,
            last_checked=self.last_checked,
            last_change=self.last_change,
        )

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else "unhealthy"
        c = self.config
        return (
            f"<HealthState {state} [ok {self.consecutive_ok}/{c.healthy_threshold}, "
            f"fail {self.consecutive_fail}/{c.unhealthy_threshold}] checks={self.checks}>"
        )
