"""``WebSocket``: the ASGI websocket protocol as a small session object.

Why a state machine: ASGI forbids some message orders (sending before ``accept``,
sending after ``close``); tracking both sides' state lets us raise a clear
``RuntimeError`` at the misuse instead of a server-specific error later, and lets
the route close cleanly after the handler returns (or fails) without sending a
second close.

A client disconnect surfaces as ``WebSocketDisconnect`` from the ``receive_*``
methods; ``iter_text()``/``iter_bytes()``/``iter_json()`` simply end instead.
"""

from __future__ import annotations

import enum
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .._types import Message, Receive, Scope, Send
from .requests import HTTPConnection


class WebSocketState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class WebSocketDisconnect(Exception):
    """The peer closed the connection (``code`` is the close code it sent, if any)."""

    def __init__(self, code: int = 1000, reason: str | None = None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason or ""


class WebSocket(HTTPConnection):
    """One websocket session, handed to ``@app.websocket`` handlers."""

    __slots__ = ("_receive", "_send", "client_state", "application_state")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise ValueError(f"WebSocket needs a websocket scope, got {scope['type']!r}")
        super().__init__(scope)
        self._receive = receive
        self._send = send
        self.client_state = WebSocketState.CONNECTING
        self.application_state = WebSocketState.CONNECTING

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return list(self.scope.get("subprotocols") or ())

    async def _receive_message(self) -> Message:
        if self.client_state is WebSocketState.DISCONNECTED:
            raise RuntimeError("cannot receive: the websocket is already disconnected")
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.connect":
            if self.client_state is not WebSocketState.CONNECTING:
                raise RuntimeError("unexpected second websocket.connect message")
            self.client_state = WebSocketState.CONNECTED
        elif kind == "websocket.disconnect":
            self.client_state = WebSocketState.DISCONNECTED
        return message

    async def _send_message(self, message: Message) -> None:
        if self.application_state is WebSocketState.DISCONNECTED:
            raise RuntimeError("cannot send: the websocket is already closed")
        kind = message["type"]
        if kind == "websocket.accept":
            if self.application_state is not WebSocketState.CONNECTING:
                raise RuntimeError("the websocket was already accepted")
            self.application_state = WebSocketState.CONNECTED
        elif kind == "websocket.close":
            self.application_state = WebSocketState.DISCONNECTED
        elif self.application_state is WebSocketState.CONNECTING:
            raise RuntimeError("call accept() before sending on a websocket")
        await self._send(message)

    async def accept(self, subprotocol: str | None = None,
                     headers: Iterable[tuple[bytes, bytes]] | None = None) -> None:
        """Complete the handshake (waits for the client's connect message first)."""
        if self.client_state is WebSocketState.CONNECTING:
            message = await self._receive_message()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1006), message.get("reason"))
        reply: dict[str, Any] = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            reply["headers"] = list(headers)
        await self._send_message(reply)

    async def receive(self) -> Message:
        """The next raw ASGI message (for handlers that need both text and bytes)."""
        return await self._receive_message()

    async def _receive_data(self) -> Message:
        if self.application_state is not WebSocketState.CONNECTED:
            raise RuntimeError("call accept() before receiving on a websocket")
        message = await self._receive_message()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        return message

    async def receive_text(self) -> str:
        message = await self._receive_data()
        text: str | None = message.get("text")
        if text is None:
            raise TypeError("expected a text frame, got a binary frame")
        return text

    async def receive_bytes(self) -> bytes:
        message = await self._receive_data()
        data: bytes | None = message.get("bytes")
        if data is None:
            raise TypeError("expected a binary frame, got a text frame")
        return data

    async def receive_json(self) -> Any:
        """One frame (text or binary) parsed as JSON."""
        message = await self._receive_data()
        data = message.get("text")
        if data is None:
            data = message.get("bytes", b"").decode("utf-8")
        return json.loads(data)

    async def send_text(self, data: str) -> None:
        await self._send_message({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        await self._send_message({"type": "websocket.send", "bytes": bytes(data)})

    async def send_json(self, data: Any) -> None:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        await self._send_message({"type": "websocket.send", "text": text})

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the session; before ``accept`` this rejects the handshake (HTTP 403)."""
        await self._send_message({"type": "websocket.close", "code": code,
                                  "reason": reason or ""})

    async def iter_text(self) -> AsyncIterator[str]:
        """Text frames until the client disconnects."""
        try:
            while True:
                yield await self.receive_text()
        except WebSocketDisconnect:
            return

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            while True:
                yield await self.receive_bytes()
        except WebSocketDisconnect:
            return

    async def iter_json(self) -> AsyncIterator[Any]:
        try:
            while True:
                yield await self.receive_json()
        except WebSocketDisconnect:
            return

    def __repr__(self) -> str:
        return (f"<WebSocket {self.scope.get('path')} client={self.client_state.value} "
                f"app={self.application_state.value}>")
