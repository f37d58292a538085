"""Where a target lives, parsed and checked once from its URL.

A target URL is configuration: it is parsed when a route is built, so a typo is a
:class:`~velithon._exceptions.ConfigError` at start-up rather than a 502 on the first
request, and the ``Host`` header sent upstream is computed once.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

from .._exceptions import ConfigError, UnsafePathError
from .paths import check_path_safety

__all__ = ["Origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_RE = re.compile(r"[A-Za-z0-9._-]+")
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")
_JOINED = re.compile(r",\s*[A-Za-z][A-Za-z0-9+.-]*://")  # "http://a:1,http://b:2"


def _config_error(url: object, why: str) -> ConfigError:
    return ConfigError(f"Invalid target URL: {url!r}: {why}")


@attrs.frozen
class Origin:
    """Where a target lives: scheme, host, port and an optional base path.

    ``host`` is stored without brackets (``::1``); ``base_path`` has no trailing
    slash (``""`` for none) and is raw (percent-encoded) path text.
    """

    scheme: str = attrs.field(validator=attrs.validators.in_(("http", "https")))
    host: str
    port: int = attrs.field(validator=[attrs.validators.instance_of(int),
                                       attrs.validators.ge(1), attrs.validators.le(65535)])
    base_path: str = ""
    #: ``Host`` header value: the default port is omitted, IPv6 is bracketed.
    authority: bytes = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != _DEFAULT_PORTS[self.scheme]:
            host = f"{host}:{self.port}"
        object.__setattr__(self, "authority", host.encode("ascii"))

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority.decode('ascii')}{self.base_path}"

    @classmethod
    def parse(cls, url: str) -> Origin:
        """Parse ``http[s]://host[:port][/base/path]``.

        Raises:
            ConfigError: missing scheme or host, unsupported scheme, userinfo,
                query or fragment, bad port, or an unsafe base path.
        """
        if not isinstance(url, str):
            raise _config_error(url, "expected a string such as 'http://127.0.0.1:8000'")
        if _JOINED.search(url) or "," in url.partition("://")[2].partition("/")[0]:
            parts = [part.strip() for part in url.split(",") if part.strip()]
            raise _config_error(url, "several URLs joined with ','? Give each target as its "
                                f"own string in a list: targets={parts!r}")
        if _BAD_URL_CHARS.search(url):
            raise _config_error(url, "contains whitespace or control characters")
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise _config_error(url, "missing scheme (expected 'http://host:port' or 'https://...')")
        scheme = scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise _config_error(url, f"unsupported scheme {scheme!r} (use 'http' or 'https')")
        if "?" in rest or "#" in rest:
            raise _config_error(url, "a query string or fragment is not allowed")
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            raise _config_error(url, "userinfo ('user@') is not allowed")
        if not authority:
            raise _config_error(url, "missing host")
        host, port_text = _split_authority(url, authority)
        port = _DEFAULT_PORTS[scheme]
        if port_text is not None:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise _config_error(url, f"invalid port {port_text!r} (expected 1-65535)")
            port = int(port_text)
        base_path = ("/" + path).rstrip("/") if slash else ""
        if base_path:
            try:
                check_path_safety(base_path.encode("ascii"))
            except (UnsafePathError, UnicodeEncodeError) as exc:
                raise _config_error(url, f"unsafe base path: {exc}") from None
        return cls(scheme, host, port, base_path)


def _split_authority(url: str, authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        end = authority.find("]")
        literal = authority[1:end] if end > 0 else ""
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise _config_error(url, f"invalid IPv6 literal {authority!r}") from None
        after = authority[end + 1 :]
        if after and not after.startswith(":"):
            raise _config_error(url, f"unexpected {after!r} after the IPv6 literal")
        return literal.lower(), (after[1:] if after else None)
    host, colon, port_text = authority.partition(":")
    if ":" in port_text:
        raise _config_error(url, "IPv6 addresses must be in brackets, e.g. 'http://[::1]:8000'")
    if not _HOST_RE.fullmatch(host):
        raise _config_error(url, f"invalid host {host!r} (ASCII letters, digits, '.', '-', '_')")
    return host.lower(), (port_text if colon else None)
