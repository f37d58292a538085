"""What velithon assumes about h11, checked against the installed h11.

The server reads h11's private header triples (``h11.Headers._full_items``) and guards
that at import; the head writers check fields with a copy of h11's field grammar. If an
h11 release changes either, these tests say so before a request does.
"""

from __future__ import annotations

import types

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon._http11 import FIELD_NAME, FIELD_VALUE, invalid_field
from velithon.server import _http_h11


@pytest.fixture(autouse=True)
def _both_parsers() -> None:
    """Pure checks of the field grammar against h11: no server, so no parser mode."""


def test_the_import_guard_refuses_an_h11_without_header_triples(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _http_h11._check_h11_header_items()  # the installed h11 passes
    monkeypatch.setattr(h11, "Request", lambda **_: types.SimpleNamespace(headers=()))
    with pytest.raises(ImportError, match="velithon needs h11 0.16.x"):
        _http_h11._check_h11_header_items()


def test_the_header_triples_are_h11s_headers_lowercased() -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-Mixed-Case: V\r\n"
                      b"x-mixed-case: w\r\nCookie: c=1\r\n\r\n")
    event = conn.next_event()
    assert type(event) is h11.Request
    triples = event.headers._full_items
    assert [(name, value) for _, name, value in triples] == list(event.headers)
    assert [(raw, value) for raw, _, value in triples] == event.headers.raw_items()


def _h11_accepts(name: bytes, value: bytes) -> bool:
    try:
        h11.Request(method="GET", target="/", headers=[(b"host", b"a"), (name, value)])
    except h11.LocalProtocolError:
        return False
    return True


_BYTES = st.binary(max_size=6) | st.lists(
    st.sampled_from([b"a", b"Z", b"-", b"!", b":", b" ", b"\t", b"\r", b"\n", b"\x00",
                     b"\x0b", b"\x7f", b"\xe9", b"("]), max_size=6).map(b"".join)


@given(name=_BYTES)
@settings(max_examples=300, deadline=None)
def test_field_name_grammar_is_h11s(name: bytes) -> None:
    if name.lower() in (b"host", b"content-length", b"transfer-encoding"):
        return  # h11 interprets these fields, so their values are checked further
    assert (FIELD_NAME(name) is not None) == _h11_accepts(name, b"v")


@given(value=_BYTES)
@settings(max_examples=300, deadline=None)
def test_field_value_grammar_is_h11s(value: bytes) -> None:
    assert (FIELD_VALUE(value) is not None) == _h11_accepts(b"x-test", value)


def _first_invalid(fields: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in fields:
        if FIELD_NAME(name) is None or FIELD_VALUE(value) is None:
            return name
    return None


@given(fields=st.lists(st.tuples(_BYTES, _BYTES), max_size=5)
       | st.lists(st.tuples(st.sampled_from([b"host", b"x-a", b"Accept"]),
                            st.sampled_from([b"v", b"a b", b"", b" v", b"v\t", b"\xe9"])),
                  max_size=5))
@settings(max_examples=500, deadline=None)
def test_the_whole_head_check_names_the_first_field_the_grammar_refuses(
        fields: list[tuple[bytes, bytes]]) -> None:
    assert invalid_field(fields) == _first_invalid(fields)
