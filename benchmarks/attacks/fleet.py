"""The system under test: three backends and the gateway, each a subprocess we own.

* ``c``: the ``http.server`` backend (``stdlib_backend``), its own process so that it
  can be killed for real (SIGKILL) and restarted on the same port;
* ``a`` and ``b``: ``velithon.testing`` backends (``trio_backends``), one process,
  whose health and failures the scenarios switch over stdin;
* the gateway: ``velithon run benchmarks.attacks.gateway_app:app`` on an ephemeral
  port (the server prints the port it bound), so its memory and descriptors are those
  of a separate process, read from ``/proc``.

Everything binds to 127.0.0.1 and port 0; nothing else is contacted.
"""

from __future__ import annotations

import json
import os
import re
import sys

import attrs
import httpx
from benchmarks.attacks.gateway_app import (
    ENV_STREAM_TARGETS,
    ENV_TARGETS,
    SERVER_ARGS,
    STATUS_PATH,
)
from benchmarks.attacks.processes import Child, ChildGroup
from benchmarks.attacks.usage import Usage, usage

__all__ = ["STDLIB", "TRIO_BACKENDS", "Fleet", "TargetState"]

STDLIB = "c"
TRIO_BACKENDS = ("a", "b")
_HOST = "127.0.0.1"
_START_TIMEOUT = 30.0
_ACK_TIMEOUT = 5.0
_SERVING = re.compile(r"velithon serving on http://127\.0\.0\.1:(\d+)")


@attrs.frozen
class TargetState:
    """What the gateway thinks of one target of one route."""

    failures: int
    breaker_state: str
    ejected: bool


class Fleet:
    """Starts and steers the backends and the gateway; stopped by its ``ChildGroup``."""

    def __init__(self, group: ChildGroup) -> None:
        self.group = group
        python = sys.executable
        self._stdlib: Child = group.add(
            f"backend-{STDLIB}",
            [python, "-m", "benchmarks.attacks.stdlib_backend", "--port", "0", "--name", STDLIB])
        self._trio: Child = group.add(
            "backends-" + "".join(TRIO_BACKENDS),
            [python, "-m", "benchmarks.attacks.trio_backends", *TRIO_BACKENDS], control=True)
        self._gateway: Child | None = None
        self.ports: dict[str, int] = {}
        self.gateway_port = 0
        self._seq = 0

    def url(self, name: str) -> str:
        """A backend's URL (stable across restarts)."""
        return f"http://{_HOST}:{self.ports[name]}"

    @property
    def gateway_url(self) -> str:
        return f"http://{_HOST}:{self.gateway_port}"

    @property
    def gateway_host(self) -> str:
        return _HOST

    @property
    def gateway_pid(self) -> int:
        assert self._gateway is not None
        return self._gateway.pid

    def gateway_alive(self) -> bool:
        return self._gateway is not None and self._gateway.running

    def gateway_usage(self) -> Usage:
        """The gateway process tree's RSS and open descriptors."""
        return usage(self.gateway_pid)

    async def target_states(self) -> dict[str, TargetState] | None:
        """``"<route> <backend>" -> state`` from the gateway's status endpoint, or ``None``
        if it does not answer (the run goes on; the report says it could not tell)."""
        names = {self.url(name): name for name in self.ports}
        try:
            async with httpx.AsyncClient(base_url=self.gateway_url, timeout=5.0) as client:
                response = await client.get(STATUS_PATH)
            routes = response.json()
            return {
                f"{route} {names.get(row['url'], row['url'])}": TargetState(
                    int(row["failures"]), str(row["breaker_state"]), bool(row["ejected"]))
                for route, rows in routes.items() for row in rows
            }
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def gateway_log_tail(self, lines: int = 30) -> str:
        return self._gateway.log_tail(lines) if self._gateway is not None else ""

    async def start(self) -> None:
        """Start the backends, then the gateway in front of them."""
        self._stdlib.start()
        self.ports[STDLIB] = int((await self._stdlib.wait_for_line("ready ", _START_TIMEOUT))
                                 .split()[1])
        self._trio.start()
        ready = await self._trio.wait_for_line("ready ", _START_TIMEOUT)
        self.ports.update(json.loads(ready.partition(" ")[2]))
        env = dict(os.environ)
        env[ENV_TARGETS] = ",".join(self.url(n) for n in (STDLIB, *TRIO_BACKENDS))
        env[ENV_STREAM_TARGETS] = ",".join(self.url(n) for n in TRIO_BACKENDS)
        self._gateway = self.group.add(
            "gateway",
            [sys.executable, "-m", "velithon", "run", "benchmarks.attacks.gateway_app:app",
             "--host", _HOST, "--port", "0", *SERVER_ARGS],
            env=env)
        self._gateway.start()
        line = await self._gateway.wait_for_line("velithon serving on", _START_TIMEOUT)
        match = _SERVING.search(line)
        if match is None:
            raise RuntimeError(f"unexpected gateway banner: {line!r}")
        self.gateway_port = int(match.group(1))

    # --- the http.server backend: a real process to kill ----------------------------

    def kill_stdlib(self) -> None:
        """SIGKILL backend ``c``: its connections die without a FIN from the application."""
        self._stdlib.kill()

    async def stop_stdlib(self) -> None:
        """Stop backend ``c`` (SIGTERM): connections refused until restarted."""
        await self._stdlib.stop()

    async def restart_stdlib(self) -> None:
        """Start backend ``c`` again on the port the gateway was configured with."""
        self._stdlib.argv[self._stdlib.argv.index("--port") + 1] = str(self.ports[STDLIB])
        self._stdlib.start()
        await self._stdlib.wait_for_line("ready ", _START_TIMEOUT)

    def stdlib_running(self) -> bool:
        return self._stdlib.running

    # --- the velithon.testing backends: steered over stdin ---------------------------

    async def _command(self, verb: str, name: str, value: str) -> None:
        self._seq += 1
        await self._trio.send_line(f"{self._seq} {verb} {name} {value}")
        await self._trio.wait_for_line(f"ack {self._seq}", _ACK_TIMEOUT)

    async def set_sick(self, name: str, sick: bool) -> None:
        """A sick backend answers 503 to its health probe and to every request."""
        status = "503" if sick else "200"
        await self._command("health", name, status)
        await self._command("fault", name, status if sick else "none")

