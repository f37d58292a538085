"""The shape of a gateway configuration file: one frozen attrs class per section.

Why these classes mirror other classes field for field:

* :class:`RouteSection` has exactly the keyword arguments of ``GatewayRoute`` and
  :class:`ProxySection` those of ``ProxyMiddleware`` (minus the few that are Python
  objects: ``middleware``, ``ssl_context``, ``probe``, ``app``), with the same names
  and defaults. A key means in a file what the keyword means in code, and the facade's
  own checks run on it unchanged. A test fails when a facade gains or loses a keyword
  these classes do not mirror.
* :class:`ServerSection` has the field names of ``velithon.server.ServerConfig``
  (plus ``workers``; ``access_log`` lives in ``[logging]``), so a ``[server]`` key is
  the ``velithon run`` option of the same name.

Sequences are tuples so that a loaded configuration is immutable and two loads of one
file compare equal (reload compares them section by section).
"""

from __future__ import annotations

from typing import Any

import attrs

from .._facades.middleware import ProxyMiddleware
from .._facades.route import GatewayRoute
from .._lb.outlier import OutlierConfig
from ..server import ServerConfig, TLSConfig

__all__ = [
    "NOT_IN_FILES",
    "AdminSection",
    "GatewayConfig",
    "LoggingSection",
    "ProxySection",
    "RouteSection",
    "ServerSection",
    "TLSSection",
]

#: facade keywords that take Python objects, so a file cannot set them
NOT_IN_FILES = {
    "route": frozenset({"middleware", "ssl_context", "probe"}),
    "proxy": frozenset({"app", "ssl_context", "probe"}),
}

_SERVER = ServerConfig()
_STATUSES = (502, 503, 504)


@attrs.frozen(kw_only=True)
class TLSSection:
    """``[server.tls]``: serve https and wss (``velithon run``'s ``--ssl-*`` options)."""

    certfile: str
    keyfile: str | None = None
    keyfile_password: str | None = None
    ca_certs: str | None = None
    cert_reqs: str = "none"
    handshake_timeout: float = 10.0
    redirect_port: int | None = None
    hsts_max_age: int | None = None
    hsts_include_subdomains: bool = False


@attrs.frozen(kw_only=True)
class ServerSection:
    """``[server]``: where and how the gateway listens (``velithon run``'s options)."""

    host: str = _SERVER.host
    port: int = _SERVER.port
    workers: int = 1
    backlog: int = _SERVER.backlog
    reuse_port: bool = _SERVER.reuse_port
    root_path: str = _SERVER.root_path
    max_body_size: int | None = _SERVER.max_body_size
    max_header_size: int = _SERVER.max_header_size
    max_headers: int = _SERVER.max_headers
    max_uri_length: int = _SERVER.max_uri_length
    max_chunk_header_size: int = _SERVER.max_chunk_header_size
    strict_obs_fold: bool = _SERVER.strict_obs_fold
    header_timeout: float = _SERVER.header_timeout
    keepalive_timeout: float = _SERVER.keepalive_timeout
    body_timeout: float = _SERVER.body_timeout
    send_timeout: float = _SERVER.send_timeout
    graceful_timeout: float = _SERVER.graceful_timeout
    lifespan_timeout: float = _SERVER.lifespan_timeout
    limit_concurrency: int | None = _SERVER.limit_concurrency
    http: str = _SERVER.http
    ws_max_message_size: int = _SERVER.ws_max_message_size
    gc_threshold: int = _SERVER.gc_threshold
    tls: TLSSection | None = None

    def server_config(self, **overrides: object) -> ServerConfig:
        """The ``ServerConfig`` these settings describe (``overrides`` win).

        Raises:
            ValueError: a value out of range (ServerConfig's own checks).
        """
        values: dict[str, object] = attrs.asdict(self, recurse=False)
        del values["workers"]
        if self.tls is not None:
            values["tls"] = TLSConfig(**attrs.asdict(self.tls))
        values.update(overrides)
        return ServerConfig(**values)  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class AdminSection:
    """``[admin]``: the admin surface (status pages; mutations only with a token)."""

    enabled: bool = True
    path: str = "/_velithon"
    token: str | None = None


@attrs.frozen(kw_only=True)
class LoggingSection:
    """``[logging]``: the log level and the access log."""

    level: str = "info"
    access_log: bool = False


@attrs.frozen(kw_only=True)
class RouteSection:
    """One ``[[routes]]`` table: the keyword arguments of ``GatewayRoute``."""

    path: str
    targets: tuple[str, ...]
    methods: tuple[str, ...] | None = None
    name: str | None = None
    strip_path: bool = False
    preserve_host: bool = False
    timeout_ms: int = 30000
    max_retries: int = 3
    load_balancing_strategy: str = "round_robin"
    weights: tuple[int, ...] | None = None
    health_check_path: str | None = None
    health_check_interval: float = 30.0
    health_check_timeout: float = 5.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 1
    headers_to_add: dict[str, str] | None = None
    headers_to_remove: tuple[str, ...] | None = None
    path_rewrite: str | None = None
    max_failures: int = 5
    recovery_timeout_ms: int = 60000
    none_healthy: str = "fail"
    outlier_detection: OutlierConfig | None = None
    retry_on_statuses: tuple[int, ...] = _STATUSES
    retry_non_idempotent: bool = False
    per_try_timeout_ms: int | None = None
    hash_on: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    xff_num_trusted_hops: int | None = None
    include_in_schema: bool = True
    max_requests_per_target: int | None = None
    panic_threshold: float = 50.0
    failure_statuses: tuple[int, ...] = _STATUSES
    client_body_timeout_ms: int = 10000
    buffer_chunked_uploads: int = 0
    request_id_header: str | None = "X-Request-ID"
    upstream_target_header: str | None = None
    dns_nameservers: tuple[str, ...] | None = None
    dns_refresh: float | None = None
    dns_timeout: float = 5.0
    file_refresh: float = 1.0

    @property
    def key(self) -> str:
        """What identifies the route across reloads: its name (``gateway_<path>`` by
        default, as ``GatewayRoute`` names it)."""
        return self.name or f"gateway_{self.path}"

    def build(self) -> GatewayRoute:
        """The route this section describes (nothing starts until an app runs it).

        Raises:
            ValueError: what ``GatewayRoute`` refuses (``ConfigError`` is one).
        """
        return GatewayRoute(**_keywords(self))


@attrs.frozen(kw_only=True)
class ProxySection:
    """One ``[[proxies]]`` table: the keyword arguments of ``ProxyMiddleware``."""

    targets: tuple[str, ...]
    load_balancing_strategy: str = "round_robin"
    weights: tuple[int, ...] | None = None
    health_check_path: str = "/health"
    health_check_interval: float = 30.0
    health_check_timeout: float = 5.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 1
    timeout_ms: int = 30000
    max_retries: int = 3
    max_failures: int = 5
    recovery_timeout_ms: int = 60000
    strip_request_headers: tuple[str, ...] | None = None
    strip_response_headers: tuple[str, ...] | None = None
    add_request_headers: dict[str, str] | None = None
    add_response_headers: dict[str, str] | None = None
    path_prefix: str = ""
    upstream_path_prefix: str = ""
    enable_health_checks: bool = True
    preserve_host: bool = False
    none_healthy: str = "fail"
    outlier_detection: OutlierConfig | None = None
    retry_on_statuses: tuple[int, ...] = _STATUSES
    retry_non_idempotent: bool = False
    per_try_timeout_ms: int | None = None
    hash_on: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    xff_num_trusted_hops: int | None = None
    max_requests_per_target: int | None = None
    panic_threshold: float = 50.0
    failure_statuses: tuple[int, ...] = _STATUSES
    client_body_timeout_ms: int = 10000
    buffer_chunked_uploads: int = 0
    request_id_header: str | None = "X-Request-ID"
    upstream_target_header: str | None = None
    name: str | None = None
    dns_nameservers: tuple[str, ...] | None = None
    dns_refresh: float | None = None
    dns_timeout: float = 5.0
    file_refresh: float = 1.0

    @property
    def key(self) -> str:
        """What identifies the proxy across reloads: its ``path_prefix`` (normalised
        as ``ProxyMiddleware`` does: no trailing slash)."""
        return self.path_prefix.rstrip("/")

    def build(self) -> ProxyMiddleware:
        """The proxy middleware this section describes.

        Raises:
            ValueError: what ``ProxyMiddleware`` refuses.
        """
        return ProxyMiddleware(**_keywords(self))


def _keywords(section: RouteSection | ProxySection) -> dict[str, Any]:
    return attrs.asdict(section, recurse=False)


@attrs.frozen(kw_only=True)
class GatewayConfig:
    """A whole configuration file."""

    server: ServerSection = ServerSection()
    admin: AdminSection = AdminSection()
    logging: LoggingSection = LoggingSection()
    routes: tuple[RouteSection, ...] = ()
    proxies: tuple[ProxySection, ...] = ()

    def summary(self) -> str:
        """One line: what this configuration serves."""
        targets = {t for route in self.routes for t in route.targets}
        targets.update(t for proxy in self.proxies for t in proxy.targets)
        return (f"{_count(len(self.routes), 'route')}, {_count(len(self.proxies), 'proxy')}, "
                f"{_count(len(targets), 'target')}")


def _count(n: int, noun: str) -> str:
    plural = "proxies" if noun == "proxy" else noun + "s"
    return f"{n} {noun if n == 1 else plural}"
