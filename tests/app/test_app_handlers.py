"""Handlers: parameter injection, return values, errors, and the ``Request`` object."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from velithon import (
    HTTPException,
    JSONResponse,
    PlainTextResponse,
    Request,
    Response,
    Velithon,
)

from support.asgi_client import ASGIClient


async def test_seed_style_handler_without_parameters() -> None:
    app = Velithon()

    @app.get("/health")
    async def health_check() -> dict[str, str]:
        return {"status": "healthy", "timestamp": "2024-01-01T00:00:00Z"}

    response = await ASGIClient(app).get("/health")
    assert response.status == 200
    assert response.json() == {"status": "healthy", "timestamp": "2024-01-01T00:00:00Z"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.body))


@pytest.mark.parametrize("value, status, content_type, body", [
    ({"a": "é"}, 200, "application/json", '{"a":"é"}'.encode()),
    ([1, 2], 200, "application/json", b"[1,2]"),
    ("hi", 200, "text/plain; charset=utf-8", b"hi"),
    (b"\x00raw", 200, None, b"\x00raw"),
    (None, 204, None, b""),
    (Response("<b>x</b>", 201, media_type="text/html"), 201,
     "text/html; charset=utf-8", b"<b>x</b>"),
])
async def test_return_values_become_responses(value: Any, status: int, content_type: str | None,
                                              body: bytes) -> None:
    app = Velithon()
    app.add_route("/", lambda: value)
    response = await ASGIClient(app).get("/")
    assert (response.status, response.headers.get("content-type"), response.body) == (
        status, content_type, body)
    if status == 204:
        assert "content-length" not in response.headers


async def test_request_injected_by_annotation_or_by_name() -> None:
    app = Velithon()

    @app.get("/a/{x}")
    async def by_annotation(req: Request, x: str) -> str:
        return f"{req.method} {x}"

    @app.get("/b")
    def by_name(request) -> str:  # type: ignore[no-untyped-def]  # sync handler runs inline
        return request.path

    client = ASGIClient(app)
    assert (await client.get("/a/1")).text == "GET 1"
    assert (await client.get("/b")).text == "/b"


async def test_handler_exception_is_a_logged_500_for_that_request_only(
        caplog: pytest.LogCaptureFixture) -> None:
    app = Velithon()
    calls = 0

    @app.get("/flaky")
    async def flaky() -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("secret database password in message")
        return {"calls": calls}

    client = ASGIClient(app)
    with caplog.at_level(logging.ERROR, logger="velithon.app"):
        response = await client.get("/flaky")
    assert response.status == 500
    assert response.json() == {"error": "Internal Server Error", "status": 500,
                               "detail": "The server could not complete the request"}
    assert b"secret" not in response.body and b"Traceback" not in response.body
    assert any("secret database password" in r.exc_text for r in caplog.records if r.exc_text)
    assert (await client.get("/flaky")).json() == {"calls": 2}


async def test_unsupported_return_type_is_a_500_naming_the_handler(
        caplog: pytest.LogCaptureFixture) -> None:
    app = Velithon()
    app.add_route("/odd", lambda: object(), name="odd")
    response = await ASGIClient(app).get("/odd")
    assert response.status == 500
    assert "handler 'odd' for '/odd' returned object" in caplog.text


async def test_http_exception_gives_its_json_error() -> None:
    app = Velithon()

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "short and stout", headers={"x-why": "tea"})

    response = await ASGIClient(app).get("/teapot")
    assert response.status == 418
    assert response.json() == {"error": "I'm a Teapot", "status": 418,
                               "detail": "short and stout"}
    assert response.headers["x-why"] == "tea"
    with pytest.raises(ValueError, match="4xx or 5xx"):
        HTTPException(200)


async def test_request_exposes_url_query_headers_client() -> None:
    app = Velithon()
    seen: dict[str, Any] = {}

    @app.get("/look/{thing}")
    async def look(request: Request) -> None:
        seen.update(
            method=request.method, path=request.path, raw_path=request.raw_path,
            url=str(request.url), url_path=request.url.path, query=request.url.query,
            x=request.query_params.get("x"), xs=request.query_params.getlist("x"),
            flag=request.query_params["flag"], items=request.query_params.items(),
            cookie=request.headers.getlist("X-Tag"), first=request.headers["x-tag"],
            raw=request.headers.raw[-2:], client=request.client,
            params=request.path_params, scope_type=request.scope["type"],
            services=request.services,
        )

    await ASGIClient(app).get("/look/it?x=1&x=%20two&flag", headers=[
        ("X-Tag", "a"), ("x-tag", "b")])
    assert seen == {
        "method": "GET", "path": "/look/it", "raw_path": b"/look/it",
        "url": "http://testserver/look/it?x=1&x=%20two&flag", "url_path": "/look/it",
        "query": "x=1&x=%20two&flag", "x": "1", "xs": ["1", " two"], "flag": "",
        "items": [("x", "1"), ("x", " two"), ("flag", "")],
        "cookie": ["a", "b"], "first": "a", "raw": [(b"x-tag", b"a"), (b"x-tag", b"b")],
        "client": ("127.0.0.1", 50123), "params": {"thing": "it"}, "scope_type": "http",
        "services": None,
    }


async def test_request_client_is_none_without_peer() -> None:
    app = Velithon()
    app.add_route("/", lambda request: {"client": request.client})
    assert (await ASGIClient(app, client=None).get("/")).json() == {"client": None}


async def test_body_is_cached_and_json_parsed() -> None:
    app = Velithon()

    @app.post("/json")
    async def parse(request: Request) -> dict[str, Any]:
        data = await request.json()
        again = await request.body()
        chunks = [c async for c in request.stream()]
        return {"data": data, "same": again == b"".join(chunks)}

    response = await ASGIClient(app).post("/json", body=[b'{"a": ', b"[1, 2]}"])
    assert response.json() == {"data": {"a": [1, 2]}, "same": True}


async def test_invalid_json_body_is_a_400_not_a_500() -> None:
    app = Velithon()

    @app.post("/json")
    async def parse(request: Request) -> Any:
        return await request.json()

    response = await ASGIClient(app).post("/json", body=b"{nope")
    assert response.status == 400
    assert response.json()["detail"].startswith("Invalid JSON body")


async def test_stream_yields_chunks_as_they_arrive_and_only_once() -> None:
    app = Velithon()
    seen: list[Any] = []

    @app.post("/up")
    async def upload(request: Request) -> Response:
        async for chunk in request.stream():
            seen.append(chunk)
        with pytest.raises(RuntimeError, match="already consumed"):
            await request.body()
        return PlainTextResponse("ok")

    response = await ASGIClient(app).post("/up", body=[b"one", b"", b"two", b"three"])
    assert response.text == "ok"
    assert seen == [b"one", b"two", b"three"]


async def test_stream_stops_on_disconnect() -> None:
    app = Velithon()
    seen: dict[str, Any] = {}

    @app.post("/up")
    async def upload(request: Request) -> JSONResponse:
        seen["chunks"] = [c async for c in request.stream()]
        seen["disconnected"] = request.is_disconnected
        return JSONResponse({})

    messages = [{"type": "http.request", "body": b"part", "more_body": True},
                {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/up", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    assert seen == {"chunks": [b"part"], "disconnected": True}
