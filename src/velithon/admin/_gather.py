"""What the admin pages report on: the app's load-balanced routes and proxies, by name.

An app knows its balancers in three places: ``GatewayRoute`` entries of ``app.routes``
(``Gateway.routes`` end up there too, and ``forward_to`` handlers keep theirs on the
handler as ``.route``), ``ProxyMiddleware`` instances in ``app.user_middleware``, and
proxies built from ``Middleware(ProxyMiddleware, ...)`` specs, which exist only inside
the middleware stack and are found among the running services. They are looked up on
every admin request, so routes appended at run time show up at once.

Each one gets a *route name*, the ``route`` label of every metric and the ``route``
field of status rows and mutations: a route's path template (``/api/{path:path}``), or
a proxy's prefix followed by ``/*`` (``/api/*``; ``/*`` for a proxy of everything). A
name already taken gets `` #2``, `` #3``, ... in the order the app lists them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import trio

from .._app.application import Velithon
from .._app.routing import Route
from .._app.services import ServiceHost
from .._facades.load_balancer import target_rows
from .._facades.middleware import ProxyMiddleware
from .._facades.route import BalancedFacade, GatewayRoute
from .._lb.snapshot import BalancerSnapshot


@attrs.frozen(eq=False)
class Balanced:
    """One load-balanced facade of the app and the name the admin surface gives it."""

    name: str
    facade: BalancedFacade

    @property
    def is_proxy(self) -> bool:
        return isinstance(self.facade, ProxyMiddleware)


@attrs.frozen
class Picture:
    """A facade and what its balancer looked like when asked."""

    balanced: Balanced
    snapshot: BalancerSnapshot


def find_balanced(app: Velithon, host: ServiceHost | None) -> list[Balanced]:
    """Every load-balanced route, then every proxy, in the order the app holds them."""
    found: list[BalancedFacade] = []
    for route in app.routes:
        if isinstance(route, GatewayRoute):
            found.append(route)
        elif isinstance(route, Route):
            inner = getattr(route.endpoint, "route", None)  # a forward_to() handler's route
            if isinstance(inner, GatewayRoute):
                found.append(inner)
    proxies: list[Any] = [m for m in app.user_middleware if isinstance(m, ProxyMiddleware)]
    if host is not None:
        proxies += [s for s in host.services if isinstance(s, ProxyMiddleware)]
    found += proxies
    unique: list[BalancedFacade] = []
    for facade in found:
        if not any(facade is seen for seen in unique):
            unique.append(facade)
    return _named(unique)


def _named(facades: Sequence[BalancedFacade]) -> list[Balanced]:
    taken: dict[str, int] = {}
    named = []
    for facade in facades:
        base = (f"{facade.path_prefix}/*" if isinstance(facade, ProxyMiddleware)
                else facade.path if isinstance(facade, GatewayRoute) else repr(facade))
        taken[base] = taken.get(base, 0) + 1
        named.append(Balanced(base if taken[base] == 1 else f"{base} #{taken[base]}", facade))
    return named


async def take_pictures(balanced: Sequence[Balanced]) -> list[Picture]:
    """Ask every balancer for its snapshot, concurrently (each is a few messages)."""
    pictures: list[Picture | None] = [None] * len(balanced)

    async def one(i: int, item: Balanced) -> None:
        pictures[i] = Picture(item, await item.facade.snapshot())

    async with trio.open_nursery() as nursery:
        for i, item in enumerate(balanced):
            nursery.start_soon(one, i, item)
    return [p for p in pictures if p is not None]


def status_document(pictures: Sequence[Picture]) -> dict[str, Any]:
    """The ``/status`` JSON: ``{"routes": [...], "proxies": [...]}``."""
    routes: list[dict[str, Any]] = []
    proxies: list[dict[str, Any]] = []
    for picture in pictures:
        facade = picture.balanced.facade
        snap = picture.snapshot
        entry: dict[str, Any] = {"route": picture.balanced.name}
        if isinstance(facade, ProxyMiddleware):
            entry["path_prefix"] = facade.path_prefix or "/"
        elif isinstance(facade, GatewayRoute):
            entry["path"] = facade.path
            entry["name"] = facade.name
        entry.update({
            "strategy": snap.strategy,
            "running": snap.running,
            "retries": snap.retries,
            "retries_denied": snap.retries_denied,
            "rejected": snap.rejected,
            "overflows": snap.overflows,
            "panicking": snap.panicking,
            "targets": target_rows(snap),
        })
        if snap.discovery:
            entry["discovery"] = [{
                "source": d.source, "kind": d.kind, "ready": d.ready, "size": d.size,
                "lookups": d.lookups, "failures": d.failures,
                "consecutive_failures": d.consecutive_failures,
                "seconds_since_success": d.seconds_since_success,
                "last_error": d.last_error, "next_lookup_in": d.next_lookup_in,
            } for d in snap.discovery]
        (proxies if isinstance(facade, ProxyMiddleware) else routes).append(entry)
    return {"routes": routes, "proxies": proxies}


async def readiness(host: ServiceHost | None, balanced: Sequence[Balanced]) -> list[str]:
    """Why the app is not ready to serve; empty when it is.

    Ready means: the app's services run (a lifespan started them and is not shutting
    down), and every balancer has at least one target that passes its health checks and
    is not draining. A route appended after start-up is started here, as its first
    request would start it; a route that cannot start is a reason.
    """
    if host is None:
        return ["the app's services are not running (the server ran no lifespan)"]
    if host.statistics().closing:
        return ["the app is shutting down"]
    reasons = []
    started = []
    for item in balanced:
        if not host.is_started(item.facade):
            try:
                await host.ensure_started(item.facade)
            except RuntimeError as exc:
                reasons.append(f"{item.name}: could not start ({exc})")
                continue
        started.append(item)
    for picture in await take_pictures(started):
        targets = picture.snapshot.targets
        if not any(t.view.healthy and not t.view.draining for t in targets):
            reasons.append(f"{picture.balanced.name}: no healthy target "
                           f"({len(targets)} configured)")
    return reasons
