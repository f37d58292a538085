"""``ServiceHost``: one trio nursery that owns every background service of an app.

Why: gateway routes and proxy middleware own long-lived actors (health probes,
routers, pools). Those tasks need a parent that outlives single requests, which in
ASGI is the lifespan task. The host is that parent. It is opened by
``open_service_host()`` (an async context manager) — ``Velithon`` does it on
lifespan start-up or in ``app.run_services()``.

A *service* is any object with
``async def run_service(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None``
that calls ``task_status.started()`` when ready and runs until cancelled.

``ensure_started(service)`` starts a service once. It is idempotent and safe under
concurrency: concurrent callers of a service that is starting wait for that one
start; if it fails, every waiter gets a ``ServiceStartError`` and a later call tries
again. Services are keyed by identity, so unhashable objects are fine.

Error handling: a service that crashes *after* it started is logged and forgotten
(the next ``ensure_started`` restarts it); it never takes the host or the other
services down. Cancellation always propagates.

``stop(service)`` ends one service while the others run on: its task is cancelled and
the call returns once the service has finished its cleanup. Callers that swap a service
for a new one (a reloaded gateway route) first make sure no request still uses it.

Shutdown: the host stops accepting new starts, waits (bounded by
``shutdown_grace``) until no request that entered through ``hold()`` is still in
flight, then cancels the nursery. Services must do their own cleanup under
``trio.move_on_after(..., shield=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import attrs
import trio

from .._structured import StartedFlag

LOGGER = logging.getLogger("velithon.services")


class Service(Protocol):
    async def run_service(self, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...


def is_service(obj: object) -> bool:
    """Whether ``obj`` follows the service protocol (has a callable ``run_service``)."""
    return callable(getattr(obj, "run_service", None))


class ServiceStartError(RuntimeError):
    """A service failed before calling ``task_status.started()``."""


@attrs.frozen
class ServiceHostStatistics:
    started: int
    starting: int
    in_flight: int
    closing: bool


@attrs.define(eq=False)
class _Entry:
    service: Any
    done: trio.Event = attrs.field(factory=trio.Event)
    started: bool = False
    error: BaseException | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    stopping: bool = False
    finished: trio.Event = attrs.field(factory=trio.Event)


class ServiceHost:
    """Starts services into one nursery and tracks requests that may use them."""

    def __init__(self, nursery: trio.Nursery, *, shutdown_grace: float = 5.0) -> None:
        self._nursery = nursery
        self.shutdown_grace = shutdown_grace
        self._entries: dict[int, _Entry] = {}
        self._in_flight = 0
        self._idle: trio.Event | None = None  # created only while someone waits
        self._closing = False
        self._drained = False

    # -- starting services -------------------------------------------------------

    def is_started(self, service: object) -> bool:
        entry = self._entries.get(id(service))
        return entry is not None and entry.started

    @property
    def services(self) -> tuple[Any, ...]:
        """The services currently running, in start order."""
        return tuple(e.service for e in self._entries.values() if e.started)

    async def ensure_started(self, service: object) -> None:
        """Start ``service`` unless it runs already; return once it is ready.

        Returns without a checkpoint when the service is already running (this is
        on the per-request path).

        Raises:
            TypeError: ``service`` has no ``run_service``.
            ServiceStartError: the start failed (in this call or the one it waited for).
            RuntimeError: the host is shutting down.
        """
        key = id(service)
        while True:
            entry = self._entries.get(key)
            if entry is None:
                break
            if entry.started:
                return
            await entry.done.wait()
            if entry.error is not None:
                raise ServiceStartError(
                    f"service {service!r} failed to start: {entry.error}") from entry.error
            # The starter was cancelled (or the service already stopped): look again.
        if self._closing:
            raise RuntimeError(f"cannot start {service!r}: the service host is shutting down")
        if not is_service(service):
            raise TypeError(f"{service!r} is not a service: it has no run_service() method")
        entry = _Entry(service)
        self._entries[key] = entry
        try:
            await self._nursery.start(self._run, entry)
        except Exception as exc:
            self._forget(entry)
            entry.error = exc
            entry.done.set()
            raise ServiceStartError(f"service {service!r} failed to start: {exc}") from exc
        except BaseException:
            self._forget(entry)
            entry.done.set()
            raise
        entry.started = True
        entry.done.set()

    def _forget(self, entry: _Entry) -> None:
        key = id(entry.service)
        if self._entries.get(key) is entry:
            del self._entries[key]

    async def _run(self, entry: _Entry, *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        status = StartedFlag(task_status)
        try:
            with entry.scope:
                await entry.service.run_service(task_status=status)
        except Exception:
            if not status.called:
                raise
            LOGGER.exception("service %r crashed; it will be restarted on next use",
                             entry.service)
        else:
            if status.called and not entry.stopping:
                LOGGER.warning("service %r returned; it will be restarted on next use",
                               entry.service)
        finally:
            if status.called:
                self._forget(entry)
            entry.finished.set()

    async def stop(self, service: object) -> None:
        """Cancel ``service`` and return once its ``run_service`` has returned.

        Does nothing when ``service`` is not running. A service that is still starting
        is stopped once its start completes. A later ``ensure_started`` starts it anew.
        """
        entry = self._entries.get(id(service))
        if entry is None:
            await trio.lowlevel.checkpoint()
            return
        if not entry.started:
            await entry.done.wait()
            if not entry.started:
                return
        entry.stopping = True
        entry.scope.cancel()
        await entry.finished.wait()

    # -- requests in flight ------------------------------------------------------

    def hold(self) -> None:
        """Count one request that may use services (pair with ``release``)."""
        self._in_flight += 1

    def release(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._idle is not None:
            self._idle.set()
            self._idle = None

    async def wait_idle(self) -> None:
        """Wait until no held request is in flight."""
        if self._in_flight == 0:
            await trio.lowlevel.checkpoint()
            return
        if self._idle is None:
            self._idle = trio.Event()
        await self._idle.wait()

    async def drain(self) -> None:
        """Refuse new starts and wait, at most ``shutdown_grace`` once, for held requests."""
        self._closing = True
        if self._drained:
            return
        with trio.move_on_after(self.shutdown_grace, shield=True):
            await self.wait_idle()
        self._drained = True

    # -- introspection -----------------------------------------------------------

    def statistics(self) -> ServiceHostStatistics:
        started = sum(1 for e in self._entries.values() if e.started)
        return ServiceHostStatistics(started=started,
                                     starting=len(self._entries) - started,
                                     in_flight=self._in_flight, closing=self._closing)

    def __repr__(self) -> str:
        s = self.statistics()
        return (f"<ServiceHost [services: {s.started} running, {s.starting} starting | "
                f"requests: {s.in_flight} in flight]{' closing' if s.closing else ''}>")


@asynccontextmanager
async def open_service_host(*, shutdown_grace: float = 5.0) -> AsyncIterator[ServiceHost]:
    """Own a ``ServiceHost`` for the duration of the block (see the module docstring).

    An exception from the block is re-raised as is (not wrapped in an exception group).
    """
    if shutdown_grace < 0:
        raise ValueError(f"shutdown_grace must be >= 0, got {shutdown_grace!r}")
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        host = ServiceHost(nursery, shutdown_grace=shutdown_grace)
        try:
            yield host
        except Exception as exc:
            failure = exc
        finally:
            await host.drain()
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
