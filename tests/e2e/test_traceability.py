"""Access log lines, the failed-tries summary, request IDs and the upstream-target header,
through the real gateway: our server, real backends, httpx.

Access lines are written once the server has settled an exchange, which can be a moment
after the client has its response; so they are read after the gateway has shut down.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from velithon.gateway import GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware
from velithon.testing import Fault

from support.catalogue import bounded, gateway
from support.gateway import backends, serving
from support.logs import lines

CLOSED = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused


def is_generated(text: str) -> bool:
    """What the gateway makes up: 128 random bits in lowercase hex."""
    return re.fullmatch(r"[0-9a-f]{32}", text) is not None


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="velithon.access")
    caplog.set_level(logging.INFO, logger="velithon.proxy")
    return caplog


@bounded(20)
async def test_access_lines_for_a_retried_proxied_request_and_a_plain_route(
        logs: pytest.LogCaptureFixture) -> None:
    async with backends("a", "b") as (a, b):
        a.set_fault(Fault.status(503), times=1)
        route = GatewayRoute("/api/{path:path}", [a.url, b.url], name="api", max_retries=2)
        async with gateway(route, access_log=True) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
            proxied = await client.get("/api/items?page=2")
            local = await client.get("/local/ping")
    assert proxied.status_code == 200 and proxied.json()["backend"] == "b"
    first, second = lines(logs, "velithon.access")
    port = first["client"].rsplit(":", 1)[1]
    assert first["client"] == f"127.0.0.1:{port}" and port.isdigit()
    assert {k: first[k] for k in ("method", "path", "status", "bytes", "route", "target",
                                  "attempts")} == {
        "method": "GET", "path": "/api/items?page=2", "status": "200",
        "bytes": str(len(proxied.content)), "route": "api", "target": b.url, "attempts": "2"}
    assert first["request_id"] == proxied.headers["x-request-id"]
    assert 0 < float(first["upstream_ms"]) <= float(first["total_ms"])
    # a plain app route: the server's fields only
    assert second == {"client": second["client"], "method": "GET", "path": "/local/ping",
                      "status": "200", "bytes": str(len(local.content)),
                      "total_ms": second["total_ms"]}
    # and the retry is summed up once, at INFO: a retry saved the request
    [summary] = lines(logs, "velithon.proxy")
    assert [r.levelno for r in logs.records if r.name == "velithon.proxy"] == [logging.INFO]
    assert summary["event"] == "retry_succeeded" and summary["route"] == "api"
    assert summary["attempts"] == "2" and summary["status"] == "200"
    assert summary["tries"] == f"{a.url} answered 503; {b.url} answered 200"
    assert summary["request_id"] == first["request_id"]


@bounded(20)
async def test_no_access_line_when_the_access_log_is_off(
        logs: pytest.LogCaptureFixture) -> None:
    async with backends("a") as (a,):
        route = GatewayRoute("/api/{path:path}", [a.url])
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
            assert (await client.get("/api/x")).status_code == 200
            assert (await client.get("/local/ping")).status_code == 200
    assert lines(logs, "velithon.access") == []


@bounded(20)
async def test_a_request_that_finally_fails_gets_one_warning_listing_every_try(
        logs: pytest.LogCaptureFixture) -> None:
    async with backends("a") as (a,):
        a.set_fault(Fault.status(502))
        route = GatewayRoute("/api/{path:path}", [CLOSED, a.url], name="api", max_retries=1)
        async with gateway(route, access_log=True) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
            response = await client.get("/api/x")
    assert response.status_code == 502
    records = [r for r in logs.records if r.name == "velithon.proxy"]
    assert [r.levelno for r in records] == [logging.WARNING]
    [summary] = lines(logs, "velithon.proxy")
    assert summary["event"] == "request_failed" and summary["attempts"] == "2"
    tries = summary["tries"].split("; ")
    assert tries[0].startswith(f"{CLOSED} connect: ") and tries[1] == f"{a.url} answered 502"
    [access] = lines(logs, "velithon.access")
    assert access["status"] == "502" and access["attempts"] == "2"
    assert access["target"] == a.url  # the last one tried
    assert access["request_id"] == response.headers["x-request-id"]  # errors carry it too


@bounded(20)
async def test_a_request_no_target_could_take_has_no_attempts(
        logs: pytest.LogCaptureFixture) -> None:
    route = GatewayRoute("/api/{path:path}", [CLOSED], name="api", health_check_path="/health",
                         health_check_interval=3600)
    async with gateway(route, access_log=True) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
        await route.health_check()  # the probe fails: the only target is down
        response = await client.get("/api/x")
    assert response.status_code == 503
    [access] = lines(logs, "velithon.access")
    assert access["route"] == "api" and access["attempts"] == "0" and "target" not in access
    assert access["request_id"] == response.headers["x-request-id"]


@bounded(20)
async def test_request_id_is_propagated_generated_or_replaced(
        logs: pytest.LogCaptureFixture) -> None:
    cases: list[tuple[list[tuple[str, str]], str | None]] = [
        ([("X-Request-ID", "client-abc-123")], "client-abc-123"),  # a valid one is kept
        ([], None),  # none: generated
        ([("X-Request-ID", "x" * 201)], None),  # oversized: replaced
        ([("X-Request-ID", "has space; <b>")], None),  # odd characters: replaced
        ([("X-Request-ID", "one"), ("X-Request-ID", "two")], None),  # several: replaced
    ]
    async with backends("a") as (a,):
        route = GatewayRoute("/api/{path:path}", [a.url])
        async with gateway(route, access_log=True) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
            returned = [(await client.get("/api/x", headers=sent)).headers.get_list(
                "x-request-id") for sent, _ in cases]
    seen = [request.header_values("x-request-id") for request in a.requests]
    logged = [line["request_id"] for line in lines(logs, "velithon.access")]
    for (_, kept), back, upstream, in_log in zip(cases, returned, seen, logged, strict=True):
        assert len(back) == 1 and upstream == back and in_log == back[0]
        if kept is not None:
            assert back[0] == kept
        else:
            assert is_generated(back[0])
    assert len(set(logged)) == len(cases)  # every request its own


@bounded(20)
async def test_request_id_header_name_is_configurable_and_can_be_turned_off() -> None:
    async with backends("a", "b") as (a, b):
        named = GatewayRoute("/named/{path:path}", [a.url], request_id_header="X-Correlation-ID")
        off = GatewayRoute("/off/{path:path}", [b.url], request_id_header=None)
        async with gateway(named, off) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
            first = await client.get("/named/x", headers={"X-Correlation-ID": "c-1"})
            second = await client.get("/off/x", headers={"X-Request-ID": "not ours"})
    assert first.headers["x-correlation-id"] == "c-1"
    assert a.requests[0].header_values("x-correlation-id") == ["c-1"]
    assert "x-request-id" not in second.headers
    assert b.requests[0].header_values("x-request-id") == ["not ours"]  # passed through as is


@bounded(20)
async def test_gateway_errors_carry_the_request_id() -> None:
    route = GatewayRoute("/api/{path:path}", [CLOSED], max_retries=0)
    async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
        failed = await client.get("/api/x", headers={"X-Request-ID": "trace-me"})
        unsafe = await client.get("/api/%2e%2e/admin", headers={"X-Request-ID": "trace-me-2"})
    assert failed.status_code == 502 and failed.headers["x-request-id"] == "trace-me"
    assert unsafe.status_code == 400 and unsafe.headers["x-request-id"] == "trace-me-2"


@bounded(20)
async def test_upstream_target_header_names_the_answering_target_only_when_asked() -> None:
    async with backends("a", "b") as (a, b):
        shown = GatewayRoute("/shown/{path:path}", [a.url, b.url],
                             upstream_target_header="X-Upstream-Target")
        hidden = GatewayRoute("/hidden/{path:path}", [a.url])
        async with gateway(shown, hidden) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
            answers = [await client.get("/shown/x") for _ in range(2)]
            plain = await client.get("/hidden/x")
    by_backend = {r.json()["backend"]: r.headers["x-upstream-target"] for r in answers}
    assert by_backend == {"a": a.url, "b": b.url}
    assert "x-upstream-target" not in plain.headers


@bounded(20)
async def test_proxy_middleware_takes_the_same_keywords_and_logs_its_name(
        logs: pytest.LogCaptureFixture) -> None:
    async with backends("a") as (a,):
        proxy = ProxyMiddleware(targets=[a.url], path_prefix="/api", enable_health_checks=False,
                                upstream_target_header="X-Upstream-Target",
                                request_id_header="X-Trace-ID")
        async with gateway(middleware=[proxy], access_log=True) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
            response = await client.get("/api/x", headers={"X-Trace-ID": "t-9"})
    assert response.headers["x-upstream-target"] == a.url
    assert response.headers["x-trace-id"] == "t-9"
    assert a.requests[0].header_values("x-trace-id") == ["t-9"]
    [access] = lines(logs, "velithon.access")
    assert access["route"] == "proxy_/api" and access["request_id"] == "t-9"


@bounded(20)
async def test_access_line_names_the_client_behind_a_trusted_proxy(
        logs: pytest.LogCaptureFixture) -> None:
    async with backends("a") as (a,):
        route = GatewayRoute("/api/{path:path}", [a.url], trusted_proxies=["127.0.0.1"])
        async with gateway(route, access_log=True) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
            await client.get("/api/x", headers={"X-Forwarded-For": "203.0.113.7"})
    [access] = lines(logs, "velithon.access")
    assert access["client"].startswith("127.0.0.1:") and access["client_ip"] == "203.0.113.7"


# ---- the documented examples, run as written ----------------------------------------------

DOCS = Path(__file__).parents[2] / "docs"


def python_block(page: str, containing: str) -> str:
    """The one ```python block of ``docs/<page>`` that contains ``containing``."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.DOTALL)
    [block] = [b for b in blocks if containing in b]
    return block


def test_server_md_log_line_parser_runs_as_written() -> None:
    namespace: dict[str, object] = {}
    exec(compile(python_block("server.md", "def parse_log_line"), "server.md", "exec"), namespace)
    assert callable(namespace["parse_log_line"])


@bounded(20)
async def test_load_balancing_md_tracing_example(logs: pytest.LogCaptureFixture) -> None:
    source = python_block("load-balancing.md", 'upstream_target_header="X-Upstream-Target"')
    async with backends("server1", "server2") as (s1, s2):
        source = source.replace("http://server1:8000", s1.url)
        source = source.replace("http://server2:8000", s2.url)
        namespace: dict[str, Any] = {}
        exec(compile(source, "load-balancing.md", "exec"), namespace)
        async with serving(namespace["app"], access_log=True) as url, \
                httpx.AsyncClient(base_url=url, timeout=5) as client:
            response = await client.get("/api/items", headers={"X-Request-ID": "doc-1"})
    assert response.headers["x-upstream-target"] == s1.url
    assert response.headers["x-request-id"] == "doc-1"
    [access] = lines(logs, "velithon.access")
    assert access["route"] == "api" and access["request_id"] == "doc-1"
