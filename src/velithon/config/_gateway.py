"""A running gateway built from a configuration, and how a new configuration reaches it.

:func:`build_gateway` turns a :class:`GatewayConfig` into a ``Velithon`` app: routes as
``GatewayRoute``s in ``app.routes``, proxies as ``ProxyMiddleware``s in its middleware
(the first ``[[proxies]]`` table outermost), and a :class:`ConfigGateway` handle,
registered as one of the app's services so that its reload triggers (SIGHUP, file
polling) live exactly as long as the app.

:meth:`ConfigGateway.apply` carries out a :func:`plan_reload` plan in three phases, so
that nothing is half-applied and no request is dropped:

1. *prepare* (may fail, changes nothing visible): build the new and rebuilt facades
   and start their services (actors, health checks). A failure stops what was started
   and refuses the reload.
2. *switch*: live updates (targets added, weights set, removed targets drained: they
   get no new request), then the app's route list and middleware list are replaced in
   one step, without a checkpoint, so a request sees either the old set or the new one.
3. *finish* (bounded by ``[server] graceful_timeout``): removed targets are removed
   once their in-flight requests end; retired facades stop once the requests they
   accepted have ended.

Reloads are serialised: the next one starts after the previous one finished.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import trio

from .._app.application import Velithon
from .._facades.middleware import ProxyMiddleware
from .._facades.route import BalancedFacade, GatewayRoute
from ._issues import ConfigFileError
from ._load import load_config_file
from ._plan import (
    AddFacade,
    Kind,
    ReloadPlan,
    ReplaceFacade,
    SetLogLevel,
    UpdateTargets,
    plan_reload,
    target_weights,
)
from ._sections import GatewayConfig, ProxySection, RouteSection
from ._triggers import ReloadTriggers

__all__ = ["ConfigGateway", "MountAdmin", "ReloadRefused", "build_gateway"]

LOGGER = logging.getLogger("velithon.config")

#: ``mount_admin(app, path, *, token=None)``: puts the admin surface on ``app``
MountAdmin = Callable[..., object]


class ReloadRefused(Exception):
    """A new configuration that was not applied; the old one keeps serving."""


class ConfigGateway:
    """The handle of a gateway built from a configuration: ``app``, ``config``, ``reload()``.

    Also an app service: while the app runs, it reloads on SIGHUP (``reload_on_signal``),
    with ``watch`` when the file's content changes (checked every ``poll_interval``
    seconds), and when :meth:`request_reload` is called.
    """

    def __init__(self, app: Velithon, config: GatewayConfig, *, path: str | None = None,
                 watch: bool = False, reload_on_signal: bool = False,
                 poll_interval: float = 1.0, log_level_fixed: bool = False) -> None:
        self.app = app
        self.config = config
        self.path = path
        self.routes: dict[str, GatewayRoute] = {}
        self.proxies: dict[str, ProxyMiddleware] = {}
        self.reloads = 0
        self._log_level_fixed = log_level_fixed
        self._lock = trio.Lock()
        self._triggers = ReloadTriggers(
            path if watch else None, self._reload_logged, signal=reload_on_signal,
            poll_interval=poll_interval)

    def __repr__(self) -> str:
        return (f"<ConfigGateway {self.path or '(in memory)'} [{len(self.routes)} routes, "
                f"{len(self.proxies)} proxies, {self.reloads} reloads]>")

    # ---- the service: reload triggers ------------------------------------------------

    async def run_service(self, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._triggers.run(task_status=task_status)

    def request_reload(self) -> None:
        """Ask the service for a reload and return at once (sync: for a signal handler
        that does more than this, such as ``run_server(..., on_reload=...)``, which
        reloads the TLS certificate on the same SIGHUP).

        The reload runs in the service's task, after any reload under way, and logs its
        outcome as a trigger's does; a request while one is already waiting adds nothing.
        A request made before the app runs is carried out once it does.
        """
        self._triggers.ask()

    async def _reload_logged(self) -> None:
        """A trigger fired: reload, and say in one line what happened."""
        try:
            await self.reload()
        except (ConfigFileError, ReloadRefused) as exc:
            LOGGER.error("reload refused, the previous configuration keeps serving: %s",
                         " | ".join(str(exc).splitlines()))
        except Exception:  # a bug: logged in full, and the next trigger still reloads
            LOGGER.exception("reload failed part-way; the gateway may serve a mix of the "
                             "old and new configuration until the next reload")

    # ---- reloading ----------------------------------------------------------------

    async def reload(self) -> ReloadPlan:
        """Read the file again and apply it (see :meth:`apply`).

        Raises:
            ConfigFileError: the file is unreadable or invalid (nothing changed).
            ReloadRefused: see :meth:`apply`.
        """
        if self.path is None:
            raise ReloadRefused("this gateway was not built from a file")
        return await self.apply(load_config_file(self.path))

    async def apply(self, new: GatewayConfig) -> ReloadPlan:
        """Move the running gateway to ``new`` (see the module docstring); logs one INFO
        line saying what changed.

        Raises:
            ReloadRefused: ``new`` changes what applies at start-up only, or a new
                route's service could not start. Nothing was changed.
        """
        async with self._lock:
            plan = plan_reload(self.config, new)
            if plan.refused:
                raise ReloadRefused(plan.describe())
            built = await self._prepare(plan, new)
            retired, removals = await self._switch(plan, new, built)
            self.config = new
            self.reloads += 1
            LOGGER.info("reloaded %s: %s", self.path or "configuration", plan.describe())
            await self._finish(retired, removals)
            return plan

    async def _prepare(self, plan: ReloadPlan, new: GatewayConfig) -> _Built:
        new_routes = {s.key: s for s in new.routes}
        new_proxies = {s.key: s for s in new.proxies}
        built = _Built()
        for action in plan.actions:
            if isinstance(action, (AddFacade, ReplaceFacade)):
                if action.kind == "route":
                    built.routes[action.key] = new_routes[action.key].build()
                else:
                    built.proxies[action.key] = new_proxies[action.key].build()
        host = self.app.service_host
        if host is None:
            return built
        started: list[BalancedFacade] = []
        try:
            for facade in built.facades():
                await host.ensure_started(facade)
                started.append(facade)
        except RuntimeError as exc:  # ServiceStartError, or the app is shutting down
            with trio.CancelScope(shield=True):
                for facade in started:
                    await host.stop(facade)
            raise ReloadRefused(f"a new route or proxy could not start: {exc}") from exc
        return built

    async def _switch(self, plan: ReloadPlan, new: GatewayConfig, built: _Built
                      ) -> tuple[list[BalancedFacade], list[tuple[BalancedFacade, str]]]:
        removals: list[tuple[BalancedFacade, str]] = []
        sections: dict[tuple[Kind, str], RouteSection | ProxySection] = {
            ("route", s.key): s for s in new.routes}
        sections.update({("proxy", s.key): s for s in new.proxies})
        for action in plan.actions:
            if isinstance(action, UpdateTargets):
                # Reconciled against what the facade runs now, which admin actions may
                # have changed since the last load: it ends with the file's targets.
                facade = self._facade(action.kind, action.key)
                wanted = target_weights(sections[action.kind, action.key])
                running = facade.target_weights
                # An admin action may change the targets while this awaits: a target
                # it already added or removed is what the file wants anyway (ValueError:
                # "already present" / "unknown target"), and the weights are set from
                # the targets as they are at that moment.
                for url, weight in wanted.items():
                    if url not in running:
                        with contextlib.suppress(ValueError):
                            await facade.add_target(url, weight)
                if any(running.get(url, w) != w for url, w in wanted.items()):
                    for last_try in (False, False, True):
                        weights = {**facade.target_weights, **wanted}
                        try:
                            await facade.set_weights([weights[url] for url in facade.targets])
                            break
                        except ValueError:  # the target list changed under us: again
                            if last_try:
                                raise
                for url in running:
                    if url not in wanted:
                        try:
                            await facade.drain(url)
                        except ValueError:
                            continue  # removed meanwhile
                        removals.append((facade, url))
            elif isinstance(action, SetLogLevel) and not self._log_level_fixed:
                logging.getLogger().setLevel(action.level.upper())
        old_facades: list[BalancedFacade] = [*self.routes.values(), *self.proxies.values()]
        routes = {s.key: built.routes.get(s.key) or self.routes[s.key] for s in new.routes}
        proxies = {s.key: built.proxies.get(s.key) or self.proxies[s.key] for s in new.proxies}
        # -- no checkpoint from here: requests see the old lists or the new ones --
        _replace_items(self.app.routes, list(self.routes.values()), list(routes.values()))
        _replace_items(self.app.user_middleware, list(self.proxies.values()),
                       list(proxies.values()))
        self.routes, self.proxies = routes, proxies
        kept = {id(f) for f in (*routes.values(), *proxies.values())}
        return [f for f in old_facades if id(f) not in kept], removals

    async def _finish(self, retired: Sequence[BalancedFacade],
                      removals: Sequence[tuple[BalancedFacade, str]]) -> None:
        grace = self.config.server.graceful_timeout
        host = self.app.service_host

        async def retire(facade: BalancedFacade) -> None:
            with trio.move_on_after(grace):
                await facade.wait_idle()
            if host is not None:
                await host.stop(facade)

        async def remove(facade: BalancedFacade, url: str) -> None:
            with contextlib.suppress(ValueError):  # an admin action removed it first
                await facade.remove_target(url, drain_timeout=grace)

        async with trio.open_nursery() as nursery:
            for facade, url in removals:
                nursery.start_soon(remove, facade, url)
            for facade in retired:
                nursery.start_soon(retire, facade)

    def _facade(self, kind: Kind, key: str) -> BalancedFacade:
        return self.routes[key] if kind == "route" else self.proxies[key]


class _Built:
    """The facades a reload builds before it switches to them."""

    def __init__(self) -> None:
        self.routes: dict[str, GatewayRoute] = {}
        self.proxies: dict[str, ProxyMiddleware] = {}

    def facades(self) -> list[BalancedFacade]:
        return [*self.routes.values(), *self.proxies.values()]


def _replace_items(items: list[Any], old: Sequence[object], new: Sequence[object]) -> None:
    """Put ``new`` where ``old`` was in ``items`` (at the first old one's place, or at the
    end), leaving everything else in its order; one slice assignment."""
    ours = {id(x) for x in old}
    places = [i for i, x in enumerate(items) if id(x) in ours]
    at = places[0] if places else len(items)
    rest = [x for x in items if id(x) not in ours]
    items[:] = [*rest[:at], *new, *rest[at:]]


def build_gateway(config: GatewayConfig, *, path: str | os.PathLike[str] | None = None,
                  mount_admin: MountAdmin | None = None, watch: bool = False,
                  reload_on_signal: bool = False, poll_interval: float = 1.0,
                  log_level_fixed: bool = False) -> ConfigGateway:
    """Build the app a configuration describes; returns its handle (``.app``).

    Args:
        config: a loaded configuration (:func:`load_config_file`).
        path: the file it came from; :meth:`ConfigGateway.reload` reads it again.
        mount_admin: ``mount_admin(app, path, *, token=None)``, called once when
            ``[admin] enabled`` (the admin surface is a separate package).
        watch: reload when the file's content changes (polled every ``poll_interval``
            seconds while the app runs).
        reload_on_signal: reload on SIGHUP while the app runs (main thread only). Under
            a server that also handles SIGHUP (``run_server`` with TLS reloads its
            certificate on it), leave this off and pass
            ``on_reload=gateway.request_reload`` to the server instead: a signal goes
            to one receiver only, the one opened last, which would be the gateway's.
        log_level_fixed: the command line set the log level: ``[logging] level`` is
            not applied on reload.
    """
    if not poll_interval > 0 or math.isinf(poll_interval):
        raise ValueError(f"poll_interval must be a positive number of seconds, "
                         f"got {poll_interval!r}")
    routes = [section.build() for section in config.routes]
    proxies = [section.build() for section in config.proxies]
    app = Velithon(routes=routes, middleware=proxies,
                   shutdown_grace=config.server.graceful_timeout)
    gateway = ConfigGateway(app, config, path=None if path is None else os.fspath(path),
                            watch=watch, reload_on_signal=reload_on_signal,
                            poll_interval=poll_interval, log_level_fixed=log_level_fixed)
    gateway.routes = {s.key: r for s, r in zip(config.routes, routes, strict=True)}
    gateway.proxies = {s.key: p for s, p in zip(config.proxies, proxies, strict=True)}
    app.services.append(gateway)
    if config.admin.enabled:
        if mount_admin is not None:
            mount_admin(app, config.admin.path, token=config.admin.token)
        else:
            LOGGER.warning("[admin] is enabled but no admin surface was given to "
                           "build_gateway; %s is not served", config.admin.path)
    return gateway

