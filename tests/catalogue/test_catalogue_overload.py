"""Catalogue F40 (max in-flight per target) and F43 (file-descriptor exhaustion)."""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import trio

from velithon import Velithon
from velithon.gateway import GatewayRoute
from velithon.testing import Fault

from support.gateway import backends, client, serving


async def test_40_overflow_is_shed_with_503_and_the_breaker_stays_closed() -> None:
    async with backends("b") as (b,):
        app = Velithon()
        route = GatewayRoute("/api/{path:path}", [b.url], max_requests_per_target=1)
        app.routes.append(route)
        async with serving(app) as url, client(url) as c:
            b.set_fault(Fault.delay(0.5), times=1)
            async with trio.open_nursery() as nursery:
                first: list[int] = []

                async def hold() -> None:
                    first.append((await c.get("/api/slow")).status_code)

                nursery.start_soon(hold)
                await b.wait_for_requests(1)
                start = trio.current_time()
                second = await c.get("/api/fast")
                elapsed = trio.current_time() - start
            assert second.status_code == 503
            assert second.headers["x-velithon-overloaded"] == "true"
            assert second.json()["detail"] == "Every available target is at its max_requests limit"
            assert elapsed < 0.3  # shed at once, not queued behind the slow request
            assert first == [200]
            assert len(b.requests) == 1  # the overflowing request never reached the backend
            third = await c.get("/api/again")
            assert third.status_code == 200
            [status] = await route.targets_status()
            assert status["breaker_state"] == "closed"
            assert status["failures"] == 0
            assert route.balancer.statistics().overflows == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def test_43_fd_exhaustion_does_not_kill_the_gateway(tmp_path: object) -> None:
    port = _free_port()
    app = textwrap.dedent("""
        from velithon import Velithon
        app = Velithon()

        @app.get("/ping")
        async def ping():
            return {"pong": True}
    """)
    (tmp_path / "fdapp.py").write_text(app)  # type: ignore[operator]
    proc = subprocess.Popen(
        [sys.executable, "-m", "velithon", "run", "fdapp:app", "--port", str(port)],
        cwd=str(tmp_path), preexec_fn=_limit_fds, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
        for _ in range(80):  # more connections than the process has descriptors
            held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        time.sleep(0.3)
        assert proc.poll() is None, "the server died when it ran out of descriptors"
        for sock in held:
            sock.close()
        held.clear()
        deadline = time.monotonic() + 10
        while True:  # once clients let go, it serves again
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not recover"
                time.sleep(0.1)
        assert response.json() == {"pong": True}
    finally:
        for sock in held:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
