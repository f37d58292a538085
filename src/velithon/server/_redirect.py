"""The HTTP → HTTPS redirect listener's app (``TLSConfig.redirect_port``).

A second, plain listener runs the ordinary server code (so it is as hardened as the TLS
port: limits, timeouts, smuggling rules) with this tiny ASGI app, which answers every
request with a redirect to the same host and path on the https port: ``301`` for GET and
HEAD (what every client follows), ``308`` for other methods (the method and body are kept,
RFC 9110 section 15.4.9). A WebSocket handshake gets the same answer as an HTTP response.

The host comes from the request's ``Host`` (the server has already refused a missing or
malformed one for HTTP/1.1; an HTTP/1.0 request without one gets the address it reached),
its port replaced by the https port, omitted when that is 443.
"""

from __future__ import annotations

from .._types import Message, Receive, Scope, Send

__all__ = ["HTTPSRedirect", "https_location"]

_KEEP_METHOD = 308
_MOVED = 301
_SAFE_METHODS = frozenset(("GET", "HEAD"))


def https_location(host: bytes | None, fallback: str, port: int, target: bytes) -> bytes:
    """The https URL for a request to ``host`` (its ``Host`` field) for ``target``.

    ``fallback`` is the address the request reached, used without a ``Host``; ``target``
    is the raw path with its query string.
    """
    if host:
        name = host
        if name.startswith(b"[") and b"]" in name:  # an IPv6 literal keeps its brackets
            name = name[:name.index(b"]") + 1]
        elif b":" in name:
            name = name.rpartition(b":")[0]
    else:
        name = (f"[{fallback}]" if ":" in fallback else fallback).encode("ascii")
    authority = name if port == 443 else b"%s:%d" % (name, port)
    return b"https://" + authority + (target or b"/")


class HTTPSRedirect:
    """ASGI app: every request is redirected to ``https://<host>:<https_port><target>``."""

    def __init__(self, https_port: int) -> None:
        self.https_port = https_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
                break
        target = scope["raw_path"]
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        server = scope.get("server") or ("localhost", 0)
        location = https_location(host, server[0], self.https_port, target)
        status = _MOVED if scope.get("method", "GET") in _SAFE_METHODS else _KEEP_METHOD
        prefix = "http." if kind == "http" else "websocket.http."
        start: Message = {"type": prefix + "response.start", "status": status,
                          "headers": [(b"location", location), (b"content-length", b"0")]}
        await send(start)
        await send({"type": prefix + "response.body", "body": b""})
