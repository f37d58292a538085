"""velithon.testing.open_ws_backend: echo, recording, health, stop/start."""

from __future__ import annotations

import httpx
import pytest
import trio_websocket

from velithon.testing import open_raw_connection, open_ws_backend


async def test_echoes_text_and_binary_and_records_the_session() -> None:
    async with open_ws_backend(name="ws1") as backend:
        assert backend.url == f"ws://127.0.0.1:{backend.port}"
        async with trio_websocket.open_websocket_url(
            backend.url + "/chat?room=1", extra_headers=[(b"X-Token", b"t")]
        ) as ws:
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            await ws.send_message(b"\x00\xff" * 40_000)
            assert await ws.get_message() == b"\x00\xff" * 40_000
            await ws.aclose(code=4000, reason="done")
        await backend.wait_until(lambda: backend.close_codes == [4000])
    [session] = backend.sessions
    assert session.path == "/chat?room=1"
    assert ("X-Token", "t") in session.headers
    assert session.messages == ["hello", b"\x00\xff" * 40_000]
    assert session.close_reason == "done"
    assert backend.messages == session.messages


async def test_client_dropping_tcp_is_recorded_as_1006() -> None:
    handshake = (
        b"GET /raw HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    async with open_ws_backend() as backend:
        async with open_raw_connection("127.0.0.1", backend.port) as conn:
            await conn.send(handshake)
            response = await conn.receive_response()
            assert response.status == 101
            assert response.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        # leaving the block closes TCP without a close frame
        await backend.wait_until(lambda: len(backend.close_codes) == 1)
    assert backend.close_codes == [1006]
    assert backend.sessions[0].path == "/raw"


async def test_plain_http_health_and_other_paths() -> None:
    async with open_ws_backend(name="w") as backend, httpx.AsyncClient() as client:
        response = await client.get(backend.http_url + "/health")
        assert response.json() == {"status": "healthy", "backend": "w"}
        backend.set_health(503)
        assert (await client.get(backend.http_url + "/health")).status_code == 503
        assert (await client.get(backend.http_url + "/other")).status_code == 426
    assert len(backend.health_checks) == 2
    assert backend.sessions == []


async def test_stop_refuses_and_drops_sessions_start_serves_again() -> None:
    async with open_ws_backend() as backend:
        port = backend.port
        async with trio_websocket.open_websocket_url(backend.url) as ws:
            await backend.stop()
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
        with pytest.raises(trio_websocket.HandshakeError):
            async with trio_websocket.open_websocket_url(backend.url):
                pass
        await backend.start()
        assert backend.port == port
        async with trio_websocket.open_websocket_url(backend.url) as ws:
            await ws.send_message("back")
            assert await ws.get_message() == "back"
