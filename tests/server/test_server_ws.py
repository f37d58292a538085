"""WebSocket upgrade (ASGI websocket scope over wsproto) in velithon.server."""

from __future__ import annotations

import base64
import socket
import struct
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Ping, Pong, TextMessage

from support.server import (
    assert_still_serving,
    connect,
    parse_responses,
    raw_exchange,
    running_server,
)

SCOPES: list[dict[str, Any]] = []


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    assert scope["type"] == "websocket"
    SCOPES.append(scope)
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"] == "/reject":
        await send({"type": "websocket.close", "code": 1008})
        return
    if scope["path"] == "/boom-before-accept":
        raise RuntimeError("boom")
    subprotocol = scope["subprotocols"][0] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close please":
            await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
            return
        await send({"type": "websocket.send", **{k: v for k, v in message.items() if k != "type"}})


async def test_echo_text_and_bytes() -> None:
    async with running_server(echo) as server:
        url = f"ws://{server.host}:{server.port}/chat?room=1"
        async with open_websocket_url(url, subprotocols=["chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v1"
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            await ws.send_message(b"\x00\x01" * 40000)  # fragmented by nothing, 80 kB
            assert await ws.get_message() == b"\x00\x01" * 40000
            await ws.ping(b"p")  # answered by the server while the app waits in receive()
            await ws.send_message("close please")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 4000
    scope = SCOPES[-1]
    assert scope["scheme"] == "ws" and scope["path"] == "/chat"
    assert scope["query_string"] == b"room=1" and scope["raw_path"] == b"/chat"
    assert scope["subprotocols"] == ["chat.v1"]


async def test_close_before_accept_is_403() -> None:
    async with running_server(echo) as server:
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(f"ws://{server.host}:{server.port}/reject"):
                pass
        assert rejected.value.status_code == 403
        await assert_still_serving(server)


async def test_exception_before_accept_is_500() -> None:
    async with running_server(echo) as server:
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(f"ws://{server.host}:{server.port}/boom-before-accept"):
                pass
        assert rejected.value.status_code == 500


def handshake(path: bytes = b"/", version: bytes = b"13") -> bytes:
    key = base64.b64encode(b"0123456789abcdef")
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: "
        + key
        + b"\r\nSec-WebSocket-Version: "
        + version
        + b"\r\n\r\n"
    )


async def test_unsupported_version_is_426() -> None:
    async with running_server(echo) as server:
        data = await raw_exchange(server, handshake(version=b"8"))
    [resp] = parse_responses(data)
    assert resp.status == 426 and resp.headers[b"sec-websocket-version"] == b"13"


async def test_frames_sent_with_the_handshake_are_not_lost() -> None:
    client = Connection(ConnectionType.CLIENT)
    early = client.send(TextMessage(data="early")) + client.send(Ping(payload=b"x"))
    async with running_server(echo) as server:
        stream = await connect(server)
        async with stream:
            await stream.send_all(handshake() + early)  # one segment: h11's trailing_data
            buf = b""
            with trio.fail_after(2):
                while b"\r\n\r\n" not in buf:
                    buf += await stream.receive_some(65536)
                head, _, rest = buf.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101 ")
                client.receive_data(rest)
                events: list[Any] = list(client.events())
                while len(events) < 2:
                    client.receive_data(await stream.receive_some(65536))
                    events += list(client.events())
    assert isinstance(events[0], TextMessage) and events[0].data == "early"
    assert isinstance(events[1], Pong) and events[1].payload == b"x"


async def test_shutdown_closes_websockets_with_1001() -> None:
    async with running_server(echo) as server:
        async with open_websocket_url(f"ws://{server.host}:{server.port}/") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
            server.trigger.set()
            with pytest.raises(ConnectionClosed) as closed:
                with trio.fail_after(2):
                    await ws.get_message()
            assert closed.value.reason.code == 1001
        with trio.fail_after(2):
            await server.done.wait()


async def test_binary_message_bigger_than_limit_closes_1009() -> None:
    async with running_server(echo, ws_max_message_size=1000) as server:
        async with open_websocket_url(f"ws://{server.host}:{server.port}/") as ws:
            await ws.send_message(b"x" * 2000)
            with pytest.raises(ConnectionClosed) as closed:
                with trio.fail_after(2):
                    await ws.get_message()
            assert closed.value.reason.code == 1009


async def test_a_client_gone_while_an_apps_nursery_sends_is_no_error(
        caplog: pytest.LogCaptureFixture) -> None:
    # A relay sends from a task in a nursery, so a client that goes away reaches the
    # server as a group of ClientDisconnected errors: still a client gone, not a failure
    # of the app (no ERROR, no traceback), as it is when the app sends directly.
    sent_into_the_void = trio.Event()

    async def relay(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await echo(scope, receive, send)
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})

        async def flood() -> None:
            try:
                while True:
                    await send({"type": "websocket.send", "bytes": b"x" * 65536})
            finally:
                sent_into_the_void.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            nursery.start_soon(trio.sleep_forever)

    async with running_server(relay) as server:
        stream = await connect(server)
        await stream.send_all(handshake())
        await stream.receive_some(65536)  # the 101 (and maybe the first bytes)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()  # a reset: the flood's next send fails
        with trio.fail_after(10):
            await sent_into_the_void.wait()
        await trio.sleep(0.1)
        await assert_still_serving(server)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
