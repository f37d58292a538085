"""The router's per-target counters behind status and metrics: responses by status, the
request-duration histogram, ejections."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from velithon._lb.messages import Done, OutcomeKind
from velithon._lb.outlier import OutlierConfig, OutlierDetector
from velithon._lb.router import LATENCY_BUCKETS, RouterState, TargetEntry
from velithon._lb.strategies import create_strategy

KINDS = list(OutcomeKind)


def _router(n: int = 1, outlier: OutlierConfig | None = None) -> RouterState:
    urls = [f"http://t{i}.test" for i in range(n)]
    router = RouterState(strategy=create_strategy("round_robin", urls),
                         outlier=OutlierDetector(outlier, n_targets=n))
    router.entries.extend(TargetEntry(i, url, 1) for i, url in enumerate(urls))
    router.publish_members()
    return router


def test_counts_by_status_with_no_response_as_zero_and_neutral_left_out() -> None:
    router = _router()
    entry = router.entries[0]
    for kind, status, latency in [("success", 200, 0.004), ("success", 404, 0.02),
                                  ("gateway", 503, 0.3), ("local", None, 12.0),
                                  ("neutral", None, 1.0), ("success", 200, 0.005)]:
        entry.in_flight += 1
        router.done(Done(0, 0, OutcomeKind(kind), latency, status), 1.0)
    [view] = router.view(1.0)
    assert view.responses == ((0, 1), (200, 2), (404, 1), (503, 1))
    expected = [0] * (len(LATENCY_BUCKETS) + 1)
    expected[0] = 2  # 0.004 and 0.005 (a bucket counts values <= its bound)
    expected[LATENCY_BUCKETS.index(0.025)] = 1
    expected[LATENCY_BUCKETS.index(0.5)] = 1
    expected[-1] = 1  # 12 s: above every bound
    assert view.latency_counts == tuple(expected)
    assert view.latency_sum == 0.004 + 0.02 + 0.3 + 12.0 + 0.005
    assert (view.pool_idle, view.pool_open) == (0, 0)  # no pool: nothing open


@given(st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from([None, 200, 500, 503]),
                          st.floats(0.0, 20.0)), max_size=40))
def test_every_verdict_is_counted_once_in_both(outcomes: list[tuple[OutcomeKind, int | None,
                                                                    float]]) -> None:
    router = _router()
    for kind, status, latency in outcomes:
        router.entries[0].in_flight += 1
        router.done(Done(0, 0, kind, latency, status), 0.0)
    [view] = router.view(0.0)
    verdicts = [(k, s) for k, s, _ in outcomes if k is not OutcomeKind.NEUTRAL]
    assert dict(view.responses) == dict(Counter(s or 0 for _, s in verdicts))
    assert sum(view.latency_counts) == len(verdicts)


def test_ejections_count_new_ejections_only() -> None:
    router = _router(3, OutlierConfig(base_ejection_time=10.0, max_ejection_percent=100))
    router.eject(1, 0.0)
    router.eject(1, 1.0)  # still ejected: the same ejection
    assert [v.ejections for v in router.view(2.0)] == [0, 1, 0]
    router.eject(1, 11.0)  # back at 10 s, ejected again
    assert [v.ejections for v in router.view(12.0)] == [0, 2, 0]
