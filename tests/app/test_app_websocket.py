"""WebSocket routes: echo, subprotocols, rejection, handler errors, misuse messages."""

from __future__ import annotations

from typing import Any

import pytest

from velithon import Velithon, WebSocket, WebSocketDisconnect

from support.asgi_client import ASGIClient, WebSocketRejected


def echo_app() -> Velithon:
    app = Velithon()

    @app.websocket("/echo/{room}")
    async def echo(websocket: WebSocket, room: str) -> None:
        await websocket.accept(subprotocol="chat" if "chat" in websocket.subprotocols else None)
        await websocket.send_json({"room": room, "query": websocket.query_params.get("q")})
        async for text in websocket.iter_text():
            await websocket.send_text(text[::-1])

    @app.websocket("/bytes")
    async def raw(ws: WebSocket) -> None:
        await ws.accept()
        data = await ws.receive_bytes()
        await ws.send_bytes(data * 2)
        payload = await ws.receive_json()
        await ws.send_json({"got": payload})
        await ws.close(4000)

    return app


async def test_echo_with_path_params_and_subprotocol() -> None:
    async with ASGIClient(echo_app()).websocket("/echo/lobby?q=1",
                                                subprotocols=["x", "chat"]) as ws:
        assert ws.subprotocol == "chat"
        assert await ws.receive_json() == {"room": "lobby", "query": "1"}
        for text in ("hello", "wörld", ""):
            await ws.send_text(text)
            assert await ws.receive_text() == text[::-1]
    assert ws.close_code is None  # the client closed; the app did not send a second close


async def test_bytes_json_and_app_close_code() -> None:
    async with ASGIClient(echo_app()).websocket("/bytes") as ws:
        assert ws.subprotocol is None
        await ws.send_bytes(b"ab")
        assert await ws.receive_bytes() == b"abab"
        await ws.send_json({"n": 1})
        assert await ws.receive_json() == {"got": {"n": 1}}
        message = await ws.receive()
        assert message["type"] == "websocket.close"
    assert ws.close_code == 4000


async def test_unknown_websocket_path_is_closed_1008_before_accept() -> None:
    with pytest.raises(WebSocketRejected) as info:
        async with ASGIClient(echo_app()).websocket("/nope"):
            pass
    assert info.value.code == 1008


async def test_http_route_does_not_serve_websocket_scope() -> None:
    app = Velithon()
    app.add_route("/plain", lambda: "x")
    with pytest.raises(WebSocketRejected):
        async with ASGIClient(app).websocket("/plain"):
            pass


async def test_handler_returning_closes_1000_and_failure_closes_1011(
        caplog: pytest.LogCaptureFixture) -> None:
    app = Velithon()

    @app.websocket("/once")
    async def once(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("bye")

    @app.websocket("/boom")
    async def boom(websocket: WebSocket) -> None:
        await websocket.accept()
        raise RuntimeError("kaput")

    client = ASGIClient(app)
    async with client.websocket("/once") as ws:
        assert await ws.receive_text() == "bye"
        assert (await ws.receive())["code"] == 1000
    async with client.websocket("/boom") as ws:
        assert (await ws.receive())["code"] == 1011
    assert "kaput" in caplog.text


async def test_failure_before_accept_rejects_the_handshake() -> None:
    app = Velithon()

    @app.websocket("/early")
    async def early(websocket: WebSocket) -> None:
        raise RuntimeError("no")

    with pytest.raises(WebSocketRejected) as info:
        async with ASGIClient(app).websocket("/early"):
            pass
    assert info.value.code == 1011


async def test_receive_after_client_disconnect_raises_websocket_disconnect() -> None:
    app = Velithon()
    seen: list[Any] = []

    @app.websocket("/ws")
    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as exc:
            seen.append(exc.code)
            raise

    async with ASGIClient(app).websocket("/ws") as ws:
        await ws.close(code=4321)
    assert seen == [4321]


async def test_misuse_gives_clear_errors() -> None:
    app = Velithon()
    errors: list[str] = []

    @app.websocket("/misuse")
    async def misuse(websocket: WebSocket) -> None:
        try:
            await websocket.send_text("too early")
        except RuntimeError as exc:
            errors.append(str(exc))
        await websocket.accept()
        try:
            await websocket.accept()
        except RuntimeError as exc:
            errors.append(str(exc))
        await websocket.send_text("ready")
        try:
            await websocket.receive_bytes()
        except TypeError as exc:
            errors.append(str(exc))

    async with ASGIClient(app).websocket("/misuse") as ws:
        assert await ws.receive_text() == "ready"
        await ws.send_text("text, not bytes")
        assert (await ws.receive())["code"] == 1000
    assert errors == ["call accept() before sending on a websocket",
                      "the websocket was already accepted",
                      "expected a binary frame, got a text frame"]
