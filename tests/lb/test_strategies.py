"""Target-selection strategies: validation, exact sequences and properties."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon._lb.strategies import (
    STRATEGY_NAMES,
    LatencyEwma,
    create_strategy,
    validate_weights,
)

FAST = settings(max_examples=100, deadline=None)
NAMES = [f"http://t{i}:80" for i in range(12)]


def targets(n: int) -> list[str]:
    return NAMES[:n] if n <= len(NAMES) else [f"http://t{i}:80" for i in range(n)]


def letters(seq: list[int | None]) -> str:
    return "".join("ABCDEFGH"[i] if i is not None else "-" for i in seq)


# ---- validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("round_robin", []), {}, "At least one target is required"),
        (
            ("x", ["a"]),
            {},
            "Invalid strategy 'x'. Use 'round_robin', 'random', 'weighted', 'least_request', "
            "'peak_ewma' or 'hash'",
        ),
        (("weighted", ["a", "b"]), {}, "Weights required for weighted strategy"),
        (
            ("weighted", ["a", "b", "c"], [1, 2]),
            {},
            "Weights length must match targets length (got 2 weights for 3 targets)",
        ),
        (("weighted", ["a", "b"], [1, -1]), {}, "Weight for target 'b' must be >= 0 (got -1)"),
        (("weighted", ["a", "b"], [1, True]), {},
         "Weight for target 'b' must be an int (got True)"),
        (("weighted", ["a", "b"], [1, 1.5]), {}, "Weight for target 'b' must be an int (got 1.5)"),
        (("weighted", ["a", "b"], [0, 0]), {}, "At least one weight must be greater than 0"),
        # weights given to a non-weighted strategy are validated too
        (("round_robin", ["a", "b"], [1]), {}, "Weights length must match targets length"),
        (("least_request", ["a"], [-3]), {}, "Weight for target 'a' must be >= 0 (got -3)"),
    ],
)
def test_construction_errors_are_clear(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        create_strategy(*args, **kwargs)
    assert str(info.value).startswith(message)


def test_a_single_string_is_not_a_target_list() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        create_strategy("round_robin", "http://a:80")


def test_validate_weights_defaults_to_ones_and_names_are_exported() -> None:
    assert validate_weights(["a", "b"], None, "random") == (1, 1)
    assert validate_weights(["a", "b"], [0, 2], "weighted") == (0, 2)
    assert STRATEGY_NAMES == (
        "round_robin", "random", "weighted", "least_request", "peak_ewma", "hash")
    for name in STRATEGY_NAMES:
        strategy = create_strategy(name, ["a", "b"], [1, 1])
        assert strategy.name == name and strategy.targets == ("a", "b")


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_strategy_refuses_a_mask_of_the_wrong_length_and_returns_none_when_empty(
    name: str,
) -> None:
    strategy = create_strategy(name, ["a", "b", "c"], [1, 1, 1])
    with pytest.raises(ValueError, match="eligible has 2 entries for 3 targets"):
        strategy.pick([True, True])
    assert strategy.pick([False, False, False], key=b"k") is None
    assert strategy.statistics().misses == 1


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@given(data=st.data())
@settings(max_examples=50, deadline=None)
def test_no_strategy_ever_picks_an_ineligible_target(name: str, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 9))
    weights = data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n).filter(any))
    rng = random.Random(data.draw(st.integers()))
    strategy = create_strategy(name, targets(n), weights, rng=rng)
    aware = name not in ("round_robin", "random")
    for _ in range(data.draw(st.integers(1, 12))):
        eligible = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
        in_flight = data.draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
        latency = data.draw(st.lists(st.floats(0.001, 5.0), min_size=n, max_size=n))
        key = data.draw(st.none() | st.binary(max_size=8))
        index = strategy.pick(eligible, in_flight, latency, key)
        usable = [e and (w > 0 or not aware) for e, w in zip(eligible, weights, strict=True)]
        if any(usable):
            assert index is not None and usable[index]
        else:
            assert index is None


# ---- round robin -------------------------------------------------------------------


def test_round_robin_follows_constructor_order_and_skips_ineligible() -> None:
    rr = create_strategy("round_robin", targets(4))
    assert [rr.pick([True] * 4) for _ in range(6)] == [0, 1, 2, 3, 0, 1]
    down = [True, True, False, True]
    assert [rr.pick(down) for _ in range(4)] == [3, 0, 1, 3]
    # C comes back and gets its turn in the next cycle
    assert [rr.pick([True] * 4) for _ in range(4)] == [0, 1, 2, 3]


@given(data=st.data())
@FAST
def test_round_robin_gives_equal_shares_in_order_over_any_fixed_window(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 8))
    rr = create_strategy("round_robin", targets(n))
    for _ in range(data.draw(st.integers(1, 5))):
        mask = data.draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any))
        live = [i for i in range(n) if mask[i]]
        picks = [rr.pick(mask) for _ in range(data.draw(st.integers(0, 40)))]
        counts = Counter(picks)
        share = len(picks) / len(live)
        for i in live:
            assert math.floor(share) <= counts[i] <= math.ceil(share)
        for a, b in itertools.pairwise(picks):  # each pick is the next live target
            assert b == min((j for j in live if j > a), default=live[0])


# ---- random -----------------------------------------------------------------------


def test_random_is_uniform_over_eligible_and_reproducible() -> None:
    mask = [True, False, True, True, False, True]
    strategy = create_strategy("random", targets(6), rng=random.Random(7))
    picks = [strategy.pick(mask) for _ in range(20_000)]
    counts = Counter(picks)
    assert set(counts) == {0, 2, 3, 5}
    for i in (0, 2, 3, 5):
        assert abs(counts[i] - 5000) < 300  # ~4 sigma
    again = create_strategy("random", targets(6), rng=random.Random(7))
    assert [again.pick(mask) for _ in range(50)] == picks[:50]


def test_random_finds_the_single_eligible_target_among_many() -> None:
    mask = [False] * 1000
    mask[617] = True
    strategy = create_strategy("random", targets(1000), rng=random.Random(1))
    assert {strategy.pick(mask) for _ in range(20)} == {617}


# ---- weighted (smooth WRR) -----------------------------------------------------------


def test_smooth_weighted_interleaves_exactly_like_nginx() -> None:
    s = create_strategy("weighted", targets(3), [3, 2, 1])
    assert letters([s.pick([True] * 3) for _ in range(12)]) == "ABACBA" * 2
    s = create_strategy("weighted", targets(3), [5, 1, 1])  # nginx's documented example
    assert letters([s.pick([True] * 3) for _ in range(7)]) == "AABACAA"


@given(weights=st.lists(st.integers(0, 9), min_size=1, max_size=7).filter(any))
@FAST
def test_smooth_weighted_is_exact_per_cycle_and_never_bursty(weights: list[int]) -> None:
    n, total = len(weights), sum(weights)
    s = create_strategy("weighted", targets(n), weights)
    picks = [s.pick([True] * n) for _ in range(3 * total)]
    for start in range(len(picks) - total + 1):  # every window of one cycle
        counts = Counter(picks[start : start + total])
        assert [counts[i] for i in range(n)] == weights
    # Every prefix stays close to the ideal share (block WRR, AAA..BBB.., is off
    # by up to half a weight).  Measured worst case: ~1.1 for <= 8 targets with
    # weights <= 12; it grows slowly with n (1.5 at 21 targets), so no "< 1".
    counts = Counter()
    for k, index in enumerate(picks, 1):
        counts[index] += 1
        for i in range(n):
            assert abs(counts[i] - k * weights[i] / total) < 2


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_smooth_weighted_converges_to_the_weights_after_eligibility_changes(
    data: st.DataObject,
) -> None:
    n = data.draw(st.integers(2, 6))
    weights = data.draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    s = create_strategy("weighted", targets(n), weights)
    for _ in range(data.draw(st.integers(1, 4))):
        mask = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
        for _ in range(data.draw(st.integers(0, 20))):
            s.pick(mask)
    total = sum(weights)
    picks = Counter(s.pick([True] * n) for _ in range(100 * total))
    for i in range(n):
        assert abs(picks[i] / (100 * total) - weights[i] / total) <= 0.02


def test_smooth_weighted_zero_weight_is_never_picked() -> None:
    s = create_strategy("weighted", targets(3), [0, 2, 1])
    assert 0 not in {s.pick([True] * 3) for _ in range(30)}
    assert s.pick([True, False, False]) is None  # only a zero-weight target is up


def test_reconfigure_with_the_same_targets_continues_the_sequence() -> None:
    weights = [4, 3, 2, 1]
    ref = create_strategy("weighted", targets(4), weights)
    s = create_strategy("weighted", targets(4), weights)
    for _ in range(7):
        assert s.pick([True] * 4) == ref.pick([True] * 4)
    s.reconfigure(targets(4), weights)
    assert [s.pick([True] * 4) for _ in range(30)] == [ref.pick([True] * 4) for _ in range(30)]


def test_reconfigure_keeps_state_by_name_and_revalidates() -> None:
    rr = create_strategy("round_robin", ["a", "b", "c", "d"])
    assert [rr.pick([True] * 4) for _ in range(2)] == [0, 1]  # cursor now on "c"
    rr.reconfigure(["x", "c", "d"])
    assert rr.pick([True] * 3) == 1  # still "c"
    rr.reconfigure(["a", "x"])  # the cursor's "d" is gone: the next survivor is "x"
    assert rr.targets == ("a", "x") and rr.pick([True, True]) == 1
    s = create_strategy("weighted", ["a", "b"], [1, 1])
    s.pick([True, True])
    s.reconfigure(["b", "c"], [1, 1])
    assert s.describe()["current_weights"] == [1, 0]  # "b" kept its current weight
    with pytest.raises(ValueError, match="Weights required"):
        s.reconfigure(["a"])
    s.reconfigure([], [])  # a pool may shrink to nothing at runtime: it then picks nothing
    assert s.pick([]) is None and s.targets == ()
    s.reconfigure(["b"], [1])  # ... and grow again
    assert s.pick([True]) == 0


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_an_empty_pool_is_only_for_runtime_membership(name: str) -> None:
    """Built empty only when asked (a discovered pool); never picks; fills up later."""
    with pytest.raises(ValueError, match="At least one target"):
        create_strategy(name, [])
    s = create_strategy(name, [], allow_empty=True)
    assert s.pick([], [], [], b"key") is None
    s.reconfigure(["a", "b"], [1, 2])
    assert s.pick([True, True], [0, 0], [0.01, 0.01], b"key") in (0, 1)


# ---- least_request / peak_ewma --------------------------------------------------------


@pytest.mark.parametrize("name", ["least_request", "peak_ewma"])
@given(data=st.data())
@FAST
def test_two_choices_never_pick_the_strictly_worst_target(name: str, data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 10))
    weights = data.draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    in_flight = data.draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    latency = data.draw(st.lists(st.floats(0.001, 2.0), min_size=n, max_size=n))
    mask = data.draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda m: sum(m) >= 2))
    rng = random.Random(data.draw(st.integers()))
    strategy = create_strategy(name, targets(n), weights, rng=rng)

    def cost(i: int) -> float:
        base = latency[i] if name == "peak_ewma" else 1.0
        return base * (in_flight[i] + 1) / weights[i]

    live = [i for i in range(n) if mask[i]]
    costs = sorted(cost(i) for i in live)
    worst = max(live, key=cost)
    for _ in range(20):
        index = strategy.pick(mask, in_flight, latency)
        assert index in live
        if costs[-1] > costs[-2]:
            assert index != worst


def test_least_request_is_weight_aware_and_prefers_idle_targets() -> None:
    s = create_strategy("least_request", ["a", "b"], [1, 4], rng=random.Random(3))
    # costs: a = (1+1)/1 = 2, b = (3+1)/4 = 1 -> always b
    assert {s.pick([True, True], [1, 3]) for _ in range(20)} == {1}
    s = create_strategy("least_request", targets(10), rng=random.Random(3))
    in_flight = [5] * 10
    in_flight[4] = 0
    counts = Counter(s.pick([True] * 10, in_flight) for _ in range(2000))
    assert counts[4] > 300  # chosen whenever drawn: ~2/10 of picks, not 1/10


def test_peak_ewma_steers_away_from_a_fast_failing_target() -> None:
    """A target that fails fast is penalised and stops attracting traffic."""
    rng = random.Random(5)
    s = create_strategy("peak_ewma", ["bad", "good"], rng=rng)
    ewma = [LatencyEwma(), LatencyEwma()]
    counts = Counter()
    now = 0.0
    for _ in range(400):
        now += 0.01
        index = s.pick([True, True], [0, 0], [e.value(now) for e in ewma])
        counts[index] += 1
        if index == 0:
            ewma[0].penalise(now)  # 1 ms failures
        else:
            ewma[1].observe(0.050, now)
    assert counts[1] > 390


# ---- LatencyEwma ----------------------------------------------------------------------


def test_latency_ewma_defaults_peaks_and_decays() -> None:
    e = LatencyEwma()
    assert e.value(0.0) == pytest.approx(0.030)
    e.observe(0.2, 1.0)
    assert e.value(1.0) == pytest.approx(0.2)  # peak: taken at once
    e.observe(0.01, 11.0)  # ten seconds later: blended with weight 1 - 1/e
    assert e.value(11.0) == pytest.approx(0.2 / math.e + 0.01 * (1 - 1 / math.e))
    assert e.value(1000.0) == pytest.approx(0.030)  # relaxes to the default
    e.penalise(1000.0)
    assert e.value(1000.0) == pytest.approx(5.0)
    assert e.value(1010.0) == pytest.approx(0.030 + (5.0 - 0.030) / math.e)
    with pytest.raises(ValueError, match="decay must be a positive number"):
        LatencyEwma(decay=0)
    assert "5000.0ms" in repr(LatencyEwma(default_rtt=5.0))


@pytest.mark.parametrize("rtt", [0.001, 0.005, 0.030, 0.2, 2.0])
def test_latency_ewma_converges_to_a_steady_rtt(rtt: float) -> None:
    e = LatencyEwma()
    e.penalise(0.0)  # start far away: a failure (forgotten after ~10 decay periods)
    now = 0.0
    for _ in range(12_000):  # 120 s of one request every 10 ms
        now += 0.01
        e.observe(rtt, now)
    assert e.value(now) == pytest.approx(rtt, rel=0.01, abs=1e-4)


@given(
    steps=st.lists(
        st.tuples(st.floats(0, 20), st.none() | st.floats(0, 3)), min_size=1, max_size=30
    )
)
@FAST
def test_latency_ewma_is_peak_sensitive_and_bounded(steps: list) -> None:
    e = LatencyEwma()
    now = 0.0
    low, high = 0.030, 5.0
    for dt, rtt in steps:
        now += dt
        if rtt is not None:
            low, high = min(low, rtt), max(high, rtt)
        before = e.value(now)
        if rtt is None:
            e.penalise(now)
            assert e.value(now) == max(before, 5.0)
        else:
            e.observe(rtt, now)
            after = e.value(now)
            if rtt >= before:
                assert after == rtt  # peaks are taken at once
            else:
                # a faster RTT never makes the target look slower (up to rounding)
                assert after <= before or math.isclose(after, before, rel_tol=1e-12)
        value = e.value(now)  # within the samples seen, up to one rounding step
        assert (low <= value or math.isclose(value, low, rel_tol=1e-12)) and \
            (value <= high or math.isclose(value, high, rel_tol=1e-12))


# ---- hash ----------------------------------------------------------------------------


def test_hash_is_stable_across_instances_and_spreads_keys() -> None:
    a = create_strategy("hash", targets(10))
    b = create_strategy("hash", targets(10))
    keys = [f"user-{i}".encode() for i in range(5000)]
    mask = [True] * 10
    assert [a.pick(mask, key=k) for k in keys] == [b.pick(mask, key=k) for k in keys]
    counts = Counter(a.pick(mask, key=k) for k in keys)
    assert min(counts.values()) > 250 and max(counts.values()) < 800  # ideal 500


def test_hash_falls_to_the_same_next_target_when_the_owner_is_ineligible() -> None:
    s = create_strategy("hash", targets(6))
    key = b"session-42"
    owner = s.pick([True] * 6, key=key)
    mask = [True] * 6
    mask[owner] = False
    second = s.pick(mask, key=key)
    assert second not in (None, owner)
    assert {s.pick(mask, key=key) for _ in range(10)} == {second}
    mask[second] = False
    third = s.pick(mask, key=key)
    assert third not in (owner, second)


@given(n=st.integers(2, 12), removed=st.integers(0, 11))
@settings(max_examples=40, deadline=None)
def test_hash_moves_only_the_keys_of_a_removed_target(n: int, removed: int) -> None:
    removed %= n
    names = targets(n)
    s = create_strategy("hash", names)
    keys = [f"k{i}".encode() for i in range(400)]
    before = {k: names[s.pick([True] * n, key=k)] for k in keys}
    s.reconfigure(names[:removed] + names[removed + 1 :])
    after = {k: s.targets[s.pick([True] * (n - 1), key=k)] for k in keys}
    for k in keys:
        if before[k] != names[removed]:
            assert after[k] == before[k]
    s.reconfigure(names)  # adding it back restores the original mapping
    assert {k: names[s.pick([True] * n, key=k)] for k in keys} == before


@given(
    changes=st.lists(
        st.lists(st.tuples(st.sampled_from(NAMES[:8]), st.integers(0, 3)), min_size=1, max_size=8)
        .filter(lambda pairs: any(w for _, w in pairs)),
        min_size=1,
        max_size=6,
    )
)
@settings(max_examples=60, deadline=None)
def test_hash_ring_updated_in_place_equals_a_fresh_ring(changes: list) -> None:
    """reconfigure keeps survivors' ring entries; the result must not drift."""
    s = create_strategy("hash", NAMES[:3])
    keys = [f"k{i}".encode() for i in range(200)]
    for pairs in changes:
        names, weights = [n for n, _ in pairs], [w for _, w in pairs]
        s.reconfigure(names, weights)
        fresh = create_strategy("hash", names, weights)
        mask = [True] * len(names)
        assert [s.pick(mask, key=k) for k in keys] == [fresh.pick(mask, key=k) for k in keys]


def test_hash_without_a_key_is_round_robin_and_honours_zero_weights() -> None:
    s = create_strategy("hash", targets(3), [1, 0, 1], hash_on="header:x-user")
    assert [s.pick([True] * 3) for _ in range(4)] == [0, 2, 0, 2]
    assert 1 not in {s.pick([True] * 3, key=str(i).encode()) for i in range(300)}
    assert s.describe()["hash_on"] == "header:x-user"
    assert s.describe()["ring_points"] == 320


# ---- introspection ---------------------------------------------------------------------


def test_describe_statistics_and_repr() -> None:
    s = create_strategy("round_robin", ["a", "b"])
    s.pick([True, True])
    s.pick([False, False])
    assert s.describe() == {
        "name": "round_robin",
        "targets": ["a", "b"],
        "weights": [1, 1],
        "hash_on": None,
        "cursor": 1,
    }
    stats = s.statistics()
    assert (stats.name, stats.targets, stats.picks, stats.misses) == ("round_robin", 2, 1, 1)
    assert repr(s) == "<Strategy round_robin [2 targets] picks=1 misses=1>"
