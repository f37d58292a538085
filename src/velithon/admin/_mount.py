"""``mount_admin``: the one line that puts the admin surface on an app."""

from __future__ import annotations

from .._app.application import Velithon
from .._exceptions import ConfigError
from ._site import AdminSite


def mount_admin(app: Velithon, path: str = "/_velithon", *, token: str | None = None,
                dashboard_at_root: bool = False) -> AdminSite:
    """Serve status, metrics, ready/live and the dashboard under ``path``.

    Args:
        app: the ``Velithon`` app whose load-balanced routes and proxies are reported.
        path: where the endpoints live (``/_velithon``: ``/_velithon/status``, ...).
        token: turns on the ``POST {path}/targets/...`` actions (drain, undrain,
            reset-breaker, add, remove) for requests carrying
            ``Authorization: Bearer <token>``. Without one they answer 404.
        dashboard_at_root: also serve the dashboard at ``/``.

    Returns:
        The :class:`AdminSite` added to the app's middleware (outermost at this point,
        so a catch-all ``ProxyMiddleware`` added before it does not hide it).

    Raises:
        ConfigError: ``path`` is not an absolute path below ``/``, or the token is empty.
    """
    if not isinstance(app, Velithon):
        raise ConfigError(f"mount_admin needs a velithon.Velithon app, got {app!r}")
    if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "?#"):
        raise ConfigError(f"the admin path must start with '/', got {path!r}")
    path = path.rstrip("/")
    if not path:
        raise ConfigError("the admin path cannot be '/': it would hide every route "
                          "(use dashboard_at_root=True to show the dashboard at '/')")
    if token is not None and (not isinstance(token, str) or not token.strip()
                              or token != token.strip()):
        raise ConfigError("the admin token must be a non-empty string without surrounding "
                          "spaces (or None to turn the actions off)")
    site = AdminSite(app, path, token=token, dashboard_at_root=dashboard_at_root)
    app.add_middleware(site)
    return site
