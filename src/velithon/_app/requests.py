"""``Request`` (and the ``HTTPConnection`` base it shares with ``WebSocket``).

Why lazy: a handler that only reads ``request.path_params`` should not pay for
parsing headers or the query string, so every derived view is built on first use
and cached. The body is never buffered unless asked for: ``stream()`` yields the
chunks as the server delivers them (a gateway forwards them as they come);
``body()`` buffers once and caches, so ``json()`` and a second ``body()`` are free.

Disconnects: ``stream()`` stops quietly on ``http.disconnect`` and sets
``is_disconnected``; a handler that needs the whole body can check it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio

from .._types import Receive, Scope
from .datastructures import URL, Address, Headers, QueryParams
from .responses import HTTPException


class HTTPConnection:
    """What HTTP requests and WebSocket sessions have in common: the scope, read lazily."""

    __slots__ = ("scope", "_headers", "_query_params", "_url")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self._headers: Headers | None = None
        self._query_params: QueryParams | None = None
        self._url: URL | None = None

    @property
    def path(self) -> str:
        """The percent-decoded path (what routes match against)."""
        path: str = self.scope["path"]
        return path

    @property
    def raw_path(self) -> bytes:
        """The path exactly as the client sent it (no query), for byte-exact forwarding."""
        raw: bytes | None = self.scope.get("raw_path")
        if raw is None:
            path: str = self.scope["path"]
            return path.encode("utf-8")
        return raw.split(b"?", 1)[0]

    @property
    def query_string(self) -> bytes:
        query: bytes = self.scope.get("query_string", b"")
        return query

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(raw=self.scope.get("headers") or [])
        return self._headers

    @property
    def query_params(self) -> QueryParams:
        if self._query_params is None:
            self._query_params = QueryParams(self.scope.get("query_string", b""))
        return self._query_params

    @property
    def url(self) -> URL:
        if self._url is None:
            scope = self.scope
            scheme = scope.get("scheme") or ("ws" if scope["type"] == "websocket" else "http")
            netloc = self.headers.get("host")
            if netloc is None and scope.get("server"):
                host, port = scope["server"][0], scope["server"][1]
                netloc = f"{host}:{port}" if port is not None else host
            self._url = URL(scheme=scheme, netloc=netloc or "", path=scope["path"],
                            query=self.query_string.decode("latin-1"))
        return self._url

    @property
    def client(self) -> Address | None:
        client = self.scope.get("client")
        if not client:
            return None
        return Address(client[0], client[1])

    @property
    def path_params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.scope.get("path_params", {})
        return params

    @property
    def services(self) -> Any:
        """The app's ``ServiceHost`` when a lifespan is running, else ``None``."""
        return self.scope.get("velithon.services")


def _declares_body(scope: Scope) -> bool:
    """Whether more than an empty ``http.request`` message may follow."""
    saw_length = False
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            saw_length = True
            if value.strip() not in (b"0", b""):
                return True
        elif name == b"transfer-encoding":
            return True
    return not saw_length and str(scope.get("http_version", "1.1")).startswith("2")


class Request(HTTPConnection):
    """An HTTP request as seen by a handler.

    The body can be read once as a stream, or buffered with ``body()`` (cached).
    Reading the stream after it was consumed without buffering raises ``RuntimeError``.
    """

    __slots__ = ("_receive", "_body", "_stream_consumed", "_complete",
                 "is_disconnected", "_body_lock")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        super().__init__(scope)
        self._receive = receive
        self._body: bytes | None = None
        self._stream_consumed = False
        self._complete = False
        self.is_disconnected = False
        self._body_lock: trio.Lock | None = None

    @property
    def method(self) -> str:
        method: str = self.scope["method"]
        return method

    @property
    def receive(self) -> Receive:
        return self._receive

    async def stream(self) -> AsyncIterator[bytes]:
        """Yield body chunks as they arrive; stops at the end of the body or on disconnect."""
        if self._body is not None:
            if self._body:
                yield self._body
            return
        if self._stream_consumed:
            raise RuntimeError("the request body was already consumed by stream(); "
                               "call body() first if you need it more than once")
        self._stream_consumed = True
        receive = self._receive
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "http.request":
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                if not more:
                    self._complete = True
                if chunk:
                    yield chunk
                if not more:
                    return
            elif kind == "http.disconnect":
                self.is_disconnected = True
                self._complete = True
                return

    async def body(self) -> bytes:
        """The whole body, buffered once and cached (safe to call from several tasks)."""
        if self._body is not None:
            return self._body
        if self._body_lock is None:
            self._body_lock = trio.Lock()
        async with self._body_lock:
            if self._body is None:
                self._body = b"".join([chunk async for chunk in self.stream()])
        return self._body

    async def json(self) -> Any:
        """The body parsed as JSON; invalid JSON becomes a 400 error for the client."""
        body = await self.body()
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPException(400, f"Invalid JSON body: {exc}") from None

    async def wait_disconnected(self) -> bool:
        """Wait until the client goes away; return False at once if that cannot be watched.

        It cannot be watched while a declared body is still unread, because whoever
        streams it owns ``receive``. Used by ``StreamingResponse`` to stop streaming
        to a gone client.
        """
        if not self._complete:
            if self._stream_consumed or _declares_body(self.scope):
                return False
            await self.body()
        while not self.is_disconnected:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.is_disconnected = True
        return True

    def __repr__(self) -> str:
        return f"<Request {self.scope.get('method')} {self.scope.get('path')}>"
