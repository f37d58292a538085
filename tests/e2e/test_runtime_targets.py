"""Changing a running route's targets: add, drain, remove, re-weight, without a restart."""

from __future__ import annotations

import logging

import httpx
import pytest

from velithon.gateway import GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware

from support.catalogue import bounded, gateway
from support.gateway import backends, served_by


@bounded(20)
async def test_a_running_route_follows_add_drain_remove_and_weights() -> None:
    async with backends("a", "b", "c") as (a, b, c):
        route = GatewayRoute("/api/{path:path}", [a.url, b.url],
                             load_balancing_strategy="weighted", weights=[1, 1])
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url, timeout=5) as cl:
            assert sorted(await served_by(cl, "/api/x", 4)) == ["a", "a", "b", "b"]
            await route.add_target(c.url)
            assert route.targets == [a.url, b.url, c.url]
            assert sorted(await served_by(cl, "/api/x", 6)) == ["a", "a", "b", "b", "c", "c"]
            await route.drain(a.url)
            assert set(await served_by(cl, "/api/x", 6)) == {"b", "c"}
            await route.drain(a.url, draining=False)
            await route.remove_target(b.url)
            assert route.targets == [a.url, c.url]
            assert set(await served_by(cl, "/api/x", 4)) == {"a", "c"}
            await route.set_weights([3, 1])
            assert sorted(await served_by(cl, "/api/x", 8)) == ["a"] * 6 + ["c"] * 2


@bounded(20)
async def test_proxy_middleware_takes_the_same_calls() -> None:
    async with backends("a", "b") as (a, b):
        proxy = ProxyMiddleware(targets=[a.url], path_prefix="/api", health_check_interval=3600)
        async with gateway(middleware=[proxy]) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=5) as cl:
            await proxy.add_target(b.url)
            assert set(await served_by(cl, "/api/x", 4)) == {"a", "b"}
            await proxy.drain(b.url)
            assert set(await served_by(cl, "/api/x", 3)) == {"a"}
            await proxy.drain(b.url, draining=False)
            await proxy.remove_target(a.url)
            assert set(await served_by(cl, "/api/x", 3)) == {"b"}


@bounded(20)
async def test_failed_tries_are_one_log_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="velithon.proxy")
    async with backends("a") as (a,):
        route = GatewayRoute("/api/{path:path}", ["http://127.0.0.1:9", a.url],
                             health_check_interval=3600, max_retries=2)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url, timeout=5) as cl:
            for _ in range(2):  # one of the two goes to the closed port first
                assert (await cl.get("/api/x")).status_code == 200
    lines = [r for r in caplog.records if r.name == "velithon.proxy"]
    assert 1 <= len(lines) <= 2  # at most one line per request, whatever its tries
    for line in lines:
        assert line.levelno == logging.INFO  # the request succeeded: no WARNING
        message = line.getMessage()
        assert message.startswith("event=retry_succeeded ") and "127.0.0.1:9 connect" in message
