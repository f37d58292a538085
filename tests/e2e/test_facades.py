"""The seed's facades beyond the page's examples, against real local backends."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import trio

from velithon import Velithon
from velithon._facades.client import ProxyRequestError, ProxyResult
from velithon._velithon import ProxyClient, ProxyLoadBalancer
from velithon.gateway import Gateway, GatewayRoute, forward_to, gateway_route
from velithon.middleware.proxy import ProxyMiddleware
from velithon.testing import Fault

from support.gateway import backends, client, served_by, serving


async def test_load_balancer_notices_a_killed_backend_within_one_interval() -> None:
    async with backends("s1", "s2", "s3") as (s1, s2, s3):
        lb = ProxyLoadBalancer([s1.url, s2.url, s3.url], health_check_url="/health",
                               health_check_interval=0.2)
        async with lb:
            await trio.sleep(0.05)
            assert await lb.get_health_status() == [(s1.url, True), (s2.url, True), (s3.url, True)]
            await s2.stop()
            await trio.sleep(0.3)  # one interval (plus jitter and a probe)
            assert await lb.get_health_status() == [(s1.url, True), (s2.url, False), (s3.url, True)]
            assert [await lb.get_next_target() for _ in range(4)] == [s1.url, s3.url] * 2
            await s2.start()
            await trio.sleep(0.3)
            assert (await lb.get_health_status())[1] == (s2.url, True)
            details = await lb.status()
            assert [d["url"] for d in details] == [s1.url, s2.url, s3.url]
            assert details[1]["last_probe"] == "HTTP 200"
        assert lb.statistics() is None  # not running any more


async def test_load_balancer_validation_messages() -> None:
    with pytest.raises(ValueError, match="At least one target is required"):
        ProxyLoadBalancer([])
    with pytest.raises(ValueError, match="Invalid strategy 'nope'"):
        ProxyLoadBalancer(["http://a:1"], strategy="nope")
    with pytest.raises(ValueError, match="Weights required for weighted strategy"):
        ProxyLoadBalancer(["http://a:1"], strategy="weighted")
    with pytest.raises(ValueError, match="Weights length must match targets length"):
        ProxyLoadBalancer(["http://a:1", "http://b:1"], strategy="weighted", weights=[1])
    with pytest.raises(ValueError, match=">= 0"):
        ProxyLoadBalancer(["http://a:1"], strategy="weighted", weights=[-1])
    with pytest.raises(ValueError, match="all weights are 0"):
        ProxyLoadBalancer(["http://a:1", "http://b:1"], strategy="weighted", weights=[0, 0])


async def test_no_healthy_target_is_a_runtime_error() -> None:
    async with backends("only") as (only,):
        await only.stop()
        lb = ProxyLoadBalancer([only.url], health_check_url="/health")
        await lb.health_check()
        with pytest.raises(RuntimeError, match="No healthy targets available"):
            await lb.get_next_target()


async def test_proxy_client_forwards_and_unpacks_in_the_original_order() -> None:
    async with backends("inventory") as (inv,):
        client_ = ProxyClient(inv.url, timeout_ms=2000, max_retries=1)
        result = await client_.forward_request("POST", "/items", headers={"x-a": "1"},
                                               body=b"hello", query_params={"q": "a b"})
        assert isinstance(result, ProxyResult)
        status, body, headers = result
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert json.loads(result.body)["target"] == "/items?q=a+b"
        assert inv.requests[-1].body == b"hello"
        assert await client_.get_circuit_breaker_status() == ("closed", 0, None)


async def test_proxy_client_breaker_opens_and_resets() -> None:
    async with backends("flaky") as (flaky,):
        await flaky.stop()
        client_ = ProxyClient(flaky.url, timeout_ms=1000, max_retries=0, max_failures=2,
                              recovery_timeout_ms=60000)
        for _ in range(2):
            with pytest.raises(ProxyRequestError, match="Could not connect"):
                await client_.forward_request("GET", "/x")
        state, failures, elapsed = await client_.get_circuit_breaker_status()
        assert (state, failures) == ("open", 2)
        assert elapsed is not None and elapsed >= 0
        with pytest.raises(ProxyRequestError, match="Circuit breaker is open") as info:
            await client_.forward_request("GET", "/x")
        assert info.value.status == 503
        await flaky.start()
        await client_.reset_circuit_breaker()
        assert (await client_.forward_request("GET", "/x")).status == 200


async def test_single_string_target_route_works() -> None:
    async with backends("single") as (single,):
        app = Velithon()
        app.routes.append(GatewayRoute("/one/{path:path}", single.url))
        async with serving(app) as url, client(url) as c:
            assert (await c.get("/one/a")).json()["backend"] == "single"


async def test_methods_are_enforced_with_405_and_allow() -> None:
    async with backends("b") as (b,):
        app = Velithon()
        app.routes.append(GatewayRoute("/ro/{path:path}", [b.url], methods=["GET"]))
        async with serving(app) as url, client(url) as c:
            response = await c.post("/ro/x", content=b"data")
            assert response.status_code == 405
            assert response.headers["allow"] == "GET, HEAD"
            assert (await c.get("/ro/x")).status_code == 200
        assert [r.method for r in b.requests] == ["GET"]


async def test_strip_path_and_path_rewrite() -> None:
    async with backends("b") as (b,):
        app = Velithon()
        app.routes.append(GatewayRoute("/strip/{path:path}", [b.url], strip_path=True))
        app.routes.append(GatewayRoute("/v2/{path:path}", [b.url], path_rewrite="/v1/{path}"))
        async with serving(app) as url, client(url) as c:
            assert (await c.get("/strip/a/b?q=1")).json()["target"] == "/a/b?q=1"
            assert (await c.get("/v2/users/7")).json()["target"] == "/v1/users/7"


async def test_gateway_forward_to_decorator_and_handler() -> None:
    async with backends("orders", "inventory") as (orders, inventory):
        app = Velithon()
        gateway = Gateway()

        @gateway.forward_to([orders.url], path="/orders/{path:path}")
        def orders_route() -> None: ...

        assert isinstance(orders_route, GatewayRoute)
        assert orders_route.name == "orders_route"
        app.routes.extend(gateway.get_routes())
        inventory_handler = forward_to("/inventory", inventory.url, strip_path=True)
        app.get("/inventory")(inventory_handler)
        assert isinstance(gateway_route("/x", orders.url), GatewayRoute)
        async with serving(app) as url, client(url) as c:
            assert (await c.get("/orders/1")).json()["backend"] == "orders"
            forwarded = (await c.get("/inventory?all=1")).json()
            assert (forwarded["backend"], forwarded["target"]) == ("inventory", "/?all=1")


async def test_two_proxy_middlewares_each_own_their_prefix() -> None:
    async with backends("users", "orders") as (users, orders):
        app = Velithon()

        @app.get("/local")
        async def local() -> dict[str, bool]:
            return {"local": True}

        users_proxy = ProxyMiddleware(targets=[users.url], path_prefix="/users")
        orders_proxy = ProxyMiddleware(targets=[orders.url], path_prefix="/orders",
                                       load_balancing_strategy="random")
        app.add_middleware(users_proxy)
        app.add_middleware(orders_proxy)
        async with serving(app) as url, client(url) as c:
            assert (await c.get("/users/1")).json()["backend"] == "users"
            assert (await c.get("/orders/1")).json()["backend"] == "orders"
            assert (await c.get("/local")).json() == {"local": True}
        assert (await orders_proxy.get_proxy_status())["load_balancing_strategy"] == "random"


async def test_hash_strategy_keeps_a_user_on_one_backend() -> None:
    async with backends("a", "b", "c") as servers:
        app = Velithon()
        app.routes.append(GatewayRoute("/s/{path:path}", [s.url for s in servers],
                                       load_balancing_strategy="hash", hash_on="header:x-user"))
        async with serving(app) as url, client(url) as c:
            seen: dict[str, set[str]] = {}
            for i in range(30):
                user = f"user-{i % 6}"
                response = await c.get("/s/x", headers={"x-user": user})
                seen.setdefault(user, set()).add(response.json()["backend"])
            assert all(len(names) == 1 for names in seen.values())
            assert len({next(iter(n)) for n in seen.values()}) > 1  # keys spread over targets


async def test_panic_mode_keeps_serving_when_every_check_fails() -> None:
    async with backends("a", "b") as (a, b):
        app = Velithon()
        route = GatewayRoute("/p/{path:path}", [a.url, b.url], health_check_path="/health",
                             health_check_interval=0.1, none_healthy="panic")
        app.routes.append(route)
        a.set_health(503)
        b.set_health(503)
        async with serving(app) as url, client(url) as c:
            await trio.sleep(0.3)
            assert await route.get_health_status() == [(a.url, False), (b.url, False)]
            assert Counter(await served_by(c, "/p/x", 4)) == {"a": 2, "b": 2}


async def test_no_target_gives_503_json_with_retry_after() -> None:
    async with backends("a") as (a,):
        app = Velithon()
        route = GatewayRoute("/f/{path:path}", [a.url], health_check_path="/health",
                             health_check_interval=0.1)
        app.routes.append(route)
        a.set_health(503)
        async with serving(app) as url, client(url) as c:
            await trio.sleep(0.3)
            response = await c.get("/f/x")
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.json() == {"error": "Service Unavailable",
                                       "detail": "No healthy targets available", "status": 503}
        assert a.requests == []


async def test_upstream_5xx_is_retried_on_another_target() -> None:
    async with backends("bad", "good") as (bad, good):
        bad.set_fault(Fault.status(503))
        app = Velithon()
        app.routes.append(GatewayRoute("/r/{path:path}", [bad.url, good.url], max_retries=1))
        async with serving(app) as url, client(url) as c:
            assert await served_by(c, "/r/x", 4) == ["good"] * 4
            post = await c.post("/r/x", content=b"once")
        # a POST is not retried: whichever target it met is the answer
        assert post.status_code in (200, 503)
        assert sum(r.method == "POST" for r in bad.requests + good.requests) == 1


async def test_proxy_client_keeps_a_query_written_in_the_path() -> None:
    async with backends("b") as (b,):
        client_ = ProxyClient(b.url)
        result = await client_.forward_request("GET", "/items?x=1&y=a%20b", query_params={"z": "2"})
        assert json.loads(result.body)["target"] == "/items?x=1&y=a%20b&z=2"


def test_gateway_names_are_exported_at_the_top_level() -> None:
    import velithon

    for name in ("GatewayRoute", "Gateway", "ProxyMiddleware", "ProxyLoadBalancer", "ProxyClient",
                 "ProxyRequestError", "NoTargetAvailable", "OutlierConfig", "forward_to"):
        assert hasattr(velithon, name), name
    assert velithon.ProxyRequestError is ProxyRequestError


async def test_proxied_responses_carry_one_date_and_one_server() -> None:
    async with backends("b") as (b,):
        app = Velithon()
        app.routes.append(GatewayRoute("/d/{path:path}", [b.url]))
        async with serving(app) as url, client(url) as c:
            response = await c.get("/d/x")
        assert len(response.headers.get_list("date")) == 1
        assert len(response.headers.get_list("server")) == 1


def test_facade_configuration_mistakes_are_clear() -> None:
    with pytest.raises(ValueError, match="'hash' strategy needs hash_on"):
        GatewayRoute("/h/{path:path}", ["http://a:1"], load_balancing_strategy="hash")
    with pytest.raises(ValueError, match="health_check_interval must be > 0"):
        GatewayRoute("/h/{path:path}", ["http://a:1"], health_check_path="/health",
                     health_check_interval=0)
    with pytest.raises(ValueError, match="Invalid target URL"):
        ProxyMiddleware(targets=["server1:8080"])


async def test_websocket_handshake_moves_to_a_live_target() -> None:
    from trio_websocket import open_websocket_url

    from velithon.testing import open_ws_backend

    async with open_ws_backend(name="dead") as dead, open_ws_backend(name="alive") as alive:
        await dead.stop()
        app = Velithon()
        app.routes.append(GatewayRoute("/ws/{path:path}", [dead.http_url, alive.http_url]))
        async with serving(app) as url:
            ws_url = url.replace("http://", "ws://") + "/ws/echo"
            for i in range(4):  # round robin offers the dead target every other time
                async with open_websocket_url(ws_url) as ws:
                    await ws.send_message(f"hi {i}")
                    assert await ws.get_message() == f"hi {i}"
        assert len(alive.sessions) == 4


async def test_a_cancelled_request_gives_its_lease_back() -> None:
    """A request cancelled from outside (e.g. a drain deadline) must not leak in-flight counts."""
    async with backends("slow") as (slow,):
        slow.set_fault(Fault.hang())
        route = GatewayRoute("/c/{path:path}", [slow.url], max_requests_per_target=1)
        async with route:
            scope = {"type": "http", "method": "GET", "path": "/c/x", "raw_path": b"/c/x",
                     "query_string": b"", "headers": [(b"host", b"gw")], "client": ("127.0.0.1", 9),
                     "scheme": "http"}

            async def receive() -> dict[str, object]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, object]) -> None:
                pass

            with trio.move_on_after(0.3):
                await route.handle(scope, receive, send)
            await slow.wait_for_requests(1)
            [status] = await route.targets_status()
            assert status["in_flight"] == 0
            assert status["failures"] == 0  # cancellation is no verdict on the target
