"""Load-balanced gateway routes: ``from velithon.gateway import GatewayRoute``."""

from ._facades.route import Gateway as Gateway
from ._facades.route import GatewayRoute as GatewayRoute
from ._facades.route import forward_to as forward_to
from ._facades.route import gateway_route as gateway_route

__all__ = ["Gateway", "GatewayRoute", "forward_to", "gateway_route"]
