"""Load-balanced gateway routes: ``from velithon.gateway import GatewayRoute``."""

from ._gateway import Gateway as Gateway
from ._gateway import GatewayRoute as GatewayRoute
from ._gateway import forward_to as forward_to
from ._gateway import gateway_route as gateway_route

__all__ = ["Gateway", "GatewayRoute", "forward_to", "gateway_route"]
