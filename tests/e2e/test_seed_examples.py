"""Every example of the seed page (docs/load-balancing.md), run as written.

Example hosts are replaced by real local backends; everything else is the
seed's code. Each test checks what a user of that example would check.
"""

from __future__ import annotations

from collections import Counter

import pytest
import trio

from velithon import ConfigWarning, Velithon
from velithon._velithon import ProxyLoadBalancer
from velithon.gateway import Gateway, GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware

from support.gateway import backends, client, served_by, serving


async def test_using_gateway_routes() -> None:
    async with backends("server1", "server2", "server3") as (s1, s2, s3):
        app = Velithon()

        # Configure load balancing with Gateway Route
        with pytest.warns(ConfigWarning, match="Use the 'weighted' strategy"):  # weights + RR
            route = GatewayRoute(
                path="/api/{path:path}",
                targets=[s1.url, s2.url, s3.url],
                load_balancing_strategy="round_robin",  # round_robin, random, weighted
                weights=[1, 1, 2],  # Optional: for weighted strategy
                health_check_path="/health",
                timeout_ms=30000,
                max_retries=3,
            )

        app.routes.append(route)

        async with serving(app) as url, client(url) as c:
            assert await served_by(c, "/api/users/1", 6) == ["server1", "server2", "server3"] * 2
            response = await c.get("/api/users/1?x=1")
            assert response.json()["target"] == "/api/users/1?x=1"
            assert (await c.get("/other")).status_code == 404


async def test_using_proxy_middleware() -> None:
    async with backends("server1", "server2", "server3") as (s1, s2, s3):
        app = Velithon()

        @app.get("/local")
        async def local() -> dict[str, str]:
            return {"served_by": "app"}

        # Configure load balancing with Proxy Middleware
        with pytest.warns(ConfigWarning, match="Use the 'weighted' strategy"):  # weights + RR
            proxy_middleware = ProxyMiddleware(
                targets=[s1.url, s2.url, s3.url],
                load_balancing_strategy="round_robin",
                weights=[1, 1, 2],  # Optional: for weighted strategy
                health_check_path="/health",
                health_check_interval=30,
                timeout_ms=30000,
                max_retries=3,
                path_prefix="/api",
            )

        app.add_middleware(proxy_middleware)

        async with serving(app) as url, client(url) as c:
            assert await served_by(c, "/api/orders", 3) == ["server1", "server2", "server3"]
            assert (await c.get("/local")).json() == {"served_by": "app"}
            assert (await c.get("/apiv2")).status_code == 404  # segment-aware prefix
            # the prefix is stripped before forwarding
            assert (await c.get("/api/orders/7")).json()["target"] == "/orders/7"


async def test_strategy_round_robin_random_weighted() -> None:
    async with backends("high-capacity", "standard", "backup") as (s1, s2, s3):
        app = Velithon()
        app.routes.append(GatewayRoute(
            path="/rr/{path:path}",
            targets=[s1.url, s2.url, s3.url],
            load_balancing_strategy="round_robin",
        ))
        app.routes.append(GatewayRoute(
            path="/random/{path:path}",
            targets=[s1.url, s2.url],
            load_balancing_strategy="random",
        ))
        app.routes.append(GatewayRoute(
            path="/weighted/{path:path}",
            targets=[s1.url, s2.url, s3.url],
            load_balancing_strategy="weighted",
            weights=[3, 2, 1],  # 50%, 33%, 17% of traffic respectively
        ))
        async with serving(app) as url, client(url) as c:
            rr = await served_by(c, "/rr/x", 9)
            assert rr == ["high-capacity", "standard", "backup"] * 3
            randomly = Counter(await served_by(c, "/random/x", 60))
            assert set(randomly) == {"high-capacity", "standard"}
            # smooth weighted round robin is exact per cycle of 6: twenty cycles
            weighted = Counter(await served_by(c, "/weighted/x", 120))
            assert weighted == {"high-capacity": 60, "standard": 40, "backup": 20}


async def test_automatic_health_checks_move_traffic() -> None:
    async with backends("server1", "server2") as (s1, s2):
        app = Velithon()
        # Health checks are automatic when configured
        route = GatewayRoute(
            path="/api/{path:path}",
            targets=[s1.url, s2.url],
            health_check_path="/health",  # Custom health check endpoint
            health_check_interval=0.2,
        )
        app.routes.append(route)
        async with serving(app) as url, client(url) as c:
            assert sorted(await served_by(c, "/api/x", 2)) == ["server1", "server2"]
            s2.set_health(503)
            await trio.sleep(0.5)  # a little over two intervals
            assert await route.get_health_status() == [(s1.url, True), (s2.url, False)]
            assert await served_by(c, "/api/x", 4) == ["server1"] * 4
            s2.set_health(200)
            await trio.sleep(0.5)
            assert sorted(await served_by(c, "/api/x", 2)) == ["server1", "server2"]


async def test_backend_health_endpoint_as_in_the_seed() -> None:
    """The seed's backend side: ``@app.get("/health")`` returning a dict."""
    backend = Velithon()

    @backend.get("/health")
    async def health_check() -> dict[str, str]:
        return {"status": "healthy", "timestamp": "2024-01-01T00:00:00Z"}

    async with serving(backend) as backend_url:
        lb = ProxyLoadBalancer(targets=[backend_url], health_check_url="/health")
        await lb.health_check()
        assert await lb.get_health_status() == [(backend_url, True)]


async def test_manual_health_checks(capsys: object) -> None:
    async with backends("service1", "service2") as (s1, s2):
        await s2.stop()  # a dead service

        # Create load balancer for direct health checking
        lb = ProxyLoadBalancer(
            targets=[s1.url, s2.url],
            health_check_url="/health",
        )

        # Perform manual health check
        await lb.health_check()

        # Get health status
        health_status = await lb.get_health_status()
        for target, is_healthy in health_status:
            print(f"{target}: {'healthy' if is_healthy else 'unhealthy'}")

        assert health_status == [(s1.url, True), (s2.url, False)]
        out = capsys.readouterr().out  # type: ignore[attr-defined]
        assert f"{s1.url}: healthy\n{s2.url}: unhealthy\n" == out
        # the unhealthy target is skipped until it recovers
        assert [await lb.get_next_target() for _ in range(3)] == [s1.url] * 3
        await s2.start()
        await lb.health_check()
        assert sorted([await lb.get_next_target() for _ in range(2)]) == sorted([s1.url, s2.url])


async def test_gateway_integration() -> None:
    async with backends("api-server1", "api-server2", "api-server3") as servers:
        app = Velithon()
        gateway = Gateway()

        # Create load-balanced routes
        api_route = GatewayRoute(
            path="/api/{path:path}",
            targets=[s.url for s in servers],
            load_balancing_strategy="round_robin",
            health_check_path="/health",
        )

        # Add to gateway and application
        gateway.routes.append(api_route)
        app.routes.extend(gateway.routes)

        async with serving(app) as url, client(url) as c:
            expected = ["api-server1", "api-server2", "api-server3"]
            assert await served_by(c, "/api/v1/items", 3) == expected
            health = await gateway.health_check_all()
            assert health == {"gateway_/api/{path:path}": [(s.url, True) for s in servers]}


async def test_proxy_middleware_integration_weighted_70_30() -> None:
    async with backends("backend1", "backend2") as (b1, b2):
        app = Velithon()

        # Add proxy middleware with load balancing
        proxy = ProxyMiddleware(
            targets=[b1.url, b2.url],
            load_balancing_strategy="weighted",
            weights=[70, 30],  # 70% to backend1, 30% to backend2
            path_prefix="/api",
            health_check_path="/health",
        )

        app.add_middleware(proxy)
        async with serving(app) as url, client(url) as c:
            counts = Counter(await served_by(c, "/api/x", 100))
            assert counts == {"backend1": 70, "backend2": 30}


async def test_monitoring_load_balancer_status() -> None:
    async with backends("server1", "server2") as (s1, s2):
        await s2.stop()
        app = Velithon()

        @app.get("/load-balancer/status")
        async def lb_status():  # type: ignore[no-untyped-def]
            lb = ProxyLoadBalancer(
                targets=[s1.url, s2.url]
            )

            health_status = await lb.get_health_status()

            return {
                "targets": [target for target, _ in health_status],
                "healthy": [target for target, healthy in health_status if healthy],
                "unhealthy": [target for target, healthy in health_status if not healthy]
            }

        async with serving(app) as url, client(url) as c:
            body = (await c.get("/load-balancer/status")).json()
            # a fresh balancer has not probed yet: every target starts healthy
            assert body == {"targets": [s1.url, s2.url], "healthy": [s1.url, s2.url],
                            "unhealthy": []}


async def test_monitoring_gateway_health() -> None:
    async with backends("api1", "api2") as (a1, a2):
        app = Velithon()
        gateway = Gateway()
        gateway.add_route("/api/{path:path}", [a1.url, a2.url], health_check_path="/health",
                          health_check_interval=0.2)
        app.routes.extend(gateway.routes)

        @app.get("/gateway/health")
        async def gateway_health():  # type: ignore[no-untyped-def]
            health_status = await gateway.health_check_all()
            return {
                "status": "healthy" if health_status else "degraded",
                "backends": health_status
            }

        async with serving(app) as url, client(url) as c:
            a2.set_health(503)
            await trio.sleep(0.5)
            body = (await c.get("/gateway/health")).json()
            assert body == {
                "status": "healthy",
                "backends": {"gateway_/api/{path:path}": [[a1.url, True], [a2.url, False]]},
            }


async def test_monitoring_proxy_middleware_status() -> None:
    async with backends("server") as (server,):
        app = Velithon()

        # Access proxy status
        proxy_middleware = ProxyMiddleware(targets=[server.url])

        @app.get("/proxy/status")
        async def proxy_status():  # type: ignore[no-untyped-def]
            return await proxy_middleware.get_proxy_status()

        async with serving(app) as url, client(url) as c:
            status = (await c.get("/proxy/status")).json()
        assert status["targets"] == [server.url]
        assert status["health_status"] == [[server.url, True]]
        assert status["circuit_breaker_status"] == {
            server.url: {"state": "closed", "failure_count": 0, "last_failure_ms": None}}
        assert status["load_balancing_strategy"] == "round_robin"
