"""``ChunkedDecoder`` on its own: any valid chunked body, cut into any pieces, decodes to
its data and ends at its last byte; each malformed one fails with fixed words.

Pure checks with no server, so they run once rather than once per parser mode (the
decoder is the one both modes use: see its docstring).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon._http11 import MAX_CHUNK_SIZE, ChunkedBodyError, ChunkedDecoder


@pytest.fixture(autouse=True)
def _both_parsers() -> None:
    """No server here: the parser mode does not apply."""


def _chunked(parts: list[bytes], ext: bytes = b"", trailers: bytes = b"") -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts if p)
    return out + b"0\r\n" + trailers + b"\r\n"


@settings(deadline=None, max_examples=200)
@given(parts=st.lists(st.binary(max_size=40), max_size=6),
       ext=st.sampled_from([b"", b";a=b", b"; x", b";\x00"]),
       trailers=st.sampled_from([b"", b"x-sum: 1\r\n", b"a:\r\nb: c d\r\n"]),
       cuts=st.lists(st.integers(0, 400), max_size=8), tail=st.binary(max_size=20))
def test_decoder_decodes_any_valid_body_in_any_pieces_and_stops_at_its_end(
        parts: list[bytes], ext: bytes, trailers: bytes, cuts: list[int], tail: bytes) -> None:
    body = _chunked(parts, ext, trailers)
    data = body + tail  # tail: a pipelined request, never read as part of the body
    decoder = ChunkedDecoder(4096)
    decoded: list[bytes] = []
    consumed = 0
    start = 0
    for cut in sorted({min(c, len(data)) for c in cuts}) + [len(data)]:
        if decoder.done:
            break
        out, used = decoder.feed(data[start:cut])
        decoded.append(out)
        consumed += used
        start = cut
    assert decoder.done
    assert b"".join(decoded) == b"".join(parts)
    assert consumed == len(body)


@pytest.mark.parametrize(("data", "message"), [
    (b"ffffffffffffffffff\r\n", "too many digits"),
    (b"8000000000000000\r\n", "too large"),
    (b"5;a\rb\r\n", "invalid chunk size line"),
    (b"5\n", "not ended by CRLF"),
    (b"5\r\nhelloXX", "not followed by CRLF"),
    (b"x\r\n", "invalid chunk size line"),
    (b"5" + b" " * 5000, "too long"),
    (b"0\r\nbad trailer\r\n", "invalid trailer line"),
    (b"0\r\nx: a\r\n folded\r\n", "invalid trailer line"),
    (b"0\r\nx: a\n", "not ended by CRLF"),
    (b"0\r\n" + b"x: " + b"a" * 9000, "trailers too large"),
    (b"1;" + b"e" * 3000 + b"\r\na\r\n" + b"1;" + b"e" * 3000 + b"\r\n", "extension too long"),
])
def test_decoder_errors_are_fixed_words(data: bytes, message: str) -> None:
    decoder = ChunkedDecoder(4096)
    with pytest.raises(ChunkedBodyError, match=message) as info:
        for i in range(len(data)):  # byte by byte: state carries across feeds
            decoder.feed(data[i : i + 1])
    assert "\\x" not in str(info.value)


def test_largest_chunk_size_is_below_2_63() -> None:
    decoder = ChunkedDecoder(64)
    decoder.feed(b"%x\r\n" % MAX_CHUNK_SIZE)
    assert not decoder.done
