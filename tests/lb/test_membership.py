"""The pure membership diff: what a new discovery result changes in a pool."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from velithon._lb.membership import (
    AddMember,
    RemoveMember,
    Reweight,
    apply_membership,
    plan_membership,
)

A, B, C = "http://10.0.0.1:80", "http://10.0.0.2:80", "http://10.0.0.3:80"


@pytest.mark.parametrize(
    ("current", "found", "actions"),
    [
        ({}, [(A, 1), (B, 2)], [AddMember(A, 1), AddMember(B, 2)]),
        ({A: 1, B: 1}, [(A, 1), (B, 1)], []),
        ({A: 1, B: 1}, [(B, 1), (A, 1)], []),  # order alone is no change
        ({A: 1, B: 1}, [(A, 1)], [RemoveMember(B)]),
        ({A: 1}, [(A, 1), (C, 1)], [AddMember(C, 1)]),
        ({A: 1, B: 1}, [(A, 5), (B, 1)], [Reweight(((A, 5),))]),
        # a wholesale replacement adds before it removes: never an empty pool
        ({A: 1, B: 1}, [(C, 1)], [AddMember(C, 1), RemoveMember(A), RemoveMember(B)]),
        ({A: 1}, [(B, 2), (A, 3)], [AddMember(B, 2), Reweight(((A, 3),))]),
        ({}, [(A, 1), (A, 7)], [AddMember(A, 1)]),  # a duplicate keeps its first weight
        # failed (None) or empty results keep the last good set
        ({A: 1, B: 1}, None, []),
        ({A: 1, B: 1}, [], []),
        ({}, None, []),
    ],
)
def test_plan_table(current: dict[str, int], found: list[tuple[str, int]] | None,
                    actions: list[object]) -> None:
    assert plan_membership(current, found) == actions


urls = st.sampled_from([f"http://10.0.0.{i}:8080" for i in range(1, 9)])
weights = st.integers(min_value=1, max_value=5)
pools = st.dictionaries(urls, weights, max_size=8)
results = st.lists(st.tuples(urls, weights), max_size=12)


@given(pools, results)
def test_applying_the_plan_yields_the_new_set(current: dict[str, int],
                                              found: list[tuple[str, int]]) -> None:
    after = apply_membership(current, plan_membership(current, found))
    if found:
        expected: dict[str, int] = {}
        for url, weight in found:
            expected.setdefault(url, weight)
        assert after == expected
    else:
        assert after == current


@given(pools, results)
def test_the_pool_never_passes_through_empty(current: dict[str, int],
                                             found: list[tuple[str, int]]) -> None:
    """Applied one action at a time, a non-empty pool stays non-empty throughout."""
    pool = dict(current)
    for action in plan_membership(current, found):
        pool = apply_membership(pool, [action])
        if current:
            assert pool


@given(pools)
def test_a_failed_or_empty_lookup_yields_no_action(current: dict[str, int]) -> None:
    assert plan_membership(current, None) == []
    assert plan_membership(current, []) == []


@given(pools)
def test_the_same_result_twice_is_no_change(current: dict[str, int]) -> None:
    assert plan_membership(current, list(current.items())) == []


@given(pools, results)
def test_each_url_gets_at_most_one_action_of_each_kind(current: dict[str, int],
                                                       found: list[tuple[str, int]]) -> None:
    actions = plan_membership(current, found)
    added = [a.url for a in actions if isinstance(a, AddMember)]
    removed = [a.url for a in actions if isinstance(a, RemoveMember)]
    reweights = [a for a in actions if isinstance(a, Reweight)]
    assert len(added) == len(set(added)) and len(removed) == len(set(removed))
    assert not set(added) & set(removed)
    assert set(added).isdisjoint(current) and set(removed) <= set(current)
    assert len(reweights) <= 1
