"""Targets from DNS: SRV records (host and port per instance) or A/AAAA records.

This is what Kubernetes headless services and Consul answer, and what Envoy
(``STRICT_DNS``), nginx (``resolve``) and HAProxy (``server-template``) follow.

* **SRV** (``dns+srv://_http._tcp.api.internal``): one target per (address, port).
  Only the records with the lowest priority value are used (velithon has no
  backup tier). Each record's host is resolved to its addresses, from the
  answer's additional section when the server sent them (Consul and CoreDNS
  do), else with A and AAAA queries. A host that does not exist is skipped; any
  other failure fails the whole lookup. SRV weights become target weights, 0
  counting as 1 (RFC 2782 gives weight-0 records a small share, not none).
* **A/AAAA** (``dns://api.internal:8080``): one target per address, all on the
  given port (80, or 443 for ``dns+https://``).

Resolution uses dnspython's async resolver with its trio backend, passed on every
call (dnspython's process-wide default backend is never set). Nameservers come
from the system configuration (``/etc/resolv.conf``, with its search domains)
unless ``dns_nameservers`` names them. The next lookup is due after the answer's
smallest TTL, clamped to [:data:`MIN_TTL_REFRESH`, :data:`MAX_TTL_REFRESH`]
seconds, or after ``dns_refresh`` seconds when that is set. After a failure the
lookup is retried after 1 s, doubling per failure in a row up to ``dns_refresh``
(or :data:`MAX_RETRY` seconds when following TTLs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TypeVar

import attrs
import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset
import trio

from .._lb.discovery import Discovered, DiscoveryError, Lookup

__all__ = ["MAX_RETRY", "MAX_TTL_REFRESH", "MIN_TTL_REFRESH", "DnsSource"]

#: bounds on a TTL-driven refresh: TTL 0 (Consul's default) still waits this long
MIN_TTL_REFRESH = 1.0
#: ... and a day-long TTL still looks again within five minutes
MAX_TTL_REFRESH = 300.0
#: the longest wait between retries of a failing source that follows TTLs
MAX_RETRY = 30.0

_DEFAULT_PORTS = {"http": 80, "https": 443}
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)

T = TypeVar("T")


@attrs.frozen
class DnsSource:
    """A ``dns+srv://`` or ``dns://`` target source (built by ``specs.parse_source``)."""

    name: str
    record: str  # "SRV" or "A" (A and AAAA)
    qname: str
    scheme: str
    port: int | None  # A records only: SRV records carry their own
    base_path: str = ""
    weight: int | None = None  # every target's weight, instead of the SRV weights
    nameservers: tuple[tuple[str, int], ...] | None = None  # None: the system's
    refresh: float | None = None  # None: follow the TTL
    timeout: float = 5.0

    @property
    def kind(self) -> str:
        return "dns-srv" if self.record == "SRV" else "dns-a"

    def refresh_after(self, ttl: float | None) -> float:
        if self.refresh is not None:
            return self.refresh
        if ttl is None:
            return MAX_TTL_REFRESH
        return min(max(ttl, MIN_TTL_REFRESH), MAX_TTL_REFRESH)

    def retry_after(self, failures: int) -> float:
        cap = self.refresh if self.refresh is not None else MAX_RETRY
        return float(min(cap, 2.0 ** min(max(failures - 1, 0), 16)))

    def open(self) -> Lookup:
        return _DnsLookup(self)

    def target_url(self, address: str, port: int) -> str:
        host = f"[{address}]" if ":" in address else address
        authority = host if port == _DEFAULT_PORTS[self.scheme] else f"{host}:{port}"
        return f"{self.scheme}://{authority}{self.base_path}"


class _DnsLookup:
    """One actor's lookups: the resolver is built on first use and then kept."""

    def __init__(self, source: DnsSource) -> None:
        self.source = source
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._backend = dns.asyncbackend.get_backend("trio")

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            servers = self.source.nameservers
            if servers is None:
                try:
                    resolver = dns.asyncresolver.Resolver(configure=True)
                except dns.exception.DNSException as exc:
                    raise DiscoveryError(f"no usable system DNS configuration ({exc}); "
                                         "set dns_nameservers") from None
                resolver.use_search_by_default = True  # like the system's own resolver
            else:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                        for host, port in servers]
            resolver.lifetime = self.source.timeout
            self._resolver = resolver
        return self._resolver

    async def __call__(self) -> Discovered:
        resolver = self._get_resolver()
        if self.source.record == "SRV":
            return await self._srv(resolver)
        return await self._addresses(resolver)

    async def _query(self, resolver: dns.asyncresolver.Resolver, name: str | dns.name.Name,
                     rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer | None:
        """One query; None when the name does not exist (NXDOMAIN)."""
        label = f"{name} {rdtype.name}"
        try:
            return await resolver.resolve(name, rdtype, raise_on_no_answer=False,
                                          backend=self._backend)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoNameservers as exc:
            raise DiscoveryError(f"{label}: {_server_errors(exc)}") from None
        except dns.exception.Timeout:
            raise DiscoveryError(f"{label}: no answer within {self.source.timeout:g}s") from None
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"{label}: {exc}") from None
        except OSError as exc:
            raise DiscoveryError(f"{label}: {exc.strerror or exc}") from None

    async def _addresses_of(self, resolver: dns.asyncresolver.Resolver,
                            name: str | dns.name.Name) -> tuple[list[str], float | None] | None:
        """A and AAAA of ``name`` together; None when the name does not exist."""
        answers = await _gather([partial(self._query, resolver, name, t)
                                 for t in _ADDRESS_TYPES])
        if all(a is None for a in answers):
            return None
        addresses: list[str] = []
        ttls: list[float] = []
        for answer in answers:
            if answer is not None and answer.rrset is not None:
                addresses.extend(rdata.address for rdata in answer.rrset)
                ttls.append(answer.rrset.ttl)
        return addresses, min(ttls, default=None)

    async def _addresses(self, resolver: dns.asyncresolver.Resolver) -> Discovered:
        source = self.source
        found = await self._addresses_of(resolver, source.qname)
        if found is None:
            raise DiscoveryError(f"{source.qname} does not exist (NXDOMAIN)")
        addresses, ttl = found
        port = source.port or _DEFAULT_PORTS[source.scheme]
        weight = source.weight or 1
        return Discovered(tuple((source.target_url(a, port), weight) for a in addresses), ttl)

    async def _srv(self, resolver: dns.asyncresolver.Resolver) -> Discovered:
        source = self.source
        answer = await self._query(resolver, source.qname, dns.rdatatype.SRV)
        if answer is None:
            raise DiscoveryError(f"{source.qname} does not exist (NXDOMAIN)")
        if answer.rrset is None:
            return Discovered((), None)
        ttls: list[float] = [answer.rrset.ttl]
        records = [r for r in answer.rrset if r.target != dns.name.root]  # "." = no service
        if not records:
            return Discovered((), answer.rrset.ttl)
        best = min(r.priority for r in records)
        records = [r for r in records if r.priority == best]
        glue = _glue(answer.response.additional)
        hosts = list(dict.fromkeys(r.target for r in records))
        missing = [h for h in hosts if h not in glue and _literal(h) is None]
        resolved = await _gather([partial(self._addresses_of, resolver, h) for h in missing])
        addresses: dict[dns.name.Name, list[str]] = {}
        for host in hosts:
            literal = _literal(host)
            if literal is not None:
                addresses[host] = [literal]
            elif host in glue:
                addresses[host], ttl = glue[host]
                ttls.append(ttl)
        for host, result in zip(missing, resolved, strict=True):
            if result is not None:  # a host that does not exist is skipped
                addresses[host] = result[0]
                if result[1] is not None:
                    ttls.append(result[1])
        targets = tuple(
            (source.target_url(address, r.port), source.weight or max(r.weight, 1))
            for r in records for address in addresses.get(r.target, ())
        )
        return Discovered(targets, min(ttls))


def _glue(section: Iterable[dns.rrset.RRset]) -> dict[dns.name.Name, tuple[list[str], float]]:
    """Addresses the server volunteered in the additional section, by name."""
    glue: dict[dns.name.Name, tuple[list[str], float]] = {}
    for rrset in section:
        if rrset.rdtype in _ADDRESS_TYPES:
            known, ttl = glue.get(rrset.name, ([], float(rrset.ttl)))
            glue[rrset.name] = ([*known, *(rdata.address for rdata in rrset)],
                                min(ttl, rrset.ttl))
    return glue


def _literal(name: dns.name.Name) -> str | None:
    """An SRV target written as an IP address (not valid DNS, but seen in the wild)."""
    try:
        return str(ipaddress.ip_address(name.to_text(omit_final_dot=True)))
    except ValueError:
        return None


def _server_errors(exc: dns.resolver.NoNameservers) -> str:
    """``127.0.0.1:5353 answered SERVFAIL``: dnspython's error list, one line per server."""
    errors = exc.kwargs.get("errors") or []  # (server, tcp, port, error or rcode text, response)
    parts = [f"{error[0]} answered {error[3]}" for error in errors]  # "Do53:127.0.0.1@53 ..."
    return "; ".join(dict.fromkeys(parts)) or "no nameserver answered"


async def _gather(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` concurrently; the first :class:`DiscoveryError` is raised alone."""
    results: list[T | None] = [None] * len(calls)
    errors: list[DiscoveryError] = []

    async def one(i: int, call: Callable[[], Awaitable[T]]) -> None:
        try:
            results[i] = await call()
        except DiscoveryError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for i, call in enumerate(calls):
            nursery.start_soon(one, i, call)
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]
