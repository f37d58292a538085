"""``GatewayRoute`` and ``Gateway``: load-balanced routes in ``app.routes``.

A ``GatewayRoute`` is an ordinary entry of ``app.routes``: it matches its path
template (and ``methods``), then forwards the request — HTTP or WebSocket —
through its own balancer system (router + target actors). It is a *service*:
the app's lifespan starts its actors, so its health checks really run (the
original never ran them for routes). Appending a route after start-up works:
its actors start on its first request.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import trio

from .._app.responses import Response
from .._app.routing import BaseRoute, Match, compile_path
from .._discovery.specs import DiscoveryOptions, split_targets
from .._exceptions import ConfigError, UnsafePathError
from .._lb.breaker import BreakerConfig
from .._lb.health import HealthCheckConfig
from .._lb.outlier import OutlierConfig
from .._lb.probe import ProbeFn
from .._lb.retry import RetryPolicy
from .._lb.system import BalancerConfig
from .._proxy.forwarder import ForwardConfig, Forwarder, send_error
from .._proxy.headers import ForwardedConfig, TraceHeaders, build_request_headers
from .._proxy.origin import Origin
from .._proxy.paths import compile_rewrite, compile_template
from .._proxy.pool import PoolConfig
from .._proxy.websocket import proxy_websocket
from .._types import Receive, Scope, Send
from .base import BalancerHolder, HolderBacked
from .load_balancer import target_details

LOGGER = logging.getLogger("velithon.gateway")

def _convert(converter: Any, value: str) -> Any:
    if converter is None:
        return value
    try:
        return converter.convert(value)
    except ValueError:
        return value


_ALL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


def build_balancer_config(
    targets: str | Sequence[str],
    *,
    strategy: str,
    weights: Sequence[int] | None,
    health_check_path: str | None,
    health_check_interval: float | None,
    health_check_timeout: float,
    healthy_threshold: int,
    unhealthy_threshold: int,
    max_failures: int,
    recovery_timeout_ms: int,
    none_healthy: str,
    outlier: OutlierConfig | None,
    default_health_path: str | None = None,
    hash_on: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_requests_per_target: int | None = None,
    panic_threshold: float = 50.0,
    name: str = "balancer",
    discovery: DiscoveryOptions | None = None,
) -> BalancerConfig:
    """The shared translation from facade keywords to a :class:`BalancerConfig`.

    ``targets`` may mix static URLs and dynamic sources (``dns+srv://``,
    ``dns://``, ``file://``: see ``docs/discovery.md``).
    """
    plan = split_targets(targets, weights, discovery or DiscoveryOptions(), Origin.parse)
    if health_check_interval is not None and not health_check_interval > 0:
        raise ConfigError("health_check_interval must be > 0 seconds, "
                          f"got {health_check_interval!r} "
                          "(to turn health checks off, leave health_check_path unset)")
    if strategy == "hash" and not hash_on:
        raise ConfigError("The 'hash' strategy needs hash_on: 'header:<name>', 'cookie:<name>' "
                          "or 'client_ip'")
    path = health_check_path or default_health_path
    health = HealthCheckConfig(
        path=path or "/health",
        interval=float(health_check_interval or 30.0),
        timeout=health_check_timeout,
        healthy_threshold=healthy_threshold,
        unhealthy_threshold=unhealthy_threshold,
    )
    return BalancerConfig(
        targets=plan.static,
        strategy=strategy,
        weights=plan.static_weights,
        health=health,
        active_health_checks=path is not None and health_check_interval is not None,
        breaker=BreakerConfig(max_failures=max_failures, recovery_timeout_ms=recovery_timeout_ms),
        outlier=outlier or OutlierConfig(),
        none_healthy=none_healthy,
        pools=PoolConfig(ssl_context=ssl_context),
        max_requests_per_target=max_requests_per_target,
        panic_threshold=panic_threshold,
        name=name,
        sources=plan.sources,
    )


class BalancedFacade(HolderBacked):
    """What ``GatewayRoute`` and ``ProxyMiddleware`` share: a holder + forwarder."""

    _holder: BalancerHolder
    _forwarder: Forwarder
    _warned_transient = False
    _in_flight = 0
    _idle: trio.Event | None = None  # created only while someone waits

    async def _forward(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Forward one request or WebSocket session, counted in :attr:`in_flight`.

        One coroutine for the usual path (a running balancer, an HTTP request): every
        layer between the app and the forwarder costs a frame on every request.
        """
        self._in_flight += 1
        try:
            balancer = self._holder.running
            if balancer is None:
                host = scope.get("velithon.services")
                if host is not None:
                    await host.ensure_started(self)
                    balancer = self._holder.running
            if balancer is None:
                await self._forward_transient(scope, receive, send)
            elif scope["type"] == "websocket":
                await self._forward_websocket(balancer, scope, receive, send)
            else:
                await self._forwarder.handle_http(balancer, scope, receive, send)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()
                self._idle = None

    @property
    def in_flight(self) -> int:
        """Requests (HTTP or WebSocket) this facade is forwarding right now."""
        return self._in_flight

    async def wait_idle(self) -> None:
        """Return once no request is being forwarded by this facade.

        Used before a facade taken out of an app (a reloaded configuration) is stopped:
        the requests it already accepted finish on it.
        """
        if self._in_flight == 0:
            await trio.lowlevel.checkpoint()
            return
        if self._idle is None:
            self._idle = trio.Event()
        await self._idle.wait()

    async def _forward_transient(self, scope: Scope, receive: Receive, send: Send) -> None:
        """No lifespan ran: a balancer just for this request (requests serialised)."""
        if not self._warned_transient:
            self._warned_transient = True
            LOGGER.warning("%r is used without an app lifespan: requests are serialised; "
                           "run the app with lifespan (or `async with` the facade)", self)
        async with self._holder.balancer() as transient:
            if scope["type"] == "websocket":
                await self._forward_websocket(transient, scope, receive, send)
            else:
                await self._forwarder.handle_http(transient, scope, receive, send)

    async def _forward_websocket(self, balancer: Any, scope: Scope, receive: Receive,
                                 send: Send) -> None:
        cfg = self._forwarder.config
        try:
            target = self._forwarder.target_for(scope)
        except UnsafePathError:
            await send({"type": "websocket.close", "code": 1008})
            return
        extra = [(k, v) for k, v in build_request_headers(
            [], peer=scope.get("client"),
            scheme="https" if scope.get("scheme") == "wss" else "http",
            upstream_host=b"", preserve_host=True, add=cfg.headers_to_add, remove=(),
            cfg=cfg.forwarded) if k != b"host"]
        await proxy_websocket(balancer, scope, receive, send, target=target,
                              max_retries=cfg.retry.max_retries,
                              key=self._forwarder.key_for(scope),
                              connect_timeout=cfg.timeout_ms / 1000.0, extra_headers=extra)

    # ---- monitoring --------------------------------------------------------------

    async def get_health_status(self) -> list[tuple[str, bool]]:
        """``[(target, healthy), ...]`` in constructor order."""
        async with self._holder.balancer() as balancer:
            return await balancer.get_health_status()

    async def health_check(self) -> list[tuple[str, bool]]:
        """Probe every target now."""
        async with self._holder.balancer() as balancer:
            return await balancer.health_check()

    async def targets_status(self) -> list[dict[str, Any]]:
        """Per-target detail (health, breaker, ejection, in-flight, latency, counters)."""
        async with self._holder.balancer() as balancer:
            return await target_details(balancer)

    async def reset_circuit_breakers(self) -> None:
        async with self._holder.balancer() as balancer:
            await balancer.reset_breakers()

    @property
    def balancer(self) -> Any:
        """The running balancer system (None when not running)."""
        return self._holder.running


def _forward_config(
    *, timeout_ms: int, max_retries: int, preserve_host: bool,
    headers_to_add: Mapping[str, str] | None, headers_to_remove: Iterable[str] | None,
    retry_on_statuses: Iterable[int], retry_non_idempotent: bool, trusted_proxies: Sequence[str],
    xff_num_trusted_hops: int | None, hash_on: str | None, per_try_timeout_ms: int | None,
    client_body_timeout_ms: int,
    buffer_chunked_uploads: int, failure_statuses: Iterable[int],
    request_id_header: str | None, upstream_target_header: str | None, **paths: Any,
) -> ForwardConfig:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be a non-negative integer, got {max_retries!r}")
    if not client_body_timeout_ms > 0:
        raise ConfigError("client_body_timeout_ms must be positive, "
                          f"got {client_body_timeout_ms!r}")
    return ForwardConfig(
        client_body_timeout=client_body_timeout_ms / 1000.0,
        buffer_chunked_uploads=buffer_chunked_uploads,
        failure_statuses=frozenset(failure_statuses),
        timeout_ms=timeout_ms,
        per_try_timeout=None if per_try_timeout_ms is None else per_try_timeout_ms / 1000.0,
        retry=RetryPolicy(max_retries=max_retries, retry_on_statuses=frozenset(retry_on_statuses),
                          retry_non_idempotent=retry_non_idempotent),
        preserve_host=preserve_host,
        headers_to_add=dict(headers_to_add or {}),
        headers_to_remove=tuple(h.lower() for h in (headers_to_remove or ())),
        forwarded=ForwardedConfig(trusted_proxies=tuple(trusted_proxies),
                                  xff_num_trusted_hops=xff_num_trusted_hops),
        trace=TraceHeaders(request_id=request_id_header, upstream_target=upstream_target_header),
        hash_on=hash_on,
        **paths,
    )


class GatewayRoute(BaseRoute, BalancedFacade):
    """A load-balanced route: ``app.routes.append(GatewayRoute(...))``.

    ``path`` is a route template (``/api/{path:path}``); ``targets`` one URL or
    a list. By default the full original path (raw, byte-exact) is forwarded;
    ``strip_path`` drops the template's static prefix; ``path_rewrite`` is a
    template such as ``/v1/{path}`` filled from the captured parameters.
    Health checks run every ``health_check_interval`` seconds when
    ``health_check_path`` is set. ``request_id_header`` (``None`` or ``""``: off)
    carries a request ID both ways; ``upstream_target_header`` (off by default)
    names the target that answered. ``name`` is how logs name the route. See
    ``docs/load-balancing.md``; targets that follow DNS or a file (``dns+srv://...``,
    ``file://...``) are in ``docs/discovery.md``.
    """

    def __init__(
        self,
        path: str,
        targets: str | Sequence[str],
        *,
        methods: Sequence[str] | None = None,
        name: str | None = None,
        strip_path: bool = False,
        preserve_host: bool = False,
        timeout_ms: int = 30000,
        max_retries: int = 3,
        load_balancing_strategy: str = "round_robin",
        weights: Sequence[int] | None = None,
        health_check_path: str | None = None,
        health_check_interval: float = 30.0,
        health_check_timeout: float = 5.0,
        healthy_threshold: int = 1,
        unhealthy_threshold: int = 1,
        headers_to_add: Mapping[str, str] | None = None,
        headers_to_remove: Iterable[str] | None = None,
        path_rewrite: str | None = None,
        middleware: Sequence[Any] | None = None,
        max_failures: int = 5,
        recovery_timeout_ms: int = 60000,
        none_healthy: str = "fail",
        outlier_detection: OutlierConfig | None = None,
        retry_on_statuses: Iterable[int] = (502, 503, 504),
        retry_non_idempotent: bool = False,
        per_try_timeout_ms: int | None = None,
        hash_on: str | None = None,
        trusted_proxies: Sequence[str] = (),
        xff_num_trusted_hops: int | None = None,
        include_in_schema: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        max_requests_per_target: int | None = None,
        panic_threshold: float = 50.0,
        failure_statuses: Iterable[int] = (502, 503, 504),
        client_body_timeout_ms: int = 10000,
        buffer_chunked_uploads: int = 0,
        request_id_header: str | None = "X-Request-ID",
        upstream_target_header: str | None = None,
        probe: ProbeFn | None = None,
        dns_nameservers: Sequence[str] | None = None,
        dns_refresh: float | None = None,
        dns_timeout: float = 5.0,
        file_refresh: float = 1.0,
    ) -> None:
        if not path.startswith("/"):
            raise ConfigError(f"Route path must start with '/': {path!r}")
        self.path = path
        self.name = name or f"gateway_{path}"
        self.methods = None if methods is None else [m.upper() for m in methods]
        self._methods = _ALL_METHODS if methods is None else frozenset(self.methods or ())
        if self.methods and "GET" in self._methods:
            self._methods = self._methods | {"HEAD"}
        self.strip_path = strip_path
        self.preserve_host = preserve_host
        self.timeout_ms = timeout_ms
        self.max_retries = max_retries
        self.load_balancing_strategy = load_balancing_strategy
        self.health_check_path = health_check_path
        self.health_check_interval = health_check_interval
        self.headers_to_add = dict(headers_to_add or {})
        self.headers_to_remove = [h.lower() for h in (headers_to_remove or ())]
        self.path_rewrite = path_rewrite
        self.middleware = list(middleware or ())
        self.include_in_schema = include_in_schema
        self.path_regex, self.path_format, self.path_converters = compile_path(path)
        template = compile_template(path)
        self._template = template
        self._holder = BalancerHolder(
            build_balancer_config(
                targets, strategy=load_balancing_strategy, weights=weights,
                health_check_path=health_check_path, health_check_interval=health_check_interval,
                health_check_timeout=health_check_timeout, healthy_threshold=healthy_threshold,
                unhealthy_threshold=unhealthy_threshold, max_failures=max_failures,
                recovery_timeout_ms=recovery_timeout_ms, none_healthy=none_healthy,
                outlier=outlier_detection, hash_on=hash_on, ssl_context=ssl_context,
                max_requests_per_target=max_requests_per_target,
                panic_threshold=panic_threshold, name=self.name,
                discovery=DiscoveryOptions.from_keywords(
                    dns_nameservers=dns_nameservers, dns_refresh=dns_refresh,
                    dns_timeout=dns_timeout, file_refresh=file_refresh),
            ),
            probe=probe,
        )
        self.weights = list(weights) if weights is not None else None
        self._forwarder = Forwarder(_forward_config(
            timeout_ms=timeout_ms, max_retries=max_retries, preserve_host=preserve_host,
            headers_to_add=headers_to_add, headers_to_remove=headers_to_remove,
            retry_on_statuses=retry_on_statuses, retry_non_idempotent=retry_non_idempotent,
            trusted_proxies=trusted_proxies, xff_num_trusted_hops=xff_num_trusted_hops,
            hash_on=hash_on, per_try_timeout_ms=per_try_timeout_ms,
            client_body_timeout_ms=client_body_timeout_ms,
            buffer_chunked_uploads=buffer_chunked_uploads, failure_statuses=failure_statuses,
            request_id_header=request_id_header, upstream_target_header=upstream_target_header,
            template=template, strip_path=strip_path,
            rewrite=compile_rewrite(path_rewrite, template) if path_rewrite else None,
        ), name=self.name)
        self._app: Callable[..., Any] = self._build_stack()

    def __repr__(self) -> str:
        return f"GatewayRoute(path={self.path!r}, targets={self.targets!r}, " \
               f"strategy={self.load_balancing_strategy!r})"

    def _build_stack(self) -> Callable[..., Any]:
        """Apply the route's own middleware (the original stored and ignored it)."""
        app: Callable[..., Any] = self._forward
        for item in reversed(self.middleware):
            if hasattr(item, "bind"):
                app = item.bind(app)
            elif hasattr(item, "cls"):
                app = item.cls(app, *getattr(item, "args", ()), **getattr(item, "kwargs", {}))
            elif isinstance(item, type):
                app = item(app)
            else:
                raise TypeError(f"Unsupported route middleware {item!r}")
        return app

    # ---- route protocol --------------------------------------------------------------

    def matches(self, scope: Scope) -> tuple[Match, dict[str, Any]]:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return Match.NONE, {}
        # Match the raw path: the same form the forwarded target is built from, so
        # "/%61pi/x" or "/api%2Fx" cannot be routed here and then forwarded unstripped.
        raw = scope.get("raw_path")
        captures = self._template.match(raw if raw is not None else scope["path"])
        if captures is None:
            return Match.NONE, {}
        params = {k: _convert(self.path_converters.get(k), unquote(v)) for k, v in captures.items()}
        if kind == "http" and scope["method"] not in self._methods:
            return Match.PARTIAL, {"path_params": params}
        return Match.FULL, {"path_params": params}

    def allowed_methods(self, scope: Scope) -> set[str]:
        return set(self._methods)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def openapi(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """A minimal OpenAPI fragment, as the original offered."""
        spec = {"summary": "Gateway to backend service", "tags": ["Gateway"],
                "responses": {"200": {"description": "Upstream response"},
                              "502": {"description": "Bad Gateway"},
                              "503": {"description": "Service Unavailable"},
                              "504": {"description": "Gateway Timeout"}}}
        methods = self.methods or ["GET", "POST", "PUT", "DELETE", "PATCH"]
        return {self.path: {m.lower(): spec for m in methods}}, {}


class Gateway:
    """A collection of gateway routes (``app.routes.extend(gateway.routes)``)."""

    def __init__(self) -> None:
        self.routes: list[GatewayRoute] = []

    def __repr__(self) -> str:
        return f"<Gateway [{len(self.routes)} routes]>"

    @property
    def load_balancers(self) -> dict[str, GatewayRoute]:
        """Route name -> route (each route owns its balancer)."""
        return {route.name: route for route in self.routes}

    def add_route(self, path: str, targets: str | Sequence[str], **kwargs: Any) -> GatewayRoute:
        route = GatewayRoute(path, targets, **kwargs)
        self.routes.append(route)
        return route

    def forward_to(self, targets: str | Sequence[str], **route_kwargs: Any
                   ) -> Callable[[Callable[..., Any]], GatewayRoute]:
        """Decorator: the function's name gives the default path (``/name``)."""

        def decorator(func: Callable[..., Any]) -> GatewayRoute:
            kwargs = dict(route_kwargs)  # never mutate: the decorator may be reused
            path = kwargs.pop("path", f"/{func.__name__}")
            kwargs.setdefault("name", func.__name__)
            return self.add_route(path, targets, **kwargs)

        return decorator

    def get_routes(self) -> list[GatewayRoute]:
        return list(self.routes)

    async def health_check_all(self) -> dict[str, Any]:
        """Per route: ``[(target, healthy), ...]``, or ``{"error": ...}``."""
        results: dict[str, Any] = {}
        for route in self.routes:
            try:
                results[route.name] = await route.get_health_status()
            except Exception as exc:  # one broken route must not hide the others
                LOGGER.exception("health status of %s failed", route.name)
                results[route.name] = {"error": str(exc)}
        return results


def gateway_route(path: str, targets: str | Sequence[str], **kwargs: Any) -> GatewayRoute:
    """Alias of the ``GatewayRoute`` constructor."""
    return GatewayRoute(path, targets, **kwargs)


def forward_to(path: str, target: str | Sequence[str], **kwargs: Any) -> Callable[..., Any]:
    """A handler that forwards its request: ``app.get("/x")(forward_to("/x", url))``.

    Build it once (at import time), not inside a handler: it owns a balancer
    whose breaker and connection pool persist across requests.
    """
    route = GatewayRoute(path, target, **kwargs)

    async def forward_request(request: Any) -> Any:
        return _RouteResponse(route)

    forward_request.route = route  # type: ignore[attr-defined]
    return forward_request


class _RouteResponse(Response):
    """A response that streams by forwarding the request it answers."""

    def __init__(self, route: GatewayRoute) -> None:  # no body of its own: skip Response.__init__
        self.route = route
        self.status_code = 200

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.route.handle(scope, receive, send)


__all__ = ["Gateway", "GatewayRoute", "forward_to", "gateway_route", "send_error"]
