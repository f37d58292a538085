"""The app the demo serves: a gateway route over the backends, and the backend controls.

* ``/api/{path:path}`` — a ``GatewayRoute`` over every backend: active health checks
  on ``/health`` (every second by default: the demo wants changes to show quickly),
  two retries on another backend, a 2 s deadline per try;
* ``/status`` — each target's health, breaker, ejection, in-flight count, latency and
  counters, with the backend's name;
* ``/demo`` — the backends, their current settings, and the controls;
* ``POST /demo/backends/{name}/{action}`` — the controls (:data:`ACTIONS`);
* ``/`` — the dashboard, and the admin surface (status JSON, metrics) under
  :data:`ADMIN_PATH` (:func:`mount_dashboard`, called last so it wraps every route).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .._app.application import Velithon
from .._app.requests import Request
from .._app.responses import HTTPException
from .._facades.route import GatewayRoute
from ..admin import mount_admin
from .backends import DemoBackend

__all__ = ["ACTIONS", "ADMIN_PATH", "build_demo_app", "mount_dashboard"]

ADMIN_PATH = "/_velithon"
DEFAULT_SLOW_MS = 300

#: control name -> what it does (shown by ``/demo`` and in the banner)
ACTIONS = {
    "slow": f"add latency to every answer (?ms=N, default {DEFAULT_SLOW_MS})",
    "fast": "remove the added latency",
    "unhealthy": "make /health fail: the next health check takes the backend out",
    "healthy": "make /health pass: the next health check brings it back",
    "flap": "make /health fail and pass in turn",
    "kill": "close the backend's port and its connections (requests are retried elsewhere)",
    "restart": "listen again on the same port",
}


def build_demo_app(backends: Sequence[DemoBackend], *, strategy: str,
                   health_interval: float) -> Velithon:
    """The gateway app, with the dashboard mounted."""
    app = Velithon()
    route = GatewayRoute(
        "/api/{path:path}",
        [backend.url for backend in backends],
        name="api",
        load_balancing_strategy=strategy,
        health_check_path="/health",
        health_check_interval=health_interval,
        timeout_ms=10000,
        per_try_timeout_ms=2000,
        max_retries=2,
    )
    app.routes.append(route)
    by_url = {backend.url: backend.name for backend in backends}
    by_name = {backend.name: backend for backend in backends}

    @app.get("/status")
    async def status() -> dict[str, Any]:
        rows = await route.targets_status()
        return {"route": route.path, "strategy": route.load_balancing_strategy,
                "health_check_interval_s": health_interval,
                "targets": [{"backend": by_url.get(row["url"]), **row} for row in rows]}

    @app.get("/demo")
    async def demo() -> dict[str, Any]:
        return {"backends": [backend.describe() for backend in backends],
                "controls": {f"POST /demo/backends/{{name}}/{action}": what
                             for action, what in ACTIONS.items()}}

    @app.post("/demo/backends/{name}/{action}")
    async def control(request: Request, name: str, action: str) -> dict[str, Any]:
        backend = by_name.get(name)
        if backend is None or action not in ACTIONS:
            raise HTTPException(404, f"use POST /demo/backends/<{'|'.join(by_name)}>/"
                                     f"<{'|'.join(ACTIONS)}>")
        failure = await _CONTROLS[action](backend, request)
        if failure is not None:
            raise HTTPException(409, failure)
        return backend.describe()

    mount_dashboard(app)
    return app


def mount_dashboard(app: Velithon) -> None:
    """The admin surface at ``ADMIN_PATH`` (status, metrics) and its dashboard at ``/``."""
    mount_admin(app, path=ADMIN_PATH, dashboard_at_root=True)


async def _slow(backend: DemoBackend, request: Request) -> str | None:
    text = request.query_params.get("ms") or str(DEFAULT_SLOW_MS)
    try:
        ms = int(text)
    except ValueError:
        ms = -1
    if not 0 <= ms <= 60_000:
        return f"ms must be a whole number of milliseconds in 0..60000, got {text!r}"
    backend.change(latency=ms / 1000)
    return None


async def _set(backend: DemoBackend, request: Request, **changes: Any) -> str | None:
    backend.change(**changes)
    return None


async def _kill(backend: DemoBackend, request: Request) -> str | None:
    return await backend.kill()


async def _restart(backend: DemoBackend, request: Request) -> str | None:
    return await backend.restart()


_Control = Callable[[DemoBackend, Request], Awaitable[str | None]]
_CONTROLS: dict[str, _Control] = {
    "slow": _slow,
    "fast": lambda backend, request: _set(backend, request, latency=0.0),
    "unhealthy": lambda backend, request: _set(backend, request, health="unhealthy"),
    "healthy": lambda backend, request: _set(backend, request, health="healthy"),
    "flap": lambda backend, request: _set(backend, request, health="flapping"),
    "kill": _kill,
    "restart": _restart,
}
