"""Proxy middleware: ``from velithon.middleware.proxy import ProxyMiddleware``."""

from .._facades.middleware import ProxyMiddleware as ProxyMiddleware

__all__ = ["ProxyMiddleware"]
