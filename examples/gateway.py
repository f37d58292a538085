"""The seed page's gateway, ready to point at your own backends.

    BACKENDS=http://127.0.0.1:9001,http://127.0.0.1:9002 velithon run examples.gateway:app

Routes:

* ``/api/...`` — load-balanced over ``BACKENDS`` (round robin, health checks on
  ``/health`` every 10 s, 3 retries on other targets, 30 s deadline);
* ``/gateway/health`` — the seed's health monitoring endpoint (503 when degraded);
* ``/gateway/targets`` — per-target detail (breaker, in-flight, latency, counters).
"""

from __future__ import annotations

import os
from typing import Any

from velithon import JSONResponse, Velithon
from velithon.gateway import Gateway, GatewayRoute

BACKENDS = os.environ.get("BACKENDS", "http://127.0.0.1:9001,http://127.0.0.1:9002").split(",")

app = Velithon()
gateway = Gateway()

api_route = GatewayRoute(
    path="/api/{path:path}",
    targets=BACKENDS,
    load_balancing_strategy="round_robin",
    health_check_path="/health",
    health_check_interval=10,
    timeout_ms=30000,
    max_retries=3,
)
gateway.routes.append(api_route)
app.routes.extend(gateway.routes)


@app.get("/gateway/health")
async def gateway_health() -> JSONResponse:
    health_status = await gateway.health_check_all()
    healthy = all(ok for targets in health_status.values() for _, ok in targets)
    body = {"status": "healthy" if healthy else "degraded", "backends": health_status}
    # 503 when degraded, so an outside health checker can act on the status code
    return JSONResponse(body, status_code=200 if healthy else 503)


@app.get("/gateway/targets")
async def gateway_targets() -> list[dict[str, Any]]:
    return await api_route.targets_status()
