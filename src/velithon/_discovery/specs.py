"""Which target strings are dynamic sources, and how they are written.

One notation, in the URL scheme, says everything a source needs to build target
URLs: ``dns+srv://`` (SRV records), ``dns://`` (A/AAAA records), with ``+https`` at the
end when the targets speak TLS (``dns+srv+https://``, ``dns+https://``), and
``file://`` for a ``file_sd`` file. Keeping the target scheme in the string (rather
than in a separate option) lets one ``targets`` list mix plain and TLS sources and
keeps every entry of a configuration file self-contained; it reads like the
compound schemes users know (``git+ssh://``, ``postgresql+asyncpg://``). Every
other spelling (``https+dns://``, ``dns+srvs://``, ``srv://``, an explicit ``+http``)
is refused with a message naming the accepted forms.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Sequence

import attrs

from .._exceptions import ConfigError
from .._lb.discovery import DiscoverySource
from .dns import DnsSource
from .files import FileSource

__all__ = ["DiscoveryOptions", "TargetPlan", "is_dynamic", "parse_nameserver", "split_targets"]

_FORMS = "dns+srv://, dns+srv+https://, dns://, dns+https:// or file://"
#: scheme -> (record type, scheme of the targets it yields)
_DNS_SCHEMES = {
    "dns+srv": ("SRV", "http"),
    "dns+srv+https": ("SRV", "https"),
    "dns": ("A", "http"),
    "dns+https": ("A", "https"),
}
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: words that mark a scheme as an attempt at a dynamic source
_DISCOVERY_WORDS = {"dns", "srv", "dnssrv", "srvs", "file"}
_YAML = (".yaml", ".yml")
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@attrs.frozen
class DiscoveryOptions:
    """The facade keywords shared by every source of one route (validated here)."""

    dns_nameservers: tuple[str, ...] | None = None
    dns_refresh: float | None = None
    dns_timeout: float = 5.0
    file_refresh: float = 1.0

    def __attrs_post_init__(self) -> None:
        if self.dns_refresh is not None and not (
                _is_number(self.dns_refresh) and 0 < self.dns_refresh <= 86400):
            raise ConfigError("dns_refresh must be a number of seconds in (0, 86400], or None to "
                              f"follow the records' TTL; got {self.dns_refresh!r}")
        if not (_is_number(self.dns_timeout) and 0 < self.dns_timeout <= 300):
            raise ConfigError(f"dns_timeout must be a number of seconds in (0, 300], "
                              f"got {self.dns_timeout!r}")
        if not (_is_number(self.file_refresh) and 0 < self.file_refresh <= 3600):
            raise ConfigError(f"file_refresh must be a number of seconds in (0, 3600], "
                              f"got {self.file_refresh!r}")
        for entry in self.dns_nameservers or ():
            parse_nameserver(entry)

    @classmethod
    def from_keywords(cls, *, dns_nameservers: str | Sequence[str] | None,
                      dns_refresh: float | None, dns_timeout: float,
                      file_refresh: float) -> DiscoveryOptions:
        if isinstance(dns_nameservers, str):
            dns_nameservers = [dns_nameservers]
        if dns_nameservers is not None and not dns_nameservers:
            raise ConfigError("dns_nameservers must name at least one server, or be None "
                              "to use the system's")
        return cls(None if dns_nameservers is None else tuple(dns_nameservers), dns_refresh,
                   dns_timeout, file_refresh)


def parse_nameserver(entry: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"10.0.0.2"``, ``"[::1]:5353"`` or ``"::1"`` -> (address, port)."""
    why = (f"dns_nameservers entries are IP addresses with an optional port, such as "
           f"'127.0.0.1:5353' or '[::1]:53'; got {entry!r}")
    if not isinstance(entry, str):
        raise ConfigError(why)
    host, port_text = entry, ""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ConfigError(why)
        port_text = rest[1:]
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(why) from None
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ConfigError(why)
    return host, int(port_text) if port_text else 53


def _scheme(target: str) -> str | None:
    scheme, sep, _ = target.partition("://")
    return scheme.lower() if sep else None


def is_dynamic(target: object) -> bool:
    """True for a string that names a dynamic source (or tries to: then it is refused)."""
    if not isinstance(target, str):
        return False
    scheme = _scheme(target)
    return scheme is not None and bool(set(scheme.split("+")) & _DISCOVERY_WORDS)


@attrs.frozen
class TargetPlan:
    """A ``targets`` list split into static URLs and dynamic sources."""

    static: tuple[str, ...]
    static_weights: tuple[int, ...] | None
    sources: tuple[DiscoverySource, ...]


def split_targets(targets: str | Sequence[str], weights: Sequence[int] | None,
                  options: DiscoveryOptions,
                  check_url: Callable[[str], object]) -> TargetPlan:
    """Split ``targets``; ``weights`` (if given) has one entry per ``targets`` entry.

    A source's weight, when given, is every target it finds; otherwise SRV weights or
    ``file_sd`` ``weight`` labels apply. ``check_url`` validates a target URL (the
    forwarding layer's rules), so a source whose targets could never be reached is a
    :class:`ConfigError` now rather than a warning per lookup.
    """
    if isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    if weights is not None and len(weights) != len(targets):
        raise ConfigError("Weights length must match targets length "
                          f"(got {len(weights)} weights for {len(targets)} targets)")
    static: list[str] = []
    static_weights: list[int] = []
    sources: list[DiscoverySource] = []
    for i, target in enumerate(targets):
        weight = None if weights is None else weights[i]
        if not is_dynamic(target):
            static.append(target)
            if weight is not None:
                static_weights.append(weight)
            continue
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int)
                                   or weight < 1):
            raise ConfigError(f"The weight of {target!r} applies to every target it finds and "
                              f"must be an integer >= 1, got {weight!r}")
        sources.append(parse_source(target, weight, options, check_url))
    return TargetPlan(tuple(static), tuple(static_weights) if weights is not None else None,
                      tuple(sources))


def parse_source(target: str, weight: int | None, options: DiscoveryOptions,
                 check_url: Callable[[str], object]) -> DiscoverySource:
    """One dynamic target string -> its source (``ConfigError`` with the accepted forms)."""
    scheme = _scheme(target) or ""
    rest = target.partition("://")[2]
    if "?" in rest or "#" in rest:
        raise ConfigError(f"Invalid target source {target!r}: a query string or fragment is "
                          f"not allowed (options are keywords: dns_refresh=..., ...)")
    if scheme == "file":
        return _file_source(target, rest, weight, options)
    if scheme not in _DNS_SCHEMES:
        raise ConfigError(f"Invalid target source {target!r}: unknown scheme {scheme + '://'!r}; "
                          f"use {_FORMS} (TLS targets: '+https' at the end)")
    record, target_scheme = _DNS_SCHEMES[scheme]
    authority, slash, path = rest.partition("/")
    base_path = ("/" + path).rstrip("/") if slash else ""
    host, colon, port_text = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if not _NAME.fullmatch(host):
        example = "_http._tcp.api.internal" if record == "SRV" else "api.internal:8080"
        raise ConfigError(f"Invalid target source {target!r}: expected a DNS name "
                          f"(ASCII letters, digits, '.', '-', '_'), e.g. {scheme}://{example}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise ConfigError(f"Invalid target source {target!r}: {host} is an address, not a name "
                          f"to look up; write it as a static target ({target_scheme}://...)")
    port: int | None = None
    if record == "SRV" and colon:
        raise ConfigError(f"Invalid target source {target!r}: SRV records carry the port; "
                          f"drop ':{port_text}'")
    if record == "A":
        if colon and not (port_text.isdigit() and 0 < int(port_text) < 65536):
            raise ConfigError(f"Invalid target source {target!r}: invalid port {port_text!r} "
                              "(expected 1-65535)")
        port = int(port_text) if colon else _DEFAULT_PORTS[target_scheme]
    try:
        check_url(f"{target_scheme}://192.0.2.1:{port or 80}{base_path}")
    except ValueError as exc:
        raise ConfigError(f"Invalid target source {target!r}: {exc}") from None
    nameservers = (None if options.dns_nameservers is None
                   else tuple(parse_nameserver(n) for n in options.dns_nameservers))
    return DnsSource(name=target, record=record, qname=host, scheme=target_scheme, port=port,
                     base_path=base_path, weight=weight, nameservers=nameservers,
                     refresh=options.dns_refresh, timeout=options.dns_timeout)


def _file_source(target: str, rest: str, weight: int | None,
                 options: DiscoveryOptions) -> FileSource:
    if not rest:
        raise ConfigError(f"Invalid target source {target!r}: missing path "
                          "(file://targets.json, or file:///absolute/path.json)")
    if rest.lower().endswith(_YAML):
        raise ConfigError(f"Invalid target source {target!r}: YAML file_sd files are not "
                          "supported (velithon has no YAML parser); write the same list as JSON")
    # file://targets.json is relative to the current folder; file:///etc/x.json is absolute
    path = os.path.abspath(rest)
    return FileSource(name=target, path=path, weight=weight, refresh=options.file_refresh)
