"""``velithon demo``: a gateway over three local backends, no configuration.

Everything runs in one trio process: three small Velithon backends on
ephemeral loopback ports, and a gateway app on ``--port`` (8000) with

* ``/api/{path:path}`` — a ``GatewayRoute`` (round robin, health checks every
  5 s) over the three backends,
* ``/status`` — per-target health, breaker, in-flight and latency,
* ``/backends/{name}/down`` and ``/backends/{name}/up`` — make a backend's
  health check fail or pass, to watch traffic move.
"""

from __future__ import annotations

from typing import Any

import trio

from ._app.application import Velithon
from ._facades.route import GatewayRoute
from ._structured import first_leaf
from .server._config import ServerConfig
from .server._run import serve_tcp


def backend_app(name: str, health: dict[str, bool]) -> Velithon:
    """A tiny service that says who answered, with a switchable /health."""
    app = Velithon()

    @app.get("/health")
    async def healthcheck() -> Any:
        from ._app.responses import JSONResponse

        ok = health[name]
        return JSONResponse({"status": "healthy" if ok else "failing", "backend": name},
                            status_code=200 if ok else 503)

    @app.route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(request: Any, path: str) -> Any:
        body = await request.body()
        return {"backend": name, "method": request.method, "path": "/" + path,
                "query": request.url.query, "body_bytes": len(body)}

    return app


def gateway_app(targets: list[str], health: dict[str, bool]) -> Velithon:
    app = Velithon()
    route = GatewayRoute(
        path="/api/{path:path}",
        targets=targets,
        load_balancing_strategy="round_robin",
        health_check_path="/health",
        health_check_interval=5,
        timeout_ms=10000,
        max_retries=2,
    )
    app.routes.append(route)

    @app.get("/status")
    async def status() -> Any:
        return {"route": route.path, "strategy": route.load_balancing_strategy,
                "targets": await route.targets_status()}

    @app.get("/backends/{name}/{state}")
    async def switch(name: str, state: str) -> Any:
        if name not in health or state not in ("up", "down"):
            from ._app.responses import JSONResponse

            return JSONResponse({"error": "Not Found", "status": 404,
                                 "detail": f"use /backends/<{'|'.join(health)}>/<up|down>"},
                                status_code=404)
        health[name] = state == "up"
        return {"backend": name, "healthy": health[name],
                "note": "the gateway notices at its next health check (every 5 s)"}

    return app


async def run_demo(host: str = "127.0.0.1", port: int = 8000,
                   *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
                   shutdown_trigger: trio.Event | None = None) -> None:
    """Run the demo until ``shutdown_trigger`` is set (or cancelled)."""
    health = {"alpha": True, "beta": True, "gamma": True}
    trigger = shutdown_trigger if shutdown_trigger is not None else trio.Event()
    async with trio.open_nursery() as backends:
        targets = []
        for name in health:
            bound = await backends.start(serve_tcp, backend_app(name, health),
                                         ServerConfig(host="127.0.0.1", port=0))
            targets.append(f"http://127.0.0.1:{bound[0][1]}")
        gateway = gateway_app(targets, health)
        async with trio.open_nursery() as front:
            bound = await front.start(
                lambda task_status: serve_tcp(gateway, ServerConfig(host=host, port=port),
                                              shutdown_trigger=trigger, task_status=task_status))
            url = f"http://{bound[0][0]}:{bound[0][1]}"
            print(f"velithon demo: gateway on {url} over {', '.join(targets)}", flush=True)
            print(f"  try: curl {url}/api/hello   curl {url}/status   "
                  f"curl {url}/backends/beta/down", flush=True)
            task_status.started(bound)
        backends.cancel_scope.cancel()  # the gateway has drained: stop the backends


def main_demo(host: str = "127.0.0.1", port: int = 8000) -> int:
    """Blocking entry point for the CLI: runs until SIGINT or SIGTERM."""
    import signal

    async def main() -> None:
        trigger = trio.Event()
        async with trio.open_nursery() as nursery:
            async def on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        trigger.set()
                        return

            nursery.start_soon(on_signal)
            await run_demo(host, port, shutdown_trigger=trigger)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except BaseExceptionGroup as group:  # report a startup failure in one line, like `run`
        startup = group.subgroup(lambda e: type(e).__name__ == "ServerStartupError")
        if startup is None:
            raise
        raise first_leaf(startup) from None
    return 0
