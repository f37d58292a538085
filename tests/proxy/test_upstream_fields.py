"""The upstream client's field rules as pure functions: what a response may carry on to
the client unchecked, and the shorter way a checked request list takes to its head."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from velithon._exceptions import UpstreamProtocolError, UpstreamRequestError
from velithon._http11 import CheckedFields, invalid_field
from velithon._http11.llhttp import HeadError, ResponseHeadReader
from velithon._proxy.connection import _check_head, prepare_request

_HEAD_BYTES = st.sampled_from(list(b"aZ09-_:; \t\r\n\x00\x01\x0b\x0c\x7f\x80\xff\"(),/=?@{}!#|~"))


@settings(max_examples=600, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.lists(_HEAD_BYTES, max_size=8).map(bytes),
                          st.sampled_from([b":", b": ", b" :", b":\t"]),
                          st.lists(_HEAD_BYTES, max_size=8).map(bytes)), max_size=4))
def test_fields_llhttp_accepts_after_the_raw_checks_are_of_the_grammar(
        fields: list[tuple[bytes, bytes, bytes]]) -> None:
    # Why a response's fields are not checked again before the gateway writes them on.
    head = (b"HTTP/1.1 200 OK\r\n" + b"".join(n + sep + v + b"\r\n" for n, sep, v in fields)
            + b"Content-Length: 0\r\n\r\n")
    try:
        _check_head(head, 0, len(head), 0, url="u", max_head_bytes=1024, max_headers=100)
    except UpstreamProtocolError:
        return
    reader = ResponseHeadReader()
    reader.begin()
    try:
        reader.feed(head)
    except HeadError:
        return
    assert invalid_field(reader.headers) is None


_REQUEST_FIELD = st.tuples(
    st.sampled_from([b"host", b"x-a", b"accept", b"content-length", b"transfer-encoding",
                     b"connection", b"upgrade", b"expect", b"x-forwarded-for"]),
    st.sampled_from([b"1", b"example.test", b"close", b"keep-alive", b"chunked"]))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(_REQUEST_FIELD, max_size=6), st.sampled_from([None, b"", b"body"]),
       st.sampled_from([b"GET", b"POST"]))
def test_a_checked_request_field_list_is_sent_as_the_same_list_unchecked(
        fields: list[tuple[bytes, bytes]], body: bytes | None, method: bytes) -> None:
    # A checked list (the gateway's) may take a shorter way to the request head; it must
    # lead to the very head, framing and keep-alive verdict the general way gives.
    def prepared(headers: list[tuple[bytes, bytes]]) -> object:
        try:
            return prepare_request("httptools", method, b"/x", headers, body, url="u")
        except UpstreamRequestError as exc:
            return str(exc)

    assert prepared(CheckedFields(fields)) == prepared(list(fields))


_CONTENT_LENGTHS = st.sampled_from([b"5", b"5, 5", b"99999999999999999999", b"18446744073709551616",
                                    b" 5", b"5 ", b"+5", b"0x5", b"", b"05", b"5\t", b"1" * 21])
_STATUS_LINES = st.one_of(
    st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 200 OK\n",
                     b"HTTP/1.1 200 O\x01K\r\n", b"HTTP/1.1 200 O\x7fK\r\n", b"HTTP/1.1 200\r\n",
                     b"HTTP/1.1 200 O\tK\r\n", b"HTTP/1.1 200 O\rK\r\n", b"HTTP/2.0 200 OK\r\n"]),
    st.tuples(st.sampled_from([b"HTTP/1.1 ", b"HTTP/1.0 "]),
              st.lists(_HEAD_BYTES, max_size=6).map(bytes))
    .map(lambda parts: parts[0] + b"200 " + parts[1] + b"\r\n"))
_HEAD_LINES = st.one_of(
    st.tuples(st.lists(_HEAD_BYTES, max_size=6).map(bytes),
              st.sampled_from([b":", b": ", b" :"]),
              st.lists(_HEAD_BYTES, max_size=6).map(bytes)).map(b"".join),
    _CONTENT_LENGTHS.map(lambda value: b"Content-Length: " + value),
    st.sampled_from([b"X-A: a", b" folded", b"\tfolded", b"Transfer-Encoding: chunked"]))


def _refusal(head: bytes, *, parsed_strictly: bool) -> str | None:
    try:
        _check_head(head, 0, len(head), 0, url="u", max_head_bytes=4096, max_headers=100,
                    parsed_strictly=parsed_strictly)
    except UpstreamProtocolError as exc:
        return str(exc)
    return None


@settings(max_examples=800, deadline=None, derandomize=True)
@given(_STATUS_LINES, st.lists(st.tuples(_HEAD_LINES, st.sampled_from([b"\r\n", b"\n"])),
                               max_size=5), st.sampled_from([b"\r\n", b"\n"]))
def test_after_strict_llhttp_the_short_head_check_refuses_what_the_full_one_does(
        status_line: bytes, lines: list[tuple[bytes, bytes]], blank: bytes) -> None:
    # Why a head llhttp accepted is only checked for what llhttp lets through.
    head = status_line + b"".join(line + end for line, end in lines) + blank
    reader = ResponseHeadReader()
    reader.begin()
    try:
        reader.feed(head)
    except HeadError:
        return  # the full check then runs first, as before
    assert _refusal(head, parsed_strictly=True) == _refusal(head, parsed_strictly=False)
