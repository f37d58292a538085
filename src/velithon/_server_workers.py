"""``--workers N``: N server processes sharing one port through SO_REUSEPORT.

The parent binds (without listening) to fix the port, so ``--port 0`` works too, starts the
workers with ``multiprocessing``'s *spawn* context (each re-imports the app from its
``module:attr`` string), waits until every worker reports it is listening, then
supervises: a worker that crashes is restarted (at most ``_MAX_RESTARTS`` within
``_RESTART_WINDOW`` seconds), a worker whose startup fails stops everything, and
SIGINT/SIGTERM are forwarded as SIGTERM so each worker drains gracefully (a second
signal kills them).
Workers ignore SIGINT themselves: a terminal's Ctrl-C reaches the whole process group,
and each worker must get exactly one shutdown request, from the parent.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import trio

from ._server_config import ServerConfig
from ._server_run import ServerStartupError, run_server
from ._server_state import logger

__all__ = ["run_workers"]

STARTUP_FAILED = 3
_MAX_RESTARTS = 5
_RESTART_WINDOW = 60.0


def _worker_main(
    loader: Callable[[str], Any],
    app_path: str,
    config: ServerConfig,
    ready: Connection,
    log_level: int,
) -> None:
    """Entry point of one worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        app = loader(app_path)
        run_server(app, config, on_started=ready.send, signals=(signal.SIGTERM,))
    except ServerStartupError as exc:
        logger.error("worker startup failed: %s", exc)
        raise SystemExit(STARTUP_FAILED) from None


def _reserve_port(config: ServerConfig) -> tuple[socket.socket, int]:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise ServerStartupError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from None
    return sock, sock.getsockname()[1]


class _Supervisor:
    def __init__(self, loader: Callable[[str], Any], app_path: str, config: ServerConfig) -> None:
        self.loader = loader
        self.app_path = app_path
        self.config = config
        self.ctx = multiprocessing.get_context("spawn")
        self.stopping = False
        self.failed = False
        self.startup_failed = False
        self.procs: set[Any] = set()
        self.restarts: deque[float] = deque()

    def spawn(self) -> tuple[Any, Connection]:
        recv, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=_worker_main,
            args=(self.loader, self.app_path, self.config, send, logging.getLogger().level),
            daemon=False,
        )
        proc.start()
        send.close()
        self.procs.add(proc)
        return proc, recv

    async def wait_ready(self, recv: Connection) -> list[tuple[str, int]] | None:
        await trio.lowlevel.wait_readable(recv.fileno())
        try:
            return recv.recv()  # type: ignore[no-any-return]
        except EOFError:
            return None  # the worker exited before it was listening
        finally:
            recv.close()

    async def watch(self, proc: Any) -> None:
        """Wait for ``proc`` to exit; restart it if it crashed while we are serving."""
        await trio.lowlevel.wait_readable(proc.sentinel)
        proc.join()
        self.procs.discard(proc)
        if self.stopping:
            return
        if proc.exitcode == STARTUP_FAILED:
            logger.error("a worker failed to start; stopping")
            self.startup_failed = True
            self.stop()
            return
        now = trio.current_time()
        self.restarts.append(now)
        while self.restarts and self.restarts[0] < now - _RESTART_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) > _MAX_RESTARTS:
            logger.error("workers keep crashing; stopping")
            self.failed = True
            self.stop()
            return
        logger.warning("worker %s exited with %s; restarting", proc.pid, proc.exitcode)
        new, recv = self.spawn()
        await self.wait_ready(recv)
        await self.watch(new)

    def stop(self) -> None:
        self.stopping = True
        for proc in list(self.procs):
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM: graceful drain in the worker


def run_workers(
    loader: Callable[[str], Any],
    app_path: str,
    config: ServerConfig,
    workers: int,
    *,
    on_started: Callable[[list[tuple[str, int]]], None] | None = None,
) -> int:
    """Run ``workers`` processes serving ``app_path``; return the exit code.

    0 after a clean shutdown, 3 if a worker's startup failed, 1 if workers kept crashing.

    Raises:
        ServerStartupError: the address cannot be bound.
    """
    reservation, port = _reserve_port(config)
    try:
        worker_config = config.replace(port=port, reuse_port=True)
        supervisor = _Supervisor(loader, app_path, worker_config)
        return trio.run(_supervise, supervisor, workers, on_started)
    finally:
        reservation.close()


async def _supervise(
    sup: _Supervisor,
    workers: int,
    on_started: Callable[[list[tuple[str, int]]], None] | None,
) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def forward(*, task_status: trio.TaskStatus[None]) -> None:
                task_status.started()
                async for _ in signals:
                    if sup.stopping:  # second signal: do not wait for the drain
                        for proc in list(sup.procs):
                            proc.kill()
                    sup.stop()

            await nursery.start(forward)
            started = [sup.spawn() for _ in range(workers)]
            addresses = None
            for _, recv in started:
                addresses = await sup.wait_ready(recv)
                if addresses is None:
                    sup.startup_failed = True
                    sup.stop()
                    break
            async with trio.open_nursery() as watchers:
                for proc, _ in started:
                    watchers.start_soon(sup.watch, proc)
                if addresses is not None and on_started is not None:
                    on_started(addresses)
            nursery.cancel_scope.cancel()  # every worker has exited
    if sup.startup_failed:
        return STARTUP_FAILED
    return 1 if sup.failed else 0
