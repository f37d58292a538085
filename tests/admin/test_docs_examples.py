"""The examples of docs/admin.md, run as written (example hosts replaced by real local
backends)."""

from __future__ import annotations

import httpx

from velithon import Velithon
from velithon.admin import mount_admin
from velithon.gateway import GatewayRoute

from support.admin import samples
from support.gateway import backends, serving


async def test_mounting_it() -> None:
    async with backends("one", "two") as (one, two):
        app = Velithon()
        app.routes.append(GatewayRoute(
            path="/api/{path:path}",
            targets=[one.url, two.url],
            health_check_path="/health",
            health_check_interval=5,
        ))
        mount_admin(app)
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            await client.get("/api/x")
            status = (await client.get("/_velithon/status")).json()
            assert [t["url"] for t in status["routes"][0]["targets"]] == [one.url, two.url]
            metrics = samples((await client.get("/_velithon/metrics")).text)
            assert metrics[("velithon_requests_total",
                            (("code", "200"), ("route", "/api/{path:path}"),
                             ("target", one.url)))] == 1


async def test_the_drain_action_with_a_token() -> None:
    async with backends("one", "two") as (one, two):
        app = Velithon()
        app.routes.append(GatewayRoute(path="/api/{path:path}", targets=[one.url, two.url]))
        mount_admin(app, token="s3cret")
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.post(
                "/_velithon/targets/drain", headers={"Authorization": "Bearer s3cret"},
                content=b'{"target": "%s"}' % two.url.encode())
            assert response.json() == {"ok": True, "action": "drain",
                                       "route": "/api/{path:path}", "target": two.url}
