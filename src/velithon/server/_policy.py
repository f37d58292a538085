"""Request-head policies that neither parser enforces (pure, no I/O).

A parser is not a smuggling firewall. h11 accepts TE + CL, TE on HTTP/1.0, ``HTTP/2.0``,
absolute/authority/asterisk targets with any method, any method token, obs-fold and bare
LF line ends, and it checks its size limit only while an event is incomplete; llhttp
accepts versions 0.9 to 2.0, a missing or repeated Host, a leading empty line, several
spaces between request-line parts, and heads of any size. The functions here close those
gaps, the same way for both parsers, so a request gets the same answer in either mode.
They raise :class:`RequestRejected` with the status to answer; the connection then sends
a JSON error with ``Connection: close``.

Two checks run at different moments:

* :func:`scan_head` looks at the *raw* head bytes before the parser sees them, so
  oversize heads are refused even when they arrive whole in one read, and folded lines,
  bare LFs and control characters are seen before a parser silently accepts them.
* :func:`inspect_request` looks at the parsed request line and fields.

Error messages are fixed strings: nothing the client sent is ever echoed back, so an error
page cannot be used to reflect markup or probe what the parser saw.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote

from .._http11 import HEAD_CTL, CheckedFields, error_body, reason, valid_length
from .._http11.llhttp import LLHTTP_METHODS
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
_LINE_ENDS = (b"\r", b"\n")
_KNOWN_METHODS = {method: method.decode("ascii") for method in LLHTTP_METHODS}
_TOKEN_PREFIX = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]*").fullmatch
# method SP target SP version CR: a token, visible ASCII, HTTP/digit.digit (h11's grammar).
_REQUEST_LINE = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])\r")
_FRAMING_LINE = re.compile(rb"\n(transfer-encoding|content-length):([^\r\n]*)",
                           re.IGNORECASE)
# h11's messages quote the offending bytes; a client gets only the status's own words.
_PROTOCOL_ERRORS = {
    400: "malformed request",
    431: "request header fields too large",
    501: "unsupported transfer coding",
}


class RequestRejected(Exception):
    """The request must be answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class RequestHead(NamedTuple):
    """What the connection needs from a validated request head."""

    method: str
    target: bytes
    http_version: str
    raw_path: bytes
    query_string: bytes
    path: str
    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    chunked: bool
    websocket: bool
    #: HTTP/1.1 without ``Connection: close`` (HTTP/1.0 keep-alive is not offered).
    keep_alive: bool
    #: The client waits for ``100 Continue`` before sending its body.
    expect_100: bool


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

    Runs before either parser sees the bytes, on every read of a head, so the answer to
    a bad request does not depend on the parser: the checks go in one fixed order and
    the first that fails decides. Before the request line is complete, only bytes that
    cannot begin a method are refused (garbage such as a TLS hello gets its 400 at
    once); then the request line (:func:`_check_request_line`); then the head's size
    and bytes; once the head is complete, its framing fields (:func:`_check_framing`).

    Raises:
        RequestRejected: 400, 405, 414, 431, 501 or 505 (see the functions named).
    """
    match = _HEAD_END.search(buf)
    complete = match is not None
    end = match.start() if match is not None else len(buf)
    # With no header lines the request line's LF is the one that starts the terminator.
    line_end = buf.find(b"\n", 0, end + complete)
    if line_end < 0:
        space = buf.find(b" ")
        if _TOKEN_PREFIX(buf, 0, space if space >= 0 else len(buf)) is None:
            raise RequestRejected(400, "malformed request")
        if end > config.max_uri_length + _LINE_SLACK:
            raise RequestRejected(414, "request target too long")
        if end > config.max_header_size:
            raise RequestRejected(431, "request header block too large")
        return
    if line_end > config.max_uri_length + _LINE_SLACK:
        raise RequestRejected(414, "request target too long")
    _check_request_line(buf, line_end, config)
    if end > config.max_header_size:
        raise RequestRejected(431, "request header block too large")
    if HEAD_CTL.search(buf, 0, end) is not None:
        # h11 accepts most control bytes in field values (cookie compatibility); a proxy
        # must not pass them on to backends that split or log on them.
        raise RequestRejected(400, "control character in request head")
    if match is not None:
        stop = match.end()  # the blank line included: it may be the only bare LF
        if buf.count(b"\n", 0, stop) != buf.count(b"\r\n", 0, stop):
            raise RequestRejected(400, "bare LF in request head")
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
    if complete:
        _check_framing(buf, line_end, end, buf[line_end - 9 : line_end - 1] == b"HTTP/1.0")


def _check_request_line(buf: bytes, line_end: int, config: ServerConfig) -> None:
    """The request line's syntax (400), then its meaning: 501, 505, 405, 414, 400.

    Raises:
        RequestRejected: a malformed line (not ``method SP target SP HTTP/d.d CRLF``,
            with a token method and a visible-ASCII target), an unknown method (501),
            a version other than 1.0/1.1 (505), ``CONNECT`` (405), a target over
            ``max_uri_length`` (414) or with a fragment (400).
    """
    if buf[:1] in _LINE_ENDS:
        raise RequestRejected(400, "empty line before the request line")
    match = _REQUEST_LINE.fullmatch(buf, 0, line_end)
    if match is None:
        raise RequestRejected(400, "malformed request line")
    method, target, version = match.group(1, 2, 3)
    if method not in LLHTTP_METHODS:
        raise RequestRejected(501, "request method not implemented")
    if version != b"1.1" and version != b"1.0":
        raise RequestRejected(505, "HTTP version not supported")
    if method == b"CONNECT":
        raise RequestRejected(405, "CONNECT is not supported")
    if len(target) > config.max_uri_length:
        raise RequestRejected(414, "request target too long")
    if target.find(b"#") >= 0:  # not `in`: that raises and clears a TypeError inside
        # A fragment is resolved by the user agent and never sent (RFC 9112 §3.2); a
        # target carrying one is malformed, and routing or forwarding it would disagree
        # with backends that cut it off.
        raise RequestRejected(400, "fragment in request target")


def _check_framing(buf: bytes, line_end: int, end: int, http10: bool) -> None:
    """``Transfer-Encoding`` and ``Content-Length`` as sent, before a parser merges them.

    h11 joins repeated fields and strips tabs; llhttp keeps them and refuses other
    shapes. One strict reading serves both: a single ``Transfer-Encoding: chunked``
    line (spaces around the value only), a single ``Content-Length`` (see
    :func:`~velithon._http11.valid_length`), never both, and no transfer coding in
    HTTP/1.0.

    Raises:
        RequestRejected: 501 for any other transfer coding, 400 otherwise.
    """
    codings: list[bytes] = []
    lengths: list[bytes] = []
    for name, value in _FRAMING_LINE.findall(buf, line_end, end):
        (codings if len(name) == 17 else lengths).append(value)
    if codings:
        if len(codings) > 1 or codings[0].strip(b" ").lower() != b"chunked":
            raise RequestRejected(501, "unsupported transfer coding")
        if lengths:
            raise RequestRejected(400, "both Content-Length and Transfer-Encoding")
        if http10:
            raise RequestRejected(400, "Transfer-Encoding in an HTTP/1.0 request")
    if lengths and (len(lengths) > 1 or not valid_length(lengths[0])):
        raise RequestRejected(400, "invalid or repeated Content-Length")


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


def inspect_request(method: bytes, target: bytes, version: bytes,
                    headers: list[tuple[bytes, bytes]], config: ServerConfig) -> RequestHead:
    """Apply method, framing, version, target and Host rules to a parsed request.

    ``headers`` are ``(lowercased name, value)`` pairs as the parser read them.

    Raises:
        RequestRejected: with the status code to answer (400, 405, 413, 414, 431, 501, 505).
    """
    method_name = _KNOWN_METHODS[method]  # scan_head refused any other
    if len(headers) > config.max_headers:
        raise RequestRejected(431, "too many request headers")
    fields = _request_fields(headers)
    if fields.hosts > 1:
        raise RequestRejected(400, "more than one Host header")
    host = fields.host
    if host is None:
        if version == b"1.1":
            raise RequestRejected(400, "missing Host header")
    else:
        _check_host(host)
    te = fields.transfer_encoding  # its shape was checked raw by scan_head
    raw_path, query = _split_target(method, target, host)
    content_length = None
    if fields.content_length is not None:
        content_length = int(fields.content_length)
        limit = config.max_body_size
        if limit is not None and content_length > limit:
            raise RequestRejected(413, "request body too large")
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    connection = fields.connection.lower() if fields.connection is not None else b""
    upgrade = fields.upgrade
    # A real handshake needs both headers; a parser pauses for a protocol switch only then.
    websocket = (
        upgrade is not None
        and method == b"GET"
        and version == b"1.1"  # RFC 6455 §4.1: an HTTP/1.1 handshake, never 1.0
        and b"websocket" in upgrade.lower()
        and b"upgrade" in connection
    )
    keep_alive = version == b"1.1" and (not connection or not _has_token(connection, b"close"))
    expect = fields.expect
    expect_100 = (version == b"1.1" and expect is not None
                  and _has_token(expect.lower(), b"100-continue"))
    # both parsers and the checks above leave only fields of the grammar: say so, so the
    # gateway need not look at them again before sending them upstream
    return RequestHead(method_name, target, version.decode("ascii"), raw_path, query, path,
                       CheckedFields(headers), content_length, te is not None, websocket,
                       keep_alive, expect_100)


def _has_token(value: bytes, token: bytes) -> bool:
    """Whether the comma-separated, lowercased field ``value`` lists ``token``."""
    return any(part.strip() == token for part in value.split(b","))


class _Fields:
    """The fields of a request that the rules above look at (the last line wins)."""

    __slots__ = ("connection", "content_length", "expect", "host", "hosts",
                 "transfer_encoding", "upgrade")

    def __init__(self) -> None:
        self.host: bytes | None = None
        self.hosts = 0
        self.content_length: bytes | None = None
        self.transfer_encoding: bytes | None = None
        self.upgrade: bytes | None = None
        self.connection: bytes | None = None
        self.expect: bytes | None = None


def _request_fields(headers: list[tuple[bytes, bytes]]) -> _Fields:
    """One pass over the request's fields. Repeated ``Transfer-Encoding`` lines are joined
    (so ``chunked`` twice is refused as a coding list), other repeats keep the last."""
    fields = _Fields()
    for name, value in headers:
        if name == b"host":
            fields.host = value
            fields.hosts += 1
        elif name == b"content-length":
            fields.content_length = value
        elif name == b"transfer-encoding":
            te = fields.transfer_encoding
            fields.transfer_encoding = value if te is None else te + b", " + value
        elif name == b"upgrade":
            fields.upgrade = value
        elif name == b"connection":
            fields.connection = value
        elif name == b"expect":
            fields.expect = value
    return fields
