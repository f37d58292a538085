"""Per-request overhead of the app over a raw ASGI callable (the hello-world JSON path).

Target: the app adds < 15 µs per request. Best of several rounds (the least
disturbed by other load). Run: ``python benchmarks/bench_app.py``.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from velithon import Velithon

BODY = b'{"message":"Hello, World!"}'


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"27"), (b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


def make_app(extra_routes: int = 0, middleware: int = 0) -> Velithon:
    app = Velithon()
    for i in range(extra_routes):
        app.add_route(f"/r{i}/{{x:int}}", lambda x: x)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"message": "Hello, World!"}

    class Passthrough:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    for _ in range(middleware):
        app.add_middleware(Passthrough)
    return app


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    pass


def _scope() -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/hello", "raw_path": b"/hello",
            "query_string": b"", "headers": [(b"host", b"x")],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


async def per_request_seconds(app: Any, n: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            await app(_scope(), _receive, _send)
        best = min(best, (time.perf_counter() - start) / n)
    return best


async def _report() -> None:
    n = 20_000
    raw = await per_request_seconds(raw_app, n)
    print(f"raw ASGI callable:            {raw * 1e6:6.2f} µs/request")
    cases = [("Velithon hello JSON", make_app()),
             ("  + 20 param routes before", make_app(extra_routes=20)),
             ("  + 2 passthrough middleware", make_app(middleware=2))]
    for label, app in cases:
        t = await per_request_seconds(app, n)
        print(f"{label:30s}{t * 1e6:6.2f} µs/request (overhead {(t - raw) * 1e6:5.2f} µs)")
    app = make_app()
    async with app.run_services():
        t = await per_request_seconds(app, n)
    print(f"{'  with services running':30s}{t * 1e6:6.2f} µs/request "
          f"(overhead {(t - raw) * 1e6:5.2f} µs)")


if __name__ == "__main__":
    trio.run(_report)
