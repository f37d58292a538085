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

Stop signals follow one policy (:func:`stop_request`), shared with the ``--workers``
supervisor: SIGTERM and a first SIGINT drain gracefully; SIGTERM again changes nothing,
because service managers send it to a whole process group and a process may receive it
more than once for one stop; a second SIGINT (an impatient Ctrl-C) or SIGQUIT stops at once.

A TLS server (``ServerConfig.tls``) checks its certificate before anything else starts,
reloads it on SIGHUP under :func:`run_server`, and may run a second, plain listener that
redirects to https (:mod:`._redirect`).
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import trio

from .._http11.llhttp import resolve_parser, using_parser
from .._structured import first_leaf
from .._types import ASGIApp
from ._collector import tune_collector
from ._config import ServerConfig
from ._http import connection_class
from ._lifespan import Lifespan, LifespanFailure
from ._redirect import HTTPSRedirect
from ._state import ServerState, access_logger, logger
from ._tls import TLSCertificates, TLSConfigError

__all__ = [
    "RELOAD_SIGNALS",
    "STOP_SIGNALS",
    "ServerStartupError",
    "bind_sockets",
    "LogFormatter",
    "configure_logging",
    "ignore_reload_signals",
    "load_certificates",
    "open_listeners",
    "run_server",
    "serve_tcp",
    "stop_request",
]

# accept() errors that mean "out of resources, try again shortly" (as trio.serve_listeners).
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_RETRY_DELAY = 0.1
_FORCE_GRACE = 1.0
# Watchdog period: a tenth of the shortest timeout, within these bounds.
_MIN_TICK = 0.01
_MAX_TICK = 0.5
_SIGQUIT: int | None = getattr(signal, "SIGQUIT", None)  # absent on Windows
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, _SIGQUIT) if s is not None)
#: Signals that reload the TLS certificate (and call ``run_server``'s ``on_reload``).
RELOAD_SIGNALS = tuple(s for s in (getattr(signal, "SIGHUP", None),) if s is not None)
# HTTP client libraries log every request at INFO: a gateway's health probes would flood the log.
_CHATTY_LOGGERS = ("httpx", "httpcore")


def ignore_reload_signals() -> None:
    """Ignore the reload signals (SIGHUP) until a server's own receiver takes them over.

    A command that will serve calls this first, before it imports the app or reads its
    configuration: SIGHUP's default action ends the process, and a reload sent while it
    starts (a service manager's ``reload`` right after ``start``) must not kill it. The
    server's receiver replaces the disposition while it runs and puts it back after.
    """
    for signum in RELOAD_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class ServerStartupError(Exception):
    """The server could not start: lifespan startup failed, the address is unusable, or
    the TLS certificate or key cannot be used."""


def load_certificates(config: ServerConfig) -> TLSCertificates | None:
    """The TLS certificate ``config`` asks for, loaded and checked; ``None`` without TLS.

    Raises:
        ServerStartupError: a TLS file is missing, unreadable, mismatched or expired.
    """
    if config.tls is None:
        return None
    try:
        return TLSCertificates(config.tls)
    except TLSConfigError as exc:
        raise ServerStartupError(str(exc)) from None


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
    return _wrap(_bind_all(config, infos))


def bind_sockets(config: ServerConfig) -> list[socket.socket]:
    """Blocking twin of :func:`open_listeners` returning plain listening sockets.

    A supervising process binds once with it and hands the sockets to its workers, so a
    second server on the same port fails to bind instead of silently sharing it.

    Raises:
        ServerStartupError: the host does not resolve or an address cannot be bound.
    """
    try:
        infos = socket.getaddrinfo(
            config.host or None, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ServerStartupError(f"cannot resolve host {config.host!r}: {exc}") from None
    return _bind_all(config, infos)


def _bind_all(config: ServerConfig, infos: Sequence[tuple[Any, ...]]) -> list[socket.socket]:
    """Bind and listen on each distinct address of ``infos``; all or none stay open."""
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, type_, proto, _, sockaddr in infos:
            if (family, sockaddr) in seen:
                continue
            seen.add((family, sockaddr))
            sock = socket.socket(family, type_, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if config.reuse_port:  # explicit opt-in only: it lets other servers share the port
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)
                sock.listen(config.backlog)
            except OSError as exc:
                sock.close()
                raise ServerStartupError(
                    f"cannot listen on {sockaddr[0]!s}:{sockaddr[1]}: {exc.strerror or exc}"
                ) from None
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _wrap(sockets: Sequence[socket.socket]) -> list[trio.SocketListener]:
    """Trio listeners over listening stdlib sockets (bound here or inherited)."""
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]


class _Server:
    """Accepts connections on some listeners and serves them until drained."""

    def __init__(self, state: ServerState, listeners: list[trio.SocketListener]) -> None:
        self.state = state
        self.listeners = listeners
        limit = state.config.limit_concurrency
        self._slots = trio.Semaphore(limit) if limit is not None else None
        self._connection_class = connection_class(
            resolve_parser(state.config.http), tls=state.tls is not None)

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
        timeouts = [config.header_timeout, config.keepalive_timeout, config.body_timeout,
                    config.send_timeout]
        if self.state.tls is not None:
            timeouts.append(self.state.tls.config.handshake_timeout)
        shortest = min(timeouts)
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
            conn = self._connection_class(stream, self.state)
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
    sockets: Sequence[socket.socket] | None = None,
    redirect_sockets: Sequence[socket.socket] | None = None,
    certificates: TLSCertificates | None = None,
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` is set, then shut down gracefully.

    ``await nursery.start(serve_tcp, app, config)`` returns the bound ``(host, port)``
    list once the server accepts connections. Without a trigger it serves until cancelled
    (cancellation is abrupt: no drain, no lifespan shutdown).

    ``sockets``, when given, are already listening (a supervisor bound them once for all
    its worker processes); they are served instead of binding ``config.host:config.port``,
    and this function owns them: it closes them when it returns. ``redirect_sockets`` are
    the same for the HTTPS redirect listener (``TLSConfig.redirect_port``).

    TLS: ``certificates`` is what the server presents (keep it to call its ``reload()``);
    without it, the server loads ``config.tls`` itself, before the lifespan starts.

    Raises:
        ServerStartupError: the TLS files cannot be used, lifespan startup failed or the
            address could not be bound.
    """
    config = config if config is not None else ServerConfig()
    trigger = shutdown_trigger if shutdown_trigger is not None else trio.Event()
    failure: str | None = None
    owned = [*(sockets or ()), *(redirect_sockets or ())]
    try:
        if certificates is None:
            certificates = load_certificates(config)
        # the app's tasks (lifespan, services, upstream pools) use the server's parser
        with using_parser(resolve_parser(config.http)):
            failure = await _serve(app, config, trigger, _Sockets(sockets, redirect_sockets),
                                   certificates, task_status)
    finally:
        for sock in owned:
            sock.close()  # no-op once a listener closed it
    if failure is not None:
        # raised outside the nursery so callers get it unwrapped (no ExceptionGroup)
        raise ServerStartupError(failure)


class _Sockets(NamedTuple):
    """Already-listening sockets to serve, if a supervisor bound them."""

    main: Sequence[socket.socket] | None
    redirect: Sequence[socket.socket] | None


async def _serve(app: ASGIApp, config: ServerConfig, trigger: trio.Event, sockets: _Sockets,
                 certificates: TLSCertificates | None,
                 task_status: trio.TaskStatus[list[tuple[str, int]]]) -> str | None:
    """Run the lifespan and the server; return why startup failed, if it did."""
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
                listeners, redirects = await _open_all(config, sockets, certificates)
            except ServerStartupError as exc:
                failure = str(exc)
            else:
                state = ServerState(app, config, lifespan.state, tls=certificates)
                await _run_servers(state, listeners, redirects, trigger, task_status)
            await lifespan.shutdown()  # only after every connection has drained
        nursery.cancel_scope.cancel()  # the app's lifespan call, if it did not return
    return failure


async def _open_all(config: ServerConfig, sockets: _Sockets,
                    certificates: TLSCertificates | None
                    ) -> tuple[list[trio.SocketListener], list[trio.SocketListener]]:
    """The server's listeners and, when TLS asks for one, the redirect listener's."""
    listeners = await open_listeners(config) if sockets.main is None else _wrap(sockets.main)
    port = certificates.config.redirect_port if certificates is not None else None
    if port is None:
        return listeners, []
    try:
        if sockets.redirect is not None:
            return listeners, _wrap(sockets.redirect)
        return listeners, await open_listeners(config.replace(port=port, tls=None))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise


async def _run_servers(state: ServerState, listeners: list[trio.SocketListener],
                       redirects: list[trio.SocketListener], trigger: trio.Event,
                       task_status: trio.TaskStatus[list[tuple[str, int]]]) -> None:
    """The server, and beside it the HTTPS redirect server when there is one."""
    async with trio.open_nursery() as nursery:
        if redirects:
            https_port = listeners[0].socket.getsockname()[1]
            redirect = ServerState(HTTPSRedirect(https_port), state.config.replace(tls=None), {})
            bound = await nursery.start(_Server(redirect, redirects).run, trigger)
            for host, port in bound:
                logger.info("redirecting http://%s:%d to https port %d", host, port, https_port)
        await _Server(state, listeners).run(trigger, task_status=task_status)


def stop_request(signum: int, stopping: bool) -> Literal["drain", "now"] | None:
    """What a stop signal asks of a server that is (or is not yet) ``stopping``.

    ``"drain"``: begin the graceful shutdown. ``"now"``: stop at once, dropping what is in
    flight. ``None``: nothing new, the drain already under way continues. SIGTERM never
    forces: one ``systemctl stop`` or ``kill -- -PGID`` can deliver it twice to the same
    process (directly, and forwarded by a supervisor), and neither copy means "hurry".
    """
    if signum == _SIGQUIT or (stopping and signum == signal.SIGINT):
        return "now"
    return None if stopping else "drain"


class LogFormatter(logging.Formatter):
    """``2025-01-31T12:00:00.123Z INFO velithon.target: message``: UTC, milliseconds.

    The date and time are formatted once per second (an access log writes many lines
    in one), as the server's ``Date`` header is.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(record.msecs):03d}Z"


def configure_logging(level: int | str, *, access_log: bool = False) -> None:
    """Log to stderr at ``level``, each line stamped and named (:class:`LogFormatter`).

    HTTP client libraries stay at WARNING unless debugging (a gateway's health probes
    would log a line each). With ``access_log`` the ``velithon.access`` logger logs at
    INFO whatever ``level`` is: asking for an access log is asking for its lines.

    Every server process (the single one, a supervisor, each worker) calls this, so all of
    them log alike; a worker starts with a fresh interpreter and inherits no configuration.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(LogFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    if access_log:
        access_logger.setLevel(logging.INFO)


def run_server(
    app: ASGIApp,
    config: ServerConfig,
    *,
    on_started: Callable[[list[tuple[str, int]]], None] | None = None,
    sockets: Sequence[socket.socket] | None = None,
    redirect_sockets: Sequence[socket.socket] | None = None,
    signals: tuple[int, ...] = STOP_SIGNALS,
    reload_signals: tuple[int, ...] = RELOAD_SIGNALS,
    on_reload: Callable[[], object] | None = None,
    certificates: TLSCertificates | None = None,
) -> None:
    """Run a server in this thread until one of ``signals`` stops it (see :func:`stop_request`).

    ``sockets`` and ``redirect_sockets`` are already-listening sockets to serve, as in
    :func:`serve_tcp`.

    ``reload_signals`` (SIGHUP) reload the TLS certificate, then call ``on_reload`` (in
    the trio thread; a second reload handler, such as a configuration reload, goes
    there). A server without TLS and without ``on_reload`` still catches them, and logs
    that it has nothing to reload: SIGHUP's default action would end the process, and a
    service manager's "reload" must not stop a server. A handler the app opens for the
    same signal later (trio delivers a signal to the receiver opened last) takes it over:
    such an app reloads the certificate itself, through the ``certificates`` it was given
    (pass them here too; without them the server loads ``config.tls``).

    Raises:
        ServerStartupError: see :func:`serve_tcp`.
    """
    if certificates is None:
        certificates = load_certificates(config)  # a bad certificate stops us before anything
    reload = _Reload(certificates, reload_signals, on_reload)
    try:
        trio.run(_run_until_signal, app, config, on_started,
                 _Sockets(sockets, redirect_sockets), signals, reload)
    except BaseExceptionGroup as group:
        startup, rest = group.split(ServerStartupError)
        if startup is not None and rest is None:
            raise first_leaf(startup) from None
        raise


class _Reload(NamedTuple):
    """What a reload signal does: reload the certificate, then call ``on_reload``."""

    certificates: TLSCertificates | None
    signals: tuple[int, ...]
    on_reload: Callable[[], object] | None

    def __call__(self, name: str) -> None:
        if self.certificates is None and self.on_reload is None:
            logger.info("%s received: nothing to reload (no TLS certificate, no reload "
                        "handler); still serving", name)
            return
        logger.info("%s received: reloading", name)
        if self.certificates is not None:
            self.certificates.reload()
        if self.on_reload is not None:
            try:
                self.on_reload()
            except Exception:  # a failed reload must not stop a serving server
                logger.exception("reload failed; still serving")


async def _run_until_signal(
    app: ASGIApp,
    config: ServerConfig,
    on_started: Callable[[list[tuple[str, int]]], None] | None,
    sockets: _Sockets,
    signals: tuple[int, ...],
    reload: _Reload,
) -> None:
    trigger = trio.Event()
    with trio.open_signal_receiver(*signals, *reload.signals) as received:
        async with trio.open_nursery() as nursery:

            async def watch(*, task_status: trio.TaskStatus[None]) -> None:
                task_status.started()
                async for signum in received:
                    name = signal.Signals(signum).name
                    if signum in reload.signals:
                        reload(name)
                        continue
                    action = stop_request(signum, trigger.is_set())
                    if action == "now":
                        logger.warning("%s received: stopping now", name)
                        nursery.cancel_scope.cancel()
                    elif action == "drain":
                        logger.info("%s received: shutting down gracefully", name)
                        trigger.set()
                    else:
                        logger.info("%s received: already shutting down gracefully", name)

            async def serve(*, task_status: trio.TaskStatus[list[tuple[str, int]]]) -> None:
                await serve_tcp(
                    app, config, shutdown_trigger=trigger, sockets=sockets.main,
                    redirect_sockets=sockets.redirect, certificates=reload.certificates,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()  # drained and shut down: stop watching signals

            await nursery.start(watch)
            addresses = await nursery.start(serve)
            tune_collector(config.gc_threshold)
            if on_started is not None:
                on_started(addresses)
