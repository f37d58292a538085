"""HTTP/1.1 on the wire: the rules the server and the upstream client share.

Both ends of the gateway speak HTTP/1.1 and must hold messages to the same rules, with
either parser: which bytes a head may contain, how a chunked body is decoded
(:mod:`.chunked`), how heads are read with llhttp (:mod:`.llhttp`) or serialised next to
h11, and what an error response the gateway writes itself looks like. One home for
each, so a request refused on one leg or in one parser mode is refused everywhere for
the same reason.
"""

from __future__ import annotations

import http
import json
import re
from collections.abc import Iterable
from typing import Any, Self, SupportsIndex

from .._types import HeaderList
from .chunked import (
    FRAMING_PER_CHUNK,
    MAX_CHUNK_SIZE,
    MAX_TRAILER_BYTES,
    ChunkedBodyError,
    ChunkedDecoder,
)

__all__ = [
    "H11_REQUEST_FIELDS",
    "H11_RESPONSE_FIELDS",
    "HEAD_CTL",
    "MAX_CHUNK_SIZE",
    "CheckedFields",
    "ChunkedBodyError",
    "ChunkedDecoder",
    "FRAMING_PER_CHUNK",
    "MAX_TRAILER_BYTES",
    "FIELD_NAME",
    "FIELD_VALUE",
    "error_body",
    "invalid_field",
    "is_checked",
    "reason",
    "split_for_h11",
    "valid_length",
]

# Control characters that may not appear anywhere in a message head (RFC 9110 §5.5: field
# values are VCHAR, SP, HTAB and obs-text; RFC 9112 §3/§4: so are the start lines). CR and
# LF are left to the line splitter, which refuses a bare CR itself.
HEAD_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def valid_length(value: bytes) -> bool:
    """Whether a raw ``Content-Length`` value is one both parsers read the same way:
    digits (optional whitespace around), at most 20 of them, below 2^64."""
    digits = value.strip(b" \t")
    return digits.isdigit() and len(digits) <= 20 and int(digits) < 2**64


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


# ---- serialising heads next to h11 (hot path) -------------------------------------------
# h11 validates every header of an event it sends (twice for a response: its framing
# clean-up builds a second event), although most of them never influence its state
# machine. Callers therefore give h11 only the fields it acts on, and serialise the others
# themselves after checking them with these patterns, which are h11's own grammar
# (``h11._abnf``: ``field_name = token``; ``field_value`` = optional runs of
# ``[^\x00\s]`` joined by spaces/tabs: no CR, LF or NUL, no edge whitespace).
FIELD_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+").fullmatch
FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?").fullmatch
def _byte_map(kinds: dict[bytes, bytes]) -> bytes:
    """A ``bytes.translate`` table: each byte of a key maps to its value, others to NUL."""
    table = bytearray(256)
    for members, to in kinds.items():
        for byte in members:
            table[byte] = to[0]
    return bytes(table)


_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: names joined by LF, translated: token bytes become ``t``, LF stays, the rest NUL
_NAME_MAP = _byte_map({_TOKEN_BYTES: b"t", b"\n": b"\n"})
#: values joined by LF, translated: space and tab become a space, LF stays, NUL, CR, VT
#: and FF become NUL, every other byte ``v``
_VALUE_MAP = _byte_map({bytes(b for b in range(256) if b not in b"\x00\r\n\x0b\x0c \t"): b"v",
                        b" \t": b" ", b"\n": b"\n"})


def invalid_field(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The name of the first field that is not a :data:`FIELD_NAME` with a
    :data:`FIELD_VALUE`, or ``None`` when all are.

    The usual head is valid, so it is checked whole, without a regular expression: the
    names and the values are each joined with LF (which neither may contain) and
    translated byte by byte into a few classes (``bytes.translate``, one C loop), in
    which a refused byte is NUL and a value's edge whitespace is a space next to a line
    end; substring searches then decide. A regular expression over the same text cost
    ten times as much (its nested repetition backtracks). ``find`` rather than ``in``:
    ``bytes in bytes`` first tries its operand as an integer and raises and clears an
    exception each time, which costs more than the search. Only a head that fails is
    walked field by field, with the patterns, to say which field.
    """
    names = [name for name, _ in headers]
    if not names:
        return None
    values = [value for _, value in headers]
    joined = b"\n".join(names).translate(_NAME_MAP)
    lines = len(names) - 1  # the separators: one more LF is an LF inside a field
    if (names[0] and names[-1] and joined.find(b"\x00") < 0 and joined.find(b"\n\n") < 0
            and joined.count(b"\n") == lines):
        joined = b"\n".join(values).translate(_VALUE_MAP)
        if (joined.find(b"\x00") < 0 and joined.count(b"\n") == lines
                and joined.find(b"\n ") < 0 and joined.find(b" \n") < 0
                and joined[:1] != b" " and joined[-1:] != b" "):
            return None
    for name, value in zip(names, values, strict=True):
        if FIELD_NAME(name) is None or FIELD_VALUE(value) is None:
            return name
    return None  # pragma: no cover - the joined check and the field check agree


class CheckedFields(list[tuple[bytes, bytes]]):
    """Header fields known to follow the field grammar: names are lowercase tokens and
    values :data:`FIELD_VALUE`\\ s, all ``bytes``.

    Made where that is known without looking again: by the server from a request head
    both parsers checked, and by the gateway from such a list plus values it made or
    checked itself. A writer can then skip :func:`invalid_field` (and lowercasing). It
    is still a plain list for everyone else; a change through any of the list's own
    methods (an ASGI middleware appending a header, say) clears :attr:`checked`, so
    nothing unchecked is ever written as checked. Code that adds fields it knows to be
    valid uses :meth:`add_checked`.
    """

    #: False once the list was changed by someone who did not check what they added
    checked = True

    def add_checked(self, fields: Iterable[tuple[bytes, bytes]]) -> None:
        """Append fields the caller knows to follow the grammar (lowercase names)."""
        list.extend(self, fields)

    def append(self, item: tuple[bytes, bytes]) -> None:
        self.checked = False
        super().append(item)

    def extend(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        self.checked = False
        super().extend(items)

    def insert(self, index: SupportsIndex, item: tuple[bytes, bytes]) -> None:
        self.checked = False
        super().insert(index, item)

    def __setitem__(self, index: Any, item: Any) -> None:
        self.checked = False
        super().__setitem__(index, item)

    def __iadd__(self, items: Iterable[tuple[bytes, bytes]]) -> Self:  # type: ignore[override,misc]
        self.checked = False
        return super().__iadd__(items)


def is_checked(headers: object) -> bool:
    """Whether ``headers`` is a :class:`CheckedFields` nobody changed unchecked."""
    return type(headers) is CheckedFields and headers.checked


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
