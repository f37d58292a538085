"""A gateway built from a configuration, and reloads applied to it while it serves:
real backends, our server, httpx clients."""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from velithon.config import (
    ConfigFileError,
    ConfigGateway,
    GatewayConfig,
    ReloadRefused,
    build_gateway,
    load_config,
)
from velithon.gateway import GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware
from velithon.testing import Backend, Fault

from support.catalogue import bounded
from support.gateway import backends, served_by, serving


def weighted(*backends: Backend, weights: tuple[int, ...] | None = None,
             path: str = "/api/{path:path}", extra: str = "") -> str:
    targets = ", ".join(f'"{b.url}"' for b in backends)
    weights_line = f"weights = {list(weights)}" if weights else ""
    return f"""
[admin]
enabled = false
[server]
graceful_timeout = 2
[[routes]]
path = "{path}"
targets = [{targets}]
load_balancing_strategy = "weighted"
{weights_line or "weights = " + str([1] * len(backends))}
{extra}
"""


@asynccontextmanager
async def running(config: GatewayConfig | str, **kwargs: Any
                  ) -> AsyncIterator[tuple[ConfigGateway, httpx.AsyncClient]]:
    if isinstance(config, str):
        config = load_config(config)
    gateway = build_gateway(config, **kwargs)
    async with serving(gateway.app) as url, httpx.AsyncClient(base_url=url, timeout=5) as c:
        yield gateway, c


@bounded(20)
async def test_weights_3_1_split_40_requests_30_10() -> None:
    async with backends("a", "b") as (a, b), \
            running(weighted(a, b, weights=(3, 1))) as (gateway, client):
        counts = collections.Counter(await served_by(client, "/api/x", 40))
        assert counts == {"a": 30, "b": 10}
        assert isinstance(gateway.app.routes[0], GatewayRoute)


@bounded(20)
async def test_a_live_update_moves_traffic_and_keeps_the_targets_that_stay() -> None:
    async with backends("a", "b", "c") as (a, b, c), \
            running(weighted(a, b)) as (gateway, client):
        route = gateway.routes["gateway_/api/{path:path}"]
        b_state = route._holder.state.targets[b.url]
        assert set(await served_by(client, "/api/x", 4)) == {"a", "b"}
        plan = await gateway.apply(load_config(weighted(b, c, weights=(1, 3))))
        assert plan.describe() == f"route gateway_/api/{{path:path}}: +{c.url} (weight 3), -{a.url}"
        assert gateway.app.routes == [route]  # the same route, updated in place
        assert route._holder.state.targets[b.url] is b_state  # health and breaker kept
        a.clear()
        assert collections.Counter(await served_by(client, "/api/x", 8)) == {"c": 6, "b": 2}
        assert a.requests == [] and route.targets == [b.url, c.url]


@bounded(20)
async def test_a_changed_strategy_swaps_in_a_new_route_and_stops_the_old_one() -> None:
    async with backends("a", "b") as (a, b), running(weighted(a, b)) as (gateway, client):
        old = gateway.app.routes[0]
        assert old.balancer is not None
        text = weighted(a, b).replace('"weighted"', '"round_robin"')
        plan = await gateway.apply(load_config(text))
        assert "rebuilt (load_balancing_strategy changed)" in plan.describe()
        [new] = gateway.app.routes
        assert new is not old and new.load_balancing_strategy == "round_robin"
        assert old.balancer is None and new.balancer is not None  # old stopped, new running
        assert sorted(await served_by(client, "/api/x", 4)) == ["a", "a", "b", "b"]


@bounded(20)
async def test_a_request_in_flight_on_a_replaced_route_finishes_there() -> None:
    async with backends("a", "b") as (a, b), running(weighted(a)) as (gateway, client):
        old = gateway.app.routes[0]
        a.set_fault(Fault.delay(0.5), times=1)
        results: list[httpx.Response] = []
        async with trio.open_nursery() as nursery:
            async def slow() -> None:
                results.append(await client.get("/api/slow"))

            nursery.start_soon(slow)
            await a.wait_for_requests(1)
            assert old.in_flight == 1
            await gateway.apply(load_config(weighted(b, path="/api/{path:path}",
                                                     extra='methods = ["GET"]')))
            # apply returned: the old route finished its request, then stopped
            assert old.in_flight == 0 and old.balancer is None
        assert results[0].status_code == 200 and results[0].json()["backend"] == "a"
        assert set(await served_by(client, "/api/x", 3)) == {"b"}


@bounded(20)
async def test_routes_and_proxies_are_added_removed_and_reordered() -> None:
    async with backends("a", "b", "c") as (a, b, c):
        first = f"""
[admin]
enabled = false
[[routes]]
path = "/one/{{path:path}}"
targets = ["{a.url}"]
[[routes]]
path = "/two/{{path:path}}"
targets = ["{b.url}"]
[[proxies]]
targets = ["{c.url}"]
path_prefix = "/p"
"""
        async with running(first) as (gateway, client):
            proxy = gateway.proxies["/p"]
            assert gateway.app.user_middleware == [proxy]
            assert (await client.get("/p/x")).json()["backend"] == "c"
            second = f"""
[admin]
enabled = false
[[routes]]
path = "/three/{{path:path}}"
targets = ["{c.url}"]
[[routes]]
path = "/one/{{path:path}}"
targets = ["{a.url}"]
[[proxies]]
targets = ["{a.url}"]
path_prefix = "/q"
[[proxies]]
targets = ["{c.url}"]
path_prefix = "/p"
"""
            plan = await gateway.apply(load_config(second))
            assert plan.describe() == ("route gateway_/three/{path:path} added; "
                                       "route gateway_/two/{path:path} removed; "
                                       "proxy /q added")
            assert [r.path for r in gateway.app.routes] == ["/three/{path:path}",
                                                            "/one/{path:path}"]
            assert gateway.app.user_middleware == [gateway.proxies["/q"], proxy]
            assert (await client.get("/three/x")).json()["backend"] == "c"
            assert (await client.get("/two/x")).status_code == 404
            assert (await client.get("/q/x")).json()["backend"] == "a"
            assert (await client.get("/p/x")).json()["backend"] == "c"


@bounded(20)
async def test_routes_of_others_keep_their_place() -> None:
    async with backends("a", "b") as (a, b), running(weighted(a)) as (gateway, client):
        app = gateway.app

        @app.get("/local")
        async def local() -> dict[str, bool]:
            return {"local": True}

        foreign = app.routes[-1]
        await gateway.apply(load_config(weighted(a).replace("/api/", "/v2/")))
        assert app.routes[-1] is foreign and len(app.routes) == 2
        assert (await client.get("/local")).json() == {"local": True}
        assert (await client.get("/v2/x")).json()["backend"] == "a"


@bounded(20)
async def test_a_reload_that_cannot_apply_is_refused_whole(tmp_path: Path) -> None:
    async with backends("a", "b") as (a, b):
        path = tmp_path / "gw.toml"
        path.write_text(weighted(a))
        async with running(load_config(path.read_text()), path=path) as (gateway, client):
            before = gateway.config
            path.write_text(weighted(b).replace("graceful_timeout = 2", "graceful_timeout = 3"))
            with pytest.raises(ReloadRefused, match=r"\[server\] changed \(graceful_timeout\)"):
                await gateway.reload()
            path.write_text(weighted(b).replace("targets", "targetz"))
            with pytest.raises(ConfigFileError, match="targetz: unknown key"):
                await gateway.reload()
            assert gateway.config is before and gateway.reloads == 0
            assert set(await served_by(client, "/api/x", 3)) == {"a"}


@bounded(20)
async def test_a_trigger_logs_one_line_per_reload(caplog: pytest.LogCaptureFixture,
                                                  tmp_path: Path) -> None:
    caplog.set_level(logging.INFO, logger="velithon.config")
    async with backends("a", "b") as (a, b):
        path = tmp_path / "gw.toml"
        path.write_text(weighted(a))
        async with running(load_config(path.read_text()), path=path) as (gateway, _):
            path.write_text(weighted(a, b))
            await gateway._reload_logged()
            path.write_text("[[routes]\n")
            await gateway._reload_logged()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "velithon.config"]
    assert lines == [
        ("INFO", f"reloaded {path}: route gateway_/api/{{path:path}}: +{b.url}"),
        ("ERROR", "reload refused, the previous configuration keeps serving: "
                  f"{path}: line 1, column 9: invalid TOML: expected ']]' at the end of an "
                  "array declaration"),
    ]


@bounded(40)
async def test_no_request_fails_while_reloads_come_and_go() -> None:
    async with backends("a", "b", "c") as (a, b, c):
        configs = [load_config(text) for text in (
            weighted(a, b), weighted(b, c, weights=(2, 1)), weighted(c),
            weighted(a, c).replace('"weighted"', '"round_robin"'),  # a rebuild
            weighted(a, b, c, extra='methods = ["GET"]'))]
        async with running(configs[0]) as (gateway, client):
            statuses: collections.Counter[int] = collections.Counter()
            done = trio.Event()

            async def steady_load() -> None:
                while not done.is_set():
                    statuses[(await client.get("/api/x")).status_code] += 1

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(steady_load)
                for config in configs[1:] * 3:
                    await trio.sleep(0.05)
                    await gateway.apply(config)
                done.set()
            assert gateway.reloads == 12
            assert set(statuses) == {200} and statuses[200] >= 36


async def test_the_admin_surface_is_mounted_once_when_enabled(
        caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[object, str, str | None]] = []

    def mount_admin(app: object, path: str = "/_velithon", *, token: str | None = None) -> None:
        calls.append((app, path, token))

    route = '[[routes]]\npath = "/"\ntargets = ["http://127.0.0.1:9001"]\n'
    config = load_config('[admin]\npath = "/_adm"\ntoken = "t0k"\n' + route)
    gateway = build_gateway(config, mount_admin=mount_admin)
    assert calls == [(gateway.app, "/_adm", "t0k")]
    build_gateway(load_config("[admin]\nenabled = false\n" + route), mount_admin=mount_admin)
    assert len(calls) == 1
    build_gateway(config)
    assert "[admin] is enabled but no admin surface was given" in caplog.text


async def test_proxies_are_the_apps_middleware_first_outermost() -> None:
    config = load_config("""
[[proxies]]
targets = ["http://a:1"]
path_prefix = "/a"
[[proxies]]
targets = ["http://b:1"]
path_prefix = "/b"
""")
    gateway = build_gateway(config)
    assert [p.path_prefix for p in gateway.app.user_middleware] == ["/a", "/b"]
    assert all(isinstance(p, ProxyMiddleware) for p in gateway.app.user_middleware)
    assert gateway.app.services == [gateway]
    with pytest.raises(ValueError, match="poll_interval"):
        build_gateway(config, poll_interval=0)


@bounded(20)
async def test_the_real_admin_surface_reports_a_reloaded_gateway() -> None:
    from velithon.admin import mount_admin

    async with backends("a", "b") as (a, b):
        text = weighted(a).replace("enabled = false", 'token = "t0k"')
        async with running(text, mount_admin=mount_admin) as (gateway, client):
            route = gateway.routes["gateway_/api/{path:path}"]
            assert (await client.get("/_velithon/status")).status_code == 200
            # a target added at runtime through the admin surface...
            await route.add_target(b.url)
            # ...and a reload that changes the route's targets: the file wins
            plan = await gateway.apply(load_config(
                weighted(a, b, weights=(1, 2)).replace("enabled = false", 'token = "t0k"')))
            assert plan.describe() == (f"route gateway_/api/{{path:path}}: +{b.url} (weight 2)")
            assert route.target_weights == {a.url: 1, b.url: 2}
            status = (await client.get("/_velithon/status")).text
            assert a.url in status and b.url in status
            assert collections.Counter(await served_by(client, "/api/x", 6)) == {"a": 2, "b": 4}


@bounded(20)
async def test_a_reload_racing_admin_changes_still_ends_with_the_files_targets() -> None:
    """An admin action that adds or removes a target while a reload applies the same
    change must not make the reload fail part-way."""
    async with backends("a", "b", "c") as (a, b, c), \
            running(weighted(a, b)) as (gateway, client):
        route = gateway.routes["gateway_/api/{path:path}"]
        add, drain = route.add_target, route.drain

        async def add_raced(url: str, weight: int = 1) -> None:
            await add(url, weight)  # an admin action got there first
            await add(url, weight)  # the reload's own call: "already present"

        async def drain_raced(url: str, draining: bool = True) -> None:
            await route.remove_target(url)  # removed by an admin action meanwhile
            await drain(url, draining)  # the reload's own call: "unknown target"

        route.add_target = add_raced  # type: ignore[method-assign]
        route.drain = drain_raced  # type: ignore[method-assign]
        await gateway.apply(load_config(weighted(b, c, weights=(1, 3))))
        assert sorted(route.targets) == sorted([b.url, c.url])
        assert collections.Counter(await served_by(client, "/api/x", 8)) == {"c": 6, "b": 2}
