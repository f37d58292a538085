"""Chunked transfer coding (RFC 9112 §7.1): one strict decoder for every body and leg."""

from __future__ import annotations

import re

__all__ = ["FRAMING_PER_CHUNK", "MAX_CHUNK_SIZE", "MAX_TRAILER_BYTES", "ChunkedBodyError",
           "ChunkedDecoder"]

#: Largest chunk size accepted: below 2^63, so it fits a signed 64-bit length, as nginx
#: and HAProxy require (both answer 400 beyond). 16 hex digits at most, which also bounds
#: leading zeros.
MAX_CHUNK_SIZE = 2**63 - 1
#: Framing bytes (size lines, extensions, CRLFs) a body may average per chunk, on top of
#: one line's allowance: real senders use under 10; a body of tiny chunks with long
#: extensions is a way to make a peer parse much and receive little.
FRAMING_PER_CHUNK = 64
#: Largest trailer section (field lines after the last chunk) accepted.
MAX_TRAILER_BYTES = 8192
# chunk-size, then an optional extension (h11's order: ";..." then optional whitespace).
# The extension is discarded, never forwarded, so its bytes matter only where they could
# move the end of the line: a bare CR there ends the line for some parsers and not for
# others (nginx and HAProxy refuse it, as here; like them, other bytes are let through).
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:;[^\r\n]*)?[ \t]*")
# A trailer field line: a token, a colon, a value of visible bytes, SP and HTAB.
_TRAILER_LINE = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+:[^\x00-\x08\x0a-\x1f\x7f]*")
_MAX_SIZE_DIGITS = 16
_SIZE, _DATA, _DATA_END, _TRAILERS, _DONE = range(5)


class ChunkedBodyError(ValueError):
    """The raw bytes of a chunked body break its framing; the message is a fixed string."""


class ChunkedDecoder:
    """Decodes a chunked body from raw bytes, and finds the exact byte where it ends.

    Both parsers of the gateway rely on it: with llhttp it is the chunked decoder itself
    (llhttp only parses heads here), and with h11 it vets every byte before h11 parses
    it, so a body is refused for the same reasons in either mode. The rules are the
    strict ones of nginx and HAProxy: CRLF after every line, at most 16 hex digits and a
    size below 2^63, no bare CR in an extension, extensions that stay short on average
    (:data:`FRAMING_PER_CHUNK`), and well-formed trailer lines, which are then dropped.

    :meth:`feed` takes the body bytes in order, starting at the first byte after the
    head, and returns the chunk data they carried plus how many of them belonged to the
    body: once :attr:`done`, the rest is the next message.
    """

    __slots__ = ("_chunks", "_framing", "_line", "_remaining", "_state", "_trailers",
                 "max_line")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line  # longest size line, extension and CRLF included
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self._chunks = 0
        self._framing = 0  # framing bytes seen: size lines, data CRLFs, trailers
        self._trailers = 0

    @property
    def done(self) -> bool:
        """True once the whole body, trailers included, was seen."""
        return self._state == _DONE

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """``(chunk data in data, bytes of data consumed)``; raises :class:`ChunkedBodyError`."""
        pos = 0
        end = len(data)
        out: list[bytes] = []
        while pos < end:
            state = self._state
            if state == _DATA:
                step = min(self._remaining, end - pos)
                out.append(data[pos : pos + step])
                pos += step
                self._remaining -= step
                if not self._remaining:
                    self._state = _DATA_END
            elif state == _DATA_END:
                taken = data[pos : pos + 2 - len(self._line)]
                self._line += taken
                pos += len(taken)
                if len(self._line) == 2:
                    if self._line != b"\r\n":
                        raise ChunkedBodyError("chunk data not followed by CRLF")
                    self._line = b""
                    self._framing += 2
                    self._state = _SIZE
            elif state == _DONE:
                break
            else:
                newline = data.find(b"\n", pos)
                if newline < 0:
                    self._line += data[pos:]
                    self._check_partial_line()
                    pos = end
                    break
                line = self._line + data[pos : newline + 1]
                self._line = b""
                pos = newline + 1
                if state == _SIZE:
                    self._size_line(line)
                else:
                    self._trailer_line(line)
        return (out[0] if len(out) == 1 else b"".join(out)), pos

    def _check_partial_line(self) -> None:
        if self._state == _SIZE:
            if len(self._line) > self.max_line:
                raise ChunkedBodyError("chunk size line too long")
        elif self._trailers + len(self._line) > MAX_TRAILER_BYTES:
            raise ChunkedBodyError("chunked trailers too large")

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
        self._chunks += 1
        self._framing += len(line)
        if self._framing > self.max_line + FRAMING_PER_CHUNK * self._chunks:
            raise ChunkedBodyError("chunk extension too long")
        if size:
            self._remaining = size
            self._state = _DATA
        else:
            self._state = _TRAILERS

    def _trailer_line(self, line: bytes) -> None:
        self._trailers += len(line)
        if self._trailers > MAX_TRAILER_BYTES:
            raise ChunkedBodyError("chunked trailers too large")
        if line[-2:] != b"\r\n":
            raise ChunkedBodyError("trailer line not ended by CRLF")
        if len(line) == 2:
            self._state = _DONE
        elif _TRAILER_LINE.fullmatch(line, 0, len(line) - 2) is None:
            raise ChunkedBodyError("invalid trailer line")


