# Retry decisions and the retry budget: pure and synchronous.
#
# RetryPolicy.should_retry(attempt, method, status=..., error=...) -- rules in order:
#   1. attempt > max_retries (``attempt`` = attempts already made)    -> no
#   2. response_started (bytes already went to the client)             -> no
#   3. error == "connect" (nothing reached the upstream)               -> retry_on_connect_failure,
#                                                                         for every method and body
#   4. body not replayable (it was streamed and is gone)               -> no
#   5. method not idempotent (RFC 9110 §9.2.2) and not
#      retry_non_idempotent                                             -> no
#   6. error: "reset" / "timeout" -> retry_on_reset / retry_on_timeout;
#      "protocol" (malformed response) -> no
#   7. status in retry_on_statuses                                     -> yes; other statuses no
#
# Backoff: Velithon waits ``100 ms · 2^(attempt-1)``; that is our ceiling, capped
# at ``backoff_cap``, and with ``jitter`` the wait is uniform in [0, ceiling]
# ("full jitter", as Envoy) so retries from many clients do not synchronise.
#
# RetryBudget (Finagle / Linkerd): every request deposits, every retry withdraws.
# A retry is allowed while
#     ratio × deposits + min_per_second × ttl - withdrawals >= 1
# counting only events of the last ``ttl`` seconds (10 time slices, O(1) memory),
# so retries stay near ``ratio`` of traffic plus a small floor for quiet clients.

from __future__ import annotations

import math
import random
from typing import Any

import attrs

from .._exceptions import ConfigError
from .window import SlidingCounts

__all__ = [
    "ERROR_KINDS",
    "IDEMPOTENT_METHODS",
    "BudgetStatistics",
    "RetryBudget",
    "RetryPolicy",
    "is_idempotent",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
ERROR_KINDS = ("connect", "reset", "timeout", "protocol")
_SLICES = 10


def is_idempotent(method: str) -> bool:
    """RFC 9110 §9.2.2.  Methods are case-sensitive: ``"get"`` is not GET."""
    return method in IDEMPOTENT_METHODS


def _statuses(value: Any) -> frozenset[int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"retry_on_statuses must be a collection of ints (got {value!r})")
    result = frozenset(value)
    for status in result:
        if type(status) is bool or not isinstance(status, int) or not 100 <= status <= 599:
            raise ConfigError("retry_on_statuses must hold HTTP statuses 100..599 "
                              f"(got {status!r})")
    return result


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is bool or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ConfigError(f"{attribute.name} must be a number >= 0 (got {value!r})")


def _max_retries(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is bool or not isinstance(value, int) or value < 0:
        raise ConfigError(f"max_retries must be an int >= 0 (got {value!r})")


def _flag(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bool:
        raise ConfigError(f"{attribute.name} must be True or False (got {value!r})")


@attrs.frozen
class RetryPolicy:
    """When to try another target, and how long to wait first."""

    max_retries: int = attrs.field(default=3, validator=_max_retries)
    retry_on_statuses: frozenset[int] = attrs.field(
        default=frozenset({502, 503, 504}), converter=_statuses
    )
    retry_on_connect_failure: bool = attrs.field(default=True, validator=_flag)
    retry_on_reset: bool = attrs.field(default=True, validator=_flag)
    retry_on_timeout: bool = attrs.field(default=True, validator=_flag)
    retry_non_idempotent: bool = attrs.field(default=False, validator=_flag)
    backoff_base: float = attrs.field(default=0.1, validator=_non_negative)
    backoff_cap: float = attrs.field(default=2.0, validator=_non_negative)
    jitter: bool = attrs.field(default=True, validator=_flag)

    def should_retry(
        self,
        attempt: int,
        method: str,
        *,
        status: int | None = None,
        error: str | None = None,
        body_replayable: bool = True,
        response_started: bool = False,
    ) -> bool:
        """May attempt ``attempt + 1`` be made?  See the module header for the rules.

        Raises:
            ValueError: ``attempt`` < 1 or an unknown ``error`` kind.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts attempts made so far and starts at 1 (got {attempt})")
        if error is not None and error not in ERROR_KINDS:
            raise ValueError(f"Invalid error kind {error!r}. Use one of {', '.join(ERROR_KINDS)}")
        if attempt > self.max_retries or response_started:
            return False
        if error == "connect":
            return self.retry_on_connect_failure
        if not body_replayable:
            return False
        if not self.retry_non_idempotent and not is_idempotent(method):
            return False
        if error == "reset":
            return self.retry_on_reset
        if error == "timeout":
            return self.retry_on_timeout
        if error == "protocol":
            return False
        return status is not None and status in self.retry_on_statuses

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the retry that follows attempt ``attempt``."""
        if attempt < 1:
            raise ValueError(f"attempt starts at 1 (got {attempt})")
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt - 1, 256))
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0.0, ceiling)


@attrs.frozen
class BudgetStatistics:
    deposits: int  # in the current ttl window
    withdrawals: int  # in the current ttl window
    refused: int  # ever
    balance: float  # retries allowed right now


class RetryBudget:
    """Caps retries at ``ratio`` of requests plus ``min_per_second`` (10 s ttl)."""

    def __init__(self, ratio: float = 0.2, min_per_second: float = 10.0, ttl: float = 10.0) -> None:
        for name, value in (("ratio", ratio), ("min_per_second", min_per_second)):
            not_a_number = type(value) is bool or not isinstance(value, (int, float))
            if not_a_number or not 0 <= value < math.inf:
                raise ConfigError(f"RetryBudget {name} must be a number >= 0 (got {value!r})")
        if type(ttl) is bool or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
            raise ConfigError(f"RetryBudget ttl must be a positive number of seconds (got {ttl!r})")
        self.ratio = float(ratio)
        self.min_per_second = float(min_per_second)
        self.ttl = float(ttl)
        self._reserve = self.min_per_second * self.ttl
        self._counts = SlidingCounts(self.ttl, _SLICES)  # (deposits, withdrawals)
        self.refused = 0

    def _balance(self) -> float:
        deposits, withdrawals = self._counts.totals()
        return self.ratio * deposits + self._reserve - withdrawals

    def deposit(self, now: float) -> None:
        """Count one original request."""
        self._counts.add(now, first=1)

    def try_withdraw(self, now: float) -> bool:
        """Take one retry from the budget; False when it is spent."""
        self._counts.advance(now)
        if self._balance() >= 1.0 - 1e-9:
            self._counts.add(now, second=1)
            return True
        self.refused += 1
        return False

    def statistics(self, now: float | None = None) -> BudgetStatistics:
        deposits, withdrawals = self._counts.totals(now)
        balance = self.ratio * deposits + self._reserve - withdrawals
        return BudgetStatistics(deposits, withdrawals, self.refused, balance)

    def __repr__(self) -> str:
        deposits, withdrawals = self._counts.totals()
        return (
            f"<RetryBudget {self.ratio:.0%} + {self.min_per_second:g}/s over {self.ttl:g}s "
            f"[{withdrawals} retries / {deposits} requests, refused {self.refused}]>"
        )
