"""Settings of the HTTP/1.1 server, in one frozen attrs class.

Every limit and timeout lives here so the per-connection code reads plain attributes and the
CLI, ``serve()`` and tests all build the same object. Defaults follow what widely deployed
proxies ship: 10 s header deadline, 5 s keep-alive idle, 30 s body idle, 32 KiB / 100 header
lines, 8 KiB URI.

``max_body_size`` defaults to 16 MiB: large enough for ordinary API uploads through a
gateway, small enough that a client cannot make one request hold a worker for long.
Pass ``None`` to remove the cap (bodies are streamed, so memory stays bounded either way).
"""

from __future__ import annotations

from typing import Any

import attrs

from .._http11.llhttp import resolve_parser

__all__ = ["ServerConfig"]

KIB = 1024
MIB = 1024 * KIB


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:  # NaN too
        raise ValueError(f"ServerConfig.{attribute.name} must be > 0, got {value!r}")


def _port(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"ServerConfig.port must be in 0..65535, got {value!r}")


def _parser_choice(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    resolve_parser(value)  # raises ConfigError with the choices


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

    def replace(self, **changes: Any) -> ServerConfig:
        """Return a copy with some fields changed (validators run again)."""
        return attrs.evolve(self, **changes)
