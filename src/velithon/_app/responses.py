"""Response classes: an ASGI app each, built from a body (or an iterator) and headers.

Why they look like this: the hello-world JSON path is benchmarked, so a plain
``Response`` does the minimum per request — render the body once, build one list
of raw header pairs, and send two ASGI messages. Header values given by the user
are validated (no line breaks), names are lower-cased, and a list of pairs keeps
duplicates (several ``Set-Cookie``). ``Content-Length`` is computed for every
non-streaming response except 1xx/204/304, which carry no body.

``HEAD`` requests get the same status and headers with an empty body (servers
suppress it too, but we do not rely on that). ``StreamingResponse`` sends chunked
output; backpressure comes from awaiting ``send`` (our server returns only when
the bytes reached the socket).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

import trio

from .._http11 import error_body
from .._types import Receive, Scope, Send
from .datastructures import MutableHeaders, RawHeaders, encode_headers

HeadersArg = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] | None

LOGGER = logging.getLogger("velithon.app")

# One encoder for the process: json.dumps(..., separators=...) builds a new encoder
# per call, which costs more than encoding a small dict. Where the C accelerator
# exists we call it directly (same output; a circular structure raises
# RecursionError instead of ValueError — a 500 either way).
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode_basestring = getattr(json.encoder, "c_encode_basestring", None)
if _c_make_encoder is not None and _c_encode_basestring is not None:
    _c_encode = _c_make_encoder(None, _encoder.default, _c_encode_basestring, None,
                                ":", ",", False, False, False)

    _encode_str: Callable[[str], str] = _c_encode_basestring

    def _json_encode(content: Any) -> str:
        if isinstance(content, str):
            return _encode_str(content)
        return "".join(_c_encode(content, 0))
else:  # pragma: no cover - CPython always has the accelerator
    def _json_encode(content: Any) -> str:
        return _encoder.encode(content)

_NO_BODY_STATUSES = frozenset({204, 304})
# How long a streaming body's async generator may take to run its cleanup.
_ACLOSE_GRACE = 5.0


def _phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


class Response:
    """A complete response with a fixed body.

    Args:
        content: ``bytes`` (sent as is) or ``str`` (encoded with ``charset``).
        status_code: the HTTP status.
        headers: a dict, or a list of ``(name, value)`` pairs (duplicates kept).
        media_type: sets ``Content-Type`` (``; charset=utf-8`` added for ``text/*``)
            unless the headers already carry one.
    """

    media_type: str | None = None
    charset = "utf-8"

    def __init__(self, content: bytes | str | Any = b"", status_code: int = 200,
                 headers: HeadersArg = None, media_type: str | None = None) -> None:
        self.status_code = status_code
        if media_type is not None:
            self.media_type = media_type
        self.body = self.render(content)
        self.raw_headers = self._build_headers(headers)

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode(self.charset)
        if isinstance(content, (bytearray, memoryview)):
            return bytes(content)
        raise TypeError(
            f"{type(self).__name__} content must be bytes or str, got {type(content).__name__}"
        )

    def _content_type(self) -> bytes | None:
        media_type = self.media_type
        if media_type is None:
            return None
        if media_type.startswith("text/") and "charset=" not in media_type:
            media_type = f"{media_type}; charset={self.charset}"
        return media_type.encode("latin-1")

    def _build_headers(self, headers: HeadersArg) -> RawHeaders:
        raw = encode_headers(headers) if headers else []
        names = {name for name, _ in raw}
        if b"content-length" not in names and not (
            self.status_code < 200 or self.status_code in _NO_BODY_STATUSES
        ):
            raw.append((b"content-length", str(len(self.body)).encode("latin-1")))
        if b"content-type" not in names:
            content_type = self._content_type()
            if content_type is not None:
                raw.append((b"content-type", content_type))
        return raw

    @property
    def headers(self) -> MutableHeaders:
        """A live, editable view of ``raw_headers``."""
        return MutableHeaders(raw=self.raw_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        body = b"" if scope.get("method") == "HEAD" else self.body
        await send({"type": "http.response.body", "body": body})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} status={self.status_code} bytes={len(self.body)}>"


class PlainTextResponse(Response):
    media_type = "text/plain"


class HTMLResponse(Response):
    media_type = "text/html"


class JSONResponse(Response):
    """JSON body, compact and UTF-8 (non-ASCII kept as is); NaN/Infinity are refused."""

    media_type = "application/json"

    def __init__(self, content: Any, status_code: int = 200, headers: HeadersArg = None,
                 media_type: str | None = None) -> None:
        super().__init__(content, status_code, headers, media_type)

    def render(self, content: Any) -> bytes:
        return _json_encode(content).encode("utf-8")


# The JSON fast path: a handler returning a dict skips __init__'s generality.
_JSON_CT = (b"content-type", b"application/json")


def json_response(content: Any) -> JSONResponse:
    """Build a 200 JSONResponse with the fewest steps (used for dict/list returns)."""
    response = JSONResponse.__new__(JSONResponse)
    body = _json_encode(content).encode("utf-8")
    response.status_code = 200
    response.body = body
    response.raw_headers = [(b"content-length", str(len(body)).encode("latin-1")), _JSON_CT]
    return response


def error_response(status_code: int, detail: str | None = None,
                   headers: HeadersArg = None) -> Response:
    """The JSON error shape used everywhere.

    The body is ``{"error": phrase, "status": code, "detail": ...}``.
    """
    response = Response(error_body(status_code, detail), status_code, headers,
                        media_type="application/json")
    return response


class HTTPException(Exception):
    """Raise from a handler to answer with a JSON error instead of a 500.

    ``HTTPException(404)`` gives ``{"error": "Not Found", "status": 404, "detail": ...}``
    with a standard sentence as the detail unless one is given.
    """

    def __init__(self, status_code: int, detail: str | None = None,
                 headers: HeadersArg = None) -> None:
        if not 400 <= status_code <= 599:
            raise ValueError(f"HTTPException status must be 4xx or 5xx, got {status_code}")
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers

    def response(self) -> Response:
        return error_response(self.status_code, self.detail, self.headers)

    def __str__(self) -> str:
        return f"{self.status_code} {_phrase(self.status_code)}" + (
            f": {self.detail}" if self.detail else "")


class StreamingResponse(Response):
    """Chunked response fed by an async or sync iterator of ``bytes``/``str`` chunks.

    Sync iterators run inline (do not block in them). The iterator is closed when the
    response ends for any reason. If the route gave the response a way to wait for the
    client to go away (``disconnect_waiter``), the stream is cancelled on disconnect
    even on servers whose ``send`` silently drops data after a disconnect.
    """

    def __init__(self, content: AsyncIterable[bytes | str] | Iterable[bytes | str],
                 status_code: int = 200, headers: HeadersArg = None,
                 media_type: str | None = None) -> None:
        if isinstance(content, (bytes, str)) or not (
            hasattr(content, "__aiter__") or hasattr(content, "__iter__")
        ):
            raise TypeError("StreamingResponse content must be an (async) iterator of chunks")
        self.status_code = status_code
        if media_type is not None:
            self.media_type = media_type
        self.body = b""
        self.body_iterator = content
        self.disconnect_waiter: Callable[[], Any] | None = None
        raw = encode_headers(headers) if headers else []
        if not any(name == b"content-type" for name, _ in raw):
            content_type = self._content_type()
            if content_type is not None:
                raw.append((b"content-type", content_type))
        self.raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await self._aclose_iterator()
            await send({"type": "http.response.body", "body": b""})
            return
        waiter = self.disconnect_waiter
        if waiter is None:
            await self._stream(send)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_on_disconnect, waiter, nursery.cancel_scope)
            await self._stream(send)
            nursery.cancel_scope.cancel()

    @staticmethod
    async def _cancel_on_disconnect(waiter: Callable[[], Any],
                                    scope: trio.CancelScope) -> None:
        if await waiter():
            scope.cancel()

    async def _stream(self, send: Send) -> None:
        charset = self.charset
        iterator = self.body_iterator
        try:
            if isinstance(iterator, AsyncIterable):
                async for chunk in iterator:
                    if isinstance(chunk, str):
                        chunk = chunk.encode(charset)
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk,
                                    "more_body": True})
            else:
                for chunk in iterator:
                    if isinstance(chunk, str):
                        chunk = chunk.encode(charset)
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk,
                                    "more_body": True})
        finally:
            await self._aclose_iterator()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _aclose_iterator(self) -> None:
        iterator = self.body_iterator
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with trio.move_on_after(_ACLOSE_GRACE, shield=True):
                await aclose()
            return
        close = getattr(iterator, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        return f"<StreamingResponse status={self.status_code}>"
