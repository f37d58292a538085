"""velithon: a pure-Python load-balancing gateway for trio applications.

The implementation lives in private modules (``_app.py``, ``_routing.py``, ...);
this file re-exports the public API explicitly (``X as X`` keeps type checkers'
re-export rules happy) and then rewrites ``__module__`` so that reprs, tracebacks
and docs say ``velithon.X``.
"""

from __future__ import annotations

from ._app import Velithon as Velithon
from ._datastructures import URL as URL
from ._datastructures import Address as Address
from ._datastructures import Headers as Headers
from ._datastructures import MutableHeaders as MutableHeaders
from ._datastructures import QueryParams as QueryParams
from ._middleware import Middleware as Middleware
from ._requests import HTTPConnection as HTTPConnection
from ._requests import Request as Request
from ._responses import HTMLResponse as HTMLResponse
from ._responses import HTTPException as HTTPException
from ._responses import JSONResponse as JSONResponse
from ._responses import PlainTextResponse as PlainTextResponse
from ._responses import Response as Response
from ._responses import StreamingResponse as StreamingResponse
from ._routing import BaseRoute as BaseRoute
from ._routing import Match as Match
from ._routing import Route as Route
from ._routing import WebSocketRoute as WebSocketRoute
from ._routing import compile_path as compile_path
from ._services import ServiceHost as ServiceHost
from ._services import ServiceStartError as ServiceStartError
from ._services import open_service_host as open_service_host
from ._websockets import WebSocket as WebSocket
from ._websockets import WebSocketDisconnect as WebSocketDisconnect
from ._websockets import WebSocketState as WebSocketState

# The load-balancing gateway (also importable from the seed's module paths:
# velithon.gateway, velithon.middleware.proxy, velithon._velithon).
from ._exceptions import ConfigError as ConfigError
from ._exceptions import NoTargetAvailable as NoTargetAvailable
from ._exceptions import VelithonError as VelithonError
from ._gateway import Gateway as Gateway
from ._gateway import GatewayRoute as GatewayRoute
from ._gateway import forward_to as forward_to
from ._gateway import gateway_route as gateway_route
from ._outlier import OutlierConfig as OutlierConfig
from ._proxy_client import ProxyClient as ProxyClient
from ._proxy_client import ProxyRequestError as ProxyRequestError
from ._proxy_client import ProxyResult as ProxyResult
from ._proxy_middleware import ProxyMiddleware as ProxyMiddleware
from ._velithon import ProxyLoadBalancer as ProxyLoadBalancer

__version__ = "0.1.0"


def _fixup_module_metadata() -> None:
    # attrs classes keep their real module: attrs/cattrs resolve string annotations
    # through sys.modules[cls.__module__], which must be the defining module.
    import attrs

    for name, obj in list(globals().items()):
        if (not name.startswith("_") and getattr(obj, "__module__", "").startswith("velithon._")
                and callable(obj) and not attrs.has(obj)):
            try:
                obj.__module__ = __name__
            except (AttributeError, TypeError):
                pass


_fixup_module_metadata()
del _fixup_module_metadata
