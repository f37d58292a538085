"""The server connection on llhttp: heads parsed in C, bodies framed here.

The connection keeps the bytes it has read but not yet used in one buffer. A head is
found in that buffer (its blank line), checked raw by :func:`~._policy.scan_head`, then
fed to llhttp, which parses it and refuses what is malformed. The body is taken from the
same buffer by count (``Content-Length``) or by :class:`~velithon._http11.ChunkedDecoder`,
so whatever follows it — a pipelined request — stays in the buffer for the next head.

Responses are serialised here with the rules h11 applies (field grammar, one framing,
``Content-Length`` kept to its word, chunked for HTTP/1.1 bodies of unknown length and
close-delimited for HTTP/1.0, ``Connection: close`` when the connection will not be
reused), so an app sees the same behaviour whichever parser serves it.
"""

from __future__ import annotations

import math
import re
from typing import cast

import trio

from .._http11 import CheckedFields, invalid_field, is_checked
from .._http11.llhttp import HeadError, RequestHeadReader
from .._types import Message
from ._http import (
    HEAD,
    NO_BODY_STATUS,
    READ_SIZE,
    REASONS,
    REQUEST,
    InvalidResponse,
    ServerConnection,
)
from ._policy import RequestHead, RequestRejected, inspect_request, scan_head
from ._state import SERVER_FIELD, ServerState

__all__ = ["LlhttpConnection"]

# How the response body is framed on the wire.
_NONE, _LENGTH, _CHUNKED, _CLOSE = range(4)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_FRAMING_FIELDS = frozenset((b"content-length", b"transfer-encoding", b"connection"))
# What a checked response field is to the head writer: framing, or ours to not repeat.
_FRAMING, _DATE, _SERVER_NAME = "framing", "date", "server"
_CHECKED_KINDS = {name: _FRAMING for name in _FRAMING_FIELDS} | {
    b"date": _DATE, b"server": _SERVER_NAME}
# An obs-folded line break, replaced by one space when ``strict_obs_fold`` is off (as h11
# unfolds it).
_OBS_FOLD = re.compile(rb"[ \t]*\r\n[ \t]+")


def _as_bytes(value: object) -> bytes:
    """An ASGI header name or value as bytes (str is accepted as ASCII, as h11 does)."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        try:
            return value.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidResponse("response header is not ASCII") from None
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise InvalidResponse(f"response header of type {type(value).__name__}")


def field_lines(headers: object) -> tuple[list[bytes], list[tuple[bytes, bytes, bytes]]]:
    """Check response fields with h11's grammar; split off the ones framing depends on.

    Returns ``(serialised ordinary lines, [(name, lowercased name, value)] of
    Content-Length, Transfer-Encoding and Connection)``.

    Raises:
        InvalidResponse: a name or value h11 would refuse to send.
    """
    lines: list[bytes] = []
    framing: list[tuple[bytes, bytes, bytes]] = []
    if is_checked(headers):  # lowercase names, values of the grammar: nothing to convert
        for name, value in headers:  # type: ignore[attr-defined]
            if name in _FRAMING_FIELDS:
                framing.append((name, name, value))
            else:
                lines.append(name + b": " + value + b"\r\n")
        return lines, framing
    fields = [(name if type(name) is bytes else _as_bytes(name),
               value if type(value) is bytes else _as_bytes(value))
              for name, value in headers]  # type: ignore[attr-defined]
    bad = invalid_field(fields)
    if bad is not None:
        raise InvalidResponse(f"invalid response header {bad[:40]!r}")
    for name, value in fields:
        lname = name.lower()
        if lname in _FRAMING_FIELDS:
            framing.append((name, lname, value))
        else:
            lines.append(name + b": " + value + b"\r\n")
    return lines, framing


class LlhttpConnection(ServerConnection):
    """A server connection whose request heads llhttp parses; see the module docstring."""

    def __init__(self, stream: trio.SocketStream, state: ServerState) -> None:
        super().__init__(stream, state)
        self._buf = b""  # read but not yet used: the next head, or body bytes
        self._reader = RequestHeadReader()
        self._remaining = 0  # request body bytes still to come (Content-Length)
        self._keep = False  # the response keeps the connection open
        self._framing = _NONE
        self._left = 0  # response body bytes its Content-Length still promises

    def _forget(self) -> None:
        super()._forget()
        self._reader.release()  # its parser and it refer to each other

    async def _next_request(self) -> RequestHead | None:
        config = self.config
        buf = self._buf
        while True:
            if buf:
                if self._phase is not HEAD:
                    self._enter_head()
                scan_head(buf, config)  # every rule that decides a status comes first
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    # llhttp sees the head once, whole, after the raw checks passed
                    stop = end + 4
                    head = buf[:stop] if stop < len(buf) else buf
                    if not config.strict_obs_fold:
                        head = _OBS_FOLD.sub(b" ", head)
                    reader = self._reader
                    reader.begin()
                    try:
                        reader.feed(head)
                    except HeadError as exc:
                        raise RequestRejected(exc.status, exc.message) from None
                    self._buf = buf[stop:]
                    self.deadline = math.inf
                    self._phase = REQUEST
                    return inspect_request(reader.method, reader.target, reader.version,
                                           reader.headers, config)
            elif self._draining:
                return None
            else:
                self._enter_idle()
            if buf:
                data = await self.io.receive_some(READ_SIZE)
            else:  # between requests: the next one is rarely there yet
                data = await self.io.receive_when_ready(READ_SIZE)
            if not data:
                if buf:
                    raise RequestRejected(400, "malformed request")  # cut inside a head
                return None
            buf = buf + data if buf else data
            self._buf = buf

    # -- request body -------------------------------------------------------------------
    def _start_body(self, head: RequestHead) -> None:
        buf, self._buf = self._buf, b""
        if self._decoder is not None:
            if buf:
                self._take_chunked(buf)
        elif head.content_length:
            self._remaining = head.content_length
            if buf:
                self._take_length(buf)
        else:
            self._body_done = True
            self._buf = buf

    def _feed_body(self, data: bytes) -> None:
        if self._decoder is not None:
            self._take_chunked(data)
        else:
            self._take_length(data)

    def _take_length(self, data: bytes) -> None:
        remaining = self._remaining
        if len(data) > remaining:
            data, self._buf = data[:remaining], data[remaining:]
        self._remaining = remaining - len(data)
        self._add_body(data)
        if not self._remaining:
            self._body_done = True

    def _take_chunked(self, data: bytes) -> None:
        decoded, used = self._decode_chunked(data)
        if self._body_error is not None:
            return
        if decoded:
            self._add_body(decoded)
        assert self._decoder is not None
        if self._decoder.done:
            self._body_done = True
            self._buf = data[used:]

    def _buffer(self, data: bytes) -> None:
        self._buf += data

    def _continue(self) -> bytes:
        return _CONTINUE

    # -- response -----------------------------------------------------------------------
    def _encode_head(self, start: Message, final_length: int | None) -> bytes:
        status = start["status"]
        if type(status) is not int or not 200 <= status <= 999:
            raise InvalidResponse(f"cannot send status {status!r} as a final response")
        headers = start.get("headers")
        if self.plain_response_fields and is_checked(headers) and not self._draining:
            return self._encode_checked_head(status, cast(CheckedFields, headers), final_length)
        lines, special = field_lines(self._response_fields(start, status, final_length))
        lines += self._framing_lines(status, special)
        return b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, REASONS.get(status, b""), b"".join(lines))

    def _encode_checked_head(self, status: int, headers: list[tuple[bytes, bytes]],
                             final_length: int | None) -> bytes:
        """:meth:`_encode_head` for fields known to follow the grammar (a proxied
        response, say), in one pass: the same bytes as :meth:`_response_fields`,
        :func:`field_lines` and :meth:`_framing_lines` give, without their three."""
        no_body = self._no_body = self._is_head or status in NO_BODY_STATUS
        plain: list[tuple[bytes, bytes]] = []
        framing_fields: list[tuple[bytes, bytes]] = []
        date = server = True  # ours are still to be added
        kinds = _CHECKED_KINDS
        for item in headers:
            kind = kinds.get(item[0])
            if kind is None:
                plain.append(item)
            elif kind is _FRAMING:
                framing_fields.append(item)
            else:
                plain.append(item)
                if kind is _DATE:
                    date = False
                else:
                    server = False
        if date and server:
            ours = self.state.date_and_server_lines()
        else:
            ours = b"date: " + self.state.date_header() + b"\r\n" if date else b""
            if server:
                ours += b"%s: %s\r\n" % SERVER_FIELD
        fields = b"\r\n".join(map(b": ".join, plain)) + b"\r\n" if plain else b""
        if len(framing_fields) == 1 and not no_body:
            name, length = framing_fields[0]
            if name == b"content-length" and length.isdigit():
                # the usual proxied response: its own length, nothing else about framing
                self._left = int(length)
                keep = self._keep = self._head.keep_alive
                self._framing = _LENGTH
                return b"HTTP/1.1 %d %s\r\n%s%scontent-length: %s\r\n%s\r\n" % (
                    status, REASONS.get(status, b""), ours, fields, length,
                    b"" if keep else b"connection: close\r\n")
        special = [(name, name, value) for name, value in framing_fields]
        if (final_length is not None and status not in NO_BODY_STATUS
                and (final_length or not self._is_head)
                and not any(lname == b"content-length" for _, lname, _ in special)):
            special.append((b"content-length", b"content-length", b"%d" % final_length))
        framing = b"".join(self._framing_lines(status, special))
        return b"HTTP/1.1 %d %s\r\n%s%s%s\r\n" % (
            status, REASONS.get(status, b""), ours, fields, framing)

    def _framing_lines(self, status: int, special: list[tuple[bytes, bytes, bytes]]
                       ) -> list[bytes]:
        """Choose the body framing and keep-alive as h11 would; return the lines saying so.

        The app's ``Content-Length`` is kept (and then held to), its
        ``Transfer-Encoding: chunked`` too; a body of unknown length is chunked for
        HTTP/1.1 and ends with the connection for HTTP/1.0. ``Connection: close`` is added
        when the connection will not be reused (the client or the app asked for it, or
        the body ends with the connection).
        """
        length: bytes | None = None
        coding: bytes | None = None
        tokens: list[bytes] = []
        for _, lname, value in special:
            if lname == b"content-length":
                if not value.isdigit() or (length is not None and value != length):
                    raise InvalidResponse("invalid or conflicting Content-Length")
                length = value
            elif lname == b"transfer-encoding":
                coding = value if coding is None else coding + b", " + value
            else:
                tokens.extend(t.strip().lower() for t in value.split(b",") if t.strip())
        keep = self._head.keep_alive and b"close" not in tokens
        lines: list[bytes] = []
        if status in NO_BODY_STATUS:
            framing = _NONE
        elif coding is not None:
            if coding.lower() != b"chunked":
                raise InvalidResponse("only the chunked transfer coding can be sent")
            framing, length = _CHUNKED, None
        elif length is not None:
            framing = _LENGTH
            self._left = int(length)
        else:
            framing = _CHUNKED
        if framing == _CHUNKED:
            if self._head.http_version == "1.1":
                lines.append(b"transfer-encoding: chunked\r\n")
            else:  # an HTTP/1.0 client: the body ends when the connection does
                framing = _CLOSE
                keep = keep and self._is_head
        if length is not None:
            lines.append(b"content-length: " + length + b"\r\n")
        if not keep:
            tokens = sorted({t for t in tokens if t != b"keep-alive"} | {b"close"})
        if tokens:
            lines.append(b"connection: " + b", ".join(tokens) + b"\r\n")
        self._keep = keep
        self._framing = _NONE if self._no_body else framing
        return lines

    def _encode_body(self, body: bytes) -> bytes:
        framing = self._framing
        if framing == _LENGTH:
            left = self._left - len(body)
            if left < 0:
                raise InvalidResponse("response body longer than its Content-Length")
            self._left = left
            return body
        if framing == _CHUNKED:
            return b"%x\r\n%s\r\n" % (len(body), body)
        if framing == _CLOSE:
            return body
        return b""

    def _encode_end(self) -> bytes:
        framing = self._framing
        if framing == _CHUNKED:
            return _LAST_CHUNK
        if framing == _LENGTH and self._left:
            raise InvalidResponse("response body shorter than its Content-Length")
        return b""

    def _reuse(self) -> str:
        if not self._body_done:
            return "linger"
        return "reuse" if self._keep else "eof"

    # -- WebSocket hand-over ------------------------------------------------------------
    def handshake_has_body(self, head: RequestHead) -> bool:
        return head.chunked or bool(head.content_length)

    def switch_protocols(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        lines, special = field_lines(headers)
        lines.extend(name + b": " + value + b"\r\n" for name, _, value in special)
        early, self._buf = self._buf, b""
        return b"HTTP/1.1 101 Switching Protocols\r\n%s\r\n" % b"".join(lines), early
