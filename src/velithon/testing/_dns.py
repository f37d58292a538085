"""An authoritative DNS server on loopback whose records a test changes at runtime.

Service discovery is only as good as its behaviour when DNS changes or fails, so the
server lets a test do exactly that while a client (a gateway following SRV or A
records, or any resolver) is running: add and remove records, change TTLs, answer
SERVFAIL, or go silent. It speaks UDP and TCP on the same port; a UDP answer that does
not fit (512 bytes, or the client's EDNS size) is sent truncated, so clients retry over
TCP as real resolvers do.

It answers every name it holds records for, and NXDOMAIN for any other. A name that
exists without records of the asked type gets an empty NOERROR answer (NODATA). SRV
answers carry the A/AAAA records of their targets in the additional section when the
server holds them (``glue=True``, like Consul and CoreDNS).
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable

import attrs
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import trio

from ._net import NETWORK_ERRORS, ChangeSignal, owning_nursery

__all__ = ["DNSQuery", "DNSServer", "SrvRecord", "open_dns_server"]

#: TTL of records added without one
DEFAULT_TTL = 1
_UDP_LIMIT = 512  # without EDNS (RFC 1035)


class _Mode(enum.Enum):
    ANSWER = "answer"
    SERVFAIL = "servfail"
    SILENT = "silent"


@attrs.frozen
class SrvRecord:
    """One SRV record's data: the instance ``host:port``, its weight and priority."""

    host: str
    port: int
    weight: int = 1
    priority: int = 0

    def text(self) -> str:
        return f"{self.priority} {self.weight} {self.port} {_absolute(self.host)}"


@attrs.frozen
class DNSQuery:
    """One question the server received."""

    name: str  # without the final dot
    rdtype: str  # "A", "AAAA", "SRV", ...
    transport: str  # "udp" or "tcp"


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _key(name: str | dns.name.Name) -> dns.name.Name:
    parsed = name if isinstance(name, dns.name.Name) else dns.name.from_text(_absolute(name))
    return parsed.canonicalize()


class DNSServer:
    """A running test DNS server; get one from :func:`open_dns_server`.

    Attributes:
        host, port: where it listens (UDP and TCP).
        queries: every question received, in order.
        glue: put SRV targets' addresses in the additional section (default True).
    """

    def __init__(self, host: str, port: int, *, glue: bool) -> None:
        self.host = host
        self.port = port
        self.glue = glue
        self.queries: list[DNSQuery] = []
        self._records: dict[tuple[dns.name.Name, dns.rdatatype.RdataType],
                            tuple[int, list[str]]] = {}
        self._mode = _Mode.ANSWER
        self._changed = ChangeSignal()

    def __repr__(self) -> str:
        return (f"<DNSServer {self.nameserver} {self._mode.value} "
                f"[{len(self._records)} rrsets] queries={len(self.queries)}>")

    @property
    def nameserver(self) -> str:
        """``"127.0.0.1:5353"``: what to pass in ``dns_nameservers``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # ---- records -----------------------------------------------------------------------

    def set_addresses(self, name: str, addresses: Iterable[str], *,
                      ttl: int = DEFAULT_TTL) -> None:
        """``name``'s A and AAAA records become exactly ``addresses`` (IPv4 and IPv6 mixed)."""
        v4: list[str] = []
        v6: list[str] = []
        for address in addresses:
            (v6 if ipaddress.ip_address(address).version == 6 else v4).append(address)
        self._set(name, dns.rdatatype.A, v4, ttl)
        self._set(name, dns.rdatatype.AAAA, v6, ttl)

    def set_srv(self, name: str, records: Iterable[SrvRecord | tuple[str, int]], *,
                ttl: int = DEFAULT_TTL) -> None:
        """``name``'s SRV records become exactly ``records`` (``(host, port)`` pairs or
        :class:`SrvRecord`)."""
        texts = [(r if isinstance(r, SrvRecord) else SrvRecord(*r)).text() for r in records]
        self._set(name, dns.rdatatype.SRV, texts, ttl)

    def set_ttl(self, name: str, ttl: int) -> None:
        """Change the TTL of every record of ``name``."""
        key = _key(name)
        for (owner, rdtype), (_, values) in list(self._records.items()):
            if owner == key:
                self._records[owner, rdtype] = (ttl, values)

    def remove(self, name: str) -> None:
        """Forget every record of ``name``: it is NXDOMAIN from now on."""
        key = _key(name)
        self._records = {k: v for k, v in self._records.items() if k[0] != key}

    def _set(self, name: str, rdtype: dns.rdatatype.RdataType, values: list[str],
             ttl: int) -> None:
        if values:
            self._records[_key(name), rdtype] = (ttl, values)
        else:
            self._records.pop((_key(name), rdtype), None)

    # ---- behaviour ---------------------------------------------------------------------

    def answer_servfail(self) -> None:
        """Answer every question with SERVFAIL (a broken upstream, an overloaded server)."""
        self._mode = _Mode.SERVFAIL

    def go_silent(self) -> None:
        """Read questions and answer none (a dead server, a dropped packet): clients time out."""
        self._mode = _Mode.SILENT

    def answer_normally(self) -> None:
        self._mode = _Mode.ANSWER

    async def wait_for_queries(self, count: int, *, name: str | None = None,
                               timeout: float = 5.0) -> None:
        """Wait until ``count`` questions (about ``name``, if given) have arrived.

        Raises:
            trio.TooSlowError: fewer arrived within ``timeout`` seconds.
        """
        wanted = None if name is None else name.rstrip(".").lower()

        def enough() -> bool:
            seen = [q for q in self.queries if wanted is None or q.name == wanted]
            return len(seen) >= count

        await self._changed.wait_until(enough, timeout)

    # ---- answering -----------------------------------------------------------------------

    def answer(self, wire: bytes, transport: str) -> bytes | None:
        """The response to one query in wire format (None: stay silent)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not DNS: ignore, as servers do
        if not query.question:
            return None
        question = query.question[0]
        self.queries.append(DNSQuery(question.name.to_text(omit_final_dot=True).lower(),
                                     dns.rdatatype.to_text(question.rdtype), transport))
        self._changed.notify()
        if self._mode is _Mode.SILENT:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if self._mode is _Mode.SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        self._fill(response, _key(question.name), question.rdtype)
        limit = 65535 if transport == "tcp" else max(_UDP_LIMIT, query.payload
                                                     if query.edns >= 0 else _UDP_LIMIT)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            return truncated.to_wire()

    def _fill(self, response: dns.message.Message, name: dns.name.Name,
              rdtype: dns.rdatatype.RdataType) -> None:
        found = self._records.get((name, rdtype))
        if found is None:
            if not any(owner == name for owner, _ in self._records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            return
        ttl, values = found
        rrset = dns.rrset.from_text_list(name, ttl, dns.rdataclass.IN, rdtype, values)
        response.answer.append(rrset)
        if rdtype == dns.rdatatype.SRV and self.glue:
            for rdata in rrset:
                for kind in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    glue = self._records.get((_key(rdata.target), kind))
                    if glue is not None:
                        response.additional.append(dns.rrset.from_text_list(
                            rdata.target, glue[0], dns.rdataclass.IN, kind, glue[1]))

    async def _serve_udp(self, sock: trio.socket.SocketType, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            data, peer = await sock.recvfrom(65535)
            reply = self.answer(data, "udp")
            if reply is not None:
                with contextlib.suppress(OSError):
                    await sock.sendto(reply, peer)

    async def _serve_tcp_connection(self, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            try:
                while True:
                    while len(buffer) < 2 or len(buffer) < 2 + int.from_bytes(buffer[:2], "big"):
                        chunk = await stream.receive_some(65535)
                        if not chunk:
                            return
                        buffer += chunk
                    size = int.from_bytes(buffer[:2], "big")
                    wire, buffer = buffer[2:2 + size], buffer[2 + size:]
                    reply = self.answer(wire, "tcp")
                    if reply is not None:
                        await stream.send_all(len(reply).to_bytes(2, "big") + reply)
            except NETWORK_ERRORS:
                return


@contextlib.asynccontextmanager
async def open_dns_server(*, host: str = "127.0.0.1", glue: bool = True
                          ) -> AsyncIterator[DNSServer]:
    """Run a :class:`DNSServer` on ``host`` (UDP and TCP, one ephemeral port) for the block."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp, listener = await _bind_pair(host, family)
    server = DNSServer(host, udp.getsockname()[1], glue=glue)
    with udp:
        async with owning_nursery() as nursery:
            await nursery.start(server._serve_udp, udp)
            await nursery.start(trio.serve_listeners, server._serve_tcp_connection, [listener])
            yield server


async def _bind_pair(host: str, family: int, attempts: int = 20
                     ) -> tuple[trio.socket.SocketType, trio.SocketListener]:
    """A UDP socket and a TCP listener on the same free port."""
    for _ in range(attempts):
        udp = trio.socket.socket(family, socket.SOCK_DGRAM)
        await udp.bind((host, 0))
        tcp = trio.socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            await tcp.bind((host, udp.getsockname()[1]))
        except OSError:  # that port is taken for TCP: try another
            udp.close()
            tcp.close()
            continue
        tcp.listen(64)
        return udp, trio.SocketListener(tcp)
    raise OSError(f"no port on {host} was free for both UDP and TCP")
