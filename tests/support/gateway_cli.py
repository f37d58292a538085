"""``velithon gateway -c FILE`` as a user runs it: a process group whose output goes to
files, its configuration, and a client that opens a connection per request (so that with
``--workers`` every worker gets some)."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from velithon.testing import Backend

from support.forkserver import ForkedProcess, ForkServer

LIMIT = 30.0  # seconds: an upper bound for any single wait


def config_for(*targets: Backend, extra: str = "", server: str = "") -> str:
    """A gateway with one route ``/api/...`` over ``targets`` and no admin surface;
    ``server`` goes after the ``[server]`` keys (a ``[server.tls]`` table, say)."""
    urls = ", ".join(f'"{b.url}"' for b in targets)
    return f"""
[admin]
enabled = false
[server]
graceful_timeout = 2
{server}
[[routes]]
path = "/api/{{path:path}}"
targets = [{urls}]
{extra}
"""


class GatewayProcess:
    """A ``velithon gateway`` process group whose output goes to files: a child of the
    fork server ``cli``, or with ``script``, a Python program serving a gateway, run in
    ``folder`` by a fresh interpreter."""

    def __init__(self, folder: Path, config: Path, args: tuple[str, ...], *,
                 cli: ForkServer | None = None, script: str | None = None) -> None:
        self.out_path, self.err_path = folder / "out.log", folder / "err.log"
        self.proc: ForkedProcess | subprocess.Popen[bytes]
        if script is None:
            assert cli is not None, "a velithon gateway command runs under the fork server"
            self.proc = cli.start("gateway", "-c", str(config), "--port", "0", *args,
                                  stdout=self.out_path, stderr=self.err_path,
                                  new_session=True)
            return
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", script], stdout=out,
                                         stderr=err, cwd=folder, start_new_session=True)

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    async def wait_for(self, pattern: str, *, stream: str = "err", count: int = 1) -> str:
        """Poll the output until ``pattern`` matched ``count`` times (bounded)."""
        with trio.fail_after(LIMIT):
            while True:
                exited = self.proc.poll() is not None
                text = (self.out_path if stream == "out" else self.err_path).read_text()
                matches = re.findall(pattern, text)
                if len(matches) >= count:
                    return str(matches[count - 1])
                if exited:
                    pytest.fail(f"{pattern!r} not seen; exit {self.proc.poll()}\n{text}\n"
                                f"{self.err}")
                await trio.sleep(0.02)

    async def url(self, scheme: str = "http") -> str:
        return await self.wait_for(rf"velithon serving on ({scheme}://127\.0\.0\.1:\d+)\n",
                                   stream="out")

    async def stop(self) -> int:
        os.killpg(self.proc.pid, signal.SIGTERM)
        return await trio.to_thread.run_sync(self.proc.wait, LIMIT)

    async def wait(self) -> int:
        """The exit code of a process that exits by itself (a start-up that failed)."""
        return await trio.to_thread.run_sync(self.proc.wait, LIMIT)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=LIMIT)


#: the ``start`` fixture: ``start(config_path, *options)``
Launch = Callable[..., GatewayProcess]


@asynccontextmanager
async def client(url: str, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client that opens a fresh connection per request (``options``: httpx's)."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits, **options) as c:
        yield c


async def served_by(c: httpx.AsyncClient, n: int) -> collections.Counter[str]:
    """How many of ``n`` requests to ``/api/x`` each backend answered."""
    names: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        response = await c.get("/api/x")
        assert response.status_code == 200, response.text
        names[response.json()["backend"]] += 1
    return names
