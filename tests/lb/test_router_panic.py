"""The router's panic threshold: passive signals never take most of a pool offline."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from velithon._exceptions import NoTargetAvailable
from velithon._lb.breaker import BreakerState
from velithon._lb.outlier import OutlierDetector
from velithon._lb.router import RouterState, TargetEntry
from velithon._lb.strategies import create_strategy


def _router(states: list[BreakerState], *, healthy: list[bool] | None = None,
            panic_threshold: float = 50.0) -> RouterState:
    urls = [f"http://t{i}.test" for i in range(len(states))]
    router = RouterState(strategy=create_strategy("round_robin", urls),
                         outlier=OutlierDetector(n_targets=len(urls)),
                         panic_threshold=panic_threshold)
    for i, (url, state) in enumerate(zip(urls, states, strict=True)):
        entry = TargetEntry(i, url, 1, breaker=state)
        if healthy is not None:
            entry.healthy = healthy[i]
        router.entries.append(entry)
    return router


def _spread(router: RouterState, n: int) -> Counter[str]:
    picked: Counter[str] = Counter()
    for _ in range(n):
        entry = router.pick(0.0, None, frozenset())
        picked[entry.url] += 1
        entry.in_flight -= 1
    return picked


OPEN, CLOSED = BreakerState.OPEN, BreakerState.CLOSED


def test_below_the_threshold_traffic_spreads_over_every_healthy_target() -> None:
    router = _router([OPEN, OPEN, CLOSED])  # one of three routable: 33 % < 50 %
    assert _spread(router, 30) == {"http://t0.test": 10, "http://t1.test": 10,
                                   "http://t2.test": 10}
    assert router.panicking and router.panic_picks == 30


def test_at_the_threshold_open_breakers_are_respected() -> None:
    router = _router([OPEN, CLOSED])  # one of two: exactly 50 %, not below
    assert _spread(router, 10) == {"http://t1.test": 10}
    assert not router.panicking


def test_a_zero_threshold_disables_panic_mode() -> None:
    router = _router([OPEN, OPEN, OPEN], panic_threshold=0)
    with pytest.raises(NoTargetAvailable, match="Circuit breaker is open"):
        router.pick(0.0, None, frozenset())


def test_panic_mode_still_skips_targets_that_fail_health_checks() -> None:
    router = _router([OPEN, OPEN, OPEN], healthy=[True, False, True])
    assert _spread(router, 10) == {"http://t0.test": 5, "http://t2.test": 5}


def test_a_single_target_never_panics() -> None:
    router = _router([OPEN])
    with pytest.raises(NoTargetAvailable):
        router.pick(0.0, None, frozenset())


def test_panic_mode_ends_when_enough_targets_recover() -> None:
    router = _router([OPEN, OPEN, CLOSED])
    _spread(router, 3)
    router.entries[0].breaker = CLOSED
    router.invalidate()
    assert set(_spread(router, 10)) == {"http://t0.test", "http://t2.test"}
    assert not router.panicking


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(list(BreakerState))),
                min_size=2, max_size=8),
       st.sampled_from([0.0, 25.0, 50.0, 100.0]))
def test_a_pick_fails_only_when_no_target_passes_health_checks_or_panic_is_off(
        targets: list[tuple[bool, BreakerState]], threshold: float) -> None:
    router = _router([state for _, state in targets], healthy=[ok for ok, _ in targets],
                     panic_threshold=threshold)
    routable = sum(e.routable(0.0) for e in router.entries)
    healthy = sum(ok for ok, _ in targets)
    try:
        entry = router.pick(0.0, None, frozenset())
    except NoTargetAvailable:
        panics = routable * 100 < threshold * len(targets)
        assert routable == 0 and (healthy == 0 or not panics)
    else:
        assert entry.healthy


def test_an_ejection_is_logged_once_not_for_every_later_report(
        caplog: pytest.LogCaptureFixture) -> None:
    import trio

    from velithon._lb.messages import EjectRequest
    from velithon._lb.router import RouterActor

    router = _router([CLOSED, CLOSED, CLOSED])
    send, receive = trio.open_memory_channel[object](8)
    actor = RouterActor(router, receive, send)  # type: ignore[arg-type]
    caplog.set_level("WARNING", logger="velithon.router")
    for _ in range(5):
        actor._handle(EjectRequest(0), 1.0)
    ejections = [r for r in caplog.records if "event=target_ejected" in r.getMessage()]
    assert len(ejections) == 1
    assert router.entries[0].ejected_until is not None
