"""Catalogue C (reliability.md §5, cases 18–24): paths, encodings and SSRF.

Requests are raw bytes (an HTTP client would normalise the very paths under test). The
route under test forwards ``/api/{path:path}`` to a backend whose base path is ``/svc``
(``strip_path=True``), so "climbing above ``/svc/``" is visible in ``backend.requests``.
SSRF tests run a canary on 127.0.0.2 that must accept 0 connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from velithon.gateway import GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware
from velithon.testing import (
    Backend,
    BackendResponse,
    RecordedRequest,
    open_backend,
    open_canary,
)

from support.catalogue import (
    Served,
    assert_error_json,
    assert_gateway_error,
    bounded,
    gateway,
    request_bytes,
)


@asynccontextmanager
async def svc_gateway(facade: str = "route") -> AsyncIterator[tuple[Backend, Served]]:
    """``/api/<rest>`` → backend ``/svc/<rest>``, through a route or the middleware."""
    async with open_backend(name="svc") as b:
        if facade == "route":
            route = GatewayRoute("/api/{path:path}", [b.url + "/svc"], strip_path=True,
                                 max_retries=0)
            ctx = gateway(route)
        elif facade == "rewrite":
            route = GatewayRoute("/api/{path:path}", [b.url], path_rewrite="/svc/{path}",
                                 max_retries=0)
            ctx = gateway(route)
        else:
            proxy = ProxyMiddleware(targets=[b.url], path_prefix="/api",
                                    upstream_path_prefix="/svc", max_retries=0,
                                    health_check_interval=3600)
            ctx = gateway(middleware=[proxy])
        async with ctx as gw:
            yield b, gw
            await gw.assert_serves()


FACADES = pytest.mark.parametrize("facade", ["route", "rewrite", "middleware"])


def _targets(b: Backend) -> list[str]:
    return [r.target for r in b.requests]


# ---- 18. dot-segment traversal ------------------------------------------------------

TRAVERSALS = [
    "/api/../admin",
    "/api/./../admin",
    "/api/%2e%2e/admin",
    "/api/.%2e/admin",
    "/api/%2E%2E%2Fadmin",
    "/api/..%5cadmin",
    "/api/x/../../admin",
    "/api/x/%2e%2e/%2e%2e/admin",
    "/api/..;jsessionid=1/admin",
    "/api/.",
    "/api/x/..",
]


@FACADES
@bounded(10)
async def test_18_dot_segments_are_refused_and_never_reach_the_backend(facade: str) -> None:
    async with svc_gateway(facade) as (b, gw):
        for path in TRAVERSALS:
            response = await gw.raw(request_bytes("GET", path))
            if response.status == 404:  # not routed at all (it no longer matches /api/...)
                assert_error_json(response, 404)
            else:
                assert response.status == 400, (path, response.status, response.body)
                assert_gateway_error(response, 400)
    assert b.requests == [], [r.target for r in b.requests]


# ---- 19. encoded slashes, backslashes, double encoding ------------------------------


@FACADES
@pytest.mark.parametrize(("path", "forwarded"), [
    ("/api/a%2Fb", "/svc/a%2Fb"),  # KEEP_UNCHANGED: an encoded slash is data
    ("/api/a%2fb/c", "/svc/a%2fb/c"),
    ("/api/%252e%252e/x", "/svc/%252e%252e/x"),  # decoded at most once
    ("/api/a%20b", "/svc/a%20b"),
    ("/api/caf%C3%A9", "/svc/caf%C3%A9"),
])
@bounded(10)
async def test_19_escapes_are_forwarded_byte_exact(facade: str, path: str, forwarded: str) -> None:
    async with svc_gateway(facade) as (b, gw):
        response = await gw.raw(request_bytes("GET", path))
        assert response.status == 200, response.body
    assert _targets(b) == [forwarded]


@FACADES
@pytest.mark.parametrize("path", ["/api/a%5Cb", "/api/a%5cb", "/api/a\\b"])
@bounded(10)
async def test_19_backslashes_are_refused(facade: str, path: str) -> None:
    async with svc_gateway(facade) as (b, gw):
        response = await gw.raw(request_bytes("GET", path))
        assert_gateway_error(response, 400)
    assert b.requests == []


# ---- 20. slash merging / empty segments --------------------------------------------


@FACADES
@pytest.mark.parametrize(("path", "allowed"), [
    ("/api/x//y", {"/svc/x//y"}),  # empty segments inside the path are kept
    ("/api//x", {"/svc/x", "/svc//x"}),  # merged (strip) or preserved (rewrite)
    ("/api/x/", {"/svc/x/"}),
])
@bounded(10)
async def test_20_empty_segments_are_kept_consistently(facade: str, path: str,
                                                       allowed: set[str]) -> None:
    async with svc_gateway(facade) as (b, gw):
        response = await gw.raw(request_bytes("GET", path))
        assert response.status == 200, response.body
    [target] = _targets(b)
    assert target in allowed


@FACADES
@bounded(10)
async def test_20_bare_prefix_is_routed_or_refused_consistently(facade: str) -> None:
    async with svc_gateway(facade) as (b, gw):
        response = await gw.raw(request_bytes("GET", "/api"))
    if response.status == 404:  # the route does not cover its bare prefix: not forwarded
        assert_error_json(response, 404)
        assert b.requests == []
    else:
        assert response.status == 200
        assert _targets(b) in (["/svc/"], ["/svc"])


@FACADES
@bounded(10)
async def test_20_a_path_that_does_not_match_the_prefix_is_not_forwarded(facade: str) -> None:
    async with svc_gateway(facade) as (b, gw):
        for path in ("//api/x", "/apix", "/ap/i/x"):
            response = await gw.raw(request_bytes("GET", path))
            assert_error_json(response, 404)
    assert b.requests == []


@pytest.mark.parametrize("facade", ["route", "middleware"])
@pytest.mark.parametrize("path", ["/%61pi/x", "/api%2Fx"])
@bounded(10)
async def test_20_routing_decision_and_forwarded_path_agree(facade: str, path: str) -> None:
    """§2.4 rule: route and forward from the same canonical form. ``/%61pi/x`` is either
    not this route (404) or it is ``/api/x`` and then reaches the backend as ``/svc/x``."""
    async with svc_gateway(facade) as (b, gw):
        response = await gw.raw(request_bytes("GET", path))
    if response.status == 200:
        assert _targets(b) == ["/svc/x"]
    else:
        assert response.status in (400, 404) and b.requests == []


# ---- 21. SSRF via the captured path -------------------------------------------------


def _ssrf_paths(port: int) -> list[str]:
    k = f"127.0.0.2:{port}"
    return [
        f"/api///{k}/x",
        f"/api//{k}/x",
        f"/api/http://{k}/x",
        f"/api/http:%2F%2F{k}/x",
        f"/api/@{k}/x",
        f"/api/%2F%2F{k}/x",
        f"/api/%2f%2f{k}/x",
        "/api/\\\\127.0.0.2/x",
        f"/api/%5C%5C{k}/x",
        f"/api/https://{k}/x",
    ]


@pytest.mark.parametrize("facade", ["route", "rewrite", "middleware", "nostrip"])
@bounded(15)
async def test_21_ssrf_payloads_in_the_path_never_reach_another_host(facade: str) -> None:
    async with open_canary() as canary, open_backend() as b:
        if facade == "route":
            kwargs: dict[str, Any] = {"routes": [GatewayRoute("/api/{path:path}", [b.url],
                                                              strip_path=True, max_retries=0)]}
        elif facade == "rewrite":
            kwargs = {"routes": [GatewayRoute("/api/{path:path}", [b.url],
                                              path_rewrite="/{path}", max_retries=0)]}
        elif facade == "nostrip":
            kwargs = {"routes": [GatewayRoute("/api/{path:path}", [b.url], max_retries=0)]}
        else:
            kwargs = {"middleware": [ProxyMiddleware(targets=[b.url], path_prefix="/api",
                                                     max_retries=0, health_check_interval=3600)]}
        routes, middleware = kwargs.get("routes", ()), kwargs.get("middleware", ())
        async with gateway(*routes, middleware=middleware) as gw:
            for path in _ssrf_paths(canary.port):
                response = await gw.raw(request_bytes("GET", path))
                if response.status != 200:
                    assert_gateway_error(response, 400)
            await gw.assert_serves()
    canary.assert_untouched()
    assert b.requests, "the well-formed payloads must reach the configured backend"
    for request in b.requests:
        assert request.target.startswith("/") and not request.target.startswith("//"), \
            request.target
        assert "\\" not in request.target


# ---- 22. SSRF via absolute-form / Host ---------------------------------------------


@pytest.mark.parametrize("preserve_host", [False, True])
@bounded(10)
async def test_22_absolute_form_and_host_never_choose_the_upstream(preserve_host: bool) -> None:
    async with open_canary() as canary, open_backend() as b:
        route = GatewayRoute("/api/{path:path}", [b.url], preserve_host=preserve_host,
                             max_retries=0)
        async with gateway(route) as gw:
            k = f"127.0.0.2:{canary.port}"
            # absolute-form naming another host than Host: refused outright
            mismatched = await gw.raw(request_bytes("GET", f"http://{k}/api/x", host="gw.test"))
            assert_error_json(mismatched, 400)
            # Host naming the canary: routed only to the configured backend
            by_host = await gw.raw(request_bytes("GET", "/api/x", host=k))
            assert by_host.status == 200
            # absolute-form consistent with Host: still only the configured backend
            consistent = await gw.raw(request_bytes("GET", f"http://{k}/api/y", host=k))
            assert consistent.status == 200
            await gw.assert_serves()
    canary.assert_untouched()
    assert [r.target for r in b.requests] == ["/api/x", "/api/y"]
    assert all(r.header("host") == (k if preserve_host else f"127.0.0.1:{b.port}")
               for r in b.requests)


# ---- 23. control characters in path and query --------------------------------------


@FACADES
@pytest.mark.parametrize(("target", "forwarded"), [
    ("/api/a%0d%0aX-Injected:%201", "/svc/a%0d%0aX-Injected:%201"),
    ("/api/x?u=%0d%0a&b=2&a=1", "/svc/x?u=%0d%0a&b=2&a=1"),
    ("/api/x?b=2&a=1&b=1&q=%00", "/svc/x?b=2&a=1&b=1&q=%00"),
    ("/api/x?", "/svc/x"),
    ("/api/x?redirect=http://127.0.0.2/", "/svc/x?redirect=http://127.0.0.2/"),
])
@bounded(10)
async def test_23_encoded_controls_are_forwarded_encoded(facade: str, target: str,
                                                         forwarded: str) -> None:
    async with svc_gateway(facade) as (b, gw):
        response = await gw.raw(request_bytes("GET", target))
        assert response.status == 200, response.body
    [seen] = b.requests
    assert seen.target in (forwarded, forwarded + "?")
    assert seen.header("x-injected") is None


@FACADES
@bounded(10)
async def test_23_encoded_nul_in_the_path_is_refused(facade: str) -> None:
    async with svc_gateway(facade) as (b, gw):
        response = await gw.raw(request_bytes("GET", "/api/a%00b"))
        assert_gateway_error(response, 400)
    assert b.requests == []


@pytest.mark.parametrize("target", [
    b"/api/a b",
    b"/api/\xff\xfe",
    b"/api/a\x01b",
    b"/api/x?a=\x7f",
    b"/api/x?a=b c",
])
@bounded(10)
async def test_23_raw_controls_and_non_ascii_are_a_clean_400(target: bytes) -> None:
    async with svc_gateway() as (b, gw):
        async with gw.connect() as conn:
            await conn.send(request_bytes("GET", target))
            response = await conn.receive_response(timeout=3)
            assert await conn.wait_closed(2.0)
        assert_error_json(response, 400)
    assert b.requests == []


# ---- 24. open redirect ---------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "//evil.example/",
    "/\\evil.example/",
    "//evil.example/%2e%2e",
    "/%2F%2Fevil.example",
    "/api//evil.example/",
    "/api/%2F%2Fevil.example",
])
@bounded(10)
async def test_24_no_gateway_generated_redirect_leaves_the_origin(target: str) -> None:
    async with svc_gateway() as (b, gw):
        response = await gw.raw(request_bytes("GET", target))
    if 300 <= response.status < 400 and b.requests == []:  # a redirect of our own
        location = response.header("location") or ""
        assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
    for header in response.header_values("location"):
        assert not header.startswith(("//", "/\\")), header
    assert response.status in (200, 400, 404)


async def _redirecting(request: RecordedRequest) -> BackendResponse:
    return BackendResponse(302, [("Location", "http://10.1.2.3:8080/internal/x?y=1")], b"")


@bounded(10)
async def test_24_backend_location_is_passed_through_untouched() -> None:
    async with open_backend(_redirecting) as b:
        async with gateway(GatewayRoute("/api/{path:path}", [b.url])) as gw:
            response = await gw.raw(request_bytes("GET", "/api/go"))
    assert response.status == 302 and response.complete
    assert response.header_values("location") == ["http://10.1.2.3:8080/internal/x?y=1"]
