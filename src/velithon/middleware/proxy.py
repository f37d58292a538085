"""Proxy middleware: ``from velithon.middleware.proxy import ProxyMiddleware``."""

from .._proxy_middleware import ProxyMiddleware as ProxyMiddleware

__all__ = ["ProxyMiddleware"]
