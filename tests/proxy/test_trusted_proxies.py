"""Which address is the client behind trusted proxies: ``client_ip`` and the real gateway.

Each proxy appends the address it received the request from to ``X-Forwarded-For``, so
only the entries right of the client were written by proxies we trust; everything left
of the client is whatever the client chose to send. Two rules read the chain:

* ``trusted_proxies`` alone: the client is the rightmost entry outside the trusted
  ranges (nginx ``real_ip_recursive``, Envoy ``xff_trusted_cidrs``);
* ``xff_num_trusted_hops=N``: the client is the N-th entry from the right of the incoming
  chain (Envoy ``xff_num_trusted_hops`` with ``use_remote_address``).

Unit tables and properties first, then the same rules through a real gateway, checking
what the backend receives (``X-Real-IP``, ``X-Forwarded-For``) and ``hash_on="client_ip"``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon._exceptions import ConfigError
from velithon._proxy.headers import ForwardedConfig, build_request_headers, client_ip
from velithon.gateway import GatewayRoute
from velithon.testing import open_backend

from support.catalogue import FACADES, bounded, facade_args, gateway, request_bytes

LOOPBACK = ForwardedConfig(trusted_proxies=("127.0.0.1/32",))
INTERNAL = ForwardedConfig(trusted_proxies=("10.0.0.0/8", "2001:db8::/32"))
EVERYONE = ("0.0.0.0/0", "::/0")


def xff(*lines: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", line.encode("latin-1")) for line in lines]


# ---- the rightmost untrusted address ---------------------------------------------------


@pytest.mark.parametrize(("chain", "expected"), [
    # the trusted peer appended the client it saw: that entry is the client
    (["203.0.113.7"], "203.0.113.7"),
    # anything left of it came from the client and is never read
    (["1.1.1.1, 203.0.113.7"], "203.0.113.7"),
    (["10.0.0.1, 127.0.0.1, 203.0.113.7"], "203.0.113.7"),
    # a chain of loopback entries only: all trusted, the leftmost is the client
    (["127.0.0.1"], "127.0.0.1"),
    ([], "127.0.0.1"),
])
def test_one_trusted_loopback_proxy(chain: list[str], expected: str) -> None:
    assert client_ip("127.0.0.1", xff(*chain), LOOPBACK) == expected


@pytest.mark.parametrize(("chain", "expected"), [
    # two trusted proxies: the edge one (10.0.0.2) appended the client
    (["203.0.113.7, 10.0.0.2"], "203.0.113.7"),
    (["198.51.100.1, 203.0.113.7, 10.0.0.2, 10.9.9.9"], "203.0.113.7"),
    # the same chain split over several header lines is one list, in order
    (["198.51.100.1", "203.0.113.7", "10.0.0.2"], "203.0.113.7"),
    (["198.51.100.1, 203.0.113.7", "", "10.0.0.2"], "203.0.113.7"),
    # every entry trusted: the leftmost is the client (an internal client)
    (["10.1.1.1, 10.0.0.2"], "10.1.1.1"),
    # whitespace around entries is not part of an address
    (["  203.0.113.7 ,10.0.0.2  "], "203.0.113.7"),
    (["203.0.113.7,\t10.0.0.2"], "203.0.113.7"),
    # IPv6, and IPv4-mapped IPv6 compared as IPv4
    (["2001:db8::1, 2600::7, 2001:db8::2"], "2600::7"),
    (["::ffff:203.0.113.7, ::ffff:10.0.0.2"], "203.0.113.7"),
    # a malformed entry ends the walk; the last good address (written by a trusted
    # proxy) is kept, or the peer when the rightmost entry is already bad
    (["203.0.113.7, unknown"], "10.0.0.5"),
    (["unknown, 10.0.0.2"], "10.0.0.2"),
    (["203.0.113.7:443, 10.0.0.2"], "10.0.0.2"),
    (["[2600::7], 10.0.0.2"], "10.0.0.2"),
    (["999.1.1.1, 10.0.0.2"], "10.0.0.2"),
    (["203.0.113.7,, 10.0.0.2"], "10.0.0.2"),
    (["203.0.113.7, 10.0.0.2,"], "10.0.0.5"),
    ([","], "10.0.0.5"),
    (["," * 8192], "10.0.0.5"),
    # ... but a malformed entry left of the client is never even looked at
    (["<script>, 203.0.113.7, 10.0.0.2"], "203.0.113.7"),
    (["\udcff, 203.0.113.7"], "203.0.113.7"),
])
def test_rightmost_untrusted_entry_is_the_client(chain: list[str], expected: str) -> None:
    headers = [(b"x-forwarded-for", line.encode("utf-8", "surrogateescape")) for line in chain]
    assert client_ip("10.0.0.5", headers, INTERNAL) == expected


def test_an_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    for cfg in (ForwardedConfig(), LOOPBACK, INTERNAL):
        assert client_ip("198.51.100.9", xff("10.0.0.2", "127.0.0.1"), cfg) == "198.51.100.9"
    assert client_ip(None, xff("203.0.113.7"), INTERNAL) == ""
    # the peer's IPv4-mapped form is matched against IPv4 ranges
    assert client_ip("::ffff:10.0.0.5", xff("203.0.113.7"), INTERNAL) == "203.0.113.7"


def test_x_real_ip_and_the_forwarded_chain_follow_the_same_rule() -> None:
    out = build_request_headers(
        [(b"host", b"gw"), (b"x-forwarded-for", b"1.1.1.1, 203.0.113.7"),
         (b"x-real-ip", b"1.1.1.1")],
        peer=("127.0.0.1", 5000), scheme="http", upstream_host=b"up", preserve_host=False,
        add=None, remove=None, cfg=LOOPBACK)
    assert dict(out)[b"x-real-ip"] == b"203.0.113.7"
    assert dict(out)[b"x-forwarded-for"] == b"1.1.1.1, 203.0.113.7, 127.0.0.1"


# ---- a count of trusted hops (Envoy) ---------------------------------------------------

ENVOY_CHAIN = "203.0.113.128, 203.0.113.10, 203.0.113.1"


@pytest.mark.parametrize(("hops", "chain", "expected"), [
    # Envoy's documented examples (peer 192.0.2.5, use_remote_address)
    (0, ENVOY_CHAIN, "192.0.2.5"),
    (2, ENVOY_CHAIN, "203.0.113.10"),
    # one proxy in front: it appended the client, the rightmost entry
    (1, ENVOY_CHAIN, "203.0.113.1"),
    (3, ENVOY_CHAIN, "203.0.113.128"),
    # fewer entries than hops: the chain is not what the layout promises
    (4, ENVOY_CHAIN, "192.0.2.5"),
    (1, "", "192.0.2.5"),
    # every entry that is read must parse; entries further left are never read
    (2, "203.0.113.10, bogus", "192.0.2.5"),
    (2, "bogus, 203.0.113.1", "192.0.2.5"),
    (2, "bogus, 203.0.113.10, 203.0.113.1", "203.0.113.10"),
    (1, "203.0.113.1:80", "192.0.2.5"),
    (2, "203.0.113.10,,", "192.0.2.5"),
])
def test_hop_count_reads_the_nth_entry_from_the_right(hops: int, chain: str,
                                                      expected: str) -> None:
    cfg = ForwardedConfig(trusted_proxies=EVERYONE, xff_num_trusted_hops=hops)
    assert client_ip("192.0.2.5", xff(chain), cfg) == expected


def test_hop_count_still_needs_a_trusted_peer() -> None:
    cfg = ForwardedConfig(trusted_proxies=("10.0.0.0/8",), xff_num_trusted_hops=1)
    assert client_ip("10.0.0.5", xff("203.0.113.7"), cfg) == "203.0.113.7"
    # a client that reaches the gateway directly is not believed
    assert client_ip("198.51.100.9", xff("203.0.113.7"), cfg) == "198.51.100.9"
    # the count is positional: a trusted-range address in the window is still the client
    assert client_ip("10.0.0.5", xff("203.0.113.7, 10.0.0.2"), cfg) == "10.0.0.2"


def test_older_trusted_hops_spelling_does_not_count_the_peer() -> None:
    older = ForwardedConfig(trusted_proxies=EVERYONE, trusted_hops=1)
    assert older.xff_num_trusted_hops == 2
    assert client_ip("192.0.2.5", xff(ENVOY_CHAIN), older) == "203.0.113.10"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"trusted_proxies": EVERYONE, "xff_num_trusted_hops": 1, "trusted_hops": 0}, "not both"),
    ({"xff_num_trusted_hops": 2}, "xff_num_trusted_hops needs trusted_proxies"),
    ({"trusted_proxies": EVERYONE, "xff_num_trusted_hops": -1}, "xff_num_trusted_hops must be"),
    ({"trusted_proxies": EVERYONE, "xff_num_trusted_hops": True}, "xff_num_trusted_hops must be"),
    ({"trusted_proxies": EVERYONE, "xff_num_trusted_hops": "2"}, "xff_num_trusted_hops must be"),
    ({"trusted_hops": -1}, "trusted_hops must be"),
])
def test_hop_count_configuration_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ForwardedConfig(**kwargs)


def test_zero_hops_without_trusted_proxies_is_the_default_behaviour() -> None:
    cfg = ForwardedConfig(xff_num_trusted_hops=0)
    assert client_ip("192.0.2.5", xff(ENVOY_CHAIN), cfg) == "192.0.2.5"


# ---- properties ------------------------------------------------------------------------

_NETS = [ipaddress.ip_network(n) for n in INTERNAL.trusted_proxies]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _plain(ip: Address) -> Address:
    """IPv4-mapped IPv6 as IPv4, as the gateway compares and reports it."""
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped if mapped is not None else ip


def _trusted(ip: Address) -> bool:
    return any(ip in net for net in _NETS)


_any_ip = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(_plain)
_internal_ip = st.one_of(
    st.integers(0, 2**24 - 1).map(lambda n: ipaddress.IPv4Address((10 << 24) + n)),
    st.integers(0, 2**96 - 1).map(lambda n: ipaddress.IPv6Address((0x20010DB8 << 96) + n)),
)
_external_ip = _any_ip.filter(lambda ip: not _trusted(ip))
# What a client may put in the header: addresses (trusted-looking ones too), garbage,
# empty entries; never a line break (the server refuses those).
_forged_entry = st.one_of(
    _any_ip.map(str), _internal_ip.map(str),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
)


def _header(entries: list[str]) -> list[tuple[bytes, bytes]]:
    return xff(", ".join(entries))


@settings(deadline=None, max_examples=300)
@given(forged=st.lists(_forged_entry, max_size=5), client=_external_ip,
       behind=st.lists(_internal_ip, max_size=3), peer=_internal_ip)
def test_a_forged_prefix_never_changes_the_client(forged: list[str], client: Any,
                                                  behind: list[Any], peer: Any) -> None:
    honest = [str(client), *map(str, behind)]
    truth = client_ip(str(peer), _header(honest), INTERNAL)
    assert truth == str(client)
    assert client_ip(str(peer), _header([*forged, *honest]), INTERNAL) == truth
    # the hop count that matches the layout gives the same answer, forged prefix or not
    hops = ForwardedConfig(trusted_proxies=INTERNAL.trusted_proxies,
                           xff_num_trusted_hops=len(honest))
    assert client_ip(str(peer), _header([*forged, *honest]), hops) == truth


@settings(deadline=None, max_examples=300)
@given(chain=st.lists(st.one_of(_internal_ip, _external_ip), max_size=6), peer=_internal_ip)
def test_the_client_is_trusted_only_when_every_entry_is(chain: list[Any], peer: Any) -> None:
    result = ipaddress.ip_address(client_ip(str(peer), _header(list(map(str, chain))), INTERNAL))
    if _trusted(result):
        assert all(_trusted(ip) for ip in chain)
        assert result == (chain[0] if chain else peer)
    else:
        untrusted = [ip for ip in chain if not _trusted(ip)]
        assert result == untrusted[-1]


@settings(deadline=None, max_examples=200)
@given(chain=st.lists(_forged_entry, max_size=6), peer=_any_ip, hops=st.none() | st.integers(0, 4))
def test_the_result_is_the_peer_or_an_entry(chain: list[str], peer: Any,
                                            hops: int | None) -> None:
    cfg = ForwardedConfig(trusted_proxies=INTERNAL.trusted_proxies, xff_num_trusted_hops=hops)
    result = client_ip(str(peer), _header(chain), cfg)
    parsed = _plain(ipaddress.ip_address(result))
    if not _trusted(peer):
        assert result == str(peer)
    else:
        entries = [e.strip() for e in ", ".join(chain).split(",")]
        assert result == str(peer) or any(
            _plain(ipaddress.ip_address(e)) == parsed for e in entries if _parses(e))


def _parses(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@settings(deadline=None, max_examples=100)
@given(forged=st.lists(_forged_entry, min_size=1, max_size=4), client=_external_ip)
def test_an_untrusted_peer_cannot_be_talked_out_of_being_the_client(
        forged: list[str], client: Any) -> None:
    assert client_ip(str(client), _header(forged), INTERNAL) == str(client)


# ---- through a real gateway ------------------------------------------------------------


@FACADES
@pytest.mark.parametrize(("chain", "real_ip"), [
    ("203.0.113.7", "203.0.113.7"),
    ("1.1.1.1, 203.0.113.7", "203.0.113.7"),
    ("127.0.0.1, 203.0.113.7", "203.0.113.7"),
    ("127.0.0.1", "127.0.0.1"),
    ("203.0.113.7, garbage", "127.0.0.1"),
])
@bounded(10)
async def test_gateway_behind_one_trusted_proxy(facade: str, chain: str, real_ip: str) -> None:
    async with open_backend() as b:
        args = facade_args(facade, b.url, trusted_proxies=["127.0.0.1/32"])
        async with gateway(*args.get("routes", ()), middleware=args.get("middleware", ())) as gw:
            response = await gw.raw(request_bytes("GET", "/api/x", [("X-Forwarded-For", chain)]))
            assert response.status == 200
    [seen] = b.requests
    assert seen.header_values("x-real-ip") == [real_ip]
    assert seen.header_values("x-forwarded-for") == [f"{chain}, 127.0.0.1"]


@bounded(10)
async def test_gateway_walks_over_every_trusted_range() -> None:
    async with open_backend() as b:
        route = GatewayRoute("/api/{path:path}", [b.url],
                             trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
        async with gateway(route) as gw:
            response = await gw.raw(request_bytes("GET", "/api/x", [
                ("X-Forwarded-For", "1.1.1.1, 203.0.113.7"), ("X-Forwarded-For", "10.0.0.2"),
                ("X-Real-IP", "1.1.1.1")]))
            assert response.status == 200
    [seen] = b.requests
    assert seen.header_values("x-real-ip") == ["203.0.113.7"]
    assert seen.header_values("x-forwarded-for") == ["1.1.1.1, 203.0.113.7, 10.0.0.2, 127.0.0.1"]


@bounded(10)
async def test_gateway_without_trusted_proxies_reports_the_peer() -> None:
    async with open_backend() as b, gateway(GatewayRoute("/api/{path:path}", [b.url])) as gw:
        response = await gw.raw(request_bytes("GET", "/api/x", [
            ("X-Forwarded-For", "203.0.113.7")]))
        assert response.status == 200
    [seen] = b.requests
    assert seen.header_values("x-real-ip") == ["127.0.0.1"]
    assert seen.header_values("x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]


@bounded(20)
async def test_client_ip_hashing_keys_on_the_real_client_not_the_forged_prefix() -> None:
    """Behind a trusted proxy, sticky hashing must follow the address that proxy appended:
    the same client lands on the same backend whatever it puts left of it, and
    different clients spread over the backends."""
    async with open_backend(name="a") as a, open_backend(name="b") as b, \
            open_backend(name="c") as c:
        route = GatewayRoute("/api/{path:path}", [a.url, b.url, c.url],
                             load_balancing_strategy="hash", hash_on="client_ip",
                             trusted_proxies=["127.0.0.1"])
        async with gateway(route) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            per_client: dict[str, set[str]] = {}
            for i in range(24):
                ip = f"203.0.113.{i}"
                for forged in ("", "198.51.100.1, ", "127.0.0.1, ", f"198.51.100.{i}, x, "):
                    response = await client.get(
                        "/api/x", headers={"X-Forwarded-For": forged + ip})
                    assert response.status_code == 200
                    per_client.setdefault(ip, set()).add(response.json()["backend"])
    assert all(len(names) == 1 for names in per_client.values()), per_client
    spread = Counter(next(iter(names)) for names in per_client.values())
    assert len(spread) > 1, spread


def _facades_take_hop_count() -> bool:
    try:
        facade_args("route", "http://127.0.0.1:9", trusted_proxies=["127.0.0.1"],
                xff_num_trusted_hops=1)
        facade_args("middleware", "http://127.0.0.1:9", trusted_proxies=["127.0.0.1"],
                xff_num_trusted_hops=1)
    except TypeError:
        return False
    return True


def test_facades_take_a_hop_count() -> None:
    assert _facades_take_hop_count()


@FACADES
@bounded(10)
async def test_gateway_hop_count(facade: str) -> None:
    async with open_backend() as b:
        args = facade_args(facade, b.url, trusted_proxies=["127.0.0.1"], xff_num_trusted_hops=2)
        async with gateway(*args.get("routes", ()), middleware=args.get("middleware", ())) as gw:
            response = await gw.raw(request_bytes("GET", "/api/x", [
                ("X-Forwarded-For", ENVOY_CHAIN)]))
            assert response.status == 200
    [seen] = b.requests
    assert seen.header_values("x-real-ip") == ["203.0.113.10"]
    assert seen.header_values("x-forwarded-for") == [f"{ENVOY_CHAIN}, 127.0.0.1"]
