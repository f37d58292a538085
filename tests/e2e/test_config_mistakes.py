"""Configuration mistakes a new user makes, on every facade that takes targets.

Each is refused with a ``ConfigError`` (or, where the original accepted it, warned about
with a ``ConfigWarning``) whose message says what to write instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest

from velithon import ConfigError, ConfigWarning, ProxyLoadBalancer
from velithon.gateway import GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware

from support.catalogue import bounded, gateway
from support.gateway import backends, served_by

Build = Callable[..., Any]

FACADES: dict[str, Build] = {
    "GatewayRoute": lambda targets, **kw: GatewayRoute(
        "/api/{path:path}", targets, load_balancing_strategy=kw.pop("strategy", "round_robin"),
        **kw),
    "ProxyMiddleware": lambda targets, **kw: ProxyMiddleware(
        targets=targets, load_balancing_strategy=kw.pop("strategy", "round_robin"), **kw),
    "ProxyLoadBalancer": lambda targets, **kw: ProxyLoadBalancer(targets, **kw),
}
facades = pytest.mark.parametrize("build", FACADES.values(), ids=FACADES.keys())


@facades
@pytest.mark.parametrize("targets", ["http://a:1,http://b:2", ["http://a:1, http://b:2"]])
def test_comma_joined_targets_are_refused_with_the_list_to_write(
    build: Build, targets: str | Sequence[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        build(targets)
    message = str(caught.value)
    assert "joined with ','" in message
    assert "targets=['http://a:1', 'http://b:2']" in message


@facades
@pytest.mark.parametrize(
    ("first", "second", "same_as"),
    [
        ("http://a:1", "http://a:1/", "http://a:1"),
        ("http://api.local:8000", "HTTP://API.Local:8000", "http://api.local:8000"),
        ("http://a", "http://a:80/", "http://a"),
        ("http://a:1/v2", "http://a:1/v2/", "http://a:1/v2"),
    ],
)
def test_targets_that_name_the_same_backend_are_refused(
    build: Build, first: str, second: str, same_as: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build([first, second])
    message = str(caught.value)
    assert f"{first!r} and {second!r}: both are {same_as!r}" in message
    assert "list each backend once" in message


@facades
def test_different_paths_or_ports_are_different_backends(build: Build) -> None:
    build(["http://a:1", "http://a:2", "http://a:1/v2", "https://a:1"])


@facades
def test_weights_under_a_strategy_that_ignores_them_warn_at_the_users_line(
    build: Build,
) -> None:
    with pytest.warns(ConfigWarning) as record:
        build(["http://a:1", "http://b:1"], weights=[3, 1])
    [warning] = record.list
    assert "weights=[3, 1] have no effect: the 'round_robin' strategy ignores weights" in str(
        warning.message)
    assert "Use the 'weighted' strategy" in str(warning.message)
    assert warning.filename == __file__  # the line that built it, not velithon's internals


@facades
@pytest.mark.parametrize(
    ("strategy", "weights"),
    [("weighted", [3, 1]), ("least_request", [3, 1]), ("round_robin", [2, 2]),
     ("round_robin", None)],
)
def test_weights_that_are_used_or_change_nothing_do_not_warn(
    build: Build, strategy: str, weights: list[int] | None
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(["http://a:1", "http://b:1"], strategy=strategy, weights=weights)


@bounded(20)
async def test_adding_a_target_already_present_in_another_spelling_is_refused() -> None:
    async with backends("a", "b") as (a, b):
        route = GatewayRoute("/api/{path:path}", [a.url], health_check_interval=3600)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url, timeout=5) as cl:
            with pytest.raises(ConfigError, match="Target already present"):
                await route.add_target(a.url.upper() + "/")
            await route.add_target(b.url)
            assert route.targets == [a.url, b.url]
            assert set(await served_by(cl, "/api/x", 4)) == {"a", "b"}
