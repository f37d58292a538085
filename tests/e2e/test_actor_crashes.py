"""An actor that crashes while handling a request answers it before it is restarted."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from velithon._lb.router import RouterState
from velithon.gateway import GatewayRoute

from support.catalogue import bounded, gateway
from support.gateway import backends


@bounded(15)
async def test_a_router_crash_during_a_pick_answers_503_promptly_and_recovers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_pick = RouterState.pick
    crashes = 0

    def pick_that_crashes_once(self: RouterState, *args: Any, **kwargs: Any) -> Any:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("a bug in the router")
        return real_pick(self, *args, **kwargs)

    monkeypatch.setattr(RouterState, "pick", pick_that_crashes_once)
    async with backends("a") as (a,):
        route = GatewayRoute("/api/{path:path}", [a.url], max_retries=0)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url, timeout=5) as c:
            start = trio.current_time()
            first = await c.get("/api/x")
            assert trio.current_time() - start < 1.0  # answered, not left waiting
            assert first.status_code == 503
            assert set(first.json()) == {"error", "status", "detail"}
            await trio.sleep(0.3)  # the supervisor's restart backoff
            assert (await c.get("/api/x")).status_code == 200
    assert crashes == 1
