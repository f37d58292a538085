"""The key=value line format every operator-facing log line uses."""

from __future__ import annotations

import json
import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from velithon._access import AccessRecord, format_peer
from velithon._logfmt import logfmt, logfmt_value


def parse(line: str) -> dict[str, str]:
    """The parser the docs show."""
    return dict(pair.split("=", 1) for pair in shlex.split(line))


@pytest.mark.parametrize(("value", "written"), [
    ("api", "api"),
    ("http://127.0.0.1:8001", "http://127.0.0.1:8001"),
    ("gateway_/api/{path:path}", "gateway_/api/{path:path}"),
    ("/p?q=1", '"/p?q=1"'),
    ("a b", '"a b"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("it's", '"it\'s"'),
    ("line\nbreak", '"line\\nbreak"'),
    ("café", '"caf\\u00e9"'),
    ("", '""'),
    (12.3456, "12.346"),
    (200, "200"),
])
def test_values_are_bare_only_when_nothing_could_be_misread(value: object, written: str) -> None:
    assert logfmt_value(value) == written


def test_absent_fields_are_left_out_and_order_is_kept() -> None:
    assert logfmt(event="x", route=None, target="t", n=2) == "event=x target=t n=2"


@given(st.dictionaries(st.sampled_from(["a", "b_c", "path", "tries"]), st.text(), min_size=1))
def test_any_text_round_trips_and_stays_on_one_line(fields: dict[str, str]) -> None:
    line = logfmt(**fields)
    assert "\n" not in line and "\r" not in line
    parsed = parse(line)
    assert parsed.keys() == fields.keys()
    for key, value in fields.items():
        written = logfmt_value(value)
        # quoted values are JSON strings; bare ones are the value itself
        assert (json.loads(written) if written.startswith('"') else written) == value
        if not written.startswith('"'):
            assert parsed[key] == value


def test_access_record_line_has_the_documented_fields_in_order() -> None:
    record = AccessRecord(started=10.0)
    record.bytes_sent = 13
    record.proxied("api", "http://127.0.0.1:8001", 2, 0.0125, b"abc-1")
    line = record.line(client=("127.0.0.1", 5000), method="GET", path="/api/x?y=1",
                       status=200, ended=10.02)
    assert line == ('client=127.0.0.1:5000 method=GET path="/api/x?y=1" status=200 bytes=13 '
                    "route=api target=http://127.0.0.1:8001 attempts=2 upstream_ms=12.500 "
                    "total_ms=20.000 request_id=abc-1")


def test_peer_formatting() -> None:
    assert format_peer(("::1", 80)) == "[::1]:80"
    assert format_peer(("10.0.0.1", 80)) == "10.0.0.1:80"
    assert format_peer(None) is None
