"""velithon: a pure-Python load-balancing gateway for trio applications.

The implementation lives in private modules (``_app.py``, ``_routing.py``, ...);
this file re-exports the public API explicitly (``X as X`` keeps type checkers'
re-export rules happy) and then rewrites ``__module__`` so that reprs, tracebacks
and docs say ``velithon.X``.
"""

from __future__ import annotations

from ._app.application import Velithon as Velithon
from ._app.datastructures import URL as URL
from ._app.datastructures import Address as Address
from ._app.datastructures import Headers as Headers
from ._app.datastructures import MutableHeaders as MutableHeaders
from ._app.datastructures import QueryParams as QueryParams
from ._app.middleware import Middleware as Middleware
from ._app.requests import HTTPConnection as HTTPConnection
from ._app.requests import Request as Request
from ._app.responses import HTMLResponse as HTMLResponse
from ._app.responses import HTTPException as HTTPException
from ._app.responses import JSONResponse as JSONResponse
from ._app.responses import PlainTextResponse as PlainTextResponse
from ._app.responses import Response as Response
from ._app.responses import StreamingResponse as StreamingResponse
from ._app.routing import BaseRoute as BaseRoute
from ._app.routing import Match as Match
from ._app.routing import Route as Route
from ._app.routing import WebSocketRoute as WebSocketRoute
from ._app.routing import compile_path as compile_path
from ._app.services import ServiceHost as ServiceHost
from ._app.services import ServiceStartError as ServiceStartError
from ._app.services import open_service_host as open_service_host
from ._app.websockets import WebSocket as WebSocket
from ._app.websockets import WebSocketDisconnect as WebSocketDisconnect
from ._app.websockets import WebSocketState as WebSocketState

# The load-balancing gateway (also importable from the module paths Velithon's API uses:
# velithon.gateway, velithon.middleware.proxy, velithon._facades.load_balancer).
from ._exceptions import ConfigError as ConfigError
from ._exceptions import ConfigWarning as ConfigWarning
from ._exceptions import NoTargetAvailable as NoTargetAvailable
from ._exceptions import VelithonError as VelithonError
from ._exports import fixup_module_metadata
from ._facades.client import ProxyClient as ProxyClient
from ._facades.client import ProxyRequestError as ProxyRequestError
from ._facades.client import ProxyResult as ProxyResult
from ._facades.load_balancer import ProxyLoadBalancer as ProxyLoadBalancer
from ._facades.middleware import ProxyMiddleware as ProxyMiddleware
from ._facades.route import Gateway as Gateway
from ._facades.route import GatewayRoute as GatewayRoute
from ._facades.route import forward_to as forward_to
from ._facades.route import gateway_route as gateway_route
from ._lb.outlier import OutlierConfig as OutlierConfig

__version__ = "0.1.0"


fixup_module_metadata(__name__, globals())
