"""Helpers for the admin surface's tests: a served gateway with the admin mounted, metric
lookups, and waiting (bounded) for a state that health probes bring about."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from velithon import Velithon
from velithon.admin import mount_admin

from support.gateway import serving


@attrs.frozen
class AdminGateway:
    """A gateway being served with its admin surface at ``/_velithon``."""

    url: str
    app: Velithon
    client: httpx.AsyncClient

    async def status(self) -> dict[str, Any]:
        response = await self.client.get("/_velithon/status")
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    async def targets(self, route: str) -> dict[str, dict[str, Any]]:
        """The status rows of one route or proxy, by target URL."""
        document = await self.status()
        for entry in document["routes"] + document["proxies"]:
            if entry["route"] == route:
                return {t["url"]: t for t in entry["targets"]}
        raise AssertionError(f"no route {route!r} in {document}")

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics``, parsed by prometheus_client's own parser."""
        response = await self.client.get("/_velithon/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return samples(response.text)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def metric(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@asynccontextmanager
async def admin_gateway(*routes: Any, middleware: Sequence[Any] = (),
                        **admin: Any) -> AsyncIterator[AdminGateway]:
    app = Velithon()
    app.routes.extend(routes)
    for item in middleware:
        app.add_middleware(item)
    mount_admin(app, **admin)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        yield AdminGateway(url, app, client)


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 5.0) -> None:
    """Wait until ``check()`` holds (health probes run on real time here); fail after
    ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.05)
