"""``Velithon``: the ASGI 3 application (routing, middleware, lifespan, services).

Why it is shaped like this:

* ``app.routes`` is a plain list read on every request, so ``app.routes.append``
  and ``app.routes.extend(gateway.routes)`` work at any time (a cached route table
  would silently answer 404 for routes added after it was built).
* The middleware stack is cached and rebuilt when the middleware list changes —
  detected by comparing the list with the one the stack was built from, which costs
  a few tens of nanoseconds per request.
* On lifespan start-up (or ``async with app.run_services()``) the app opens a
  ``ServiceHost`` and starts every service among ``app.routes``, the middleware and
  ``app.services`` (background work that serves no request itself, such as a
  configuration reloader); later http/websocket scopes carry it as
  ``scope["velithon.services"]``. Routes appended later that are services are started
  before their first request.

The lifespan scope is handled by the app itself and never passes through
middleware (a middleware that needs a lifetime is a service).

Ordering: ``Velithon(middleware=[A, B])`` makes ``A`` the outermost layer;
``add_middleware(X)`` puts ``X`` outside everything added before (added last =
outermost). Start-up order is services, then ``on_startup`` hooks; shutdown waits
(up to ``shutdown_grace``) for requests in flight, runs ``on_shutdown`` hooks, then
cancels the services.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, TypeVar

from .._types import Receive, Scope, Send
from .middleware import ASGIApp, build_stack, check_entry
from .responses import error_response
from .routing import Match, Route, WebSocketRoute
from .services import ServiceHost, is_service, open_service_host

_F = TypeVar("_F", bound=Callable[..., Any])

LOGGER = logging.getLogger("velithon.app")

_FULL = Match.FULL
_PARTIAL = Match.PARTIAL
_404 = error_response(404)
_EVENTS = ("startup", "shutdown")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _call_hook(hook: Callable[[], Any]) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result


class _RouterView:
    """``app.router.routes``: Velithon's API spells the route list this way too."""

    __slots__ = ("_app",)

    def __init__(self, app: Velithon) -> None:
        self._app = app

    @property
    def routes(self) -> list[Any]:
        return self._app.routes


class Velithon:
    """An ASGI 3 application.

    Args:
        routes: initial routes (any objects following the route protocol).
        middleware: classes, ``Middleware(cls, **kwargs)`` specs or instances with
            ``bind(app)``; the first entry is the outermost layer.
        on_startup / on_shutdown: sync or async callables without arguments.
        services: background services (objects with ``run_service``) that are neither
            routes nor middleware; started with the others at lifespan start-up.
        shutdown_grace: seconds to wait for in-flight requests before the background
            services are cancelled at shutdown.
    """

    def __init__(self, *, routes: Iterable[Any] | None = None,
                 middleware: Sequence[object] | None = None,
                 on_startup: Iterable[Callable[[], Any]] | None = None,
                 on_shutdown: Iterable[Callable[[], Any]] | None = None,
                 services: Iterable[object] | None = None,
                 shutdown_grace: float = 5.0) -> None:
        if shutdown_grace < 0:
            raise ValueError(f"shutdown_grace must be >= 0, got {shutdown_grace!r}")
        self.routes: list[Any] = list(routes or ())
        self.user_middleware: list[object] = [check_entry(m) for m in middleware or ()]
        self.on_startup: list[Callable[[], Any]] = list(on_startup or ())
        self.on_shutdown: list[Callable[[], Any]] = list(on_shutdown or ())
        self.services: list[object] = list(services or ())
        self.shutdown_grace = shutdown_grace
        self.state = SimpleNamespace()
        self.router = _RouterView(self)
        self._stack: ASGIApp = self._dispatch
        self._built_from: list[object] | None = None
        self._stack_services: list[object] = []
        self._pending_services: list[object] = []
        self._host: ServiceHost | None = None
        self._services_running = False

    # -- registration ------------------------------------------------------------

    def add_route(self, path: str, endpoint: Callable[..., Any], *,
                  methods: Iterable[str] | None = None, name: str | None = None) -> Route:
        route = Route(path, endpoint, methods=methods, name=name)
        self.routes.append(route)
        return route

    def add_websocket_route(self, path: str, endpoint: Callable[..., Any], *,
                            name: str | None = None) -> WebSocketRoute:
        route = WebSocketRoute(path, endpoint, name=name)
        self.routes.append(route)
        return route

    def route(self, path: str, methods: Iterable[str] | None = None, *,
              name: str | None = None) -> Callable[[_F], _F]:
        """Decorator: register an HTTP handler (``methods`` default to ``["GET"]``)."""
        def decorator(endpoint: _F) -> _F:
            self.add_route(path, endpoint, methods=methods, name=name)
            return endpoint
        return decorator

    def get(self, path: str, *, name: str | None = None) -> Callable[[_F], _F]:
        return self.route(path, ["GET"], name=name)

    def post(self, path: str, *, name: str | None = None) -> Callable[[_F], _F]:
        return self.route(path, ["POST"], name=name)

    def put(self, path: str, *, name: str | None = None) -> Callable[[_F], _F]:
        return self.route(path, ["PUT"], name=name)

    def patch(self, path: str, *, name: str | None = None) -> Callable[[_F], _F]:
        return self.route(path, ["PATCH"], name=name)

    def delete(self, path: str, *, name: str | None = None) -> Callable[[_F], _F]:
        return self.route(path, ["DELETE"], name=name)

    def head(self, path: str, *, name: str | None = None) -> Callable[[_F], _F]:
        return self.route(path, ["HEAD"], name=name)

    def options(self, path: str, *, name: str | None = None) -> Callable[[_F], _F]:
        return self.route(path, ["OPTIONS"], name=name)

    def websocket(self, path: str, *, name: str | None = None) -> Callable[[_F], _F]:
        """Decorator: register a websocket handler."""
        def decorator(endpoint: _F) -> _F:
            self.add_websocket_route(path, endpoint, name=name)
            return endpoint
        return decorator

    def add_middleware(self, middleware: object, **kwargs: Any) -> None:
        """Add a middleware class (built as ``cls(next_app, **kwargs)``) or an instance
        with ``bind(next_app)``; it becomes the outermost layer."""
        self.user_middleware.insert(0, check_entry(middleware, kwargs))

    def add_event_handler(self, event: str, hook: Callable[[], Any]) -> None:
        if event not in _EVENTS:
            raise ValueError(f"unknown event {event!r}; expected 'startup' or 'shutdown'")
        (self.on_startup if event == "startup" else self.on_shutdown).append(hook)

    def on_event(self, event: str) -> Callable[[_F], _F]:
        """Decorator: ``@app.on_event("startup")`` / ``@app.on_event("shutdown")``."""
        if event not in _EVENTS:
            raise ValueError(f"unknown event {event!r}; expected 'startup' or 'shutdown'")

        def decorator(hook: _F) -> _F:
            self.add_event_handler(event, hook)
            return hook
        return decorator

    @property
    def service_host(self) -> ServiceHost | None:
        """The ``ServiceHost`` while the app's services run (lifespan), else ``None``.

        Code that changes ``routes`` or the middleware of a running app uses it to
        start a new service before traffic reaches it and to ``stop`` one taken out.
        """
        return self._host

    # -- ASGI --------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # Not passed through middleware: a middleware that needs a lifetime is a
            # service, and a stack that fails to build becomes startup.failed.
            await self._lifespan(receive, send)
            return
        if self.user_middleware != self._built_from:
            self._build_stack()
        host = self._host
        if host is None:
            await self._stack(scope, receive, send)
            return
        if self._pending_services:
            await self._start_pending(host)
        scope["velithon.services"] = host
        host.hold()
        try:
            await self._stack(scope, receive, send)
        finally:
            host.release()

    def _build_stack(self) -> None:
        entries = list(self.user_middleware)
        self._stack, self._stack_services = build_stack(self._dispatch, entries)
        self._built_from = entries
        if self._host is not None:
            self._pending_services = list(self._stack_services)

    async def _start_pending(self, host: ServiceHost) -> None:
        pending = self._pending_services
        for service in pending:
            await host.ensure_started(service)
        if self._pending_services is pending:
            self._pending_services = []

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The innermost ASGI app: route the request."""
        kind = scope["type"]
        partial = None
        for route in self.routes:
            match, child = route.matches(scope)
            if match is _FULL:
                scope.update(child)
                host = self._host
                if (host is not None and getattr(route, "run_service", None) is not None
                        and not host.is_started(route)):
                    try:
                        await host.ensure_started(route)
                    except RuntimeError as exc:  # ServiceStartError, or host shutting down
                        await self._unavailable(route, exc, scope, receive, send)
                        return
                await route.handle(scope, receive, send)
                return
            if match is _PARTIAL:
                partial = [route] if partial is None else [*partial, route]
        if kind == "http":
            if partial is None:
                await _404(scope, receive, send)
                return
            allowed: set[str] = set()
            for route in partial:
                allowed.update(getattr(route, "allowed_methods", lambda scope: ())(scope))
            if "GET" in allowed:
                allowed.add("HEAD")
            response = error_response(405, headers={"allow": ", ".join(sorted(allowed))})
            await response(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
        else:
            raise ValueError(f"unsupported ASGI scope type {kind!r}")

    @staticmethod
    async def _unavailable(route: Any, exc: Exception, scope: Scope, receive: Receive,
                           send: Send) -> None:
        """A service route that cannot start answers 503 (websocket: close 1011)."""
        LOGGER.warning("route %r is unavailable: %s", route, exc)
        if scope["type"] == "http":
            await error_response(503, "the route's service could not start")(
                scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1011, "reason": ""})

    # -- lifespan and services ---------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        started = False
        try:
            async with self.run_services():
                started = True
                await send({"type": "lifespan.startup.complete"})
                while (await receive())["type"] != "lifespan.shutdown":
                    pass
        except Exception as exc:
            phase = "shutdown" if started else "startup"
            LOGGER.exception("lifespan %s failed", phase)
            await send({"type": f"lifespan.{phase}.failed", "message": _describe(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})

    def _check_routes(self) -> None:
        for index, route in enumerate(self.routes):
            if not (callable(getattr(route, "matches", None))
                    and callable(getattr(route, "handle", None))):
                raise TypeError(f"app.routes[{index}] is not a route (it needs matches() "
                                f"and handle()): {route!r}")

    @asynccontextmanager
    async def run_services(self) -> AsyncIterator[ServiceHost]:
        """Own the app's services without an ASGI lifespan (tests, embedding).

        Starts every service among the routes and middleware, then the ``on_startup``
        hooks; on exit waits for requests in flight (up to ``shutdown_grace``), runs
        the ``on_shutdown`` hooks and cancels the services.

        Raises:
            RuntimeError: services are already running for this app.
        """
        if self._services_running:
            raise RuntimeError("this app's services are already running "
                               "(lifespan or another run_services())")
        self._services_running = True
        try:
            async with open_service_host(shutdown_grace=self.shutdown_grace) as host:
                self._check_routes()
                if self.user_middleware != self._built_from:
                    self._build_stack()
                services = [r for r in self.routes if is_service(r)]
                services += self._stack_services
                for index, service in enumerate(self.services):
                    if not is_service(service):
                        raise TypeError(f"app.services[{index}] is not a service (it needs "
                                        f"run_service()): {service!r}")
                    services.append(service)
                for service in services:
                    await host.ensure_started(service)
                self._host = host
                for hook in self.on_startup:
                    await _call_hook(hook)
                try:
                    yield host
                finally:
                    await host.drain()
                    for hook in self.on_shutdown:
                        await _call_hook(hook)
        finally:
            self._host = None
            self._pending_services = []
            self._services_running = False
