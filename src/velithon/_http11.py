"""HTTP/1.1 on the wire: the pieces the server and the upstream client share.

Both ends of the gateway speak HTTP/1.1 and must hold messages to the same rules:
which bytes a head may contain, how chunked framing is checked before the parser
sees it, how header lines are serialised next to h11, which methods are safe to
repeat, and what an error response the gateway writes itself looks like. One home
for each, so a request refused on one leg is refused on the other for the same
reason.
"""

from __future__ import annotations

import http
import json
import re
from collections.abc import Iterable
from typing import Any

from ._types import HeaderList

__all__ = [
    "H11_REQUEST_FIELDS",
    "H11_RESPONSE_FIELDS",
    "HEAD_CTL",
    "MAX_CHUNK_SIZE",
    "ChunkedBodyError",
    "ChunkedFraming",
    "FIELD_NAME",
    "FIELD_VALUE",
    "error_body",
    "reason",
    "split_for_h11",
]

# Control characters that may not appear anywhere in a message head (RFC 9110 §5.5: field
# values are VCHAR, SP, HTAB and obs-text; RFC 9112 §3/§4: so are the start lines). CR and
# LF are left to the line splitter, which refuses a bare CR itself.
HEAD_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def reason(status: int) -> bytes:
    """The standard reason phrase (empty for unknown codes, which HTTP allows)."""
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


#: What an error means when whoever raised it said nothing more.
_DEFAULT_DETAIL = {
    404: "No route matches the requested path",
    405: "The method is not allowed for this path",
    500: "The server could not complete the request",
}


def error_body(status: int, detail: str | None = None) -> bytes:
    """The JSON body of every error the server, the app or the gateway writes itself.

    ``{"error": <reason phrase>, "status": <code>, "detail": <message>}``: the same keys
    whoever answered, so clients parse one shape. ``detail`` never quotes what the client
    sent; without one, a fixed sentence for the status is used.
    """
    phrase = reason(status).decode() or "Error"
    content = {"error": phrase, "status": status,
               "detail": detail if detail is not None else _DEFAULT_DETAIL.get(status, phrase)}
    return json.dumps(content, separators=(",", ":")).encode()


# ---- chunked framing ahead of h11 -------------------------------------------------------
#: Largest chunk size accepted: below 2^63, so it fits a signed 64-bit length, as nginx
#: and HAProxy require (both answer 400 beyond). 16 hex digits at most, which also bounds
#: leading zeros.
MAX_CHUNK_SIZE = 2**63 - 1
# chunk-size, then an optional extension (h11's order: ";..." then optional whitespace).
# The extension is discarded, never forwarded, so its bytes matter only where they could
# move the end of the line: a bare CR there ends the line for some parsers and not for
# others (nginx and HAProxy refuse it, as here; like them, other bytes are let through).
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:;[^\r\n]*)?[ \t]*")
_MAX_SIZE_DIGITS = 16
_SIZE, _DATA, _DATA_END, _DONE = range(4)


class ChunkedBodyError(ValueError):
    """The raw bytes of a chunked body break its framing; the message is a fixed string."""


class ChunkedFraming:
    """Checks each chunk-size line of a chunked body before h11 parses it.

    Feed it exactly the body bytes h11 is about to receive, in order, starting at the
    first byte after the head; :meth:`feed` raises :class:`ChunkedBodyError` before any
    of a bad line's data could reach h11. It tracks only where size lines are (skipping
    chunk data by count), so it costs one step per chunk, and it stops at the last
    (zero-size) chunk: trailers and any pipelined bytes after them are h11's concern.
    """

    __slots__ = ("_line", "_remaining", "_state", "max_line")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line  # longest size line, extension and CRLF included
        self._state = _SIZE
        self._remaining = 0
        self._line = b""

    @property
    def done(self) -> bool:
        """True once the last chunk's size line was seen."""
        return self._state == _DONE

    def feed(self, data: bytes) -> None:
        """Advance over ``data``. Raises :class:`ChunkedBodyError` on bad framing."""
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                step = min(self._remaining, end - pos)
                pos += step
                self._remaining -= step
                if not self._remaining:
                    self._state = _DATA_END
            elif state == _SIZE:
                newline = data.find(b"\n", pos)
                if newline < 0:
                    self._line += data[pos:]
                    if len(self._line) > self.max_line:
                        raise ChunkedBodyError("chunk size line too long")
                    return
                line = self._line + data[pos : newline + 1]
                self._line = b""
                pos = newline + 1
                self._size_line(line)
            elif state == _DATA_END:
                taken = data[pos : pos + 2 - len(self._line)]
                self._line += taken
                pos += len(taken)
                if len(self._line) == 2:
                    if self._line != b"\r\n":
                        raise ChunkedBodyError("chunk data not followed by CRLF")
                    self._line = b""
                    self._state = _SIZE
            else:
                return

    def _size_line(self, line: bytes) -> None:
        if len(line) > self.max_line:
            raise ChunkedBodyError("chunk size line too long")
        if line[-2:] != b"\r\n":
            raise ChunkedBodyError("chunk size line not ended by CRLF")
        match = _CHUNK_LINE.fullmatch(line, 0, len(line) - 2)
        if match is None:
            raise ChunkedBodyError("invalid chunk size line")
        digits = match.group(1)
        if len(digits) > _MAX_SIZE_DIGITS:
            raise ChunkedBodyError("chunk size has too many digits")
        size = int(digits, 16)
        if size > MAX_CHUNK_SIZE:
            raise ChunkedBodyError("chunk size too large")
        if size:
            self._remaining = size
            self._state = _DATA
        else:
            self._state = _DONE


# ---- serialising heads next to h11 (hot path) -------------------------------------------
# h11 validates every header of an event it sends (twice for a response: its framing
# clean-up builds a second event), although most of them never influence its state
# machine. Callers therefore give h11 only the fields it acts on, and serialise the others
# themselves after checking them with these patterns, which are h11's own grammar
# (``h11._abnf``: ``field_name = token``; ``field_value`` = optional runs of
# ``[^\x00\s]`` joined by spaces/tabs: no CR, LF or NUL, no edge whitespace).
FIELD_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+").fullmatch
FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?").fullmatch
#: Request fields h11's client state machine reads (framing, keep-alive, upgrade, 100-continue).
H11_REQUEST_FIELDS = frozenset({
    b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect",
})
#: Response fields h11's server state machine reads (framing and keep-alive).
H11_RESPONSE_FIELDS = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def split_for_h11(headers: Iterable[tuple[Any, Any]], h11_fields: frozenset[bytes]
                  ) -> tuple[HeaderList, bytes] | None:
    """``(fields for h11, the other fields serialised)``, or ``None`` to let h11 do it all.

    The other fields are checked exactly as h11 would check them and written as h11
    writes them (``name: value\\r\\n``, name as given). ``None`` when any field is not
    plain bytes or fails the check: the caller then passes every field to h11, which
    raises the error it always raised.
    """
    own: HeaderList = []
    lines: list[bytes] = []
    name_ok = FIELD_NAME
    value_ok = FIELD_VALUE
    for name, value in headers:
        if type(name) is not bytes or type(value) is not bytes:
            return None
        if name.lower() in h11_fields:
            own.append((name, value))
        elif name_ok(name) is not None and value_ok(value) is not None:
            lines.append(name + b": " + value + b"\r\n")
        else:
            return None
    return own, b"".join(lines)
