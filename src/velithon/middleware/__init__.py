"""Middleware: ``Middleware`` specs and the load-balancing ``ProxyMiddleware``."""

from .._app.middleware import Middleware as Middleware
from .._facades.middleware import ProxyMiddleware as ProxyMiddleware

__all__ = ["Middleware", "ProxyMiddleware"]
