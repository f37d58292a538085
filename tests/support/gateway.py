"""Shared helpers for gateway integration tests: serve an app, run backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import trio

from velithon.server import ServerConfig, serve_tcp
from velithon.testing import Backend, open_backend


@asynccontextmanager
async def serving(app: Any, **config: Any) -> AsyncIterator[str]:
    """Serve ``app`` with our server on an ephemeral loopback port; yields its URL."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: serve_tcp(app, ServerConfig(host="127.0.0.1", port=0, **config),
                                          shutdown_trigger=stop, task_status=task_status))
        try:
            yield f"http://127.0.0.1:{bound[0][1]}"
        finally:
            stop.set()


@asynccontextmanager
async def backends(*names: str, **kwargs: Any) -> AsyncIterator[list[Backend]]:
    """Several real HTTP backends on loopback, each echoing its own name."""
    async with AsyncExitStack() as stack:
        running = [await stack.enter_async_context(open_backend(name=name, **kwargs))
                   for name in names]
        yield running


@asynccontextmanager
async def client(base_url: str, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0, **kwargs) as c:
        yield c


async def served_by(c: httpx.AsyncClient, path: str, n: int, method: str = "GET") -> list[str]:
    """Send ``n`` requests and return which backend answered each."""
    names = []
    for _ in range(n):
        response = await c.request(method, path)
        assert response.status_code == 200, response.text
        names.append(response.json()["backend"])
    return names
