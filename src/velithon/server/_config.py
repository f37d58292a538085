"""Settings of the HTTP/1.1 server, in one frozen attrs class.

Every limit and timeout lives here so the per-connection code reads plain attributes and the
CLI, ``serve()`` and tests all build the same object. Defaults follow what widely deployed
proxies ship: 10 s header deadline, 5 s keep-alive idle, 30 s body idle, 32 KiB / 100 header
lines, 8 KiB URI.

``max_body_size`` defaults to 16 MiB: large enough for ordinary API uploads through a
gateway, small enough that a client cannot make one request hold a worker for long.
Pass ``None`` to remove the cap (bodies are streamed, so memory stays bounded either way).

:class:`TLSConfig` holds the listening side's TLS settings (``ServerConfig.tls``); its
field names are the keys of a ``[server.tls]`` table, its values what uvicorn's ``--ssl-*``
options take.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import attrs

from .._exceptions import ConfigError
from .._http11.llhttp import resolve_parser

__all__ = ["CERT_REQS_NAMES", "ServerConfig", "TLSConfig", "cert_reqs"]

KIB = 1024
MIB = 1024 * KIB


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:  # NaN too
        raise ValueError(f"ServerConfig.{attribute.name} must be > 0, got {value!r}")


def _count(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"ServerConfig.{attribute.name} must be an integer >= 0, got {value!r}")


#: The largest threshold Python's collector takes (a C int).
GC_THRESHOLD_MAX = 2**31 - 1


def _gc_threshold(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if (isinstance(value, bool) or not isinstance(value, int)
            or not 0 <= value <= GC_THRESHOLD_MAX):
        raise ValueError(f"ServerConfig.gc_threshold must be an integer from 0 to "
                         f"{GC_THRESHOLD_MAX}, got {value!r}")


def _port(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"ServerConfig.port must be in 0..65535, got {value!r}")


def _parser_choice(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        resolve_parser(value)
    except ConfigError as exc:  # the choices, under the setting's name
        raise ConfigError(f"ServerConfig.http: {exc}") from None


_CERT_REQS = {
    "none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED,
    "0": ssl.CERT_NONE, "1": ssl.CERT_OPTIONAL, "2": ssl.CERT_REQUIRED,
    "cert_none": ssl.CERT_NONE, "cert_optional": ssl.CERT_OPTIONAL,
    "cert_required": ssl.CERT_REQUIRED,
}
#: Every string :func:`cert_reqs` accepts, in lower case (any case works), names first.
CERT_REQS_NAMES = tuple(_CERT_REQS)


def cert_reqs(value: object) -> ssl.VerifyMode:
    """Whether clients must present a certificate, in any spelling uvicorn or ``ssl`` uses.

    ``0``/``1``/``2`` (uvicorn's ``--ssl-cert-reqs``, the values of ``ssl.CERT_*``),
    ``none``/``optional``/``required`` (any case, with or without ``cert_``), or an
    ``ssl.VerifyMode``.

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, ssl.VerifyMode):
        return value
    key = str(value).strip().lower() if isinstance(value, str | int) else ""
    if isinstance(value, bool) or key not in _CERT_REQS:
        raise ValueError(f"tls.cert_reqs must be 0, 1, 2, none, optional or required, "
                         f"got {value!r}")
    return _CERT_REQS[key]


def _path(value: str | os.PathLike[str]) -> str:
    return os.fspath(value)


def _optional_path(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else _path(value)


def _tls_positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"tls.{attribute.name} must be > 0, got {value!r}")


def _tls_port(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise ValueError(f"tls.{attribute.name} must be in 0..65535, got {value!r}")


def _not_negative(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"tls.{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class TLSConfig:
    """How the server speaks TLS to its clients (https and wss).

    The files are read when the server starts and again on :meth:`TLSCertificates.reload`
    (SIGHUP under ``velithon run``); a problem with them stops the start-up with one line.

    Attributes:
        certfile: PEM file with the certificate, then any intermediates (and the private
            key, when ``keyfile`` is not given).
        keyfile: PEM file with the private key.
        keyfile_password: the private key's password, if it is encrypted.
        ca_certs: PEM file of the CAs whose client certificates are accepted; needed when
            ``cert_reqs`` asks for client certificates (no system CA is trusted for that).
        cert_reqs: ``none`` (default), ``optional`` (verified when sent) or ``required``;
            0, 1 and 2 as uvicorn takes them are accepted too.
        handshake_timeout: seconds a new connection has to finish its TLS handshake.
        redirect_port: also listen for plain HTTP on this port and redirect every request
            to the same host and path over https (301 for GET and HEAD, 308 otherwise).
        hsts_max_age: add ``Strict-Transport-Security: max-age=N`` to https responses
            (an app's own header is kept instead).
        hsts_include_subdomains: add ``; includeSubDomains`` to that header.
    """

    certfile: str = attrs.field(converter=_path)
    keyfile: str | None = attrs.field(default=None, converter=_optional_path)
    keyfile_password: str | None = attrs.field(default=None, repr=False)
    ca_certs: str | None = attrs.field(default=None, converter=_optional_path)
    cert_reqs: ssl.VerifyMode = attrs.field(default=ssl.CERT_NONE, converter=cert_reqs)
    handshake_timeout: float = attrs.field(default=10.0, validator=_tls_positive)
    redirect_port: int | None = attrs.field(default=None, validator=_tls_port)
    hsts_max_age: int | None = attrs.field(default=None, validator=_not_negative)
    hsts_include_subdomains: bool = False

    def __attrs_post_init__(self) -> None:
        if self.cert_reqs != ssl.CERT_NONE and not self.ca_certs:
            raise ValueError(
                f"tls.cert_reqs {self.cert_reqs.name.removeprefix('CERT_').lower()} needs "
                "tls.ca_certs: the CA certificates that sign the clients' certificates")
        if self.hsts_include_subdomains and self.hsts_max_age is None:
            raise ValueError("tls.hsts_include_subdomains needs tls.hsts_max_age")

    @property
    def hsts_header(self) -> tuple[bytes, bytes] | None:
        """The ``Strict-Transport-Security`` field https responses get, if any."""
        if self.hsts_max_age is None:
            return None
        value = b"max-age=%d" % self.hsts_max_age
        if self.hsts_include_subdomains:
            value += b"; includeSubDomains"
        return (b"strict-transport-security", value)


@attrs.frozen(kw_only=True)
class ServerConfig:
    """How the server listens, what it accepts, and how long it waits.

    Timeouts are seconds on trio's clock. Size limits are bytes. ``None`` for
    ``max_body_size`` or ``limit_concurrency`` means "no limit".
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=8000, validator=_port)
    backlog: int = attrs.field(default=2048, validator=_positive)
    reuse_port: bool = False
    root_path: str = ""

    max_body_size: int | None = attrs.field(default=16 * MIB, validator=_positive)
    max_header_size: int = attrs.field(default=32 * KIB, validator=_positive)
    max_headers: int = attrs.field(default=100, validator=_positive)
    max_uri_length: int = attrs.field(default=8 * KIB, validator=_positive)
    max_chunk_header_size: int = attrs.field(default=4 * KIB, validator=_positive)
    strict_obs_fold: bool = True

    header_timeout: float = attrs.field(default=10.0, validator=_positive)
    keepalive_timeout: float = attrs.field(default=5.0, validator=_positive)
    body_timeout: float = attrs.field(default=30.0, validator=_positive)
    send_timeout: float = attrs.field(default=30.0, validator=_positive)
    graceful_timeout: float = attrs.field(default=10.0, validator=_positive)
    lifespan_timeout: float = attrs.field(default=30.0, validator=_positive)

    limit_concurrency: int | None = attrs.field(default=None, validator=_positive)
    #: The request parser: ``auto`` (httptools when installed), ``httptools`` or ``h11``.
    #: A gateway served by this server uses the same parser for its upstream responses.
    http: str = attrs.field(default="auto", validator=_parser_choice)
    #: One ``velithon.access`` line per HTTP request (logfmt; see docs/server.md, "Logs").
    access_log: bool = False
    ws_max_message_size: int = attrs.field(default=16 * MIB, validator=_positive)
    #: Python's garbage collector while ``run_server`` (``velithon run``, ``serve``) serves:
    #: what exists once the app has started is frozen out of its passes (``gc.freeze``)
    #: and the youngest generation is collected every ``gc_threshold`` allocations instead
    #: of Python's 700. 0 leaves the collector as Python set it. See docs/server.md.
    gc_threshold: int = attrs.field(default=10_000, validator=_gc_threshold)
    #: Serve https and wss with these settings; ``None``: plain http and ws.
    tls: TLSConfig | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(TLSConfig)))

    def __attrs_post_init__(self) -> None:
        redirect = self.tls.redirect_port if self.tls is not None else None
        if redirect and redirect == self.port:  # 0 and 0: two different free ports
            raise ValueError(f"tls.redirect_port {redirect} is also the https port: the "
                             "redirect listener needs a port of its own")

    @property
    def scheme(self) -> str:
        """``https`` when the server speaks TLS, else ``http``."""
        return "http" if self.tls is None else "https"

    def replace(self, **changes: Any) -> ServerConfig:
        """Return a copy with some fields changed (validators run again)."""
        return attrs.evolve(self, **changes)
