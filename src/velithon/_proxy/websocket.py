"""Proxying one WebSocket session to a leased target with trio-websocket.

The client's handshake is accepted only after the upstream handshake
succeeded (so a refused or failing upstream becomes a refusal, never a
half-open tunnel), with the subprotocol the upstream chose. Messages are then
pumped both ways until either side closes; the close code travels to the
other side. The lease stays open for the whole session, so a target's
in-flight count includes its tunnels, and a long healthy session is reported
as a success, not a timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from .._exceptions import NoTargetAvailable
from .._lb.messages import OutcomeKind
from .._lb.router import Lease
from .._types import Scope

LOGGER = logging.getLogger("velithon.proxy")

#: the largest message relayed in either direction (matches the server's default)
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024

#: request headers worth carrying to the upstream handshake
_FORWARDED_WS_HEADERS = frozenset(
    {b"cookie", b"authorization", b"origin", b"user-agent", b"x-request-id", b"accept-language"}
)


def _upstream_ws_url(origin: Any, target: bytes) -> str:
    scheme = "wss" if origin.scheme == "https" else "ws"
    return f"{scheme}://{origin.authority.decode('latin-1')}{origin.base_path}{target.decode('latin-1')}"


async def _refuse(send: Callable[..., Any], scope: Scope, status: int,
                  detail: str) -> None:
    """Refuse the handshake: an HTTP error if the server can send one, else a close."""
    from .._http11 import error_body

    if "websocket.http.response" in scope.get("extensions", {}):
        body = error_body(status, detail)
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1013 if status == 503 else 1011})


async def proxy_websocket(balancer: Any, scope: Scope, receive: Callable[..., Any],
                          send: Callable[..., Any], *, target: bytes, key: bytes | None,
                          connect_timeout: float, extra_headers: list[tuple[bytes, bytes]],
                          max_message_size: int = DEFAULT_MAX_MESSAGE,
                          max_retries: int = 0) -> None:
    """Proxy one session; a handshake that could not reach a target is retried elsewhere."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    subprotocols = list(scope.get("subprotocols") or ())
    headers = [(k, v) for k, v in scope["headers"] if k in _FORWARDED_WS_HEADERS] + extra_headers
    tried: set[int] = set()
    for attempt in range(max_retries + 1):
        try:
            lease = await balancer.pick(key, frozenset(tried), retry=attempt > 0)
        except NoTargetAvailable as exc:
            if attempt == 0:
                await _refuse(send, scope, 503, str(exc))
            else:
                await _refuse(send, scope, 502, "WebSocket handshake with the upstream failed")
            return
        tried.add(lease.target_id)
        outcome = await _session(lease, scope, receive, send, target=target, headers=headers,
                                 subprotocols=subprotocols, connect_timeout=connect_timeout,
                                 max_message_size=max_message_size,
                                 last_try=attempt == max_retries)
        if outcome != "retry":
            return


async def _session(lease: Lease, scope: Scope, receive: Callable[..., Any],
                   send: Callable[..., Any], *, target: bytes, headers: list[tuple[bytes, bytes]],
                   subprotocols: list[str], connect_timeout: float, max_message_size: int,
                   last_try: bool) -> str:
    """One handshake (and, if accepted, the whole session) with one leased target."""
    async with lease:  # given back however the session ends
        return await _session_on(lease, scope, receive, send, target=target, headers=headers,
                                 subprotocols=subprotocols, connect_timeout=connect_timeout,
                                 max_message_size=max_message_size, last_try=last_try)


async def _session_on(lease: Lease, scope: Scope, receive: Callable[..., Any],
                      send: Callable[..., Any], *, target: bytes,
                      headers: list[tuple[bytes, bytes]], subprotocols: list[str],
                      connect_timeout: float, max_message_size: int, last_try: bool) -> str:
    url = _upstream_ws_url(lease.pool.origin, target)
    kind = OutcomeKind.LOCAL
    accepted = False
    try:
        async with open_websocket_url(
            url, ssl_context=getattr(lease.pool, "ssl_context", None), subprotocols=subprotocols,
            extra_headers=headers, connect_timeout=connect_timeout, disconnect_timeout=2.0,
            max_message_size=max_message_size,
        ) as upstream:
            accepted = True
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            kind = await _pump(upstream, receive, send)
            return "done"
    except Exception as exc:
        if accepted:
            raise
        # refused, unreachable, timed out, or a bogus 101 (trio-websocket may surface
        # h11/wsproto errors here): the client is refused, never tunnelled
        cause = exc.__cause__ or exc.__context__
        LOGGER.warning("websocket handshake with %s failed: %r (cause: %r)", lease.url, exc, cause)
        unreachable = isinstance(exc, (OSError, trio.TooSlowError)) or (
            isinstance(exc, HandshakeError) and isinstance(cause, OSError))
        if unreachable and not last_try:
            return "retry"  # nothing reached the target's application: try another one
        detail = "WebSocket handshake with the upstream failed"
        if isinstance(exc, ConnectionRejected):
            detail += f" (status {exc.status_code})"
        elif isinstance(exc, (HandshakeError, trio.TooSlowError)):
            detail += f" ({type(exc).__name__})"
        await _refuse(send, scope, 502, detail)
        return "done"
    finally:
        lease.report(kind, 101 if accepted and kind is OutcomeKind.SUCCESS else None)


async def _pump(upstream: WebSocketConnection, receive: Callable[..., Any],
                send: Callable[..., Any]) -> OutcomeKind:
    """Relay until one side closes; returns the outcome kind for the lease."""
    outcome = OutcomeKind.SUCCESS

    async def client_to_upstream(cancel: trio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                try:
                    await upstream.send_message(data)
                except ConnectionClosed:
                    break
            elif message["type"] == "websocket.disconnect":
                await upstream.aclose(code=_upstream_code(message.get("code", 1000)))
                break
        cancel.cancel()

    async def upstream_to_client(cancel: trio.CancelScope) -> None:
        nonlocal outcome
        while True:
            try:
                data = await upstream.get_message()
            except ConnectionClosed as exc:
                code = exc.reason.code if exc.reason is not None else 1006
                if code not in (1000, 1001):
                    outcome = OutcomeKind.SUCCESS if code < 1011 else OutcomeKind.APP_ERROR
                try:
                    await send({"type": "websocket.close", "code": _client_code(code),
                                "reason": (exc.reason.reason or "") if exc.reason else ""})
                except OSError:
                    pass
                break
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": data})
        cancel.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_to_upstream, nursery.cancel_scope)
        nursery.start_soon(upstream_to_client, nursery.cancel_scope)
    return outcome


def _upstream_code(code: int) -> int:
    """Codes 1005/1006/1015 may not be sent on the wire."""
    return 1000 if code in (1005, 1006, 1015) else code


def _client_code(code: int) -> int:
    return 1011 if code in (1005, 1006, 1015) else code
