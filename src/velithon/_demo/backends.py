"""The demo's backends: small Velithon apps whose behaviour a user changes at runtime.

Each backend answers every path with JSON naming itself, and ``/health`` for the
gateway's probes. What it does is a frozen :class:`BackendSettings` snapshot: extra
latency, and a health mode (``healthy``, ``unhealthy``, or ``flapping``: ``/health``
fails for ``flap_period`` seconds out of every two periods). Controls replace the
snapshot; request handlers only read it.

A backend can also be killed and restarted. Its own task owns the listener, so a kill
(the listening socket and every open connection closed, as when a process dies) and a
restart (listening again on the same port) are commands sent to that task, which
answers once the port is closed or open again.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import attrs
import trio

from .._app.application import Velithon
from .._app.requests import Request
from .._app.responses import JSONResponse
from ..server._config import ServerConfig
from ..server._run import ServerStartupError, serve_tcp

__all__ = ["HEALTH_MODES", "BackendSettings", "DemoBackend"]

HEALTH_MODES = ("healthy", "unhealthy", "flapping")
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

Action = Literal["kill", "restart"]


@attrs.frozen
class BackendSettings:
    """How a backend behaves right now."""

    latency: float = 0.0  # seconds added before every answer (not to /health)
    health: str = attrs.field(default="healthy", validator=attrs.validators.in_(HEALTH_MODES))


@attrs.frozen
class _Command:
    action: Action
    reply: trio.MemorySendChannel[str | None]  # None: done; a string: why it failed


@attrs.define
class _Listening:
    """One listening period of a backend, ended at once (no drain) by :meth:`stop`."""

    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    stopped: trio.Event = attrs.Factory(trio.Event)

    async def stop(self) -> None:
        self.scope.cancel()  # abrupt, as when the process dies: connections are closed too
        await self.stopped.wait()  # the port is closed once this returns


class DemoBackend:
    """One backend of the demo, on loopback; the port stays the same across restarts."""

    def __init__(self, name: str, role: str, settings: BackendSettings, *,
                 flap_period: float) -> None:
        self.name = name
        self.role = role  # what it was started as: "normal", "slow", "flapping"
        self.settings = settings
        self.flap_period = flap_period
        self.port = 0
        self.listening = False
        self._flap_epoch = 0.0
        self._send, self._inbox = trio.open_memory_channel[_Command](4)
        self.app = self._build_app()

    def __repr__(self) -> str:
        return f"<DemoBackend {self.name} {self.url} {self.settings}>"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy_at(self, now: float) -> bool:
        """Whether ``/health`` passes at trio time ``now``."""
        mode = self.settings.health
        if mode == "flapping":
            return int((now - self._flap_epoch) // self.flap_period) % 2 == 0
        return mode == "healthy"

    def change(self, **changes: Any) -> None:
        """Replace the settings snapshot (``latency=...``, ``health=...``)."""
        if changes.get("health") == "flapping" and self.settings.health != "flapping":
            self._flap_epoch = trio.current_time()  # start a flapping cycle healthy
        self.settings = attrs.evolve(self.settings, **changes)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "role": self.role,
                "listening": self.listening,
                "latency_ms": round(self.settings.latency * 1000),
                "health": self.settings.health,
                "health_check_passes": self.listening and self.healthy_at(trio.current_time())}

    # ---- kill and restart: commands to the task that owns the listener ----------------

    async def kill(self) -> str | None:
        """Close the port and every connection; returns why not, or None when done."""
        return await self._ask("kill")

    async def restart(self) -> str | None:
        """Listen again on the same port; returns why not, or None when listening."""
        return await self._ask("restart")

    async def _ask(self, action: Action) -> str | None:
        reply_send, reply_receive = trio.open_memory_channel[str | None](1)
        async with reply_receive:
            await self._send.send(_Command(action, reply_send))
            return await reply_receive.receive()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve, and obey kill/restart commands, until cancelled."""
        self._flap_epoch = trio.current_time()
        async with trio.open_nursery() as nursery:
            listening: _Listening | None = await self._listen(nursery)
            task_status.started()
            async for command in self._inbox:
                outcome: str | None = None
                if command.action == "kill":
                    if listening is None:
                        outcome = f"{self.name} is not running"
                    else:
                        await listening.stop()
                        listening = None
                elif listening is not None:
                    outcome = f"{self.name} is already running"
                else:
                    try:
                        listening = await self._listen(nursery)
                    except ServerStartupError as exc:  # the port was taken meanwhile
                        outcome = str(exc)
                with contextlib.suppress(trio.BrokenResourceError):
                    command.reply.send_nowait(outcome)  # unless the requester has gone

    async def _listen(self, nursery: trio.Nursery) -> _Listening:
        """Start serving on ``self.port`` (any free port the first time)."""
        listening = _Listening()
        config = ServerConfig(host="127.0.0.1", port=self.port)
        bound = await nursery.start(self._serve, config, listening)
        self.port = bound[0][1]
        self.listening = True
        return listening

    async def _serve(self, config: ServerConfig, listening: _Listening, *,
                     task_status: trio.TaskStatus[list[tuple[str, int]]]) -> None:
        try:
            with listening.scope:
                await serve_tcp(self.app, config, task_status=task_status)
        finally:
            self.listening = False
            listening.stopped.set()

    # ---- the app ------------------------------------------------------------------------

    def _build_app(self) -> Velithon:
        app = Velithon()

        @app.get("/health")
        async def health() -> JSONResponse:
            ok = self.healthy_at(trio.current_time())
            return JSONResponse({"backend": self.name, "status": "healthy" if ok else "failing"},
                                status_code=200 if ok else 503)

        @app.route("/{path:path}", methods=_METHODS)
        async def answer(request: Request, path: str) -> dict[str, Any]:
            latency = self.settings.latency
            if latency > 0:
                await trio.sleep(latency)
            body = await request.body()
            return {"backend": self.name, "method": request.method, "path": "/" + path,
                    "query": request.url.query, "body_bytes": len(body),
                    "latency_ms": round(latency * 1000)}

        return app
