"""``from velithon._velithon import ProxyLoadBalancer``: the import path Velithon's own
documentation uses for the load balancer and the single-target client, kept working."""

from ._exceptions import NoTargetAvailable as NoTargetAvailable
from ._facades.client import ProxyClient as ProxyClient
from ._facades.client import ProxyRequestError as ProxyRequestError
from ._facades.client import ProxyResult as ProxyResult
from ._facades.load_balancer import ProxyLoadBalancer as ProxyLoadBalancer

__all__ = ["NoTargetAvailable", "ProxyClient", "ProxyLoadBalancer", "ProxyRequestError",
           "ProxyResult"]
