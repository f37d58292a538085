"""The DNS and file sources against a real DNS server on loopback and real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dns.asyncbackend
import dns.resolver
import pytest
import trio

from velithon._discovery.dns import DnsSource
from velithon._discovery.files import FULL_READ_EVERY, MAX_FILE_SIZE, FileSource
from velithon._discovery.specs import DiscoveryOptions, split_targets
from velithon._lb.discovery import Discovered, DiscoveryError
from velithon._proxy.origin import Origin
from velithon.testing import DNSServer, SrvRecord, open_dns_server


def source(target: str, server: DNSServer, **options: float) -> DnsSource:
    [found] = split_targets([target], None, DiscoveryOptions(
        dns_nameservers=(server.nameserver,), **options), Origin.parse).sources
    assert isinstance(found, DnsSource)
    return found


async def lookup(target: str, server: DNSServer, **options: float) -> Discovered:
    return await source(target, server, **options).open()()


async def test_srv_targets_with_addresses_from_the_additional_section() -> None:
    async with open_dns_server() as server:
        server.set_addresses("a.test", ["10.0.0.1", "fd00::1"], ttl=20)
        server.set_addresses("b.test", ["10.0.0.2"], ttl=30)
        server.set_srv("_http._tcp.api.test", [
            SrvRecord("a.test", 8001, weight=5), SrvRecord("b.test", 8002, weight=0),
            SrvRecord("c.test", 8003, priority=10),  # a backup: not used
        ], ttl=60)
        found = await lookup("dns+srv://_http._tcp.api.test", server)
        assert sorted(found.targets) == [
            ("http://10.0.0.1:8001", 5), ("http://10.0.0.2:8002", 1),  # weight 0 counts as 1
            ("http://[fd00::1]:8001", 5)]
        assert found.ttl == 20  # the smallest TTL of everything used
        assert [q.rdtype for q in server.queries] == ["SRV"]  # no extra queries: glue


async def test_srv_hosts_are_resolved_when_the_server_sends_no_addresses() -> None:
    async with open_dns_server(glue=False) as server:
        server.set_addresses("a.test", ["10.0.0.1"], ttl=5)
        server.set_srv("_http._tcp.api.test", [("a.test", 8001), ("gone.test", 8002)], ttl=60)
        found = await lookup("dns+srv+https://_http._tcp.api.test", server, dns_timeout=2.0)
        assert found == Discovered((("https://10.0.0.1:8001", 1),), 5)  # gone.test skipped
        assert sorted((q.name, q.rdtype) for q in server.queries) == [
            ("_http._tcp.api.test", "SRV"), ("a.test", "A"), ("a.test", "AAAA"),
            ("gone.test", "A"), ("gone.test", "AAAA")]


async def test_the_srv_weight_can_be_overridden_and_a_base_path_kept() -> None:
    async with open_dns_server() as server:
        server.set_addresses("a.test", ["10.0.0.1"])
        server.set_srv("_http._tcp.api.test", [SrvRecord("a.test", 80, weight=9)])
        [found] = split_targets(["dns+srv://_http._tcp.api.test"], [4], DiscoveryOptions(
            dns_nameservers=(server.nameserver,)), Origin.parse).sources
        assert (await found.open()()).targets == (("http://10.0.0.1", 4),)


async def test_a_and_aaaa_records() -> None:
    async with open_dns_server() as server:
        server.set_addresses("api.test", ["10.0.0.1", "10.0.0.2", "::1"], ttl=4)
        found = await lookup("dns+https://api.test:8443/base", server)
        assert sorted(found.targets) == [("https://10.0.0.1:8443/base", 1),
                                         ("https://10.0.0.2:8443/base", 1),
                                         ("https://[::1]:8443/base", 1)]
        assert found.ttl == 4


async def test_an_existing_name_without_records_is_an_empty_answer() -> None:
    async with open_dns_server() as server:
        server.set_srv("_http._tcp.api.test", [("a.test", 80)])
        assert (await lookup("dns://_http._tcp.api.test:80", server)).targets == ()
        server.set_srv("_http._tcp.api.test", [(".", 0)])  # "decidedly not available"
        assert (await lookup("dns+srv://_http._tcp.api.test", server)).targets == ()


async def test_failures_are_one_line_errors() -> None:
    async with open_dns_server() as server:
        with pytest.raises(DiscoveryError, match=r"^nope\.test does not exist \(NXDOMAIN\)$"):
            await lookup("dns://nope.test:80", server)
        server.set_addresses("api.test", ["10.0.0.1"])
        server.answer_servfail()
        with pytest.raises(DiscoveryError, match=r"^api\.test (A|AAAA): .*answered SERVFAIL$"):
            await lookup("dns://api.test:80", server)
        server.go_silent()
        with pytest.raises(DiscoveryError, match=r"no answer within 0\.3s$"):
            with trio.fail_after(3):
                await lookup("dns://api.test:80", server, dns_timeout=0.3)


async def test_a_truncated_answer_is_fetched_again_over_tcp() -> None:
    async with open_dns_server() as server:
        many = [f"10.1.{i // 200}.{i % 200 + 1}" for i in range(120)]
        server.set_addresses("big.test", many)
        found = await lookup("dns://big.test:80", server)
        assert sorted(url for url, _ in found.targets) == sorted(f"http://{a}" for a in many)
        assert ("big.test", "A", "tcp") in [(q.name, q.rdtype, q.transport)
                                            for q in server.queries]


async def test_the_trio_backend_is_passed_per_call_never_set_globally() -> None:
    async with open_dns_server() as server:
        server.set_addresses("api.test", ["10.0.0.1"])
        await lookup("dns://api.test:80", server)
    assert dns.asyncbackend._default_backend is None  # an asyncio user's default is theirs


async def test_a_missing_system_configuration_is_a_lookup_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_config(self: object, configure: bool = True) -> None:
        raise dns.resolver.NoResolverConfiguration("no nameservers")

    monkeypatch.setattr(dns.resolver.BaseResolver, "__init__", no_config)
    [found] = split_targets(["dns://api.test:80"], None, DiscoveryOptions(),
                            Origin.parse).sources
    with pytest.raises(DiscoveryError, match="no usable system DNS configuration.*"
                                             "set dns_nameservers"):
        await found.open()()


# ---- files ------------------------------------------------------------------------------


def write(path: Path, groups: object) -> None:
    """Write atomically, as the docs tell users to."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(groups))
    os.replace(temporary, path)


async def test_a_file_is_read_and_follows_edits(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    write(path, [{"targets": ["10.0.0.1:80"]}])
    lookup = FileSource(name="file://targets.json", path=str(path)).open()
    first = await lookup()
    assert first.targets == (("http://10.0.0.1", 1),)
    assert await lookup() is first  # unchanged: the same answer
    write(path, [{"targets": ["10.0.0.1:80", "10.0.0.2:80"], "labels": {"weight": "2"}}])
    assert (await lookup()).targets == (("http://10.0.0.1", 2), ("http://10.0.0.2", 2))


async def test_an_edit_keeping_size_and_time_is_seen_within_a_few_polls(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    path.write_text(json.dumps([{"targets": ["10.0.0.1:80"]}]))
    stat = path.stat()
    lookup = FileSource(name="file://t", path=str(path)).open()
    assert (await lookup()).targets == (("http://10.0.0.1", 1),)
    with path.open("r+") as f:  # same length, same inode, timestamp put back
        f.write(json.dumps([{"targets": ["10.0.0.2:80"]}]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    seen = [(await lookup()).targets for _ in range(FULL_READ_EVERY)]
    assert seen[-1] == (("http://10.0.0.2", 1),)


async def test_file_failures(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    lookup = FileSource(name="file://t", path=str(path)).open()
    with pytest.raises(DiscoveryError, match="No such file or directory"):
        await lookup()
    path.write_text("[{")
    with pytest.raises(DiscoveryError, match="not valid JSON"):
        await lookup()
    path.write_bytes(b" " * (MAX_FILE_SIZE + 1))
    with pytest.raises(DiscoveryError, match="over the 1048576-byte limit"):
        await lookup()


async def test_a_broken_edit_stays_a_failure_on_every_poll(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    write(path, [{"targets": ["10.0.0.1:80"]}])
    lookup = FileSource(name="file://t", path=str(path)).open()
    assert (await lookup()).targets == (("http://10.0.0.1", 1),)
    broken = path.with_suffix(".tmp")
    broken.write_text('[{"targets": ["10.0.0.2:80"')
    os.replace(broken, path)
    for _ in range(3):  # not "the last good answer" on the next poll
        with pytest.raises(DiscoveryError, match="not valid JSON"):
            await lookup()


async def test_only_regular_files_are_read(tmp_path: Path) -> None:
    """A device never ends and a FIFO blocks the read: both are refused at once."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        lookup = FileSource(name="file://t", path=path).open()
        with trio.fail_after(1):
            with pytest.raises(DiscoveryError, match="not a regular file"):
                await lookup()
