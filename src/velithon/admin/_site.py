"""The admin surface as one layer of the app's middleware stack.

Why a middleware and not routes: a ``ProxyMiddleware`` with an empty prefix (the
original's default) forwards every request before routing happens, so admin routes in
``app.routes`` would be unreachable behind it. ``mount_admin`` adds this layer with
``app.add_middleware``, which makes it the outermost one at that moment: it answers
its own paths and passes everything else on untouched.

Paths, under ``path`` (``/_velithon`` by default):

* ``GET {path}/`` (and ``{path}``): the dashboard page; also ``GET /`` with
  ``dashboard_at_root``;
* ``GET {path}/status``, ``/metrics``, ``/ready``, ``/live``;
* ``POST {path}/targets/{action}``, only with a token (404 without one, 403 for a
  missing or wrong ``Authorization: Bearer``).

Anything else under ``path`` is a JSON 404; a wrong method a 405 with ``Allow``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from .._app.application import Velithon
from .._app.requests import Request
from .._app.responses import HTMLResponse, JSONResponse, Response, error_response
from .._app.services import ServiceHost
from .._types import Receive, Scope, Send
from ._actions import ACTIONS, ActionError, perform
from ._dashboard import dashboard_page
from ._gather import find_balanced, readiness, status_document, take_pictures
from ._metrics import CONTENT_TYPE, AppMetrics

ASGIApp = Callable[[Scope, Receive, Send], Any]

_NO_STORE = {"cache-control": "no-store"}
_READ = ("GET", "HEAD")


class AdminSite:
    """The admin endpoints of one app (what ``mount_admin`` adds to its middleware)."""

    def __init__(self, app: Velithon, path: str, *, token: str | None,
                 dashboard_at_root: bool) -> None:
        self.app = app
        self.path = path
        self.token = token
        self.dashboard_at_root = dashboard_at_root
        self.metrics = AppMetrics()
        self._page = dashboard_page(path)
        self._bearer = None if token is None else token.encode()

    def __repr__(self) -> str:
        mutations = "on" if self.token is not None else "off"
        return f"<AdminSite {self.path} [mutations {mutations}]>"

    def bind(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app``; the app calls this when it builds its middleware stack."""
        return _BoundAdmin(self, app)

    def owns(self, path: str) -> str | None:
        """The part of ``path`` after the admin prefix, or None when it is not ours."""
        prefix = self.path
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return path[len(prefix):]
        if self.dashboard_at_root and path == "/":
            return "/"
        return None

    async def handle(self, sub: str, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        host: ServiceHost | None = scope.get("velithon.services")
        if sub.startswith("/targets/") and sub[len("/targets/"):] in ACTIONS:
            response = await self._action(sub[len("/targets/"):], method, scope, receive)
        elif sub in ("", "/", "/status", "/metrics", "/ready", "/live"):
            if method not in _READ:
                response = error_response(405, headers={"allow": "GET, HEAD"})
            else:
                response = await self._read(sub, host)
        else:
            response = error_response(404, f"no admin endpoint {self.path}{sub}")
        await response(scope, receive, send)

    async def _read(self, sub: str, host: ServiceHost | None) -> Response:
        if sub in ("", "/"):
            return HTMLResponse(self._page, headers=_NO_STORE)
        if sub == "/live":
            return JSONResponse({"live": True}, headers=_NO_STORE)
        balanced = find_balanced(self.app, host)
        if sub == "/ready":
            reasons = await readiness(host, balanced)
            return JSONResponse({"ready": not reasons, "reasons": reasons},
                                status_code=503 if reasons else 200, headers=_NO_STORE)
        pictures = await take_pictures(balanced)
        if sub == "/status":
            return JSONResponse(status_document(pictures), headers=_NO_STORE)
        return Response(self.metrics.render(pictures), headers=_NO_STORE,
                        media_type=CONTENT_TYPE)

    async def _action(self, action: str, method: str, scope: Scope,
                      receive: Receive) -> Response:
        if self._bearer is None:
            return error_response(404, "admin actions are off: a token turns them on "
                                       "([admin] token in a config file, or "
                                       "mount_admin(..., token=...))")
        if method != "POST":
            return error_response(405, headers={"allow": "POST"})
        if not self._authorized(scope):
            return error_response(403, "a valid 'Authorization: Bearer <token>' header is "
                                       "required")
        body = await Request(scope, receive).body()
        try:
            result = await perform(find_balanced(self.app, scope.get("velithon.services")),
                                   action, body)
        except ActionError as exc:
            return error_response(exc.status, exc.detail)
        return JSONResponse(result, headers=_NO_STORE)

    def _authorized(self, scope: Scope) -> bool:
        assert self._bearer is not None
        given = [v for k, v in scope["headers"] if k.lower() == b"authorization"]
        if len(given) != 1:
            return False
        scheme, _, credentials = given[0].strip().partition(b" ")
        # the scheme is case-insensitive (RFC 9110 §11.1); the token is compared in
        # constant time
        return (scheme.lower() == b"bearer"
                and hmac.compare_digest(credentials.strip(), self._bearer))


class _BoundAdmin:
    """The ASGI callable in the app's middleware stack."""

    __slots__ = ("site", "app")

    def __init__(self, site: AdminSite, app: ASGIApp) -> None:
        self.site = site
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Matched on the path as sent: a percent-encoded spelling (/_velithon%2fstatus,
            # /%5fvelithon/...) is not the admin surface, so a front proxy that guards the
            # literal prefix cannot be walked around.
            raw: bytes | None = scope.get("raw_path")
            sub = self.site.owns(raw.decode("latin-1") if raw else scope["path"])
            if sub is not None:
                await self.site.handle(sub, scope, receive, send)
                return
        await self.app(scope, receive, send)
