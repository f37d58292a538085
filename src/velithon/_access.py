"""The access log: one ``velithon.access`` line per HTTP request, in logfmt.

The server writes the line, because only it knows the status it sent, the body
bytes and when the exchange ended; the gateway facades know which route
forwarded the request, to which target, after how many tries. They meet in an
:class:`AccessRecord` that the server puts in the ASGI scope under
:data:`ACCESS_SCOPE_KEY` when the access log is on, and that a facade fills in
if it finds it there. With the access log off there is no record, so the only
cost on the forwarding path is looking for it.

A record survives scope copies made by middleware (they copy the reference),
and it is the only way a facade talks to the log line: no field of the scope is
read back.

Fields, in this order (absent ones are left out):

* ``client`` the TCP peer, ``ip:port`` (``[ip]:port`` for IPv6);
* ``client_ip`` the client address by the route's ``trusted_proxies`` rule,
  when it is not the peer's;
* ``method``, ``path`` (the request target as received, query included),
  ``status``, ``bytes`` (response body bytes written);
* ``route`` the route or middleware that forwarded it, ``target`` the upstream
  that answered (or the last one tried), ``attempts`` the tries made,
  ``upstream_ms`` from the first try until the answering response head arrived,
  or the last try ended (tries and backoff included, time waiting for the
  client's upload left out);
* ``total_ms`` from the complete request head until the app returned;
* ``request_id`` the ID forwarded upstream and returned to the client;
* ``error`` why the server refused a request before any app saw it.
"""

from __future__ import annotations

from ._logfmt import logfmt_value

__all__ = ["ACCESS_SCOPE_KEY", "AccessRecord", "format_peer"]

#: Where the server puts the request's :class:`AccessRecord` in the ASGI scope.
ACCESS_SCOPE_KEY = "velithon.access"


def format_peer(peer: tuple[str, int] | None) -> str | None:
    """``ip:port``, ``[ip]:port`` for IPv6, ``None`` when unknown."""
    if not peer:
        return None
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AccessRecord:
    """What one request's access line says; the server creates it, a facade fills it in."""

    __slots__ = ("started", "bytes_sent", "route", "target", "attempts", "upstream_ms",
                 "request_id", "client_ip")

    def __init__(self, started: float) -> None:
        self.started = started
        self.bytes_sent = 0
        self.route: str | None = None
        self.target: str | None = None
        self.attempts: int | None = None
        self.upstream_ms: float | None = None
        self.request_id: str | None = None
        self.client_ip: str | None = None

    def proxied(self, route: str, target: str | None, attempts: int,
                upstream_seconds: float | None, request_id: bytes | None) -> None:
        """A facade forwarded the request: say where, how often and how long."""
        self.route = route
        self.target = target
        self.attempts = attempts
        self.upstream_ms = None if upstream_seconds is None else upstream_seconds * 1000.0
        self.request_id = None if request_id is None else request_id.decode("latin-1")

    def line(self, *, client: tuple[str, int] | None, method: str | None, path: str | None,
             status: int, ended: float, error: str | None = None) -> str:
        """The logfmt line; ``ended`` is on the clock ``started`` was read from.

        Written out field by field rather than through :func:`logfmt`: this runs for
        every request while the access log is on, and numbers need no quoting check.
        """
        value = logfmt_value
        parts = []
        peer = format_peer(client)  # an address and a port: nothing to quote
        if peer is not None:
            parts.append(f"client={peer}")
        if self.client_ip is not None:
            parts.append(f"client_ip={value(self.client_ip)}")
        if method is not None:
            parts.append(f"method={value(method)}")
        if path is not None:
            parts.append(f"path={value(path)}")
        parts.append(f"status={status} bytes={self.bytes_sent}")
        if self.route is not None:
            parts.append(f"route={value(self.route)}")
        if self.target is not None:
            parts.append(f"target={value(self.target)}")
        if self.attempts is not None:
            parts.append(f"attempts={self.attempts}")
        if self.upstream_ms is not None:
            parts.append(f"upstream_ms={self.upstream_ms:.3f}")
        parts.append(f"total_ms={(ended - self.started) * 1000.0:.3f}")
        if self.request_id is not None:
            parts.append(f"request_id={value(self.request_id)}")
        if error is not None:
            parts.append(f"error={value(error)}")
        return " ".join(parts)
