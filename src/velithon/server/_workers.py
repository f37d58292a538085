"""``--workers N``: N server processes accepting from one listening socket.

The parent (the supervisor) binds and listens once, then hands the listening sockets to
every worker, as gunicorn and uvicorn do. Binding once is what makes a busy port an error:
with ``SO_REUSEPORT`` on every worker, a second server started on the same port would bind
too and the kernel would silently split the traffic between two different apps. Binding in
the parent also lets ``--port 0`` pick one port that every worker shares.

Workers start with ``multiprocessing``'s *spawn* context: each re-imports the app from its
``module:attr`` string and receives the sockets as pickled file descriptors (the spawn
machinery duplicates them into the child). The supervisor waits until every worker reports
it is serving, then watches them: a worker that crashes is restarted (at most
``_MAX_RESTARTS`` within ``_RESTART_WINDOW`` seconds), a worker whose startup fails stops
everything.

Signals follow :func:`~velithon.server._run.stop_request`. A signal sent to the process
group reaches the supervisor and every worker; the supervisor forwards what it decides
(SIGTERM to drain, SIGQUIT to stop at once), so a worker may see the same request twice,
which the policy makes harmless. Workers ignore SIGINT: Ctrl-C in a terminal reaches the
whole group, and counting it in each worker as well as in the supervisor would turn one
Ctrl-C into two.

SIGHUP asks for a reload: the supervisor forwards it to every worker, and repeats it to a
worker that was still starting when it arrived. The supervisor itself never dies of it. A
worker's server handles it as :func:`~velithon.server._run.run_server` does: it reloads
the TLS certificate, then calls the ``on_reload`` of a :class:`ReloadableApp` the loader
returned (``velithon gateway``'s configuration reload). Each worker tells the supervisor,
when it reports it is serving, whether it has anything to reload; when they have not (no
TLS, a plain app), the supervisor logs so once per SIGHUP instead of forwarding it, and
the workers keep ignoring the signal (one copy sent to the whole group changes nothing).

The supervisor loads the TLS certificate once before starting any worker (each worker then
loads its own), so a bad one stops the start-up with one line, as in a single process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
from collections import deque
from collections.abc import Callable
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import attrs
import trio

from .._types import ASGIApp
from ._config import ServerConfig
from ._run import (
    RELOAD_SIGNALS,
    STOP_SIGNALS,
    ServerStartupError,
    bind_sockets,
    configure_logging,
    load_certificates,
    run_server,
    stop_request,
)
from ._state import logger

__all__ = ["ReloadableApp", "run_workers"]

STARTUP_FAILED = 3
_MAX_RESTARTS = 5
_RESTART_WINDOW = 60.0
# After an immediate stop request, how long workers get before SIGKILL (they are told to
# cancel everything, so only a worker stuck outside trio needs this).
_KILL_AFTER = 5.0
_WORKER_SIGNALS = tuple(s for s in STOP_SIGNALS if s != signal.SIGINT)
_SIGHUP: int | None = getattr(signal, "SIGHUP", None)  # absent on Windows
# blocked from a worker's birth until it has set its own dispositions
_BLOCKED_AT_SPAWN = (*STOP_SIGNALS, *RELOAD_SIGNALS)


class _Ready(NamedTuple):
    """What a worker reports once it serves: the bound addresses, and whether a SIGHUP
    has anything to reload in it (a TLS certificate, an ``on_reload``)."""

    addresses: list[tuple[str, int]]
    reloadable: bool


@attrs.frozen
class ReloadableApp:
    """What a worker's loader returns for an app with more to reload on SIGHUP than the
    TLS certificate: the app, and the sync callable its server calls on each SIGHUP
    (``run_server``'s ``on_reload``)."""

    app: ASGIApp
    on_reload: Callable[[], object]


def _worker_main(
    loader: Callable[[str], Any],
    app_path: str,
    config: ServerConfig,
    sockets: list[socket.socket],
    redirect_sockets: list[socket.socket] | None,
    ready: Connection,
    log_level: int,
) -> None:
    """Entry point of one worker process.

    The process starts with the stop signals blocked (see :meth:`_Supervisor.spawn`) and
    ignores them outside the server's own handling: one stop request often arrives twice
    (to the group, and forwarded by the supervisor), and a copy landing while the worker
    starts or exits would otherwise kill it with the default action, turning a clean stop
    into a crash. A request that arrives while the worker is still starting is not lost:
    the supervisor repeats it once the worker reports it is serving.
    """
    for signum in _BLOCKED_AT_SPAWN:
        signal.signal(signum, signal.SIG_IGN)  # also discards copies pending since birth
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED_AT_SPAWN)
    configure_logging(log_level, access_log=config.access_log)
    try:
        loaded = loader(app_path)
        app, on_reload = ((loaded.app, loaded.on_reload) if isinstance(loaded, ReloadableApp)
                          else (loaded, None))
        reloadable = on_reload is not None or config.tls is not None

        def started(addresses: list[tuple[str, int]]) -> None:
            ready.send(_Ready(addresses, reloadable))

        # nothing to reload: SIGHUP stays ignored here, the supervisor says so once
        run_server(app, config, on_started=started, sockets=sockets,
                   redirect_sockets=redirect_sockets, signals=_WORKER_SIGNALS,
                   reload_signals=RELOAD_SIGNALS if reloadable else (), on_reload=on_reload)
    except ServerStartupError as exc:
        logger.error("worker startup failed: %s", exc)
        raise SystemExit(STARTUP_FAILED) from None


class _Supervisor:
    """Keeps ``workers`` worker processes running until asked to stop."""

    def __init__(
        self,
        loader: Callable[[str], Any],
        app_path: str,
        config: ServerConfig,
        sockets: list[socket.socket],
        redirect_sockets: list[socket.socket] | None,
        workers: int,
        on_started: Callable[[list[tuple[str, int]]], None] | None,
    ) -> None:
        self.loader = loader
        self.app_path = app_path
        self.config = config
        self.sockets = sockets
        self.redirect_sockets = redirect_sockets
        self.on_started = on_started
        self.not_ready = workers
        self.ctx = multiprocessing.get_context("spawn")
        self.stopping = False
        self.forcing = False
        self.failed = False
        self.startup_failed = False
        self.unclean_exit = False
        self.procs: set[Any] = set()
        self.restarts: deque[float] = deque()
        self.reloads = 0  # SIGHUPs forwarded so far
        self.reloadable: bool | None = None  # unknown until a worker reports it serves

    def spawn(self) -> tuple[Any, Connection]:
        """Start a worker; it inherits its signals blocked (the mask survives exec)."""
        resource_tracker.ensure_running()  # its own start changes the mask: do it first
        recv, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=_worker_main,
            args=(
                self.loader, self.app_path, self.config, self.sockets, self.redirect_sockets,
                send, logging.getLogger().level,
            ),
            daemon=False,
        )
        unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED_AT_SPAWN)
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)  # pending ones arrive now
        send.close()
        self.procs.add(proc)
        return proc, recv

    async def run_slot(self) -> None:
        """Run one worker, and its replacements while it keeps crashing after startup."""
        first = True
        while not self.stopping:  # a stop request may come before the slot's first start
            reloads = self.reloads
            proc, recv = self.spawn()
            addresses = await self._wait_ready(proc, recv, reloads)
            if addresses is None and not self.stopping:
                logger.error("a worker failed to start; stopping")
                self.startup_failed = True
                self.stop()
            if addresses is not None and first:
                first = False
                self.not_ready -= 1
                if self.not_ready == 0 and not self.stopping and self.on_started is not None:
                    self.on_started(addresses)
            await trio.lowlevel.wait_readable(proc.sentinel)
            proc.join()
            self.procs.discard(proc)
            if not self._restart_after(proc):
                return

    async def _wait_ready(self, proc: Any, recv: Connection,
                          reloads: int) -> list[tuple[str, int]] | None:
        await trio.lowlevel.wait_readable(recv.fileno())
        try:
            ready: _Ready = recv.recv()
        except EOFError:
            return None  # the worker exited before it was listening
        finally:
            recv.close()
        self.reloadable = ready.reloadable
        if self.stopping:  # it ignored the request while starting: its handler is set now
            self._signal(proc, signal.SIGQUIT if self.forcing else signal.SIGTERM)
        elif self.reloads != reloads and _SIGHUP is not None:  # same for a reload
            self._signal(proc, _SIGHUP)
        return ready.addresses

    def _restart_after(self, proc: Any) -> bool:
        """Whether the exit of ``proc`` (a worker that was serving) calls for a new one."""
        if self.stopping:
            if proc.exitcode not in (0, STARTUP_FAILED):  # a failed startup logged why
                logger.warning("worker %s exited with %s while stopping", proc.pid, proc.exitcode)
                self.unclean_exit = True
            return False
        now = trio.current_time()
        self.restarts.append(now)
        while self.restarts and self.restarts[0] < now - _RESTART_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) > _MAX_RESTARTS:
            logger.error("workers keep crashing; stopping")
            self.failed = True
            self.stop()
            return False
        logger.warning("worker %s exited with %s; restarting", proc.pid, proc.exitcode)
        return True

    def stop(self) -> None:
        """Ask every worker to drain (SIGTERM); later calls change nothing.

        Our copies of the listening sockets close here: once every worker has closed its
        own at the start of its drain, the port refuses new connections.
        """
        if self.stopping:
            return
        self.stopping = True
        for sock in self.sockets:
            sock.close()
        for proc in list(self.procs):
            self._signal(proc, signal.SIGTERM)

    async def stop_now(self) -> None:
        """Ask every worker to stop at once (SIGQUIT); kill those still alive after a grace."""
        self.stop()
        if self.forcing:
            return
        self.forcing = True
        for proc in list(self.procs):
            self._signal(proc, signal.SIGQUIT)
        await trio.sleep(_KILL_AFTER)
        for proc in list(self.procs):
            proc.kill()

    def reload(self, name: str) -> None:
        """Forward a reload request (SIGHUP, ``name``) to every worker, unless they have
        nothing to reload."""
        assert _SIGHUP is not None
        if self.reloadable is False:
            logger.info("%s received: nothing to reload (no TLS certificate, no reload "
                        "handler); still serving", name)
            return
        logger.info("%s received: asking the workers to reload", name)
        self.reloads += 1
        for proc in list(self.procs):
            self._signal(proc, _SIGHUP)

    @staticmethod
    def _signal(proc: Any, signum: int) -> None:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signum)


def run_workers(
    loader: Callable[[str], Any],
    app_path: str,
    config: ServerConfig,
    workers: int,
    *,
    on_started: Callable[[list[tuple[str, int]]], None] | None = None,
) -> int:
    """Run ``workers`` processes serving ``app_path``; return the exit code.

    Each worker calls ``loader(app_path)`` for its app: the ASGI app itself, or a
    :class:`ReloadableApp` whose ``on_reload`` runs on every SIGHUP.

    0 after a clean shutdown, 3 if a worker's startup failed, 1 if workers kept crashing
    or a worker did not exit cleanly while stopping.

    Raises:
        ServerStartupError: the address cannot be bound (for example, it is in use), or
            the TLS certificate or key cannot be used.
    """
    load_certificates(config)  # each worker loads its own; a bad one stops us here
    sockets = bind_sockets(config)
    redirect_port = config.tls.redirect_port if config.tls is not None else None
    redirect_sockets: list[socket.socket] | None = None
    try:
        if redirect_port is not None:
            redirect_sockets = bind_sockets(config.replace(port=redirect_port, tls=None))
        port = sockets[0].getsockname()[1]
        supervisor = _Supervisor(
            loader, app_path, config.replace(port=port), sockets, redirect_sockets, workers,
            on_started,
        )
        _start_resource_tracker()
        return trio.run(_supervise, supervisor, workers)
    finally:
        for sock in [*sockets, *(redirect_sockets or ())]:
            sock.close()


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker with the reload signals ignored.

    It is a process of the supervisor's group and keeps the dispositions it starts with
    (exec resets only handled signals): started later, under the supervisor's signal
    receiver, it would die of the first SIGHUP sent to the group, and the next worker
    start would warn that it died.
    """
    previous = [(signum, signal.signal(signum, signal.SIG_IGN)) for signum in RELOAD_SIGNALS]
    try:
        resource_tracker.ensure_running()
    finally:
        for signum, handler in previous:
            signal.signal(signum, handler)


async def _supervise(sup: _Supervisor, workers: int) -> int:
    with trio.open_signal_receiver(*STOP_SIGNALS, *RELOAD_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:

            async def forward(*, task_status: trio.TaskStatus[None]) -> None:
                task_status.started()
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum in RELOAD_SIGNALS:
                        sup.reload(name)
                        continue
                    action = stop_request(signum, sup.stopping)
                    if action == "now":
                        logger.warning("%s received: stopping the workers now", name)
                        nursery.start_soon(sup.stop_now)
                    elif action == "drain":
                        logger.info("%s received: shutting the workers down gracefully", name)
                        sup.stop()
                    else:
                        logger.info("%s received: already shutting down gracefully", name)

            await nursery.start(forward)
            async with trio.open_nursery() as slots:
                for _ in range(workers):
                    slots.start_soon(sup.run_slot)
            nursery.cancel_scope.cancel()  # every worker has exited
    if sup.startup_failed:
        return STARTUP_FAILED
    return 1 if sup.failed or sup.unclean_exit else 0
