"""velithon.testing.open_dns_server: records changed at runtime, failures on demand."""

from __future__ import annotations

import dns.asyncbackend
import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio

from velithon.testing import DNSQuery, DNSServer, SrvRecord, open_dns_server

TRIO = dns.asyncbackend.get_backend("trio")


async def ask(server: DNSServer, name: str, rdtype: str, *, tcp: bool = False,
              timeout: float = 2.0) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(query, server.host, timeout=timeout, port=server.port,
                                        backend=TRIO)
    return await dns.asyncquery.udp(query, server.host, timeout=timeout, port=server.port,
                                    backend=TRIO)


def texts(response: dns.message.Message) -> list[str]:
    return sorted(rdata.to_text() for rrset in response.answer for rdata in rrset)


async def test_records_change_at_runtime() -> None:
    async with open_dns_server() as server:
        assert server.nameserver == f"127.0.0.1:{server.port}"
        server.set_addresses("api.test", ["10.0.0.1", "10.0.0.2", "fd00::1"], ttl=7)
        answer = await ask(server, "api.test", "A")
        assert texts(answer) == ["10.0.0.1", "10.0.0.2"] and answer.answer[0].ttl == 7
        assert answer.flags & dns.flags.AA
        assert texts(await ask(server, "api.test", "AAAA")) == ["fd00::1"]
        server.set_addresses("api.test", ["10.0.0.3"])  # replaces both types
        assert texts(await ask(server, "api.test", "A")) == ["10.0.0.3"]
        assert texts(await ask(server, "api.test", "AAAA")) == []
        server.set_ttl("api.test", 30)
        assert (await ask(server, "API.test.", "A")).answer[0].ttl == 30  # names are case-blind
        server.remove("api.test")
        assert (await ask(server, "api.test", "A")).rcode() == dns.rcode.NXDOMAIN


async def test_srv_records_and_their_glue() -> None:
    async with open_dns_server() as server:
        server.set_addresses("a.test", ["10.0.0.1"])
        server.set_srv("_http._tcp.api.test", [("a.test", 8001),
                                               SrvRecord("b.test", 8002, weight=5, priority=1)])
        answer = await ask(server, "_http._tcp.api.test", "SRV")
        assert texts(answer) == ["0 1 8001 a.test.", "1 5 8002 b.test."]
        assert [(r.name.to_text(), r.rdtype) for r in answer.additional] == [
            ("a.test.", dns.rdatatype.A)]
        server.glue = False
        assert (await ask(server, "_http._tcp.api.test", "SRV")).additional == []


async def test_nodata_nxdomain_servfail_and_silence() -> None:
    async with open_dns_server() as server:
        server.set_srv("_http._tcp.api.test", [("a.test", 80)])
        nodata = await ask(server, "_http._tcp.api.test", "A")
        assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
        assert (await ask(server, "other.test", "A")).rcode() == dns.rcode.NXDOMAIN
        server.answer_servfail()
        assert (await ask(server, "_http._tcp.api.test", "SRV")).rcode() == dns.rcode.SERVFAIL
        server.go_silent()
        with pytest.raises(dns.exception.Timeout):
            await ask(server, "_http._tcp.api.test", "SRV", timeout=0.2)
        with pytest.raises(dns.exception.Timeout):
            await ask(server, "_http._tcp.api.test", "SRV", timeout=0.2, tcp=True)
        server.answer_normally()
        assert texts(await ask(server, "_http._tcp.api.test", "SRV")) == ["0 1 80 a.test."]


async def test_large_answers_are_truncated_over_udp_and_whole_over_tcp() -> None:
    async with open_dns_server() as server:
        server.set_addresses("big.test", [f"10.2.0.{i}" for i in range(1, 101)])
        udp = await ask(server, "big.test", "A")
        assert udp.flags & dns.flags.TC and udp.answer == []
        assert len(texts(await ask(server, "big.test", "A", tcp=True))) == 100


async def test_queries_are_recorded_and_can_be_awaited() -> None:
    async with open_dns_server() as server:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.wait_for_queries, 2, name="a.test.")
            await ask(server, "a.test", "A")
            await ask(server, "b.test", "A")
            await ask(server, "a.test", "SRV", tcp=True)
        assert server.queries == [DNSQuery("a.test", "A", "udp"), DNSQuery("b.test", "A", "udp"),
                                  DNSQuery("a.test", "SRV", "tcp")]
        with pytest.raises(trio.TooSlowError):
            await server.wait_for_queries(4, timeout=0.05)
