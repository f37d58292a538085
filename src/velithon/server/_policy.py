"""Request-head policies that h11 does not enforce (pure, no I/O).

h11 is a sound parser but not a smuggling firewall: it accepts TE + CL, TE on HTTP/1.0,
``HTTP/2.0``, absolute/authority/asterisk targets with any method, obs-fold, and it checks
its size limit only while an event is incomplete. The functions here close those gaps. They
raise :class:`RequestRejected` with the status to answer; the connection then sends a JSON
error with ``Connection: close``.

Three checks run at different moments:

* :func:`scan_head` looks at the *raw* bytes h11 has buffered, before h11 parses them, so
  oversize heads are refused even when they arrive whole in one read, and folded lines and
  control characters are seen before h11 silently unfolds or accepts them.
* :func:`inspect_request` looks at the parsed :class:`h11.Request`.
* :class:`ChunkedFraming` follows a chunked body's raw bytes one step ahead of h11, whose
  chunk grammar takes a 20-digit size (far past any real length) and a bare CR in a
  chunk extension. The upstream client uses it on chunked responses too.

Error messages are fixed strings: nothing the client sent is ever echoed back, so an error
page cannot be used to reflect markup or probe what the parser saw.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote

import h11

from .._http11 import HEAD_CTL, error_body, reason
from ._config import ServerConfig

__all__ = [
    "RequestHead",
    "RequestRejected",
    "error_response",
    "inspect_request",
    "protocol_error_message",
    "scan_head",
]

# End of the header block as h11 finds it (bare LF allowed).
_HEAD_END = re.compile(rb"\n\r?\n")
# RFC 3986 host: IP-literal or reg-name/IPv4 (unreserved, sub-delims, pct-encoded), optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::([0-9]*))?")
_ABSOLUTE = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)(.*)", re.DOTALL)
# Slack for "METHOD " and " HTTP/1.1\r" around the target when the line is incomplete.
_LINE_SLACK = 32
# h11's messages quote the offending bytes; a client gets only the status's own words.
_PROTOCOL_ERRORS = {
    400: "malformed request",
    431: "request header fields too large",
    501: "unsupported transfer coding",
}


def _check_h11_header_items() -> None:
    """Fail at import, not on the first request, if h11 stores parsed headers differently.

    :func:`inspect_request` reads ``h11.Headers._full_items``, h11's private list of
    ``(raw name, lowercased name, value)`` triples: building the same list through the
    public views (``raw_items()`` or iteration) costs about twice as much on every
    request. The dependency on h11 is pinned to 0.16.x for this reason.

    Raises:
        ImportError: the installed h11 does not keep its headers that way.
    """
    probe = h11.Request(method="GET", target="/", headers=[("Host", "a")])
    if getattr(probe.headers, "_full_items", None) != [(b"Host", b"host", b"a")]:
        raise ImportError(
            f"velithon needs h11 0.16.x (found h11 {getattr(h11, '__version__', '?')}): "
            "h11.Headers no longer keeps its (raw name, name, value) triples in _full_items")


_check_h11_header_items()


class RequestRejected(Exception):
    """The request must be answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class RequestHead(NamedTuple):
    """What the connection needs from a validated request head."""

    raw_path: bytes
    query_string: bytes
    path: str
    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    chunked: bool
    websocket: bool


def protocol_error_message(status: int) -> str:
    """The client-facing message for an h11 parse error with ``status``.

    h11's own messages quote the bytes it refused; those go to the debug log only.
    """
    return _PROTOCOL_ERRORS.get(status) or reason(status).decode() or "bad request"


def error_response(status: int, message: str, extra: bytes = b"") -> bytes:
    """A complete ``Connection: close`` error response, serialised without h11.

    Built by hand because it is also needed when h11's state machine is already in ERROR
    (a parse error, or an app header h11 refused).
    """
    body = error_body(status, message)
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, reason(status)),
        b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
        extra,
        b"connection: close\r\n\r\n",
        body,
    ))


def scan_head(buf: bytes, config: ServerConfig) -> None:
    """Check the raw, possibly incomplete, request head at the start of ``buf``.

    Raises:
        RequestRejected: 414 for an overlong request line, 431 for too many or too large
            header lines, 400 for obs-fold (strict mode), whitespace before the first header
            or a control character (other than HTAB) in the head.
    """
    match = _HEAD_END.search(buf)
    complete = match is not None
    end = match.start() if match is not None else len(buf)
    # With no header lines the request line's LF is the one that starts the terminator.
    line_end = buf.find(b"\n", 0, end + complete)
    if line_end < 0:
        if end > config.max_uri_length + _LINE_SLACK:
            raise RequestRejected(414, "request target too long")
        if end > config.max_header_size:
            raise RequestRejected(431, "request header block too large")
        return
    if line_end > config.max_uri_length + _LINE_SLACK:
        raise RequestRejected(414, "request target too long")
    if end > config.max_header_size:
        raise RequestRejected(431, "request header block too large")
    if HEAD_CTL.search(buf, 0, end) is not None:
        # h11 accepts most control bytes in field values (cookie compatibility); a proxy
        # must not pass them on to backends that split or log on them.
        raise RequestRejected(400, "control character in request head")
    if line_end == end:
        return
    lines = buf.count(b"\n", line_end + 1, end) + complete
    if lines > config.max_headers:
        raise RequestRejected(431, "too many request headers")
    if buf[line_end + 1 : line_end + 2] in (b" ", b"\t"):
        raise RequestRejected(400, "whitespace before the first header line")
    if config.strict_obs_fold and (
        buf.find(b"\n ", line_end + 1, end) >= 0 or buf.find(b"\n\t", line_end + 1, end) >= 0
    ):
        raise RequestRejected(400, "obsolete line folding is not allowed")


def _check_host(host: bytes) -> None:
    m = _HOST.fullmatch(host)
    if m is None:
        raise RequestRejected(400, "invalid Host header")
    port = m.group(1)
    if port and int(port) > 65535:
        raise RequestRejected(400, "invalid port in Host header")


def _split_target(method: bytes, target: bytes, host: bytes | None) -> tuple[bytes, bytes]:
    """Return ``(raw_path, query_string)`` for an acceptable target."""
    if target[:1] == b"/":
        raw_path, _, query = target.partition(b"?")
        return raw_path, query
    if target == b"*":
        if method == b"OPTIONS":
            return b"*", b""
        raise RequestRejected(400, "asterisk-form target is only allowed with OPTIONS")
    m = _ABSOLUTE.fullmatch(target)
    if m is None:
        raise RequestRejected(400, "request target must start with '/'")
    authority, rest = m.group(1), m.group(2)
    if host is None or authority.lower() != host.lower():
        raise RequestRejected(400, "absolute-form target does not match Host")
    if rest[:1] not in (b"", b"/", b"?"):
        raise RequestRejected(400, "invalid absolute-form target")
    raw_path, _, query = rest.partition(b"?")
    return raw_path or b"/", query


def inspect_request(event: h11.Request, config: ServerConfig) -> RequestHead:
    """Apply framing, version, target and Host rules to a parsed request.

    Raises:
        RequestRejected: with the status code to answer (400, 405, 413, 414, 431, 505).
    """
    version = event.http_version
    method = event.method
    target = event.target
    _check_request_line(version, method, target, config)
    items = event.headers._full_items  # (raw name, lowercased name, value), parsed by h11
    if len(items) > config.max_headers:
        raise RequestRejected(431, "too many request headers")
    headers = [(name, value) for _, name, value in items]
    host, cl, te, upgrade, connection = _request_fields(headers)
    if te:
        if cl is not None:
            raise RequestRejected(400, "both Content-Length and Transfer-Encoding")
        if version == b"1.0":
            raise RequestRejected(400, "Transfer-Encoding in an HTTP/1.0 request")
    if host is not None:
        _check_host(host)
    raw_path, query = _split_target(method, target, host)
    content_length = int(cl) if cl is not None else None
    limit = config.max_body_size
    if limit is not None and content_length is not None and content_length > limit:
        raise RequestRejected(413, "request body too large")
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    # A real handshake needs both headers; h11 pauses for a protocol switch only then.
    websocket = (
        upgrade is not None
        and connection is not None
        and method == b"GET"
        and version == b"1.1"  # RFC 6455 §4.1: an HTTP/1.1 handshake, never 1.0
        and b"websocket" in upgrade.lower()
        and b"upgrade" in connection.lower()
    )
    return RequestHead(raw_path, query, path, headers, content_length, te, websocket)


def _check_request_line(version: bytes, method: bytes, target: bytes,
                        config: ServerConfig) -> None:
    """The version, method and target-size rules of :func:`inspect_request`."""
    if version != b"1.1" and version != b"1.0":
        raise RequestRejected(505, "HTTP version not supported")
    if method == b"CONNECT":
        raise RequestRejected(405, "CONNECT is not supported")
    if len(target) > config.max_uri_length:
        raise RequestRejected(414, "request target too long")
    if b"#" in target:
        # A fragment is resolved by the user agent and never sent (RFC 9112 §3.2); a
        # target carrying one is malformed, and routing or forwarding it would disagree
        # with backends that cut it off.
        raise RequestRejected(400, "fragment in request target")


def _request_fields(headers: list[tuple[bytes, bytes]]
                    ) -> tuple[bytes | None, bytes | None, bool, bytes | None, bytes | None]:
    """``(host, content_length, has_transfer_encoding, upgrade, connection)`` of a request.

    For a field sent on several lines, the last line's value is returned.
    """
    host = cl = upgrade = connection = None
    te = False
    for name, value in headers:
        if name == b"host":
            host = value
        elif name == b"content-length":
            cl = value
        elif name == b"transfer-encoding":
            te = True
        elif name == b"upgrade":
            upgrade = value
        elif name == b"connection":
            connection = value
    return host, cl, te, upgrade, connection
