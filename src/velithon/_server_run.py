"""Listeners, the accept loop, graceful shutdown, and the process entry point.

Order of a server's life (the contract in docs/internals.md):

1. lifespan startup (a failure stops here, before any socket is opened);
2. listen and accept; ``task_status.started()`` reports the bound ``(host, port)`` list;
3. on the shutdown trigger: close the listeners, close idle keep-alive connections, let
   in-flight requests finish (answered ``Connection: close``) for ``graceful_timeout``,
   then cancel the rest (503 where no response started);
4. lifespan shutdown, so app-owned background services outlive every request.

We do not use ``trio.serve_listeners``: it re-raises handler exceptions (one bad connection
would stop the server) and has no way to stop accepting when ``limit_concurrency`` is reached.
"""

from __future__ import annotations

import errno
import signal
import socket
from collections.abc import Callable

import trio

from ._server_config import ServerConfig
from ._server_http import HTTPConnection
from ._server_lifespan import Lifespan, LifespanFailure
from ._server_state import ASGIApp, ServerState, logger

__all__ = ["ServerStartupError", "open_listeners", "run_server", "serve_tcp"]

# accept() errors that mean "out of resources, try again shortly" (as trio.serve_listeners).
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_RETRY_DELAY = 0.1
_FORCE_GRACE = 1.0
# Watchdog period: a tenth of the shortest timeout, within these bounds.
_MIN_TICK = 0.01
_MAX_TICK = 0.5


class ServerStartupError(Exception):
    """The server could not start: lifespan startup failed or the address is unusable."""


async def open_listeners(config: ServerConfig) -> list[trio.SocketListener]:
    """Bind and listen on every address ``config.host`` resolves to.

    Raises:
        ServerStartupError: the host does not resolve or an address cannot be bound.
    """
    host = config.host or None
    try:
        infos = await trio.socket.getaddrinfo(
            host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ServerStartupError(f"cannot resolve host {config.host!r}: {exc}") from None
    listeners: list[trio.SocketListener] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, type_, proto, _, sockaddr in infos:
            if (family, sockaddr) in seen:
                continue
            seen.add((family, sockaddr))
            sock = trio.socket.socket(family, type_, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if config.reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(sockaddr)
                sock.listen(config.backlog)
            except OSError as exc:
                sock.close()
                raise ServerStartupError(
                    f"cannot listen on {sockaddr[0]}:{sockaddr[1]}: {exc.strerror or exc}"
                ) from None
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


class _Server:
    """Accepts connections on some listeners and serves them until drained."""

    def __init__(self, state: ServerState, listeners: list[trio.SocketListener]) -> None:
        self.state = state
        self.listeners = listeners
        limit = state.config.limit_concurrency
        self._slots = trio.Semaphore(limit) if limit is not None else None

    async def run(
        self, shutdown_trigger: trio.Event, *, task_status: trio.TaskStatus[list[tuple[str, int]]]
    ) -> None:
        try:
            async with trio.open_nursery() as outer:
                await outer.start(self._watchdog)
                await self._serve(shutdown_trigger, task_status)
                outer.cancel_scope.cancel()
        finally:
            for listener in self.listeners:
                listener.socket.close()

    async def _watchdog(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Enforce every connection's current deadline (see ``_server_http``)."""
        config = self.state.config
        shortest = min(
            config.header_timeout, config.keepalive_timeout, config.body_timeout,
            config.send_timeout,
        )
        tick = max(_MIN_TICK, min(_MAX_TICK, shortest / 10))
        task_status.started()
        while True:
            await trio.sleep(tick)
            self.state.check_deadlines()

    async def _serve(
        self, shutdown_trigger: trio.Event, task_status: trio.TaskStatus[list[tuple[str, int]]]
    ) -> None:
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                for listener in self.listeners:
                    await accepting.start(self._accept_loop, listener, connections)
                task_status.started(
                    [tuple(lst.socket.getsockname()[:2]) for lst in self.listeners]
                )
                await shutdown_trigger.wait()
                accepting.cancel_scope.cancel()
            await self._drain(connections)

    async def _drain(self, connections: trio.Nursery) -> None:
        for listener in self.listeners:
            listener.socket.close()  # new connects are refused from here on
        state = self.state
        state.begin_drain()
        with trio.move_on_after(state.config.graceful_timeout):
            await state.wait_drained()
            return
        logger.warning(
            "graceful timeout: cancelling %d unfinished connection(s)", len(state.connections)
        )
        state.force_close_all()
        with trio.move_on_after(_FORCE_GRACE):
            await state.wait_drained()
            return
        connections.cancel_scope.cancel()

    async def _accept_loop(
        self,
        listener: trio.SocketListener,
        connections: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept until cancelled; ``connections`` is the handler nursery (as in
        ``trio.serve_listeners``)."""
        slots = self._slots
        task_status.started()
        while True:
            if slots is not None:
                await slots.acquire()  # at the limit: stop accepting, the backlog queues
            try:
                stream = await listener.accept()
            except OSError as exc:
                if slots is not None:
                    slots.release()
                if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                    logger.error("accept failed (%s); retrying shortly", exc)
                    await trio.sleep(_ACCEPT_RETRY_DELAY)
                    continue
                raise
            except BaseException:
                if slots is not None:
                    slots.release()
                raise
            connections.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        """Serve one connection; nothing it does may stop the server."""
        try:
            conn = HTTPConnection(stream, self.state)
            self.state.register(conn)
            try:
                await conn.run()
            finally:
                self.state.unregister(conn)
        except Exception:
            logger.exception("connection handler crashed")
            await trio.aclose_forcefully(stream)
        finally:
            if self._slots is not None:
                self._slots.release()


async def serve_tcp(
    app: ASGIApp,
    config: ServerConfig | None = None,
    *,
    shutdown_trigger: trio.Event | None = None,
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` is set, then shut down gracefully.

    ``await nursery.start(serve_tcp, app, config)`` returns the bound ``(host, port)``
    list once the server accepts connections. Without a trigger it serves until cancelled
    (cancellation is abrupt: no drain, no lifespan shutdown).

    Raises:
        ServerStartupError: lifespan startup failed or the address could not be bound.
    """
    config = config if config is not None else ServerConfig()
    trigger = shutdown_trigger if shutdown_trigger is not None else trio.Event()
    failure: str | None = None
    async with trio.open_nursery() as nursery:
        lifespan = Lifespan(app, config.lifespan_timeout)
        await nursery.start(lifespan.run)
        try:
            await lifespan.startup()
        except LifespanFailure as exc:
            failure = f"lifespan startup failed: {exc}"
        else:
            try:
                listeners = await open_listeners(config)
            except ServerStartupError as exc:
                failure = str(exc)
            else:
                state = ServerState(app, config, lifespan.state)
                await _Server(state, listeners).run(trigger, task_status=task_status)
            await lifespan.shutdown()  # only after every connection has drained
        nursery.cancel_scope.cancel()  # the app's lifespan call, if it did not return
    if failure is not None:
        # raised outside the nursery so callers get it unwrapped (no ExceptionGroup)
        raise ServerStartupError(failure)


def run_server(
    app: ASGIApp,
    config: ServerConfig,
    *,
    on_started: Callable[[list[tuple[str, int]]], None] | None = None,
    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
) -> None:
    """Run a server in this thread until one of ``signals`` arrives (a second one forces).

    Raises:
        ServerStartupError: see :func:`serve_tcp`.
    """
    try:
        trio.run(_run_until_signal, app, config, on_started, signals)
    except BaseExceptionGroup as group:
        startup, rest = group.split(ServerStartupError)
        if startup is not None and rest is None:
            raise _first_leaf(startup) from None
        raise


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def _run_until_signal(
    app: ASGIApp,
    config: ServerConfig,
    on_started: Callable[[list[tuple[str, int]]], None] | None,
    signals: tuple[int, ...],
) -> None:
    trigger = trio.Event()
    with trio.open_signal_receiver(*signals) as received:
        async with trio.open_nursery() as nursery:

            async def watch(*, task_status: trio.TaskStatus[None]) -> None:
                task_status.started()
                async for signum in received:
                    if trigger.is_set():
                        logger.warning("second signal: stopping now")
                        nursery.cancel_scope.cancel()
                    else:
                        logger.info("%s received: shutting down", signal.Signals(signum).name)
                        trigger.set()

            async def serve(*, task_status: trio.TaskStatus[list[tuple[str, int]]]) -> None:
                await serve_tcp(app, config, shutdown_trigger=trigger, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained and shut down: stop watching signals

            await nursery.start(watch)
            addresses = await nursery.start(serve)
            if on_started is not None:
                on_started(addresses)
