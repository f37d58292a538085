"""/status and /metrics through a real gateway in front of real backends."""

from __future__ import annotations

import httpx
import prometheus_client
import pytest
import trio
from trio_websocket import open_websocket_url

from velithon import Velithon
from velithon._lb.messages import RouterStatus
from velithon._lb.reply import Reply
from velithon.admin import mount_admin
from velithon.gateway import GatewayRoute, forward_to
from velithon.middleware import Middleware
from velithon.middleware.proxy import ProxyMiddleware
from velithon.testing import Fault, open_ws_backend

from support.admin import admin_gateway, eventually, metric, samples
from support.gateway import backends, serving

ROUTE = "/api/{path:path}"

TARGET_KEYS = {"url", "weight", "healthy", "routable", "breaker_state", "failure_count",
               "draining", "ejected", "in_flight", "latency_ms", "requests", "successes",
               "failures", "ejections", "probes", "last_probe", "restarts", "pool_idle",
               "pool_open"}


async def test_status_lists_each_route_and_its_targets() -> None:
    async with backends("a", "b") as (a, b):
        route = GatewayRoute(ROUTE, [a.url, b.url], load_balancing_strategy="weighted",
                             weights=[3, 1])
        async with admin_gateway(route) as gw:
            for _ in range(4):
                assert (await gw.client.get("/api/x")).status_code == 200
            document = await gw.status()
    assert document["proxies"] == []
    [entry] = document["routes"]
    assert entry["route"] == ROUTE and entry["path"] == ROUTE
    assert entry["strategy"] == "weighted" and entry["running"] is True
    rows = entry["targets"]
    assert [r["url"] for r in rows] == [a.url, b.url]
    assert all(set(r) == TARGET_KEYS for r in rows)
    assert [r["weight"] for r in rows] == [3, 1]
    assert [r["requests"] for r in rows] == [3, 1]
    assert all(r["healthy"] and r["breaker_state"] == "closed" and r["in_flight"] == 0
               and not r["draining"] and r["latency_ms"] > 0 for r in rows)
    assert all(r["pool_open"] >= r["pool_idle"] >= 1 for r in rows)  # kept-alive upstreams


async def test_request_counts_by_code_are_exact() -> None:
    async with backends("a", "b", "dead") as (a, b, dead):
        await dead.stop()  # connect refused: no response at all
        route = GatewayRoute(ROUTE, [a.url, b.url, dead.url], max_retries=0)
        async with admin_gateway(route) as gw:
            a.set_fault(Fault.status(404), times=2)
            b.set_fault(Fault.status(500), times=1)
            statuses = [(await gw.client.get(f"/api/{i}")).status_code for i in range(12)]
            found = await gw.metrics()
            rows = await gw.targets(ROUTE)
    assert sorted(statuses) == sorted([404] * 2 + [200] * 2 + [500] + [200] * 3 + [502] * 4)
    expected = {(a.url, "404"): 2, (a.url, "200"): 2, (b.url, "500"): 1, (b.url, "200"): 3,
                (dead.url, "error"): 4}
    counted = {(labels["target"], labels["code"]): value
               for (name, pairs), value in found.items() if name == "velithon_requests_total"
               for labels in [dict(pairs)]}
    assert counted == expected
    for url in (a.url, b.url, dead.url):
        assert metric(found, "velithon_request_duration_seconds_count", route=ROUTE,
                      target=url) == 4
        assert metric(found, "velithon_request_duration_seconds_bucket", route=ROUTE,
                      target=url, le="+Inf") == 4
        assert rows[url]["requests"] == 4
    assert metric(found, "velithon_target_failures_total", route=ROUTE, target=dead.url) == 4
    assert metric(found, "velithon_target_failures_total", route=ROUTE, target=b.url) == 1


async def test_a_failing_health_check_shows_unhealthy_and_healthy_zero() -> None:
    async with backends("a", "b") as (a, b):
        route = GatewayRoute(ROUTE, [a.url, b.url], health_check_path="/health",
                             health_check_interval=0.1)
        async with admin_gateway(route) as gw:
            b.set_health(503)

            async def b_is_down() -> bool:
                return not (await gw.targets(ROUTE))[b.url]["healthy"]

            await eventually(b_is_down)
            rows = await gw.targets(ROUTE)
            found = await gw.metrics()
    assert rows[a.url]["healthy"] is True
    assert rows[b.url]["healthy"] is False and rows[b.url]["routable"] is False
    assert rows[b.url]["last_probe"] == "HTTP 503"
    assert metric(found, "velithon_target_healthy", route=ROUTE, target=a.url) == 1
    assert metric(found, "velithon_target_healthy", route=ROUTE, target=b.url) == 0
    assert metric(found, "velithon_target_routable", route=ROUTE, target=b.url) == 0
    assert metric(found, "velithon_health_probes_total", route=ROUTE, target=b.url) >= 2
    for url in (a.url, b.url):  # one breaker state at a time
        states = {s: metric(found, "velithon_target_breaker_state", route=ROUTE, target=url,
                            state=s) for s in ("closed", "open", "half_open")}
        assert states == {"closed": 1, "open": 0, "half_open": 0}


async def test_metrics_cover_breakers_retries_and_pools() -> None:
    async with backends("a", "b") as (a, b):
        route = GatewayRoute(ROUTE, [a.url, b.url], max_failures=2, max_retries=1)
        async with admin_gateway(route) as gw:
            b.set_fault(Fault.status(503))  # a gateway failure: retried on a, opens b's breaker
            for i in range(4):
                assert (await gw.client.get(f"/api/{i}")).status_code == 200
            found = await gw.metrics()
    assert metric(found, "velithon_target_breaker_state", route=ROUTE, target=b.url,
                  state="open") == 1
    assert metric(found, "velithon_retries_total", route=ROUTE) == 2
    assert metric(found, "velithon_requests_total", route=ROUTE, target=b.url, code="503") == 2
    assert metric(found, "velithon_pool_open_connections", route=ROUTE, target=a.url) >= 1
    assert metric(found, "velithon_target_in_flight", route=ROUTE, target=a.url) == 0
    assert metric(found, "velithon_route_panicking", route=ROUTE) == 0


async def test_proxies_are_reported_and_a_catch_all_proxy_does_not_hide_the_admin() -> None:
    async with backends("svc", "rest") as (svc, rest):
        app = Velithon()
        app.add_middleware(Middleware(ProxyMiddleware, targets=[rest.url],
                                      enable_health_checks=False))
        app.add_middleware(ProxyMiddleware(targets=[svc.url], path_prefix="/svc",
                                           enable_health_checks=False))  # outermost
        mount_admin(app)
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/svc/x")).json()["backend"] == "svc"
            assert (await client.get("/anything")).json()["backend"] == "rest"
            document = (await client.get("/_velithon/status")).json()
    assert document["routes"] == []
    by_name = {p["route"]: p for p in document["proxies"]}
    assert set(by_name) == {"/svc/*", "/*"}
    assert by_name["/svc/*"]["path_prefix"] == "/svc"
    assert [t["url"] for t in by_name["/*"]["targets"]] == [rest.url]
    assert by_name["/svc/*"]["targets"][0]["requests"] == 1


async def test_each_app_has_its_own_registry() -> None:
    async with backends("a") as (a,):
        async with admin_gateway(GatewayRoute("/one/{p:path}", a.url)) as one, \
                admin_gateway(GatewayRoute("/two/{p:path}", a.url)) as two:
            await one.client.get("/one/x")
            first, second = await one.metrics(), await two.metrics()
    assert metric(first, "velithon_requests_total", route="/one/{p:path}", target=a.url,
                  code="200") == 1
    assert not any(labels and dict(labels).get("route") == "/one/{p:path}"
                   for _, labels in second)
    default = samples(prometheus_client.generate_latest().decode())
    assert not any(name.startswith("velithon_") for name, _ in default)


async def test_a_route_appended_later_and_a_forward_to_handler_are_reported() -> None:
    async with backends("a", "b") as (a, b):
        handler = forward_to("/fwd", b.url)
        async with admin_gateway() as gw:
            gw.app.add_route("/fwd", handler)
            gw.app.routes.append(GatewayRoute("/late/{p:path}", a.url))
            document = await gw.status()
            by_name = {r["route"]: r for r in document["routes"]}
            assert set(by_name) == {"/fwd", "/late/{p:path}"}
            assert by_name["/late/{p:path}"]["running"] is False  # no request yet
            assert by_name["/late/{p:path}"]["targets"][0]["requests"] == 0
            assert (await gw.client.get("/late/x")).status_code == 200
            rows = await gw.targets("/late/{p:path}")
    assert rows[a.url]["requests"] == 1


def test_mount_admin_refuses_bad_arguments() -> None:
    app = Velithon()
    with pytest.raises(ValueError, match="must start with '/'"):
        mount_admin(app, "admin")
    with pytest.raises(ValueError, match="cannot be '/'"):
        mount_admin(app, "/")
    with pytest.raises(ValueError, match="token must be a non-empty string"):
        mount_admin(app, token="")
    with pytest.raises(ValueError, match="needs a velithon.Velithon app"):
        mount_admin(object())  # type: ignore[arg-type]
    assert app.user_middleware == []


async def test_a_snapshot_still_answers_when_the_router_inbox_is_full() -> None:
    async with backends("a") as (a,):
        route = GatewayRoute("/x/{p:path}", a.url)
        async with route:
            inbox = route.balancer._router_send
            while True:  # fill the router's inbox without letting it run
                try:
                    inbox.send_nowait(RouterStatus(Reply()))
                except trio.WouldBlock:
                    break
            with trio.fail_after(1):
                snap = await route.snapshot()
    assert snap.running is True
    assert [t.view.url for t in snap.targets] == [a.url]
    assert snap.targets[0].status is not None


async def test_a_websocket_session_counts_as_code_101() -> None:
    async with open_ws_backend(name="ws") as backend:
        target = backend.url.replace("ws://", "http://")
        async with admin_gateway(GatewayRoute("/ws/{p:path}", target)) as gw:
            ws_url = gw.url.replace("http://", "ws://") + "/ws/chat"
            async with open_websocket_url(ws_url) as ws:
                await ws.send_message("ping")
                assert await ws.get_message() == "ping"

            async def counted() -> bool:
                return metric(await gw.metrics(), "velithon_requests_total",
                              route="/ws/{p:path}", target=target, code="101") == 1

            await eventually(counted)
