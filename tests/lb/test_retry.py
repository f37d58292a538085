"""Retry decisions, backoff and the retry budget."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon._lb.retry import ERROR_KINDS, RetryBudget, RetryPolicy, is_idempotent

FAST = settings(max_examples=150, deadline=None)
METHODS = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "POST", "PATCH", "CONNECT", "get"]


def test_idempotent_methods() -> None:
    idempotent = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
    assert [m for m in METHODS if is_idempotent(m)] == idempotent


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ({"method": "GET", "status": 502}, True),
        ({"method": "GET", "status": 503}, True),
        ({"method": "GET", "status": 500}, False),  # not in retry_on_statuses
        ({"method": "GET", "status": 200}, False),
        ({"method": "GET"}, False),  # nothing failed
        ({"method": "GET", "error": "reset"}, True),
        ({"method": "GET", "error": "timeout"}, True),
        ({"method": "GET", "error": "protocol"}, False),
        ({"method": "POST", "status": 503}, False),  # RFC 9110: never auto-retry POST
        ({"method": "POST", "error": "reset"}, False),
        ({"method": "PATCH", "error": "timeout"}, False),
        ({"method": "POST", "error": "connect"}, True),  # nothing was sent
        ({"method": "POST", "error": "connect", "body_replayable": False}, True),
        ({"method": "GET", "error": "reset", "body_replayable": False}, False),
        ({"method": "GET", "status": 502, "response_started": True}, False),
        ({"method": "GET", "error": "connect", "response_started": True}, False),
        ({"method": "GET", "status": 502, "attempt": 3}, True),
        ({"method": "GET", "status": 502, "attempt": 4}, False),  # 3 retries used
    ],
)
def test_default_policy(call: dict, expected: bool) -> None:
    call = dict(call)
    attempt = call.pop("attempt", 1)
    method = call.pop("method")
    assert RetryPolicy().should_retry(attempt, method, **call) is expected


def test_opting_in_to_non_idempotent_retries_still_needs_a_replayable_body() -> None:
    policy = RetryPolicy(retry_non_idempotent=True)
    assert policy.should_retry(1, "POST", status=503)
    assert not policy.should_retry(1, "POST", status=503, body_replayable=False)


def test_each_condition_can_be_turned_off() -> None:
    policy = RetryPolicy(
        retry_on_connect_failure=False,
        retry_on_reset=False,
        retry_on_timeout=False,
        retry_on_statuses=[],
    )
    for error in ERROR_KINDS:
        assert not policy.should_retry(1, "GET", error=error)
    assert not policy.should_retry(1, "GET", status=503)
    assert not RetryPolicy(max_retries=0).should_retry(1, "GET", error="connect")


@given(
    attempt=st.integers(1, 10),
    method=st.sampled_from(METHODS),
    status=st.none() | st.integers(100, 599),
    error=st.none() | st.sampled_from(ERROR_KINDS),
    replayable=st.booleans(),
    started=st.booleans(),
    non_idempotent=st.booleans(),
    max_retries=st.integers(0, 5),
)
@FAST
def test_retry_safety_properties(
    attempt: int,
    method: str,
    status: int | None,
    error: str | None,
    replayable: bool,
    started: bool,
    non_idempotent: bool,
    max_retries: int,
) -> None:
    policy = RetryPolicy(max_retries=max_retries, retry_non_idempotent=non_idempotent)
    retry = policy.should_retry(
        attempt, method, status=status, error=error, body_replayable=replayable,
        response_started=started,
    )
    if retry:
        assert attempt <= max_retries  # never more than max_retries retries
        assert not started  # never after bytes reached the client
        if error != "connect":  # only a connect failure consumed nothing
            assert replayable
            assert is_idempotent(method) or non_idempotent


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="Invalid error kind 'dns'"):
        RetryPolicy().should_retry(1, "GET", error="dns")
    with pytest.raises(ValueError, match="starts at 1"):
        RetryPolicy().should_retry(0, "GET", status=502)
    with pytest.raises(ValueError, match="max_retries must be an int >= 0"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="HTTP statuses 100..599"):
        RetryPolicy(retry_on_statuses={502, 99})
    with pytest.raises(ValueError, match="collection of ints"):
        RetryPolicy(retry_on_statuses="502")
    with pytest.raises(ValueError, match="backoff_cap must be a number >= 0"):
        RetryPolicy(backoff_cap=-1)
    with pytest.raises(ValueError, match="jitter must be True or False"):
        RetryPolicy(jitter=1)


# ---- backoff -------------------------------------------------------------------------


def test_backoff_ceiling_is_velithons_doubling_capped() -> None:
    policy = RetryPolicy(jitter=False)
    assert [policy.backoff(a) for a in range(1, 8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert policy.backoff(10_000) == 2.0  # no overflow
    with pytest.raises(ValueError):
        policy.backoff(0)


@given(attempt=st.integers(1, 2000), seed=st.integers())
@FAST
def test_jittered_backoff_is_within_zero_and_the_ceiling(attempt: int, seed: int) -> None:
    policy = RetryPolicy()
    ceiling = min(2.0, 0.1 * 2 ** min(attempt - 1, 64))
    assert 0.0 <= policy.backoff(attempt, random.Random(seed)) <= ceiling


def test_jitter_is_full_jitter() -> None:
    rng = random.Random(2)
    waits = [RetryPolicy().backoff(3, rng) for _ in range(4000)]
    assert min(waits) < 0.02 and max(waits) > 0.38
    assert sum(waits) / len(waits) == pytest.approx(0.2, abs=0.01)  # uniform on [0, 0.4]


# ---- budget -------------------------------------------------------------------------------


def test_budget_floor_and_ratio() -> None:
    quiet = RetryBudget()  # 20 % + 10/s over 10 s: 100 retries with no traffic at all
    assert sum(quiet.try_withdraw(0.0) for _ in range(150)) == 100
    assert quiet.statistics().refused == 50
    busy = RetryBudget(ratio=0.2, min_per_second=0.0)
    for _ in range(1000):
        busy.deposit(5.0)
    assert sum(busy.try_withdraw(5.0) for _ in range(300)) == 200
    stats = busy.statistics(5.0)
    assert (stats.deposits, stats.withdrawals, stats.balance) == (1000, 200, pytest.approx(0.0))


def test_budget_expires_after_ttl() -> None:
    b = RetryBudget(ratio=0.5, min_per_second=0.0, ttl=10.0)
    for _ in range(10):
        b.deposit(0.0)
    assert sum(b.try_withdraw(0.5) for _ in range(10)) == 5
    assert not b.try_withdraw(9.9)
    assert not b.try_withdraw(10.5)  # deposits and withdrawals both expired: nothing left
    for _ in range(4):
        b.deposit(10.5)
    assert [b.try_withdraw(10.5) for _ in range(3)] == [True, True, False]
    b = RetryBudget(ratio=0.5, min_per_second=0.0, ttl=10.0)
    for _ in range(10):
        b.deposit(0.0)
    assert b.try_withdraw(9.9)  # a deposit funds retries for ttl seconds...
    assert not b.try_withdraw(10.0)  # ...and no longer


@given(
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5]),
    floor=st.sampled_from([0.0, 0.5, 2.0]),
    ops=st.lists(
        st.tuples(st.sampled_from([0.0, 0.01, 0.3, 1.0, 2.5, 7.0]), st.booleans(),
                  st.integers(1, 8)),
        max_size=60,
    ),
)
@FAST
def test_budget_never_lends_more_than_ratio_plus_floor(
    ratio: float, floor: float, ops: list[tuple[float, bool, int]]
) -> None:
    ttl = 5.0
    budget = RetryBudget(ratio=ratio, min_per_second=floor, ttl=ttl)
    now = 0.0
    deposits: list[float] = []
    withdrawals: list[float] = []
    for dt, is_deposit, count in ops:
        now += dt
        for _ in range(count):
            if is_deposit:
                budget.deposit(now)
                deposits.append(now)
            elif budget.try_withdraw(now):
                withdrawals.append(now)
                # the slack is one time slice: the budget counts in ttl/10 slices
                recent = sum(now - (ttl - ttl / 10) <= t <= now for t in withdrawals)
                funded = sum(now - ttl < t <= now for t in deposits)
                assert recent <= ratio * funded + floor * ttl + 1e-9
    if not ops:
        assert budget.statistics().balance == pytest.approx(floor * ttl)


def test_budget_validation_and_repr() -> None:
    with pytest.raises(ValueError, match="ratio must be a number >= 0"):
        RetryBudget(ratio=-0.1)
    with pytest.raises(ValueError, match="ttl must be a positive number"):
        RetryBudget(ttl=0)
    b = RetryBudget()
    b.deposit(1.0)
    b.try_withdraw(1.0)
    assert repr(b) == "<RetryBudget 20% + 10/s over 10s [1 retries / 1 requests, refused 0]>"
    assert not math.isnan(b.statistics().balance)
