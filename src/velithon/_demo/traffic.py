"""``velithon demo --traffic``: light, bounded client traffic through the demo's gateway.

Requests start on a fixed schedule (``rate`` per second, on deadlines so the rate does
not drift) and at most :data:`MAX_IN_FLIGHT` are outstanding: when the gateway is slow,
ticks are skipped rather than queued, so the demo never builds up a backlog. Every
``report_every`` seconds one line sums up what came back (statuses and which backend
answered). Each request reports its result over a bounded channel to the one task that
keeps the counts.
"""

from __future__ import annotations

import itertools
from collections import Counter

import attrs
import httpx
import trio

__all__ = ["MAX_IN_FLIGHT", "MAX_RATE", "send_traffic"]

MAX_RATE = 100.0  # requests per second: "light" traffic, whatever the user asks
MAX_IN_FLIGHT = 8
PATHS = ("/api/orders", "/api/users/7", "/api/search?q=demo", "/api/cart")


@attrs.frozen
class _Result:
    status: int | None  # None: no response (the gateway itself was unreachable)
    backend: str | None


async def send_traffic(url: str, rate: float, stop: trio.Event, *, report_every: float = 10.0,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """GET the gateway's ``/api/...`` at ``rate`` requests per second until ``stop`` is set."""
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"traffic rate must be in (0, {MAX_RATE:g}] requests/s, got {rate!r}")
    results_send, results = trio.open_memory_channel[_Result](MAX_IN_FLIGHT)
    in_flight = trio.CapacityLimiter(MAX_IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client, \
            trio.open_nursery() as nursery:
        nursery.start_soon(_report, results, report_every)

        async def one(path: str, slot: object) -> None:
            try:
                await results_send.send(await _get(client, path))
            finally:
                in_flight.release_on_behalf_of(slot)

        task_status.started()
        with trio.CancelScope() as ticking:
            nursery.start_soon(_cancel_on, stop, ticking)
            next_at = trio.current_time()
            for path in itertools.cycle(PATHS):
                next_at += 1.0 / rate
                await trio.sleep_until(next_at)
                slot = object()
                try:
                    in_flight.acquire_on_behalf_of_nowait(slot)
                except trio.WouldBlock:
                    continue  # the gateway is slower than the schedule: skip, never queue
                nursery.start_soon(one, path, slot)
        nursery.cancel_scope.cancel()


async def _cancel_on(stop: trio.Event, scope: trio.CancelScope) -> None:
    await stop.wait()
    scope.cancel()


async def _get(client: httpx.AsyncClient, path: str) -> _Result:
    try:
        response = await client.get(path)
    except httpx.HTTPError:
        return _Result(None, None)
    backend = None
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("backend"), str):
            backend = body["backend"]
    return _Result(response.status_code, backend)


async def _report(results: trio.MemoryReceiveChannel[_Result], every: float) -> None:
    statuses: Counter[str] = Counter()
    backends: Counter[str] = Counter()
    deadline = trio.current_time() + every
    while True:
        with trio.move_on_at(deadline):
            async for result in results:
                statuses[str(result.status or "no answer")] += 1
                if result.backend is not None:
                    backends[result.backend] += 1
        deadline += every
        if statuses:
            print(f"traffic: {sum(statuses.values())} requests in {every:g} s; "
                  f"status {_counts(statuses)}; answered by {_counts(backends) or 'nobody'}",
                  flush=True)
        statuses.clear()
        backends.clear()


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key} x{count}" for key, count in sorted(counter.items()))
