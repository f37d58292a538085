"""Traceability header rules: the request ID and the upstream-target header (pure core)."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from velithon._exceptions import ConfigError
from velithon._proxy.headers import (
    NO_TRACE,
    ForwardedConfig,
    TraceHeaders,
    build_request_headers,
    build_response_headers,
    incoming_request_id,
    new_request_id,
)

H = list[tuple[bytes, bytes]]
RID = b"x-request-id"
TRACE = TraceHeaders(request_id="X-Request-ID", upstream_target="X-Upstream-Target")


def request(headers: H, trace: TraceHeaders = TRACE, request_id: bytes | None = b"ours") -> H:
    return build_request_headers(
        headers, peer=("127.0.0.1", 5000), scheme="http", upstream_host=b"up:80",
        preserve_host=False, add=None, remove=None, cfg=ForwardedConfig(), trace=trace,
        request_id=request_id)


def values(headers: H, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n == name]


@pytest.mark.parametrize(("incoming", "kept"), [
    ([(RID, b"abc-123")], b"abc-123"),
    ([(RID, b"4b2c1f0e-9c1d-4a7f-8f7e-1d2c3b4a5e6f")], b"4b2c1f0e-9c1d-4a7f-8f7e-1d2c3b4a5e6f"),
    ([(RID, b"trace:span/1+2=")], b"trace:span/1+2="),
    ([(RID, b"x" * 200)], b"x" * 200),
    ([], None),
    ([(RID, b"")], None),  # empty
    ([(RID, b"x" * 201)], None),  # oversized
    ([(RID, b"has space")], None),
    ([(RID, b'quote"d')], None),
    ([(RID, b"caf\xc3\xa9")], None),  # not ASCII
    ([(RID, b"<script>")], None),
    ([(RID, b"a"), (RID, b"b")], None),  # two of them: neither is the request's
    ([(b"x-request-ids", b"abc")], None),  # another header
])
def test_incoming_request_id_is_kept_only_when_single_and_valid(
        incoming: H, kept: bytes | None) -> None:
    assert incoming_request_id(incoming, RID) == kept


def test_new_request_ids_are_distinct_128_bit_hex() -> None:
    rng = random.Random(7)
    ids = [new_request_id(rng) for _ in range(1000)]
    assert len(set(ids)) == 1000
    for raw in ids:
        assert re.fullmatch(rb"[0-9a-f]{32}", raw)
        assert incoming_request_id([(RID, raw)], RID) == raw  # ours pass our own check


def test_request_id_replaces_every_client_line_of_that_name() -> None:
    out = request([(b"host", b"gw"), (RID, b"theirs"), (RID, b"again"), (b"accept", b"*/*")])
    assert values(out, RID) == [b"ours"]
    assert values(out, b"accept") == [b"*/*"]


def test_request_id_header_name_is_configurable() -> None:
    trace = TraceHeaders(request_id="X-Correlation-ID")
    out = request([(b"x-correlation-id", b"theirs"), (RID, b"kept")], trace=trace)
    assert values(out, b"x-correlation-id") == [b"ours"]
    assert values(out, RID) == [b"kept"]  # not ours to manage under this configuration


def test_without_trace_headers_nothing_changes() -> None:
    incoming = [(b"host", b"gw"), (RID, b"theirs")]
    assert request(incoming, trace=NO_TRACE, request_id=None) == request(
        incoming, trace=NO_TRACE, request_id=b"ignored")
    assert values(request(incoming, trace=NO_TRACE, request_id=None), RID) == [b"theirs"]


def test_response_gets_our_request_id_and_target_in_place_of_the_upstreams() -> None:
    upstream = [(b"content-type", b"text/plain"), (RID, b"backend-made"),
                (b"x-upstream-target", b"spoofed"), (b"set-cookie", b"a=1")]
    out = build_response_headers(upstream, trace=TRACE, request_id=b"ours",
                                 upstream_target=b"http://10.0.0.1:80")
    assert values(out, RID) == [b"ours"]
    assert values(out, b"x-upstream-target") == [b"http://10.0.0.1:80"]
    assert values(out, b"set-cookie") == [b"a=1"]


def test_upstream_target_header_is_off_by_default() -> None:
    trace = TraceHeaders(request_id="X-Request-ID")
    out = build_response_headers([(b"x-upstream-target", b"backend's own")], trace=trace,
                                 request_id=b"r", upstream_target=b"http://10.0.0.1:80")
    assert values(out, b"x-upstream-target") == [b"backend's own"]  # relayed untouched


def test_configured_response_edits_still_apply_last() -> None:
    out = build_response_headers([], trace=TRACE, request_id=b"r", upstream_target=b"t",
                                 remove=["x-upstream-target"])
    assert values(out, b"x-upstream-target") == [] and values(out, RID) == [b"r"]


@pytest.mark.parametrize("off", [None, ""])
def test_none_or_empty_turns_a_header_off(off: str | None) -> None:
    trace = TraceHeaders(request_id=off, upstream_target=off)
    assert trace.request_id_name is None and trace.upstream_target_name is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"request_id": "X Request"}, "must be a header name"),
    ({"request_id": "X-Req\r\nID"}, "must be a header name"),
    ({"request_id": "Host"}, "the gateway sets that header itself"),
    ({"upstream_target": "X-Forwarded-For"}, "the gateway sets that header itself"),
    ({"upstream_target": "Connection"}, "the gateway sets that header itself"),
    ({"request_id": "X-Trace", "upstream_target": "x-trace"}, "must differ"),
])
def test_bad_trace_header_names_are_refused_at_construction(
        kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TraceHeaders(**kwargs)


@given(st.binary(max_size=300))
def test_a_kept_id_is_always_safe_to_log_and_send(raw: bytes) -> None:
    kept = incoming_request_id([(RID, raw)], RID)
    if kept is not None:
        assert 1 <= len(kept) <= 200
        assert all(0x21 <= c <= 0x7E and c not in b"\"'\\ " for c in kept)
