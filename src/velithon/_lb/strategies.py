# Target-selection strategies: pure, synchronous, cheap.
#
# Rule 1: a strategy never does I/O and never reads a clock.  The router actor
#   passes the facts of the moment to every ``pick``: which targets are eligible
#   (healthy, not ejected, breaker admits, not already tried by this request),
#   their in-flight counts, their latency estimates and an optional hash key.
#   A strategy remembers only its own bookkeeping (cursor, current weights, ring).
# Rule 2: ``pick`` returns an index into ``targets`` or None when nothing is
#   eligible.  It never returns an ineligible index.
# Rule 3: weights are validated for every strategy.  Round robin and random
#   ignore them (Velithon parity); the weight-aware strategies treat a zero
#   weight as "never picked".
#
#   name           remembers                    cost per pick       weights
#   -------------  ---------------------------  ------------------  -------
#   round_robin    cursor (next index to try)   O(1) amortised      ignored
#   random         -                            O(1) expected       ignored
#   weighted       nginx current weights        O(n), in C loops    yes
#   least_request  -                            O(1) expected       yes
#   peak_ewma      -                            O(1) expected       yes
#   hash           ketama ring + RR cursor      O(log n)            yes
#
# Fairness: round robin gives every eligible target floor/ceil of an equal share
# over any window of fixed eligibility.  Smooth WRR is exact over every window of
# sum(weights) picks from a fresh start with fixed eligibility; after eligibility
# changes it behaves as nginx does (targets resume their saved current weight)
# and converges back to the weights.  ``hash`` without a key is round robin.
#
# ``reconfigure`` keeps state by target name: the round-robin cursor stays on
# the target it pointed at, smooth WRR keeps each survivor's current weight, and
# the ring keeps every survivor's points (so only the leaving target's keys move).

from __future__ import annotations

import hashlib
import itertools
import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from operator import add, and_
from typing import Any

import attrs

from .._exceptions import ConfigError

__all__ = [
    "STRATEGY_NAMES",
    "LatencyEwma",
    "Strategy",
    "StrategyStatistics",
    "create_strategy",
    "uses_weights",
    "validate_weights",
]

_Mask = Sequence[bool]
_Loads = Sequence[int]
_Rtts = Sequence[float]
_Key = bytes | None

STRATEGY_NAMES = ("round_robin", "random", "weighted", "least_request", "peak_ewma", "hash")

_TRIES = 8  # rejection-sampling draws before falling back to an O(n) scan
_DOWN = -(1 << 62)  # smooth WRR: the current weight of a target that is not live
_RING_POINTS = 160  # ketama points for the heaviest target (nginx uses 160 per weight unit)
_OWNER_BITS = 24  # a ring entry packs (40-bit point << 24) | target slot into one int
_OWNER_MASK = (1 << _OWNER_BITS) - 1


def _invalid_name(name: object) -> ConfigError:
    names = ", ".join(repr(n) for n in STRATEGY_NAMES[:-1])
    return ConfigError(f"Invalid strategy {name!r}. Use {names} or {STRATEGY_NAMES[-1]!r}")


def _check_targets(targets: Sequence[str], *, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(targets, (str, bytes)):
        raise TypeError(f"targets must be a list of target URLs, not a single string ({targets!r})")
    result = tuple(targets)
    if not result and not allow_empty:
        raise ConfigError("At least one target is required")
    for target in result:
        if not isinstance(target, str):
            raise TypeError(f"Each target must be a str (got {target!r})")
    return result


def validate_weights(
    targets: Sequence[str], weights: Sequence[int] | None, strategy_name: str
) -> tuple[int, ...]:
    """Check ``weights`` against ``targets`` and return them (all 1 when omitted).

    Raises:
        ValueError: weighted without weights, a length mismatch, a negative,
            non-int (bool included) weight, or every weight zero.
    """
    if not targets and not weights:
        return ()  # an empty pool: membership that shrank to nothing, or not discovered yet
    if weights is None:
        if strategy_name == "weighted":
            raise ConfigError("Weights required for weighted strategy")
        return (1,) * len(targets)
    weights = tuple(weights)
    if len(weights) != len(targets):
        raise ConfigError(
            "Weights length must match targets length "
            f"(got {len(weights)} weights for {len(targets)} targets)"
        )
    for target, weight in zip(targets, weights, strict=True):
        if type(weight) is bool or not isinstance(weight, int):
            raise ConfigError(f"Weight for target {target!r} must be an int (got {weight!r})")
        if weight < 0:
            raise ConfigError(f"Weight for target {target!r} must be >= 0 (got {weight})")
    if not any(weights):
        raise ConfigError("At least one weight must be greater than 0 (all weights are 0)")
    return tuple(int(w) for w in weights)


@attrs.frozen
class StrategyStatistics:
    name: str
    targets: int
    picks: int  # picks that returned a target
    misses: int  # picks that returned None (nothing eligible)


class Strategy:
    """Base class: validation, bookkeeping by name, and the shared samplers."""

    name: str = ""
    _weight_aware = False
    _cursor: int  # the next index to try, for the strategies that rotate (set by _rebuild)

    def __init__(
        self,
        targets: Sequence[str],
        weights: Sequence[int] | None = None,
        *,
        rng: random.Random | None = None,
        hash_on: str | None = None,
        allow_empty: bool = False,
    ) -> None:
        self.rng = rng if rng is not None else random.Random()
        self.hash_on = hash_on
        self.picks = 0
        self.misses = 0
        self._set_targets(targets, weights, allow_empty=allow_empty)
        self._rebuild(None)

    def _set_targets(self, targets: Sequence[str], weights: Sequence[int] | None, *,
                     allow_empty: bool) -> None:
        self.targets = _check_targets(targets, allow_empty=allow_empty)
        self.weights = validate_weights(self.targets, weights, self.name)
        self._n = len(self.targets)
        if self._weight_aware:
            self._usable = [w > 0 for w in self.weights]
        else:
            self._usable = [True] * self._n

    def reconfigure(self, targets: Sequence[str], weights: Sequence[int] | None = None) -> None:
        """Swap in a new target list (add, remove, re-weight) at runtime.

        State is carried over by target name; see the module header.
        """
        old = self._names()
        # at runtime a pool may shrink to nothing (its last target removed) and grow again
        self._set_targets(targets, weights, allow_empty=True)
        self._rebuild(old)

    def _names(self) -> list[tuple[str, int]]:
        """Targets as (name, occurrence) so duplicates keep distinct identities."""
        seen: dict[str, int] = {}
        names = []
        for target in self.targets:
            k = seen.get(target, 0)
            seen[target] = k + 1
            names.append((target, k))
        return names

    def _rebuild(self, old: list[tuple[str, int]] | None) -> None:
        """Recompute derived state; ``old`` is the previous name list (None at start)."""

    def pick(
        self,
        eligible: Sequence[bool],
        in_flight: Sequence[int] = (),
        latency: Sequence[float] = (),
        key: bytes | None = None,
    ) -> int | None:
        """Choose a target index among ``eligible`` ones, or None."""
        if len(eligible) != self._n:
            raise ValueError(f"eligible has {len(eligible)} entries for {self._n} targets")
        index = self._pick(eligible, in_flight, latency, key) if self._n else None
        if index is None:
            self.misses += 1
        else:
            self.picks += 1
        return index

    def _pick(self, eligible: _Mask, in_flight: _Loads, latency: _Rtts, key: _Key) -> int | None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for status endpoints."""
        return {
            "name": self.name,
            "targets": list(self.targets),
            "weights": list(self.weights),
            "hash_on": self.hash_on,
        }

    def statistics(self) -> StrategyStatistics:
        return StrategyStatistics(self.name, self._n, self.picks, self.misses)

    def __repr__(self) -> str:
        return f"<Strategy {self.name} [{self._n} targets] picks={self.picks} misses={self.misses}>"

    # ---- shared samplers ------------------------------------------------------

    def _pool(self, eligible: Sequence[bool]) -> list[int]:
        usable = self._usable
        return [i for i in range(self._n) if eligible[i] and usable[i]]

    def _uniform(self, eligible: Sequence[bool]) -> int | None:
        """Uniform over usable eligible targets: rejection sampling, then a scan."""
        n, rnd, usable = self._n, self.rng.random, self._usable
        for _ in range(_TRIES):
            i = int(rnd() * n)
            if eligible[i] and usable[i]:
                return i
        pool = self._pool(eligible)
        return pool[int(rnd() * len(pool))] if pool else None

    def _two(self, eligible: Sequence[bool]) -> tuple[int, int] | None:
        """Two distinct uniform candidates (the same one twice if only one exists)."""
        n, rnd, usable = self._n, self.rng.random, self._usable
        a = -1
        for _ in range(_TRIES):
            i = int(rnd() * n)
            if eligible[i] and usable[i]:
                a = i
                break
        if a >= 0:
            for _ in range(_TRIES):
                j = int(rnd() * n)
                if j != a and eligible[j] and usable[j]:
                    return a, j
        pool = self._pool(eligible)
        if not pool:
            return None
        if len(pool) == 1:
            return pool[0], pool[0]
        if a < 0:
            a = pool[int(rnd() * len(pool))]
        pool.remove(a)
        return a, pool[int(rnd() * len(pool))]

    def _round_robin(self, eligible: Sequence[bool]) -> int | None:
        """Next eligible index at or after the cursor, in constructor order."""
        n, usable, c = self._n, self._usable, self._cursor
        for step in range(n):
            i = c + step
            if i >= n:
                i -= n
            if eligible[i] and usable[i]:
                self._cursor = i + 1 if i + 1 < n else 0
                return i
        return None

    def _carry_cursor(self, old: list[tuple[str, int]] | None) -> None:
        """Keep the cursor on the same target (or the next survivor) after a change."""
        if old is None:
            self._cursor = 0
            return
        where = {name: i for i, name in enumerate(self._names())}
        start = self._cursor
        for step in range(len(old)):
            name = old[(start + step) % len(old)]
            if name in where:
                self._cursor = where[name]
                return
        self._cursor = 0


class RoundRobin(Strategy):
    """Constructor order; ineligible targets are skipped, not queued."""

    name = "round_robin"

    def _rebuild(self, old: list[tuple[str, int]] | None) -> None:
        self._carry_cursor(old)

    def _pick(self, eligible: _Mask, in_flight: _Loads, latency: _Rtts, key: _Key) -> int | None:
        c = self._cursor
        if eligible[c]:  # fast path: the next target is up
            self._cursor = c + 1 if c + 1 < self._n else 0
            return c
        return self._round_robin(eligible)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "cursor": self._cursor}


class RandomChoice(Strategy):
    """Uniform over eligible targets, from the injected rng."""

    name = "random"

    def _pick(self, eligible: _Mask, in_flight: _Loads, latency: _Rtts, key: _Key) -> int | None:
        return self._uniform(eligible)


class SmoothWeighted(Strategy):
    """nginx smooth weighted round robin (``ngx_http_upstream_get_peer``).

    Every pick adds each live target's weight to its current weight, picks the
    first maximum, and subtracts the live total from the winner.  Live = eligible
    with weight > 0.  A target that is not live keeps its current weight aside
    and resumes with it.  Unlike nginx there is no ``effective_weight`` decay on
    failures: health, breaker and outlier ejection already remove bad targets.

    The arithmetic is vectorised (``map``/``max``/``index``) and the live mask is
    cached, so a pick over 1,000 targets costs a few C-level passes.  A target
    that is not live holds ``_DOWN`` (far below any real current weight, so the
    lists stay all-int, which is faster) and adds a zero effective weight.
    """

    name = "weighted"
    _weight_aware = True

    def _rebuild(self, old: list[tuple[str, int]] | None) -> None:
        previous = {name: self._current_of(i) for i, name in enumerate(old or ())}
        self._saved: list[int] = [previous.get(name, 0) for name in self._names()]
        self._work: list[int] = [_DOWN] * self._n
        self._eff: list[int] = [0] * self._n
        self._live = [False] * self._n
        self._total = 0
        self._mask: list[bool] | None = None

    def _current_of(self, i: int) -> int:
        return self._work[i] if self._live[i] else self._saved[i]

    def _remask(self, eligible: list[bool]) -> None:
        weights, work, saved = self.weights, self._work, self._saved
        for i in range(self._n):
            live = bool(eligible[i]) and weights[i] > 0
            if live and not self._live[i]:
                work[i] = saved[i]
            elif not live and self._live[i]:
                saved[i] = work[i]
                work[i] = _DOWN
            self._live[i] = live
        self._eff = [w if live else 0 for w, live in zip(weights, self._live, strict=True)]
        self._total = sum(self._eff)
        self._mask = list(eligible)

    def _pick(self, eligible: _Mask, in_flight: _Loads, latency: _Rtts, key: _Key) -> int | None:
        if type(eligible) is not list:
            eligible = list(eligible)
        if eligible != self._mask:
            self._remask(eligible)
        total = self._total
        if not total:
            return None
        work = list(map(add, self._work, self._eff))
        best = work.index(max(work))
        work[best] -= total
        self._work = work
        return best

    def describe(self) -> dict[str, Any]:
        current = [self._current_of(i) for i in range(self._n)]
        return {**super().describe(), "current_weights": current}


class _TwoChoices(Strategy):
    """Power of two choices: two uniform candidates, the cheaper one wins."""

    _weight_aware = True

    def _pick(self, eligible: _Mask, in_flight: _Loads, latency: _Rtts, key: _Key) -> int | None:
        pair = self._two(eligible)
        if pair is None:
            return None
        a, b = pair
        if a == b:
            return a
        return a if self._cost(a, in_flight, latency) <= self._cost(b, in_flight, latency) else b

    def _cost(self, i: int, in_flight: _Loads, latency: _Rtts) -> float:
        raise NotImplementedError


class LeastRequest(_TwoChoices):
    """P2C on ``(in_flight + 1) / weight`` (missing in_flight counts as 0)."""

    name = "least_request"

    def _cost(self, i: int, in_flight: _Loads, latency: _Rtts) -> float:
        load = in_flight[i] if in_flight else 0
        return (load + 1) / self.weights[i]


class PeakEwmaStrategy(_TwoChoices):
    """P2C on ``latency × (in_flight + 1) / weight`` (Linkerd/Finagle Peak EWMA).

    ``latency`` comes from each target's :class:`LatencyEwma`; when the caller
    passes none, every target costs the default RTT and this is least_request.
    """

    name = "peak_ewma"

    def _cost(self, i: int, in_flight: _Loads, latency: _Rtts) -> float:
        load = in_flight[i] if in_flight else 0
        rtt = latency[i] if latency else LatencyEwma.DEFAULT_RTT
        return rtt * (load + 1) / self.weights[i]


class ConsistentHash(Strategy):
    """Ketama ring on blake2b; the key is bytes chosen by the caller.

    Each target owns up to 160 points (the heaviest weight gets 160, others in
    proportion, at least 1; weight 0 gets none).  A key maps to the first point
    clockwise of its hash; when that target is ineligible the walk continues
    clockwise to the next eligible target, so the fallback is deterministic and
    a retry that excludes the first choice always lands on the same second
    choice.  Points derive from the target name only, so removing a target
    moves only the keys it owned (for equal weights).

    ``key=None`` (no header/cookie/IP to hash) falls back to round robin over
    eligible targets with weight > 0.
    """

    name = "hash"
    _weight_aware = True

    def _rebuild(self, old: list[tuple[str, int]] | None) -> None:
        """Update the ring in place: drop leaving targets, merge in new ones.

        Ring entries carry a stable slot per target (not its index, which
        shifts), so survivors' entries are kept as they are; ``_owner`` maps a
        slot to the current index.
        """
        self._carry_cursor(old)
        heaviest = max(self.weights, default=1)
        wanted: dict[str, tuple[int, int]] = {}  # seed -> (index, points)
        for index, (name, k) in enumerate(self._names()):
            if self.weights[index]:
                count = max(1, round(_RING_POINTS * self.weights[index] / heaviest))
                wanted[name if k == 0 else f"{name}#{k}"] = (index, count)
        slots: dict[str, tuple[int, int]] = getattr(self, "_slots", {})  # seed -> (slot, points)
        ring: list[int] = getattr(self, "_ring", [])
        free = [slot for seed, (slot, n) in slots.items() if wanted.get(seed, (0, 0))[1] != n]
        if free:
            gone = set(free)
            ring = [entry for entry in ring if entry & _OWNER_MASK not in gone]
            slots = {seed: v for seed, v in slots.items() if v[0] not in gone}
        fresh: list[int] = []
        used = {slot for slot, _ in slots.values()}
        spare = (slot for slot in itertools.count() if slot not in used)  # lowest unused first
        for seed, (_, count) in wanted.items():
            if seed not in slots:
                slot = next(spare)
                used.add(slot)
                slots[seed] = (slot, count)
                fresh.extend(point | slot for point in _ring_points(seed)[:count])
        if fresh:
            fresh.sort()
            ring.extend(fresh)
            ring.sort()  # two sorted runs: a linear merge
        owner = [-1] * (max((v[0] for v in slots.values()), default=-1) + 1)
        for seed, (slot, _) in slots.items():
            owner[slot] = wanted[seed][0]
        self._slots, self._ring, self._owner = slots, ring, owner

    def _pick(self, eligible: _Mask, in_flight: _Loads, latency: _Rtts, key: _Key) -> int | None:
        if key is None:
            return self._round_robin(eligible)
        ring, owners = self._ring, self._owner
        size = len(ring)
        at = bisect_right(ring, _hash_key(key) | _OWNER_MASK)
        if at == size:
            at = 0
        owner = owners[ring[at] & _OWNER_MASK]
        if eligible[owner]:
            return owner
        if not any(map(and_, eligible, self._usable)):
            return None
        for step in range(1, size):
            owner = owners[ring[(at + step) % size] & _OWNER_MASK]
            if eligible[owner]:
                return owner
        return None  # pragma: no cover - unreachable: a usable target owns a point

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "ring_points": len(self._ring)}


def _hash_key(data: bytes) -> int:
    """A 40-bit point for ``data``, already shifted into ring-entry position."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=5).digest(), "big") << _OWNER_BITS


def _ring_points(seed: str) -> list[int]:
    """160 stable 40-bit points for ``seed`` (twelve per blake2b digest), shifted."""
    points: list[int] = []
    chunk = 0
    while len(points) < _RING_POINTS:
        digest = hashlib.blake2b(f"{seed}-{chunk}".encode(), digest_size=60).digest()
        points.extend(
            int.from_bytes(digest[j : j + 5], "big") << _OWNER_BITS for j in range(0, 60, 5)
        )
        chunk += 1
    return points[:_RING_POINTS]


_CLASSES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        RoundRobin, RandomChoice, SmoothWeighted, LeastRequest, PeakEwmaStrategy, ConsistentHash
    )
}


def uses_weights(name: str) -> bool:
    """Whether the strategy ``name`` takes weights into account (round robin and random
    accept them, as Velithon did, and ignore them)."""
    cls = _CLASSES.get(name)
    return cls is not None and cls._weight_aware


def create_strategy(
    name: str,
    targets: Sequence[str],
    weights: Sequence[int] | None = None,
    *,
    rng: random.Random | None = None,
    hash_on: str | None = None,
    allow_empty: bool = False,
) -> Strategy:
    """Build the strategy called ``name`` (one of :data:`STRATEGY_NAMES`).

    ``hash_on`` only labels where the caller takes hash keys from (shown by
    ``describe()``); the strategy itself hashes the bytes given to ``pick``.
    ``allow_empty`` accepts an empty target list (a pool whose targets are all
    discovered at runtime); such a strategy picks nothing until targets arrive.

    Raises:
        ValueError: unknown name, no targets, or invalid weights.
    """
    cls = _CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise _invalid_name(name)
    return cls(targets, weights, rng=rng, hash_on=hash_on, allow_empty=allow_empty)


class LatencyEwma:
    """Peak-sensitive, time-decayed latency estimate for one target (Linkerd).

    * ``observe(rtt)``: an RTT above the current estimate replaces it at once
      (peak); a lower one is blended in with weight ``1 - exp(-dt/decay)``
      (``dt`` since the previous observation), so the estimate moves by time,
      not by request count, and converges to a steady RTT.
    * ``penalise()``: failures, 5xx and 429 count as a ``penalty`` RTT (5 s, the
      Linkerd load biaser's value), so a fast-failing target never looks fast.
    * Without observations the estimate relaxes towards ``default_rtt`` (30 ms),
      so a slow or penalised target is eventually tried again.
    """

    DEFAULT_RTT = 0.030
    __slots__ = ("default_rtt", "decay", "penalty", "_value", "_stamp")

    def __init__(
        self, *, default_rtt: float = DEFAULT_RTT, decay: float = 10.0, penalty: float = 5.0
    ) -> None:
        for label, v in (("default_rtt", default_rtt), ("decay", decay), ("penalty", penalty)):
            if not v > 0 or v == math.inf:
                raise ConfigError(f"LatencyEwma {label} must be a positive number (got {v!r})")
        self.default_rtt = float(default_rtt)
        self.decay = float(decay)
        self.penalty = float(penalty)
        self._value = self.default_rtt
        self._stamp: float | None = None

    def _weight(self, now: float) -> float:
        """How much of the old estimate survives until ``now``."""
        if self._stamp is None:
            return 0.0
        return math.exp(-max(now - self._stamp, 0.0) / self.decay)

    def value(self, now: float) -> float:
        """The estimate at ``now`` in seconds."""
        keep = self._weight(now)
        return self._value * keep + self.default_rtt * (1.0 - keep)

    def observe(self, rtt: float, now: float) -> None:
        """Record a successful request's RTT (seconds)."""
        rtt = rtt if rtt > 0.0 else 0.0
        current = self.value(now)
        if rtt >= current:
            self._value = rtt
        else:
            # Blend with the stored estimate (not the relaxed one, which would
            # pull every estimate halfway to the default under steady traffic),
            # but never above the current belief: a faster RTT never slows it.
            keep = self._weight(now)
            self._value = min(current, self._value * keep + rtt * (1.0 - keep))
        self._stamp = now if self._stamp is None else max(now, self._stamp)

    def penalise(self, now: float) -> None:
        """Record a failure: the estimate becomes at least ``penalty``."""
        self._value = max(self.value(now), self.penalty)
        self._stamp = now if self._stamp is None else max(now, self._stamp)

    def __repr__(self) -> str:
        at = "never observed" if self._stamp is None else f"at t={self._stamp:g}"
        return f"<LatencyEwma {self._value * 1000.0:.1f}ms {at} (decay {self.decay:g}s)>"
