"""How dynamic sources are written: accepted forms, refused ones, options, file_sd."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from velithon._discovery.dns import MAX_RETRY, MAX_TTL_REFRESH, MIN_TTL_REFRESH, DnsSource
from velithon._discovery.files import FileSource, parse_file_sd
from velithon._discovery.specs import (
    DiscoveryOptions,
    is_dynamic,
    parse_nameserver,
    split_targets,
)
from velithon._exceptions import ConfigError
from velithon._lb.discovery import DiscoveryError
from velithon._proxy.origin import Origin
from velithon.config import load_config

OPTIONS = DiscoveryOptions()


def one(target: str, weight: int | None = None,
        options: DiscoveryOptions = OPTIONS) -> DnsSource | FileSource:
    plan = split_targets([target], None if weight is None else [weight], options, Origin.parse)
    [source] = plan.sources
    assert isinstance(source, DnsSource | FileSource)
    return source


@pytest.mark.parametrize(("target", "record", "qname", "scheme", "port", "base"), [
    ("dns+srv://_http._tcp.api.internal", "SRV", "_http._tcp.api.internal", "http", None, ""),
    ("dns+srv+https://_https._tcp.api.internal", "SRV", "_https._tcp.api.internal", "https",
     None, ""),
    ("DNS+SRV://api.service.consul", "SRV", "api.service.consul", "http", None, ""),
    ("dns://api.internal:8080", "A", "api.internal", "http", 8080, ""),
    ("dns://api.internal", "A", "api.internal", "http", 80, ""),
    ("dns+https://api.internal", "A", "api.internal", "https", 443, ""),
    ("dns+https://api.internal:8443/v1/", "A", "api.internal", "https", 8443, "/v1"),
    ("dns://api.default.svc.cluster.local.:80", "A", "api.default.svc.cluster.local.",
     "http", 80, ""),
])
def test_dns_forms(target: str, record: str, qname: str, scheme: str, port: int | None,
                   base: str) -> None:
    source = one(target)
    assert isinstance(source, DnsSource)
    assert (source.name, source.record, source.qname, source.scheme, source.port,
            source.base_path) == (target, record, qname, scheme, port, base)
    assert source.kind == ("dns-srv" if record == "SRV" else "dns-a")


@pytest.mark.parametrize(("target", "message"), [
    ("https+dns://api.internal", "unknown scheme 'https+dns://'"),
    ("dns+srvs://_http._tcp.api", "unknown scheme 'dns+srvs://'"),
    ("srv://_http._tcp.api", "unknown scheme 'srv://'"),
    ("dns+http://api.internal", "unknown scheme 'dns+http://'"),
    ("dns+srv+http://_http._tcp.api", "unknown scheme 'dns+srv+http://'"),
    ("dns+srv://_http._tcp.api:8080", "SRV records carry the port; drop ':8080'"),
    ("dns://api.internal:0", "invalid port '0'"),
    ("dns://api.internal:http", "invalid port 'http'"),
    ("dns://10.0.0.1:80", "10.0.0.1 is an address, not a name"),
    ("dns://[::1]:80", "expected a DNS name"),
    ("dns://", "expected a DNS name"),
    ("dns://api.internal:80?scheme=https", "a query string or fragment is not allowed"),
    ("dns://api.internal/../x", "unsafe base path"),
    ("file://", "missing path"),
    ("file://targets.yaml", "YAML file_sd files are not supported"),
    ("file:///etc/velithon/targets.yml", "YAML file_sd files are not supported"),
])
def test_refused_forms_say_what_is_accepted(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("+", r"\+")
                       .replace(".", r"\.")) as caught:
        one(target)
    assert str(caught.value).startswith(f"Invalid target source {target!r}")
    if "unknown scheme" in message:
        assert "dns+srv://, dns+srv+https://, dns://, dns+https:// or file://" in str(caught.value)


def test_file_paths_are_relative_to_the_current_folder(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = one("file://conf/targets.json")
    absolute = one("file:///etc/velithon/targets.json")
    assert isinstance(relative, FileSource) and isinstance(absolute, FileSource)
    assert relative.path == os.path.join(tmp_path, "conf", "targets.json")
    assert absolute.path == "/etc/velithon/targets.json"
    assert relative.kind == "file"


def test_static_and_dynamic_targets_split_with_their_weights() -> None:
    plan = split_targets(["http://10.0.0.9:80", "dns+srv://_http._tcp.api", "file://t.json"],
                         [2, 3, 4], OPTIONS, Origin.parse)
    assert plan.static == ("http://10.0.0.9:80",) and plan.static_weights == (2,)
    srv, file = plan.sources
    assert isinstance(srv, DnsSource) and srv.weight == 3
    assert isinstance(file, FileSource) and file.weight == 4
    plan = split_targets("dns://api:80", None, OPTIONS, Origin.parse)
    assert plan.static == () and plan.static_weights is None and len(plan.sources) == 1


@pytest.mark.parametrize(("weights", "message"), [
    ([1], "Weights length must match targets length"),
    ([1, 0], "must be an integer >= 1, got 0"),
    ([1, True], "must be an integer >= 1, got True"),
])
def test_source_weights_are_checked(weights: list[int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split_targets(["http://10.0.0.9:80", "dns://api:80"], weights, OPTIONS, Origin.parse)


@pytest.mark.parametrize("target", ["http://a:1", "https://a", "unix:///x", "", "dnsx"])
def test_plain_targets_are_not_dynamic(target: str) -> None:
    assert not is_dynamic(target)


@pytest.mark.parametrize(("entry", "parsed"), [
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("10.0.0.2", ("10.0.0.2", 53)),
    ("[::1]:5353", ("::1", 5353)),
    ("::1", ("::1", 53)),
])
def test_nameservers(entry: str, parsed: tuple[str, int]) -> None:
    assert parse_nameserver(entry) == parsed


@pytest.mark.parametrize("entry", ["dns.internal:53", "127.0.0.1:0", "127.0.0.1:x", "[::1]x", ""])
def test_bad_nameservers(entry: str) -> None:
    with pytest.raises(ConfigError, match="dns_nameservers entries are IP addresses"):
        DiscoveryOptions(dns_nameservers=(entry,))


@pytest.mark.parametrize(("keywords", "message"), [
    ({"dns_refresh": 0}, "dns_refresh must be a number of seconds in"),
    ({"dns_refresh": True}, "dns_refresh must be"),
    ({"dns_timeout": -1}, "dns_timeout must be"),
    ({"file_refresh": 0}, "file_refresh must be"),
    ({"file_refresh": float("inf")}, "file_refresh must be"),
    ({"dns_nameservers": []}, "dns_nameservers must name at least one server"),
])
def test_bad_options(keywords: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"dns_nameservers": None, "dns_refresh": None,
                                 "dns_timeout": 5.0, "file_refresh": 1.0, **keywords}
    with pytest.raises(ConfigError, match=message):
        DiscoveryOptions.from_keywords(**values)  # type: ignore[arg-type]


def test_options_reach_the_sources() -> None:
    options = DiscoveryOptions.from_keywords(dns_nameservers="127.0.0.1:5353", dns_refresh=2.5,
                                             dns_timeout=1.5, file_refresh=0.5)
    source = one("dns://api:80", options=options)
    assert isinstance(source, DnsSource)
    assert (source.nameservers, source.refresh, source.timeout) == (
        (("127.0.0.1", 5353),), 2.5, 1.5)
    file = one("file://t.json", options=options)
    assert isinstance(file, FileSource) and file.refresh_after(None) == 0.5


# ---- refresh schedules ---------------------------------------------------------------


@pytest.mark.parametrize(("ttl", "after"), [
    (30, 30.0), (0, MIN_TTL_REFRESH), (0.2, MIN_TTL_REFRESH), (86400, MAX_TTL_REFRESH),
    (None, MAX_TTL_REFRESH),
])
def test_dns_refresh_follows_the_ttl_within_bounds(ttl: float | None, after: float) -> None:
    source = one("dns+srv://_http._tcp.api")
    assert isinstance(source, DnsSource)
    assert source.refresh_after(ttl) == after


def test_a_fixed_dns_refresh_ignores_the_ttl() -> None:
    source = one("dns://api:80", options=DiscoveryOptions(dns_refresh=7.0))
    assert isinstance(source, DnsSource)
    assert source.refresh_after(1) == source.refresh_after(3600) == 7.0
    assert [source.retry_after(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 7.0, 7.0]


def test_dns_retries_back_off_up_to_a_cap() -> None:
    source = one("dns://api:80")
    assert isinstance(source, DnsSource)
    delays = [source.retry_after(n) for n in range(1, 100)]
    assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert max(delays) == MAX_RETRY and delays == sorted(delays)


# ---- file_sd ---------------------------------------------------------------------------


def test_file_sd_groups_labels_and_defaults() -> None:
    content = json.dumps([
        {"targets": ["10.0.0.1:8080", "10.0.0.2:8080"], "labels": {"weight": "3", "job": "api"}},
        {"targets": ["10.0.0.3:8443", "Api-4.internal"], "labels": {"scheme": "https"}},
        {"targets": ["[fd00::1]:9000"], "labels": {"__scheme__": "http", "weight": 2}},
        {"targets": ["10.0.0.5:80"]},
        {"targets": []},
    ]).encode()
    assert parse_file_sd(content) == (
        ("http://10.0.0.1:8080", 3), ("http://10.0.0.2:8080", 3),
        ("https://10.0.0.3:8443", 1), ("https://api-4.internal", 1),
        ("http://[fd00::1]:9000", 2), ("http://10.0.0.5", 1),
    )
    assert {w for _, w in parse_file_sd(content, weight=5)} == {5}


@pytest.mark.parametrize(("content", "message"), [
    (b"{", "t.json: not valid JSON"),
    (b'{"targets": []}', "t.json: expected a JSON list of target groups, got dict"),
    (b"[1]", r"t.json: \[0\]: expected an object with 'targets', got int"),
    (b'[{"labels": {}}]', r"\[0\].targets: expected a list"),
    (b'[{"targets": ["a:1"], "labels": []}]', r"\[0\].labels: expected an object"),
    (b'[{"targets": ["a b:1"]}]', r"\[0\].targets\[0\]: expected 'host:port'"),
    (b'[{"targets": ["http://a:1"]}]', r"\[0\].targets\[0\]: expected 'host:port'"),
    (b'[{"targets": [1]}]', r"\[0\].targets\[0\]: expected 'host:port'"),
    (b'[{"targets": ["a:99999"]}]', "invalid port 99999"),
    (b'[{"targets": ["a:1"], "labels": {"weight": "0"}}]', "weight: expected an integer >= 1"),
    (b'[{"targets": ["a:1"], "labels": {"weight": "x"}}]', "weight: expected an integer >= 1"),
    (b'[{"targets": ["a:1"], "labels": {"scheme": "ftp"}}]', "scheme: expected 'http' or"),
    (b"\xff", "not valid JSON"),
])
def test_file_sd_errors_say_where(content: bytes, message: str) -> None:
    with pytest.raises(DiscoveryError, match=message):
        parse_file_sd(content, "t.json")


hosts = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z0-9-]{1,8}){0,2}", fullmatch=True)
groups = st.lists(st.fixed_dictionaries({
    "targets": st.lists(st.tuples(hosts, st.integers(1, 65535)), max_size=4),
    "weight": st.integers(1, 100),
    "scheme": st.sampled_from(["http", "https"]),
}), max_size=4)


@given(groups)
def test_every_listed_target_comes_out_once_per_listing(data: list[dict[str, object]]) -> None:
    content = json.dumps([
        {"targets": [f"{h}:{p}" for h, p in g["targets"]],  # type: ignore[attr-defined]
         "labels": {"weight": str(g["weight"]), "scheme": g["scheme"]}}
        for g in data
    ]).encode()
    expected = []
    for g in data:
        default = 443 if g["scheme"] == "https" else 80
        for h, p in g["targets"]:  # type: ignore[attr-defined]
            authority = h if p == default else f"{h}:{p}"
            expected.append((f"{g['scheme']}://{authority}", g["weight"]))
    assert list(parse_file_sd(content)) == expected
    for url, _ in expected:
        Origin.parse(url)  # every URL is one the gateway accepts


def test_a_configuration_file_takes_sources_and_their_options() -> None:
    config = load_config('''
[[routes]]
path = "/api/{path:path}"
targets = ["dns+srv://_http._tcp.api.test", "http://10.0.0.9:8080"]
dns_nameservers = ["127.0.0.1:5353"]
dns_refresh = 2.5

[[proxies]]
path_prefix = "/files"
targets = ["file:///etc/velithon/targets.json"]
file_refresh = 0.5
''')
    route = config.routes[0].build()
    [source] = route._holder.config.sources
    assert isinstance(source, DnsSource)
    assert (source.nameservers, source.refresh) == ((("127.0.0.1", 5353),), 2.5)
    assert route.targets == ["http://10.0.0.9:8080"]  # the rest comes from DNS when it runs
    [file] = config.proxies[0].build()._holder.config.sources
    assert isinstance(file, FileSource) and file.refresh == 0.5
