"""The reload plan: a pure comparison of two configurations."""

from __future__ import annotations

import attrs
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon.config import (
    AddFacade,
    AdminSection,
    GatewayConfig,
    LoggingSection,
    ProxySection,
    RemoveFacade,
    ReplaceFacade,
    RouteSection,
    ServerSection,
    SetLogLevel,
    UpdateTargets,
    build_gateway,
    plan_reload,
)
from velithon.config._plan import apply_target_update, target_weights

A, B, C, D = (f"http://10.0.0.{i}:8000" for i in range(1, 5))


def route(path: str = "/api", targets: tuple[str, ...] = (A, B), **kw: object) -> RouteSection:
    return RouteSection(path=path, targets=targets, **kw)  # type: ignore[arg-type]


def config(*routes: RouteSection, proxies: tuple[ProxySection, ...] = (),
           **kw: object) -> GatewayConfig:
    return GatewayConfig(routes=routes, proxies=proxies, **kw)  # type: ignore[arg-type]


def test_no_change_is_an_empty_plan() -> None:
    plan = plan_reload(config(route()), config(route()))
    assert plan.actions == () and plan.refused == () and plan.describe() == "no changes"


def test_targets_and_weights_are_a_live_update() -> None:
    old = config(route(targets=(A, B, C), weights=(1, 1, 1),
                       load_balancing_strategy="weighted"))
    new = config(route(targets=(B, C, D), weights=(1, 3, 2),
                       load_balancing_strategy="weighted"))
    plan = plan_reload(old, new)
    assert plan.actions == (UpdateTargets("route", "gateway_/api", add=((D, 2),), remove=(A,),
                                          reweight=((C, 3),)),)
    assert plan.describe() == (f"route gateway_/api: +{D} (weight 2), -{A}, {C} weight 3")


def test_reordering_targets_changes_nothing() -> None:
    assert plan_reload(config(route(targets=(A, B))),
                       config(route(targets=(B, A)))).actions == ()
    assert plan_reload(config(route()), config(route(weights=(1, 1)))).actions == ()


def test_any_other_key_rebuilds_the_route() -> None:
    old = config(route(health_check_path="/health"))
    new = config(route(targets=(A, C), health_check_path="/ready",
                       load_balancing_strategy="random"))
    assert plan_reload(old, new).actions == (
        ReplaceFacade("route", "gateway_/api",
                      ("targets", "load_balancing_strategy", "health_check_path")),)


def test_a_route_with_a_dynamic_source_is_rebuilt_not_updated() -> None:
    """A source such as dns+srv:// is no target add_target could take."""
    srv = "dns+srv://_http._tcp.api.test"
    for old, new in (((A,), (A, srv)), ((A, srv), (A,)), ((srv,), ("dns://api.test:80",))):
        assert plan_reload(config(route(targets=old)), config(route(targets=new))).actions == (
            ReplaceFacade("route", "gateway_/api", ("targets",)),)
    assert plan_reload(config(route(targets=(srv,))),
                       config(route(targets=(srv,)))).actions == ()


def test_routes_are_matched_by_name_and_proxies_by_prefix() -> None:
    old = config(route("/a"), route("/b", name="bee"),
                 proxies=(ProxySection(targets=(A,), path_prefix="/p"),))
    new = config(route("/b2", name="bee"), route("/c"),
                 proxies=(ProxySection(targets=(A, B), path_prefix="/p/"),
                          ProxySection(targets=(C,), path_prefix="/q")))
    plan = plan_reload(old, new)
    assert plan.actions == (
        ReplaceFacade("route", "bee", ("path",)),
        AddFacade("route", "gateway_/c"),
        RemoveFacade("route", "gateway_/a"),
        ReplaceFacade("proxy", "/p", ("targets", "path_prefix")),  # "/p/" is "/p"
        AddFacade("proxy", "/q"),
    )


def test_a_new_order_is_reported() -> None:
    plan = plan_reload(config(route("/a"), route("/b")), config(route("/b"), route("/a")))
    assert plan.actions == () and plan.reordered == ("route",)
    assert plan.describe() == "route order changed"


def test_the_log_level_is_live_but_start_up_settings_refuse_the_reload() -> None:
    plan = plan_reload(config(), config(logging=LoggingSection(level="DEBUG")))
    assert plan.actions == (SetLogLevel("debug"),)
    for changed in (dict(server=ServerSection(port=1)),
                    dict(admin=AdminSection(token="t")),
                    dict(logging=LoggingSection(access_log=True))):
        plan = plan_reload(config(route()), config(route(targets=(C,)), **changed))
        assert plan.actions == () and len(plan.refused) == 1
    assert plan_reload(config(), config(server=ServerSection(port=1, workers=2))).describe() \
        == ("[server] changed (port, workers): it applies at start-up only; restart the "
            "gateway to change it")


URLS = st.sampled_from([f"http://10.0.0.{i}:80" for i in range(8)])
TARGETS = st.lists(URLS, min_size=1, max_size=6, unique=True)


@st.composite
def pools(draw: st.DrawFn) -> RouteSection:
    targets = draw(TARGETS)
    weights = draw(st.none() | st.lists(st.integers(0, 5), min_size=len(targets),
                                        max_size=len(targets)))
    return route(targets=tuple(targets), weights=None if weights is None else tuple(weights))


@given(pools(), pools())
def test_applying_a_live_update_to_the_old_targets_gives_the_new_ones(
        old: RouteSection, new: RouteSection) -> None:
    plan = plan_reload(config(old), config(new))
    result = target_weights(old)
    for action in plan.actions:
        assert isinstance(action, UpdateTargets)
        assert not set(action.remove) & {url for url, _ in action.add}
        result = apply_target_update(result, action)
    assert result == target_weights(new)


SECTION_CHANGES = st.sampled_from([
    {}, {"strip_path": True}, {"timeout_ms": 5}, {"health_check_path": "/h"},
    {"load_balancing_strategy": "random"}, {"methods": ("GET",)}])


@given(st.dictionaries(st.sampled_from(["/a", "/b", "/c", "/d"]),
                       st.tuples(pools(), SECTION_CHANGES), max_size=4),
       st.dictionaries(st.sampled_from(["/a", "/b", "/c", "/d"]),
                       st.tuples(pools(), SECTION_CHANGES), max_size=4))
def test_every_route_is_kept_updated_rebuilt_added_or_removed(
        old_spec: dict[str, tuple[RouteSection, dict[str, object]]],
        new_spec: dict[str, tuple[RouteSection, dict[str, object]]]) -> None:
    def build(spec: dict[str, tuple[RouteSection, dict[str, object]]]) -> GatewayConfig:
        return config(*(attrs.evolve(pool, path=path, **changes)
                        for path, (pool, changes) in spec.items()))

    old, new = build(old_spec), build(new_spec)
    plan = plan_reload(old, new)
    before = {r.key: r for r in old.routes}
    after = {r.key: r for r in new.routes}
    by_key = {getattr(a, "key", None): a for a in plan.actions}
    assert len(by_key) == len(plan.actions)  # at most one action per route
    for key in before.keys() | after.keys():
        action = by_key.get(key)
        if key not in before:
            assert action == AddFacade("route", key)
        elif key not in after:
            assert action == RemoveFacade("route", key)
        elif attrs.evolve(before[key], targets=(), weights=None) != \
                attrs.evolve(after[key], targets=(), weights=None):
            assert isinstance(action, ReplaceFacade)
        elif target_weights(before[key]) != target_weights(after[key]):
            assert isinstance(action, UpdateTargets)
        else:
            assert action is None


@st.composite
def weighted_pools(draw: st.DrawFn) -> RouteSection:
    targets = draw(TARGETS)
    weights = draw(st.lists(st.integers(1, 5), min_size=len(targets), max_size=len(targets)))
    return route(targets=tuple(targets), weights=tuple(weights),
                 load_balancing_strategy="weighted")


@settings(max_examples=25, deadline=None)
@given(weighted_pools(), weighted_pools())
def test_a_running_route_ends_with_the_new_targets_and_weights(
        old: RouteSection, new: RouteSection) -> None:
    """The same property against a real route and its balancer actors (no sockets)."""

    async def main() -> None:
        gateway = build_gateway(config(old, admin=AdminSection(enabled=False)))
        [route] = gateway.app.routes
        async with gateway.app.run_services():
            await gateway.apply(config(new, admin=AdminSection(enabled=False)))
            assert gateway.app.routes == [route]
            assert route.target_weights == target_weights(new)
            assert sorted(route.targets) == sorted(new.targets)

    trio.run(main)
