"""Catalogue B (reliability.md §5, cases 11–17): header hygiene through the real gateway.

Each test serves a Velithon app (GatewayRoute and/or ProxyMiddleware) with our server on
loopback, sends exact bytes (raw socket) or httpx requests, and checks what the backend
received (``backend.requests``) and what the client got.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

from velithon import ConfigError
from velithon.gateway import GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware
from velithon.testing import BackendResponse, RecordedRequest, open_backend

from support.catalogue import (
    FACADES,
    assert_error_json,
    bounded,
    facade_args,
    gateway,
    header_names,
    request_bytes,
)

# ---- 11. hop-by-hop removal (request) -----------------------------------------------


@FACADES
@bounded(10)
async def test_11_hop_by_hop_request_headers_are_removed(facade: str) -> None:
    async with open_backend(name="b") as b:
        args = facade_args(facade, b.url)
        async with gateway(*args.get("routes", ()), middleware=args.get("middleware", ())) as gw:
            response = await gw.raw(request_bytes("GET", "/api/x", [
                ("X-First", "1"),
                ("Connection", "keep-alive, X-Secret"),
                ("X-Secret", "s"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("Proxy-Authorization", "Basic eA=="),
                ("TE", "gzip"),
                ("Trailer", "X-T"),
                ("Upgrade", "h2c"),
                ("X-Keep", "1"),
                ("Accept", "text/plain"),
                ("X-Multi", "a"),
                ("X-Multi", "b"),
                ("Cache-Control", "no-cache"),
            ]))
            assert response.status == 200 and response.complete
            await gw.assert_serves()
    [seen] = b.requests
    names = header_names(seen.headers)
    for banned in ("connection", "keep-alive", "proxy-connection", "proxy-authorization",
                   "te", "trailer", "upgrade", "x-secret"):
        assert banned not in names, (banned, seen.headers)
    end_to_end = [(k.lower(), v) for k, v in seen.headers
                  if k.lower() in {"x-first", "x-keep", "accept", "x-multi", "cache-control"}]
    assert end_to_end == [("x-first", "1"), ("x-keep", "1"), ("accept", "text/plain"),
                          ("x-multi", "a"), ("x-multi", "b"), ("cache-control", "no-cache")]
    assert seen.target == ("/api/x" if facade == "route" else "/x")


@pytest.mark.parametrize(("te", "expected"), [
    ("trailers", ["trailers"]),
    ("trailers, deflate", ["trailers"]),
    ("gzip", []),
])
@bounded(10)
async def test_11_only_te_trailers_passes(te: str, expected: list[str]) -> None:
    async with open_backend() as b:
        async with gateway(GatewayRoute("/api/{path:path}", [b.url])) as gw:
            response = await gw.raw(request_bytes("GET", "/api/x", [("TE", te)]))
            assert response.status == 200
    assert b.requests[0].header_values("te") == expected


# ---- 12. hop-by-hop removal (response) ----------------------------------------------


async def _hop_by_hop_response(request: RecordedRequest) -> BackendResponse:
    return BackendResponse(200, [
        ("Connection", "X-Internal"),
        ("X-Internal", "1"),
        ("Keep-Alive", "timeout=99"),
        ("Proxy-Authenticate", "Basic"),
        ("Transfer-Encoding", "chunked"),
        ("Set-Cookie", "a=1; Path=/"),
        ("X-End", "ok"),
        ("Set-Cookie", "b=2; Path=/"),
    ], b"hello world")


@FACADES
@bounded(10)
async def test_12_hop_by_hop_response_headers_are_removed(facade: str) -> None:
    async with open_backend(_hop_by_hop_response) as b:
        args = facade_args(facade, b.url)
        async with gateway(*args.get("routes", ()), middleware=args.get("middleware", ())) as gw:
            async with gw.connect() as conn:
                await conn.send(request_bytes("GET", "/api/x"))
                response = await conn.receive_response(timeout=3)
                # the client connection stays usable: the framing was the gateway's own
                await conn.send(request_bytes("GET", "/api/y"))
                again = await conn.receive_response(timeout=3)
    assert response.status == 200 and response.complete
    assert response.body == b"hello world"
    names = header_names(response.headers)
    for banned in ("x-internal", "keep-alive", "proxy-authenticate"):
        assert banned not in names, response.headers
    assert all("x-internal" not in v.lower() for v in response.header_values("connection"))
    # one framing, produced by the gateway: chunked (h11 writer) or an exact length
    assert (response.header_values("transfer-encoding") == ["chunked"]
            and response.header("content-length") is None) \
        or response.header_values("content-length") == ["11"]
    assert response.header_values("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert response.header("x-end") == "ok"
    assert again.status == 200 and again.body == b"hello world"


# ---- 13. nomination attack ----------------------------------------------------------


@FACADES
@bounded(10)
async def test_13_connection_cannot_nominate_framing_host_or_forwarding(facade: str) -> None:
    body = b"payload-0123456789"
    async with open_backend() as b:
        args = facade_args(facade, b.url)
        async with gateway(*args.get("routes", ()), middleware=args.get("middleware", ())) as gw:
            async with gw.connect() as conn:
                await conn.send(request_bytes("POST", "/api/submit", [
                    ("Connection", "close, X-Forwarded-For, X-Real-IP, Host, Content-Length"),
                    ("X-Forwarded-For", "6.6.6.6"),
                    ("Content-Length", str(len(body))),
                ], body))
                response = await conn.receive_response(timeout=3)
                assert response.status == 200
                assert await conn.wait_closed(2.0), "Connection: close was not honoured"
            await gw.assert_serves()
    [seen] = b.requests
    assert seen.method == "POST"
    assert seen.header_values("host") == [f"127.0.0.1:{b.port}"]
    assert seen.header_values("x-forwarded-for") == ["6.6.6.6, 127.0.0.1"]
    assert seen.header_values("x-real-ip") == ["127.0.0.1"]
    assert seen.header_values("content-length") == [str(len(body))]
    assert seen.body == body
    assert "connection" not in header_names(seen.headers)


@bounded(10)
async def test_13_client_cannot_nominate_a_header_the_route_adds() -> None:
    async with open_backend() as b:
        route = GatewayRoute("/api/{path:path}", [b.url], headers_to_add={"X-Gateway": "gw1"})
        async with gateway(route) as gw:
            response = await gw.raw(request_bytes("GET", "/api/x", [
                ("Connection", "X-Gateway"), ("X-Gateway", "spoofed")]))
            assert response.status == 200
    assert b.requests[0].header_values("x-gateway") == ["gw1"]


# ---- 14. forwarding headers from an untrusted peer ---------------------------------


@FACADES
@bounded(10)
async def test_14_untrusted_peer_cannot_spoof_forwarding_headers(facade: str) -> None:
    async with open_backend() as b:
        args = facade_args(facade, b.url)
        async with gateway(*args.get("routes", ()), middleware=args.get("middleware", ())) as gw:
            response = await gw.raw(request_bytes("GET", "/api/x", [
                ("X-Forwarded-For", "1.2.3.4"),
                ("X-Real-IP", "1.2.3.4"),
                ("Forwarded", "for=1.2.3.4;proto=https"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.example"),
            ], host="gw.test"))
            assert response.status == 200
    [seen] = b.requests
    # append mode: the (untrusted) chain is kept, the real peer is appended last
    assert seen.header_values("x-forwarded-for") == ["1.2.3.4, 127.0.0.1"]
    assert seen.header_values("x-real-ip") == ["127.0.0.1"]
    assert seen.header_values("x-forwarded-proto") == ["http"]
    assert seen.header_values("x-forwarded-host") == ["gw.test"]
    assert seen.header_values("forwarded") == ["for=127.0.0.1;proto=http;host=gw.test"]


@bounded(15)
async def test_14_client_ip_hashing_ignores_spoofed_xff_from_untrusted_peer() -> None:
    """Sticky hashing keys on the TCP peer: a client rotating X-Forwarded-For values must
    not be able to spread itself over the backends (or pick one)."""
    async with open_backend(name="a") as a, open_backend(name="b") as b, \
            open_backend(name="c") as c:
        route = GatewayRoute("/api/{path:path}", [a.url, b.url, c.url],
                             load_balancing_strategy="hash", hash_on="client_ip")
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            served = Counter()
            for i in range(24):
                response = await client.get("/api/x", headers={
                    "X-Forwarded-For": f"198.51.100.{i}", "X-Real-IP": f"198.51.100.{i}"})
                assert response.status_code == 200
                served[response.json()["backend"]] += 1
    assert len(served) == 1, served


# ---- 15. trusted proxy chain, malformed X-Forwarded-For ----------------------------


@bounded(10)
async def test_15_trusted_peer_chain_is_walked_and_extended() -> None:
    async with open_backend() as b:
        route = GatewayRoute("/api/{path:path}", [b.url],
                             trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
        async with gateway(route) as gw:
            one_line = await gw.raw(request_bytes("GET", "/api/one", [
                ("X-Forwarded-For", "203.0.113.7, 10.0.0.2"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "shop.example")]))
            two_lines = await gw.raw(request_bytes("GET", "/api/two", [
                ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "10.0.0.2")]))
            assert one_line.status == 200 and two_lines.status == 200
    first, second = b.requests
    for seen in (first, second):
        assert seen.header_values("x-forwarded-for") == ["203.0.113.7, 10.0.0.2, 127.0.0.1"]
        # the client is the rightmost address outside the trusted ranges
        assert seen.header_values("x-real-ip") == ["203.0.113.7"]
    # a trusted proxy's scheme and host claims are kept
    assert first.header_values("x-forwarded-proto") == ["https"]
    assert first.header_values("x-forwarded-host") == ["shop.example"]


@pytest.mark.parametrize(("xff", "client"), [
    ("unknown", "127.0.0.1"),
    ("unknown, 10.0.0.2", "10.0.0.2"),
    ("1.2.3.4:80, 10.0.0.2", "10.0.0.2"),
    ("[::1], 10.0.0.2", "10.0.0.2"),
    ("<script>, 10.0.0.2", "10.0.0.2"),
    ("," * 8192, "127.0.0.1"),
    ("999.1.1.1, 10.0.0.2", "10.0.0.2"),
    ("10.0.0.2, unknown", "127.0.0.1"),
])
@bounded(10)
async def test_15_malformed_xff_from_trusted_peer_falls_back_to_peer(xff: str, client: str) -> None:
    """The walk from the right stops at the first entry that is not an address: what it
    found so far (or the peer) is the client; nothing left of a bad entry is believed."""
    async with open_backend() as b:
        route = GatewayRoute("/api/{path:path}", [b.url], trusted_proxies=["127.0.0.1"])
        async with gateway(route) as gw:
            response = await gw.raw(request_bytes("GET", "/api/x", [("X-Forwarded-For", xff)]))
            assert response.status == 200
            await gw.assert_serves()
    [seen] = b.requests
    assert seen.header_values("x-real-ip") == [client]
    [chain] = seen.header_values("x-forwarded-for")
    assert chain.endswith("127.0.0.1")


@bounded(15)
async def test_15_client_ip_hashing_uses_the_trusted_client_address() -> None:
    """Behind a trusted load balancer every request comes from the LB's address; sticky
    hashing on ``client_ip`` must use the client that the trusted chain names (§2.2 rule 1:
    the proxy's notion of client IP — logs, rate limits, sticky hashing)."""
    async with open_backend(name="a") as a, open_backend(name="b") as b, \
            open_backend(name="c") as c:
        route = GatewayRoute("/api/{path:path}", [a.url, b.url, c.url],
                             load_balancing_strategy="hash", hash_on="client_ip",
                             trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            per_client: dict[str, set[str]] = {}
            for _ in range(2):
                for i in range(24):
                    ip = f"203.0.113.{i}"
                    response = await client.get(
                        "/api/x", headers={"X-Forwarded-For": f"{ip}, 10.0.0.2"})
                    assert response.status_code == 200
                    per_client.setdefault(ip, set()).add(response.json()["backend"])
    assert all(len(names) == 1 for names in per_client.values()), per_client  # sticky
    assert len(set().union(*per_client.values())) > 1  # and spread over clients


# ---- 16. Host header policy --------------------------------------------------------


@pytest.mark.parametrize("preserve_host", [False, True])
@bounded(10)
async def test_16_upstream_host_follows_the_preserve_host_policy(preserve_host: bool) -> None:
    async with open_backend() as b:
        route = GatewayRoute("/api/{path:path}", [b.url], preserve_host=preserve_host)
        async with gateway(route) as gw:
            response = await gw.raw(request_bytes("GET", "/api/x", host="A.Test:8080"))
            assert response.status == 200
    [seen] = b.requests
    expected = "A.Test:8080" if preserve_host else f"127.0.0.1:{b.port}"
    assert seen.header_values("host") == [expected]
    assert seen.header_values("x-forwarded-host") == ["A.Test:8080"]


@pytest.mark.parametrize("headers", [
    [("Host", "user@a.test")],
    [("Host", "a.test/evil")],
    [("Host", "a test")],
    [("Host", "a.test:99999")],
    [("Host", "a.test"), ("Host", "b.test")],
    [],  # HTTP/1.1 without Host
])
@bounded(10)
async def test_16_invalid_host_is_rejected_before_any_backend_contact(
        headers: list[tuple[str, str]]) -> None:
    async with open_backend() as b:
        async with gateway(GatewayRoute("/api/{path:path}", [b.url])) as gw:
            async with gw.connect() as conn:
                await conn.send(request_bytes("GET", "/api/x", headers, host=""))
                response = await conn.receive_response(timeout=3)
                assert await conn.wait_closed(2.0)
            assert_error_json(response, 400)
            await gw.assert_serves()
    assert b.connections_accepted == 0


# ---- 17. underscores and header injection ------------------------------------------


@FACADES
@bounded(10)
async def test_17_underscore_lookalikes_of_sensitive_headers_are_dropped(facade: str) -> None:
    body = b"abc"
    async with open_backend() as b:
        args = facade_args(facade, b.url)
        async with gateway(*args.get("routes", ()), middleware=args.get("middleware", ())) as gw:
            response = await gw.raw(request_bytes("POST", "/api/x", [
                ("Transfer_Encoding", "chunked"),
                ("X_Forwarded_For", "9.9.9.9"),
                ("X_Real_IP", "9.9.9.9"),
                ("Content_Length", "999"),
                ("X_Custom_Thing", "kept"),
                ("Content-Length", str(len(body))),
            ], body))
            assert response.status == 200
    [seen] = b.requests
    names = header_names(seen.headers)
    for banned in ("transfer_encoding", "x_forwarded_for", "x_real_ip", "content_length"):
        assert banned not in names, seen.headers
    assert seen.header_values("x-forwarded-for") == ["127.0.0.1"]
    assert seen.header_values("x_custom_thing") == ["kept"]
    assert seen.body == body and seen.header_values("content-length") == ["3"]


@pytest.mark.parametrize("edit", [
    {"headers_to_add": {"X-Evil": "a\r\nX-Injected: 1"}},
    {"headers_to_add": {"X-Evil": "a\x00b"}},
    {"headers_to_add": {"Bad Name": "v"}},
])
def test_17_unsendable_configured_request_header_is_a_config_error(edit: dict[str, Any]) -> None:
    """A header edit that could never be sent is refused when the route is built, naming
    the header, instead of turning every request into a 502."""
    with pytest.raises(ConfigError, match="X-Evil|Bad Name"):
        GatewayRoute("/api/{path:path}", ["http://127.0.0.1:9"], **edit)


def test_17_unsendable_configured_response_header_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="X-Evil"):
        ProxyMiddleware(targets=["http://127.0.0.1:9"], path_prefix="/api",
                        add_response_headers={"X-Evil": "a\r\nSet-Cookie: evil=1"})
