"""Middleware: ``Middleware`` specs and the load-balancing ``ProxyMiddleware``."""

from .._middleware import Middleware as Middleware
from .._proxy_middleware import ProxyMiddleware as ProxyMiddleware

__all__ = ["Middleware", "ProxyMiddleware"]
