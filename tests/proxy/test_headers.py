"""Header rules (reliability.md §2.1–2.3, catalogue 11–17): tables plus properties."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon._exceptions import ConfigError
from velithon._proxy.headers import (
    FORWARDING,
    HOP_BY_HOP,
    ForwardedConfig,
    build_request_headers,
    build_response_headers,
    client_ip,
    strip_hop_by_hop,
)

H = list[tuple[bytes, bytes]]
PEER = ("127.0.0.1", 50000)
UPSTREAM = b"10.1.1.1:8001"


def build(headers: H, *, peer: tuple[str, int] | None = PEER, cfg: ForwardedConfig | None = None,
          preserve_host: bool = False, add: dict[str, str] | None = None,
          remove: list[str] | None = None, scheme: str = "http", keep_upgrade: bool = False) -> H:
    return build_request_headers(
        headers, peer=peer, scheme=scheme, upstream_host=UPSTREAM, preserve_host=preserve_host,
        add=add, remove=remove, cfg=cfg or ForwardedConfig(), keep_upgrade=keep_upgrade)


def values(headers: H, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n == name]


def names(headers: H) -> list[bytes]:
    return [n for n, _ in headers]


# ---- catalogue 11-13: hop-by-hop, both directions, and nomination ----------------------


def test_hop_by_hop_request_fields_are_removed() -> None:  # catalogue 11
    incoming = [
        (b"host", b"gw"), (b"connection", b"keep-alive, X-Secret"), (b"x-secret", b"s"),
        (b"keep-alive", b"timeout=5"), (b"proxy-connection", b"keep-alive"),
        (b"proxy-authorization", b"Basic eA=="), (b"te", b"gzip"), (b"trailer", b"X-T"),
        (b"upgrade", b"h2c"), (b"x-keep", b"1"), (b"accept", b"*/*"), (b"x-keep", b"2"),
    ]
    out = build(incoming, cfg=ForwardedConfig(forwarded=False, x_forwarded=False))
    assert out == [(b"host", UPSTREAM), (b"x-keep", b"1"), (b"accept", b"*/*"), (b"x-keep", b"2")]


def test_te_trailers_is_the_only_te_that_passes() -> None:
    out = build([(b"te", b"gzip, Trailers"), (b"te", b"deflate")])
    assert values(out, b"te") == [b"trailers"]
    assert strip_hop_by_hop([(b"te", b"trailers")]) == [(b"te", b"trailers")]
    assert strip_hop_by_hop([(b"te", b"gzip")]) == []


def test_hop_by_hop_response_fields_are_removed() -> None:  # catalogue 12
    upstream = [
        (b"connection", b"X-Internal"), (b"x-internal", b"1"), (b"keep-alive", b"timeout=99"),
        (b"proxy-authenticate", b"x"), (b"transfer-encoding", b"chunked"),
        (b"set-cookie", b"a=1"), (b"content-type", b"text/plain"), (b"set-cookie", b"b=2"),
        (b"upgrade", b"h2c"), (b"trailer", b"x"), (b"content-length", b"12"),
    ]
    assert build_response_headers(upstream) == [
        (b"set-cookie", b"a=1"), (b"content-type", b"text/plain"), (b"set-cookie", b"b=2"),
    ]
    framed = build_response_headers(upstream, content_length=12)
    assert values(framed, b"content-length") == [b"12"]


def test_response_add_and_remove() -> None:
    upstream = [(b"server", b"backend"), (b"x-a", b"1"), (b"x-a", b"2"), (b"x-b", b"b")]
    out = build_response_headers(upstream, add={"X-A": "ours", "Server": "gw"}, remove=["X-B"])
    assert out == [(b"x-a", b"ours"), (b"server", b"gw")]


def test_nominating_our_headers_and_framing_is_ignored() -> None:  # catalogue 13
    incoming = [(b"host", b"gw.example"), (b"x-forwarded-for", b"1.2.3.4"),
                (b"connection", b"close, X-Forwarded-For, X-Real-IP, Host, Content-Length"),
                (b"content-length", b"5"), (b"x-real-ip", b"6.6.6.6")]
    out = build(incoming)
    assert values(out, b"host") == [UPSTREAM]
    assert values(out, b"x-forwarded-for") == [b"1.2.3.4, 127.0.0.1"]
    assert values(out, b"x-real-ip") == [b"127.0.0.1"]
    assert b"content-length" not in names(out)  # the pool re-frames
    assert b"connection" not in names(out)


def test_response_nomination_of_content_length_is_ignored() -> None:
    out = build_response_headers([(b"connection", b"content-length, x-a"), (b"x-a", b"1"),
                                  (b"content-length", b"3")], content_length=3)
    assert out == [(b"content-length", b"3")]


# ---- catalogue 14-15: forwarding headers and the client address ------------------------

SPOOFED = [
    (b"host", b"gw.example:8080"), (b"x-forwarded-for", b"1.2.3.4"), (b"x-real-ip", b"1.2.3.4"),
    (b"forwarded", b"for=1.2.3.4"), (b"x-forwarded-proto", b"https"),
    (b"x-forwarded-host", b"evil"),
]


@pytest.mark.parametrize(("mode", "xff"), [("append", b"1.2.3.4, 127.0.0.1"),
                                           ("replace", b"127.0.0.1")])
def test_forwarding_headers_from_an_untrusted_peer(mode: str, xff: bytes) -> None:  # 14
    out = build(SPOOFED, cfg=ForwardedConfig(xff_mode=mode))
    assert values(out, b"x-forwarded-for") == [xff]
    assert values(out, b"x-forwarded-proto") == [b"http"]
    assert values(out, b"x-forwarded-host") == [b"gw.example:8080"]
    assert values(out, b"x-real-ip") == [b"127.0.0.1"]
    assert values(out, b"forwarded") == [b'for=127.0.0.1;proto=http;host="gw.example:8080"']
    assert client_ip("127.0.0.1", SPOOFED, ForwardedConfig()) == "127.0.0.1"


def test_forwarding_headers_from_a_trusted_peer_are_kept_and_extended() -> None:
    cfg = ForwardedConfig(trusted_proxies=("127.0.0.0/8",), trusted_hops=0, xff_mode="replace")
    out = build(SPOOFED, cfg=cfg, scheme="http")
    assert values(out, b"x-forwarded-for") == [b"1.2.3.4, 127.0.0.1"]
    assert values(out, b"x-forwarded-proto") == [b"https"]
    assert values(out, b"x-forwarded-host") == [b"evil"]
    assert values(out, b"x-real-ip") == [b"1.2.3.4"]
    assert values(out, b"forwarded") == [
        b'for=1.2.3.4, for=127.0.0.1;proto=http;host="gw.example:8080"']


def test_emitting_can_be_switched_off() -> None:
    out = build(SPOOFED, cfg=ForwardedConfig(forwarded=False, x_forwarded=False))
    assert names(out) == [b"host"]  # and untrusted incoming ones are not passed on
    trusted = ForwardedConfig(trusted_proxies=("127.0.0.1",), forwarded=False, x_forwarded=False)
    assert sorted(build(SPOOFED, cfg=trusted)[1:]) == sorted(SPOOFED[1:])


def test_two_xff_lines_are_combined_in_order() -> None:
    incoming = [(b"x-forwarded-for", b"1.1.1.1, 2.2.2.2"), (b"accept", b"*/*"),
                (b"x-forwarded-for", b"3.3.3.3")]
    out = build(incoming)
    assert values(out, b"x-forwarded-for") == [b"1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"]
    cfg = ForwardedConfig(trusted_proxies=("127.0.0.1/32",), trusted_hops=1)
    assert client_ip("127.0.0.1", incoming, cfg) == "2.2.2.2"


@pytest.mark.parametrize(
    ("hops", "xff", "expected"),
    [
        (1, b"203.0.113.7, 10.0.0.2", "203.0.113.7"),  # catalogue 15
        (0, b"203.0.113.7, 10.0.0.2", "10.0.0.2"),
        (2, b"203.0.113.7, 10.0.0.2", "10.0.0.5"),  # too few entries: the peer
        (1, b"9.9.9.9,203.0.113.7 ,  10.0.0.2", "203.0.113.7"),
        (0, b"2001:db8::1", "2001:db8::1"),
        (1, b"unknown, 10.0.0.2", "10.0.0.5"),
        (0, b"1.2.3.4:80", "10.0.0.5"),
        (0, b"[::1]", "10.0.0.5"),
        (0, b"<script>", "10.0.0.5"),
        (1, b",", "10.0.0.5"),
        (1, b"," * 8192, "10.0.0.5"),
        (0, b"", "10.0.0.5"),
        (0, b"\xff\xfe", "10.0.0.5"),
    ],
)
def test_client_ip_walks_xff_from_a_trusted_peer(hops: int, xff: bytes, expected: str) -> None:
    cfg = ForwardedConfig(trusted_proxies=("10.0.0.0/8",), trusted_hops=hops)
    assert client_ip("10.0.0.5", [(b"x-forwarded-for", xff)], cfg) == expected


def test_client_ip_without_a_trusted_peer_or_header() -> None:
    cfg = ForwardedConfig(trusted_proxies=("10.0.0.0/8",))
    assert client_ip("192.0.2.1", [(b"x-forwarded-for", b"1.1.1.1, 2.2.2.2")], cfg) == "192.0.2.1"
    assert client_ip("10.0.0.1", [], cfg) == "10.0.0.1"
    assert client_ip(None, [(b"x-forwarded-for", b"1.1.1.1")], cfg) == ""
    # An IPv4-mapped peer (dual-stack listener) matches an IPv4 network.
    assert client_ip("::ffff:10.0.0.1", [(b"x-forwarded-for", b"1.1.1.1, 2.2.2.2")],
                     cfg) == "2.2.2.2"


def test_ipv6_peer_and_unknown_peer_in_forwarded() -> None:
    out = build([(b"host", b"h")], peer=("::1", 1))
    assert values(out, b"forwarded") == [b'for="[::1]";proto=http;host=h']
    assert values(out, b"x-forwarded-for") == [b"::1"]
    out = build([(b"x-forwarded-for", b"1.1.1.1")], peer=None, scheme="https")
    assert values(out, b"forwarded") == [b"for=unknown;proto=https"]
    assert values(out, b"x-forwarded-for") == [b"1.1.1.1"]
    assert b"x-real-ip" not in names(out)


def test_quoted_forwarded_host_escapes_quotes() -> None:
    out = build([(b"host", b'a"b\\c')])
    assert values(out, b"forwarded") == [b'for=127.0.0.1;proto=http;host="a\\"b\\\\c"']


# ---- catalogue 16-17: host, underscores, config ----------------------------------------


def test_host_is_rewritten_or_preserved() -> None:
    incoming = [(b"accept", b"*/*"), (b"host", b"client.example")]
    assert build(incoming)[0] == (b"host", UPSTREAM)
    assert build(incoming, preserve_host=True)[0] == (b"host", b"client.example")
    assert build([], preserve_host=True)[0] == (b"host", UPSTREAM)
    assert values(build(incoming), b"x-forwarded-host") == [b"client.example"]


@pytest.mark.parametrize("name", [b"x_forwarded_for", b"transfer_encoding", b"content_length",
                                  b"x_real_ip", b"proxy_authorization", b"host_"])
def test_underscore_lookalikes_are_dropped(name: bytes) -> None:
    out = build([(name, b"9.9.9.9"), (b"x_custom_thing", b"kept")])
    assert name not in names(out) or name == b"host_"
    assert values(out, b"x_custom_thing") == [b"kept"]
    assert values(out, b"x-forwarded-for") == [b"127.0.0.1"]


def test_remove_then_add_and_add_overrides() -> None:
    incoming = [(b"host", b"c"), (b"x-user", b"alice"), (b"x-user", b"bob"), (b"cookie", b"s=1"),
                (b"x-trace", b"t")]
    out = build(incoming, remove=["Cookie", "X-Forwarded-Host", "host"],
                add={"X-User": "gateway", "X-Route": "r1"})
    assert values(out, b"x-user") == [b"gateway"]
    assert values(out, b"x-route") == [b"r1"]
    assert b"cookie" not in names(out)
    assert b"x-forwarded-host" not in names(out)
    assert values(out, b"host") == [UPSTREAM]  # Host cannot be removed, only overridden
    assert values(build(incoming, add={"Host": "configured"}), b"host") == [b"configured"]


def test_upgrade_kept_only_on_request() -> None:
    incoming = [(b"connection", b"Upgrade"), (b"upgrade", b"websocket"), (b"x-a", b"1")]
    assert strip_hop_by_hop(incoming) == [(b"x-a", b"1")]
    kept = build(incoming, keep_upgrade=True, cfg=ForwardedConfig(forwarded=False,
                                                                  x_forwarded=False))
    assert kept == [(b"host", UPSTREAM), (b"upgrade", b"websocket"), (b"x-a", b"1"),
                    (b"connection", b"upgrade")]
    assert strip_hop_by_hop([(b"upgrade", b"websocket")], keep_upgrade=True) == []


# ---- ForwardedConfig validation --------------------------------------------------------


def test_forwarded_config_parses_cidrs() -> None:
    cfg = ForwardedConfig(trusted_proxies=["10.0.0.0/8", "::1", "192.168.1.7"])
    assert cfg.trusted_proxies == ("10.0.0.0/8", "::1", "192.168.1.7")
    assert cfg.networks[1] == ipaddress.ip_network("::1/128")
    assert cfg.is_trusted("10.9.9.9") and cfg.is_trusted("::1")
    assert not cfg.is_trusted("11.0.0.1") and not cfg.is_trusted("garbage")
    assert ForwardedConfig(trusted_proxies="10.0.0.0/8").trusted_proxies == ("10.0.0.0/8",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trusted_proxies": ["10.0.0.0/33"]}, "Invalid trusted proxy '10.0.0.0/33'"),
        ({"trusted_proxies": ["10.0.0.1/8"]}, "has host bits set"),
        ({"trusted_proxies": ["nginx"]}, "Invalid trusted proxy 'nginx'"),
        ({"trusted_hops": -1}, "trusted_hops"),
        ({"trusted_hops": "1"}, "trusted_hops"),
        ({"xff_mode": "strip"}, "xff_mode must be 'append' or 'replace'"),
    ],
)
def test_forwarded_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ForwardedConfig(**kwargs)  # type: ignore[arg-type]


# ---- properties ------------------------------------------------------------------------

_value = st.binary(min_size=0, max_size=30).map(
    lambda b: bytes(c for c in b if c not in b"\r\n\x00").strip())
_name = st.one_of(
    st.sampled_from(sorted(HOP_BY_HOP | FORWARDING | {b"host", b"content-length"})),
    st.sampled_from([b"x-a", b"accept", b"set-cookie", b"x_forwarded_for", b"x-secret", b"cookie"]),
    st.from_regex(rb"\A[a-z][a-z0-9_-]{0,12}\Z"),
)
_connection_value = st.lists(
    st.sampled_from([b"close", b"keep-alive", b"x-secret", b"X-A", b"host", b"x-forwarded-for",
                     b"upgrade", b"cookie"]), max_size=4).map(b", ".join)
_headers = st.lists(st.one_of(st.tuples(_name, _value),
                              st.tuples(st.just(b"connection"), _connection_value)), max_size=20)
_peer = st.one_of(st.none(), st.tuples(st.ip_addresses().map(str), st.integers(1, 65535)))
_cfg = st.builds(ForwardedConfig, trusted_proxies=st.sampled_from([(), ("0.0.0.0/0", "::/0")]),
                 trusted_hops=st.integers(0, 3), xff_mode=st.sampled_from(["append", "replace"]),
                 forwarded=st.booleans(), x_forwarded=st.booleans())


@settings(deadline=None, max_examples=300)
@given(headers=_headers, peer=_peer, cfg=_cfg, preserve=st.booleans())
def test_built_request_headers_are_clean(headers: H, peer: tuple[str, int] | None,
                                         cfg: ForwardedConfig, preserve: bool) -> None:
    out = build_request_headers(headers, peer=peer, scheme="https", upstream_host=UPSTREAM,
                                preserve_host=preserve, add=None, remove=None, cfg=cfg)
    nominated = {t.strip().lower() for n, v in headers if n == b"connection" for t in v.split(b",")}
    assert out[0][0] == b"host" and names(out).count(b"host") == 1
    for name, value in out:
        assert b"\r" not in value and b"\n" not in value and b"\x00" not in value
        assert name == name.lower()
        assert name not in HOP_BY_HOP or (name, value) == (b"te", b"trailers")
        assert b"_" not in name or name.replace(b"_", b"-") not in HOP_BY_HOP | FORWARDING
        if name in nominated:
            assert name in FORWARDING | {b"host"}
    assert b"content-length" not in names(out)
    if cfg.x_forwarded and peer is not None:
        assert values(out, b"x-forwarded-for")[0].endswith(peer[0].encode())
        incoming_proto = values(headers, b"x-forwarded-proto")[:1]
        assert values(out, b"x-forwarded-proto") in ([b"https"], incoming_proto)


@settings(deadline=None, max_examples=300)
@given(chain=st.lists(st.one_of(st.ip_addresses().map(str).map(str.encode), _value), max_size=6),
       peer=st.ip_addresses().map(str), cfg=_cfg)
def test_client_ip_never_crashes_and_returns_an_address(chain: list[bytes], peer: str,
                                                        cfg: ForwardedConfig) -> None:
    result = client_ip(peer, [(b"x-forwarded-for", b", ".join(chain))], cfg)
    assert result == peer or ipaddress.ip_address(result)
    if not cfg.trusted_proxies:
        assert result == peer


@settings(deadline=None, max_examples=200)
@given(headers=_headers)
def test_built_response_headers_have_no_hop_by_hop_or_framing(headers: H) -> None:
    out = build_response_headers(headers)
    assert not set(names(out)) & (HOP_BY_HOP | {b"content-length"})
    kept_cookies = values(out, b"set-cookie")
    assert kept_cookies == values(headers, b"set-cookie") or b"set-cookie" in {
        t.strip().lower() for v in values(headers, b"connection") for t in v.split(b",")}
