"""``ProxyMiddleware``: forward every request under ``path_prefix``.

Add it with ``app.add_middleware(ProxyMiddleware(targets=[...], ...))`` (an
instance, as in the seed) or ``Middleware(ProxyMiddleware, targets=...)``.
Requests whose path is under ``path_prefix`` (segment-aware: ``/api`` covers
``/api`` and ``/api/x``, not ``/apiv2``) go to the targets, with the prefix
replaced by ``upstream_path_prefix``; everything else reaches the app. An
empty prefix forwards everything, as in the original. Several instances on
one app each handle their own prefix.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .._discovery.specs import DiscoveryOptions, is_dynamic
from .._exceptions import ConfigError
from .._lb.outlier import OutlierConfig
from .._lb.probe import ProbeFn
from .._proxy.forwarder import Forwarder
from .._proxy.origin import Origin
from .._proxy.paths import prefix_match
from .base import BalancerHolder
from .load_balancer import target_details
from .route import BalancedFacade, _forward_config, build_balancer_config

#: always stripped from responses in addition to the user's list (the original's defaults)
_DEFAULT_STRIP_RESPONSE = ("transfer-encoding", "connection", "upgrade")


class ProxyMiddleware(BalancedFacade):
    """Load-balanced forwarding for one path prefix of an app.

    Takes the ``GatewayRoute`` options under the original's names (see
    ``docs/load-balancing.md``), plus ``name``: how logs name the middleware
    (default ``proxy_<path_prefix>``).
    """

    def __init__(
        self,
        app: Callable[..., Any] | None = None,
        targets: str | Sequence[str] | None = None,
        *,
        load_balancing_strategy: str = "round_robin",
        weights: Sequence[int] | None = None,
        health_check_path: str = "/health",
        health_check_interval: float = 30,
        health_check_timeout: float = 5.0,
        healthy_threshold: int = 1,
        unhealthy_threshold: int = 1,
        timeout_ms: int = 30000,
        max_retries: int = 3,
        max_failures: int = 5,
        recovery_timeout_ms: int = 60000,
        strip_request_headers: Iterable[str] | None = None,
        strip_response_headers: Iterable[str] | None = None,
        add_request_headers: Mapping[str, str] | None = None,
        add_response_headers: Mapping[str, str] | None = None,
        path_prefix: str = "",
        upstream_path_prefix: str = "",
        enable_health_checks: bool = True,
        preserve_host: bool = False,
        none_healthy: str = "fail",
        outlier_detection: OutlierConfig | None = None,
        retry_on_statuses: Iterable[int] = (502, 503, 504),
        retry_non_idempotent: bool = False,
        per_try_timeout_ms: int | None = None,
        hash_on: str | None = None,
        trusted_proxies: Sequence[str] = (),
        xff_num_trusted_hops: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_requests_per_target: int | None = None,
        panic_threshold: float = 50.0,
        failure_statuses: Iterable[int] = (502, 503, 504),
        client_body_timeout_ms: int = 10000,
        buffer_chunked_uploads: int = 0,
        request_id_header: str | None = "X-Request-ID",
        upstream_target_header: str | None = None,
        name: str | None = None,
        probe: ProbeFn | None = None,
        dns_nameservers: Sequence[str] | None = None,
        dns_refresh: float | None = None,
        dns_timeout: float = 5.0,
        file_refresh: float = 1.0,
    ) -> None:
        if targets is None or (not isinstance(targets, str) and len(targets) == 0):
            raise ConfigError("At least one target URL is required")
        target_list = [targets] if isinstance(targets, str) else list(targets)
        for url in target_list:
            if not is_dynamic(url):  # sources are checked when the config is built
                Origin.parse(url)
        if path_prefix and not path_prefix.startswith("/"):
            raise ConfigError(f"path_prefix must start with '/': {path_prefix!r}")
        if upstream_path_prefix and not upstream_path_prefix.startswith("/"):
            raise ConfigError(f"upstream_path_prefix must start with '/': {upstream_path_prefix!r}")
        self.app = app
        #: how logs name this middleware (``proxy_/api`` for ``path_prefix="/api"``)
        self.name = name or f"proxy_{path_prefix.rstrip('/') or '/'}"
        self.load_balancing_strategy = load_balancing_strategy
        self.weights = list(weights) if weights is not None else None
        self.path_prefix = path_prefix.rstrip("/")
        self.upstream_path_prefix = upstream_path_prefix.rstrip("/")
        self.health_check_path = health_check_path
        self.health_check_interval = health_check_interval
        self.enable_health_checks = enable_health_checks
        self.timeout_ms = timeout_ms
        self.max_retries = max_retries
        self._holder = BalancerHolder(
            build_balancer_config(
                target_list, strategy=load_balancing_strategy, weights=weights,
                health_check_path=health_check_path if enable_health_checks else None,
                health_check_interval=health_check_interval if enable_health_checks else None,
                health_check_timeout=health_check_timeout, healthy_threshold=healthy_threshold,
                unhealthy_threshold=unhealthy_threshold, max_failures=max_failures,
                recovery_timeout_ms=recovery_timeout_ms, none_healthy=none_healthy,
                outlier=outlier_detection, default_health_path=health_check_path,
                hash_on=hash_on, ssl_context=ssl_context,
                max_requests_per_target=max_requests_per_target,
                panic_threshold=panic_threshold, name=self.name,
                discovery=DiscoveryOptions.from_keywords(
                    dns_nameservers=dns_nameservers, dns_refresh=dns_refresh,
                    dns_timeout=dns_timeout, file_refresh=file_refresh),
            ),
            probe=probe,
        )
        self._forwarder = Forwarder(_forward_config(
            timeout_ms=timeout_ms, max_retries=max_retries, preserve_host=preserve_host,
            headers_to_add=add_request_headers, headers_to_remove=strip_request_headers,
            retry_on_statuses=retry_on_statuses, retry_non_idempotent=retry_non_idempotent,
            trusted_proxies=trusted_proxies, xff_num_trusted_hops=xff_num_trusted_hops,
            hash_on=hash_on, per_try_timeout_ms=per_try_timeout_ms,
            client_body_timeout_ms=client_body_timeout_ms,
            buffer_chunked_uploads=buffer_chunked_uploads, failure_statuses=failure_statuses,
            request_id_header=request_id_header, upstream_target_header=upstream_target_header,
            template=None, strip_path=False, rewrite=None,
            strip_prefix=(self.path_prefix or None),
            upstream_prefix=self.upstream_path_prefix,
            response_headers_to_add=dict(add_response_headers or {}),
            response_headers_to_remove=tuple(
                {h.lower() for h in (strip_response_headers or ())} | set(_DEFAULT_STRIP_RESPONSE)
            ),
        ), name=self.name)

    def __repr__(self) -> str:
        return (f"ProxyMiddleware(targets={self.targets!r}, path_prefix={self.path_prefix!r}, "
                f"strategy={self.load_balancing_strategy!r})")

    def bind(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap ``app``; the app calls this when it builds its middleware stack."""
        return _BoundProxy(self, app)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.app is None:
            raise RuntimeError("ProxyMiddleware has no app: add it with app.add_middleware(...)")
        await _BoundProxy(self, self.app)(scope, receive, send)

    def handles(self, scope: dict[str, Any]) -> bool:
        """Under our prefix? Judged on the raw path, the form that gets forwarded."""
        if scope["type"] not in ("http", "websocket"):
            return False
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw is not None else scope["path"]
        return prefix_match(path, self.path_prefix)

    async def get_proxy_status(self) -> dict[str, Any]:
        """Targets, health, breakers and the strategy actually in use."""
        async with self._holder.balancer() as balancer:
            details = await target_details(balancer)
            statuses = await balancer.target_statuses()
        return {
            "targets": [d["url"] for d in details],
            "health_status": [(d["url"], d["healthy"]) for d in details],
            "circuit_breaker_status": {
                s.url: {"state": s.breaker_state, "failure_count": s.failure_count,
                        "last_failure_ms": s.ms_since_last_failure}
                for s in statuses
            },
            "load_balancing_strategy": self.load_balancing_strategy,
            "path_prefix": self.path_prefix,
            "targets_detail": details,
            "discovery": self.discovery_status(),
        }

    async def cleanup(self) -> None:
        """Kept for compatibility: the app's lifespan stops the actors itself."""


class _BoundProxy:
    """The ASGI callable in the app's middleware stack."""

    __slots__ = ("proxy", "app")

    def __init__(self, proxy: ProxyMiddleware, app: Callable[..., Any]) -> None:
        self.proxy = proxy
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.proxy.handles(scope):
            await self.proxy._forward(scope, receive, send)
        else:
            await self.app(scope, receive, send)


__all__ = ["ProxyMiddleware"]
