"""Targets that follow DNS and a watched file, through a real gateway.

Real pieces throughout: a DNS server on loopback (``velithon.testing.DNSServer``), real
backends, our server in front of a ``Velithon`` app, httpx as the client. A steady,
light load runs while records change; every request of it must succeed. Refresh
intervals are short (0.2 s) so the changes land quickly; every wait is bounded.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from velithon import ProxyLoadBalancer, Velithon
from velithon.admin import mount_admin
from velithon.gateway import GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware
from velithon.testing import Backend, RecordedRequest, open_backend, open_dns_server
from velithon.testing import SrvRecord as Srv

from support.catalogue import assert_gateway_error, bounded, gateway
from support.gateway import served_by, serving

SERVICE = "_http._tcp.api.test"
HOST = "pods.test"  # every backend listens on 127.0.0.1: one A record for all SRV targets


def slow_aware(name: str) -> Callable[[RecordedRequest], Awaitable[dict[str, Any]]]:
    async def handler(request: RecordedRequest) -> dict[str, Any]:
        if request.path.endswith("/slow"):
            await trio.sleep(1.0)
        return {"backend": name}

    return handler


@asynccontextmanager
async def named_backends(*names: str, host: str = "127.0.0.1",
                         port: int = 0) -> AsyncIterator[list[Backend]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(
            open_backend(slow_aware(name), name=name, host=host, port=port)) for name in names]


def srv(*backends: Backend) -> list[Srv]:
    return [Srv(HOST, b.port) for b in backends]


@attrs.define
class Load:
    """Sequential requests, numbered, until stopped (or ``limit`` is reached)."""

    client: httpx.AsyncClient
    path: str = "/api/load"
    limit: int = 3000
    results: list[tuple[int, int, str | None]] = attrs.field(factory=list)
    stop: trio.Event = attrs.field(factory=trio.Event)

    @property
    def sent(self) -> int:
        return len(self.results)

    async def run(self) -> None:
        for n in range(self.limit):
            if self.stop.is_set():
                return
            response = await self.client.get(f"{self.path}?n={n}")
            backend = response.json().get("backend") if response.status_code == 200 else None
            self.results.append((n, response.status_code, backend))
            await trio.sleep(0.005)

    def served_by(self, since: int = 0) -> set[str | None]:
        """Who answered requests number ``since`` and later."""
        return {backend for n, _, backend in self.results if n >= since}

    def failures(self) -> list[tuple[int, int, str | None]]:
        return [r for r in self.results if r[1] != 200]


def numbers_seen(backend: Backend) -> list[int]:
    return [int(r.query.partition("n=")[2]) for r in backend.requests if r.path == "/api/load"]


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) for ``predicate``; changes under test land within a refresh or two."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


def discovery(route: Any) -> dict[str, Any]:
    [status] = route.discovery_status()
    return status  # type: ignore[no-any-return]


@bounded(40)
async def test_srv_targets_follow_dns_changes_without_failing_a_request() -> None:
    async with open_dns_server() as dns, named_backends("a", "b", "c") as (a, b, c):
        dns.set_addresses(HOST, ["127.0.0.1"])
        dns.set_srv(SERVICE, srv(a, b))
        route = GatewayRoute("/api/{path:path}", f"dns+srv://{SERVICE}",
                             dns_nameservers=[dns.nameserver], dns_refresh=0.2, dns_timeout=0.5)
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as cl:
            load = Load(cl)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(load.run)

                # a new instance gets traffic within a refresh
                await eventually(lambda: load.served_by() == {"a", "b"})
                dns.set_srv(SERVICE, srv(a, b, c))
                await eventually(lambda: "c" in load.served_by())

                # a removed one gets no new request, and its in-flight ones finish
                async with trio.open_nursery() as slow:
                    slow_results: list[httpx.Response] = []

                    async def one_slow() -> None:
                        slow_results.append(await cl.get("/api/slow"))

                    for _ in range(3):  # round robin over a, b, c: one of them lands on b
                        slow.start_soon(one_slow)
                    await eventually(lambda: any(r.path == "/api/slow" for r in b.requests))
                    dns.set_srv(SERVICE, srv(a, c))
                    await eventually(lambda: b.url not in route.targets)
                    removed_at = load.sent
                await eventually(lambda: load.sent > removed_at + 20)
                assert all(n <= removed_at for n in numbers_seen(b))
                assert sorted(r.json()["backend"] for r in slow_results) == ["a", "b", "c"]
                assert all(r.status_code == 200 for r in slow_results)

                # SERVFAIL, then silence: the last good set keeps serving
                dns.answer_servfail()
                await eventually(lambda: discovery(route)["consecutive_failures"] >= 2)
                assert "SERVFAIL" in discovery(route)["last_error"]
                failing_since = load.sent
                dns.go_silent()
                await eventually(lambda: "no answer within 0.5s" in discovery(route)["last_error"])
                await eventually(lambda: load.sent > failing_since + 20)
                assert load.served_by(failing_since) == {"a", "c"}
                assert sorted(route.targets) == sorted([a.url, c.url])

                dns.answer_normally()
                await eventually(lambda: discovery(route)["consecutive_failures"] == 0)
                load.stop.set()
        assert load.sent > 50
        assert load.failures() == []
        status = discovery(route)
        assert status["ready"] and status["size"] == 2 and status["failures"] >= 3


@bounded(20)
async def test_a_records_give_one_target_per_address() -> None:
    async with named_backends("one") as (one,):
        async with named_backends("two", host="127.0.0.2", port=one.port) as (two,), \
                open_dns_server() as dns:
            dns.set_addresses("api.test", ["127.0.0.1"])
            route = GatewayRoute("/api/{path:path}", f"dns://api.test:{one.port}",
                                 dns_nameservers=[dns.nameserver], dns_refresh=0.2)
            async with gateway(route) as gw, \
                    httpx.AsyncClient(base_url=gw.url, timeout=10) as cl:
                assert route.targets == [f"http://127.0.0.1:{one.port}"]
                assert set(await served_by(cl, "/api/x", 2)) == {"one"}
                dns.set_addresses("api.test", ["127.0.0.1", "127.0.0.2"])
                await eventually(lambda: len(route.targets) == 2)
                assert sorted(await served_by(cl, "/api/x", 4)) == ["one", "one", "two", "two"]
                dns.set_addresses("api.test", ["127.0.0.2"])
                await eventually(lambda: len(route.targets) == 1)
                assert set(await served_by(cl, "/api/x", 3)) == {"two"}
                assert two.url in route.targets[0]


def write_targets(path: Path, *backends: Backend, weight: int = 1) -> None:
    """Atomically, as the docs recommend."""
    groups = [{"targets": [f"127.0.0.1:{b.port}" for b in backends],
               "labels": {"weight": str(weight), "job": "api"}}]
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(groups))
    os.replace(temporary, path)


@bounded(30)
async def test_a_file_sd_file_is_followed_without_failing_a_request(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    async with named_backends("a", "b", "c") as (a, b, c):
        write_targets(path, a, b)
        proxy = ProxyMiddleware(targets=[f"file://{path}"], path_prefix="/api",
                                file_refresh=0.1, health_check_interval=3600)
        async with gateway(middleware=[proxy]) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=10) as cl:
            load = Load(cl)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(load.run)
                await eventually(lambda: load.served_by() == {"a", "b"})
                write_targets(path, a, c)
                await eventually(lambda: b.url not in proxy.targets)
                changed_at = load.sent  # the request in flight now may still have gone to b
                await eventually(lambda: load.sent > changed_at + 20)
                assert load.served_by(changed_at + 1) == {"a", "c"}

                path.write_text("[{")  # a broken edit: the set stays
                await eventually(lambda: "not valid JSON" in (discovery(proxy)["last_error"]
                                                              or ""))
                broken_at = load.sent
                await eventually(lambda: load.sent > broken_at + 10)
                assert load.served_by(broken_at) == {"a", "c"}

                write_targets(path, c, weight=2)
                await eventually(lambda: proxy.targets == [c.url])
                load.stop.set()
            status = await proxy.get_proxy_status()
        assert load.failures() == []
        assert status["discovery"][0]["source"] == f"file://{path}"
        assert status["discovery"][0]["targets"] == [c.url]


@bounded(20)
async def test_a_route_starts_before_dns_answers_and_serves_once_it_does() -> None:
    async with open_dns_server() as dns, named_backends("a") as (a,):
        dns.answer_servfail()
        route = GatewayRoute("/api/{path:path}", f"dns+srv://{SERVICE}",
                             dns_nameservers=[dns.nameserver], dns_refresh=0.2)
        app = Velithon()
        app.routes.append(route)
        mount_admin(app)
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as cl:
            assert not route.discovery_ready()
            response = await cl.get("/api/x")
            body = assert_gateway_error(response, 503)
            assert "none discovered so far" in body["detail"]
            assert response.headers["retry-after"]
            ready = await cl.get("/_velithon/ready")
            assert ready.status_code == 503 and not ready.json()["ready"]

            dns.answer_normally()
            dns.set_addresses(HOST, ["127.0.0.1"])
            dns.set_srv(SERVICE, srv(a))
            await eventually(route.discovery_ready)
            assert await served_by(cl, "/api/x", 2) == ["a", "a"]
            assert (await cl.get("/_velithon/ready")).json() == {"ready": True, "reasons": []}

            # the admin surface shows the source: set size, lookups, the failures before
            [source] = (await cl.get("/_velithon/status")).json()["routes"][0]["discovery"]
            assert source["source"] == f"dns+srv://{SERVICE}" and source["ready"]
            assert source["size"] == 1 and source["failures"] >= 1
            assert source["seconds_since_success"] is not None
            families = {f.name: f for f in text_string_to_metric_families(
                (await cl.get("/_velithon/metrics")).text)}
            [size] = families["velithon_discovery_targets"].samples
            assert size.labels["source"] == f"dns+srv://{SERVICE}" and size.value == 1
            [ready_sample] = families["velithon_discovery_ready"].samples
            assert ready_sample.value == 1
            assert families["velithon_discovery_failures"].samples[0].value >= 1


@bounded(20)
async def test_proxy_load_balancer_follows_srv_without_async_with() -> None:
    """Each call runs the system just for that call; the discovered set carries over."""
    async with open_dns_server() as dns, named_backends("a", "b") as (a, b):
        dns.set_addresses(HOST, ["127.0.0.1"])
        dns.set_srv(SERVICE, srv(a, b), ttl=60)
        lb = ProxyLoadBalancer([f"dns+srv://{SERVICE}"], dns_nameservers=[dns.nameserver])
        assert lb.targets == []
        picked = [await lb.get_next_target() for _ in range(4)]
        assert sorted(picked) == sorted([a.url, b.url] * 2)
        assert len([q for q in dns.queries if q.rdtype == "SRV"]) == 1  # not before the TTL
        assert lb.statistics() is None and lb.discovery_status()[0]["size"] == 2
