"""/ready, /live, the dashboard's HTML, and the token-guarded target actions."""

from __future__ import annotations

from typing import Any

import httpx

from velithon import Velithon
from velithon.admin import mount_admin
from velithon.gateway import GatewayRoute

from support.admin import AdminGateway, admin_gateway, eventually
from support.gateway import backends

ROUTE = "/api/{path:path}"
TOKEN = "tok-3f9a"
AUTH = {"authorization": f"Bearer {TOKEN}"}


async def test_ready_flips_to_503_when_every_target_is_down_and_back() -> None:
    async with backends("a", "b") as (a, b):
        route = GatewayRoute(ROUTE, [a.url, b.url], health_check_path="/health",
                             health_check_interval=0.1)
        async with admin_gateway(route) as gw:
            ready = await gw.client.get("/_velithon/ready")
            assert (ready.status_code, ready.json()) == (200, {"ready": True, "reasons": []})
            a.set_health(503)
            b.set_health(503)

            async def not_ready() -> bool:
                return (await gw.client.get("/_velithon/ready")).status_code == 503

            await eventually(not_ready)
            body = (await gw.client.get("/_velithon/ready")).json()
            assert body == {"ready": False,
                            "reasons": [f"{ROUTE}: no healthy target (2 configured)"]}
            live = await gw.client.get("/_velithon/live")
            assert (live.status_code, live.json()) == (200, {"live": True})
            b.set_health(200)

            async def ready_again() -> bool:
                return (await gw.client.get("/_velithon/ready")).status_code == 200

            await eventually(ready_again)


async def test_ready_needs_the_services_running() -> None:
    app = Velithon()
    mount_admin(app)
    responses: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        responses.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/_velithon/ready", "raw_path": b"",
             "query_string": b"", "headers": []}
    await app(scope, receive, send)  # no lifespan ran: no service host
    assert responses[0]["status"] == 503
    assert b"services are not running" in responses[1]["body"]


async def test_a_route_appended_after_start_up_is_started_by_ready() -> None:
    async with backends("a") as (a,):
        async with admin_gateway() as gw:
            gw.app.routes.append(GatewayRoute("/late/{p:path}", a.url))
            assert (await gw.status())["routes"][0]["running"] is False
            assert (await gw.client.get("/_velithon/ready")).status_code == 200
            assert (await gw.status())["routes"][0]["running"] is True


async def test_dashboard_page_is_served_at_the_admin_path_and_optionally_at_root() -> None:
    async with admin_gateway(path="/ops", dashboard_at_root=True) as gw:
        for path in ("/ops", "/ops/", "/"):
            page = await gw.client.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert 'const ADMIN = "/ops";' in page.text
            assert "<script" in page.text and "http://" not in page.text.split("<script")[0]
        assert (await gw.client.get("/ops/status")).status_code == 200
        assert (await gw.client.get("/_velithon/status")).status_code == 404  # app's own 404
        missing = await gw.client.get("/ops/nope")
        assert missing.status_code == 404 and missing.json()["status"] == 404
        wrong = await gw.client.post("/ops/status")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD"
        head = await gw.client.head("/ops/metrics")
        assert head.status_code == 200 and head.content == b""


async def test_actions_are_off_without_a_token() -> None:
    async with backends("a") as (a,):
        async with admin_gateway(GatewayRoute(ROUTE, a.url)) as gw:
            response = await gw.client.post("/_velithon/targets/drain", json={"target": a.url},
                                            headers=AUTH)
            assert response.status_code == 404
            assert "token" in response.json()["detail"]
            assert not (await gw.targets(ROUTE))[a.url]["draining"]


async def test_actions_need_the_right_bearer_token() -> None:
    async with backends("a") as (a,):
        async with admin_gateway(GatewayRoute(ROUTE, a.url), token=TOKEN) as gw:
            for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": TOKEN},
                            {"authorization": f"Basic {TOKEN}"}):
                response = await gw.client.post("/_velithon/targets/drain",
                                                json={"target": a.url}, headers=headers)
                assert response.status_code == 403, headers
            assert not (await gw.targets(ROUTE))[a.url]["draining"]
            get = await gw.client.get("/_velithon/targets/drain", headers=AUTH)
            assert get.status_code == 405 and get.headers["allow"] == "POST"


async def _act(gw: AdminGateway, action: str, **body: Any) -> httpx.Response:
    return await gw.client.post(f"/_velithon/targets/{action}", json=body, headers=AUTH)


async def test_drain_undrain_add_remove_and_reset_with_the_token() -> None:
    async with backends("a", "b", "c") as (a, b, c):
        route = GatewayRoute(ROUTE, [a.url, b.url], max_failures=1, max_retries=0)
        async with admin_gateway(route, token=TOKEN) as gw:
            drained = await _act(gw, "drain", target=a.url)
            assert drained.json() == {"ok": True, "action": "drain", "route": ROUTE,
                                      "target": a.url}
            assert (await gw.targets(ROUTE))[a.url]["draining"] is True
            served = {(await gw.client.get("/api/x")).json()["backend"] for _ in range(4)}
            assert served == {"b"}
            assert (await _act(gw, "undrain", route=ROUTE, target=a.url)).status_code == 200
            assert (await gw.targets(ROUTE))[a.url]["draining"] is False

            added = await _act(gw, "add", target=c.url, weight=2)
            assert added.status_code == 200
            assert (await gw.targets(ROUTE))[c.url]["weight"] == 2
            assert (await _act(gw, "add", target=c.url)).status_code == 409
            assert (await _act(gw, "remove", target=b.url)).status_code == 200
            assert list(await gw.targets(ROUTE)) == [a.url, c.url]

            await c.stop()  # one failed request opens c's breaker (max_failures=1)
            for _ in range(4):  # round robin over a and c: c gets its request
                await gw.client.get("/api/x")
            assert (await gw.targets(ROUTE))[c.url]["breaker_state"] == "open"
            assert (await _act(gw, "reset-breaker", target=c.url)).status_code == 200
            assert (await gw.targets(ROUTE))[c.url]["breaker_state"] == "closed"


async def test_action_mistakes_are_well_formed_errors() -> None:
    async with backends("a") as (a,):
        async with admin_gateway(GatewayRoute(ROUTE, a.url), token=TOKEN) as gw:
            cases = [
                ("drain", b"not json", 400, "JSON object"),
                ("drain", b"[1]", 400, "JSON object"),
                ("drain", b"{}", 400, '"target"'),
                ("drain", b'{"target": "http://127.0.0.1:9"}', 404, "no route has the target"),
                ("drain", b'{"target": "%s", "route": "/nope"}' % a.url.encode(), 404,
                 "no route named"),
                ("add", b'{"target": "ftp://x"}', 400, "ftp"),
                ("add", b'{"target": "http://127.0.0.1:9", "weight": -1}', 400, "weight"),
                ("remove", b'{"target": "%s", "drain_timeout": "x"}' % a.url.encode(), 400,
                 "drain_timeout"),
            ]
            for action, body, status, words in cases:
                response = await gw.client.post(f"/_velithon/targets/{action}", content=body,
                                                headers=AUTH)
                assert response.status_code == status, (action, body, response.text)
                assert set(response.json()) == {"error", "status", "detail"}
                assert words in response.json()["detail"], response.text
            unknown = await gw.client.post("/_velithon/targets/explode", json={}, headers=AUTH)
            assert unknown.status_code == 404
