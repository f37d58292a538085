"""``velithon demo``: the README's first command, as a new user runs it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx
import trio

from velithon._demo import run_demo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_demo_balances_three_backends_and_reports_status() -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: run_demo(
            "127.0.0.1", 0, shutdown_trigger=stop, task_status=task_status))
        url = f"http://127.0.0.1:{bound[0][1]}"
        async with httpx.AsyncClient(base_url=url) as client:
            names = [(await client.get("/api/hello")).json()["backend"] for _ in range(6)]
            assert names == ["alpha", "beta", "gamma"] * 2
            status = (await client.get("/status")).json()
            assert [t["healthy"] for t in status["targets"]] == [True, True, True]
            assert (await client.get("/backends/beta/down")).json()["healthy"] is False
        stop.set()


def test_demo_command_serves_and_exits_cleanly_on_sigint() -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "velithon", "demo", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/hello", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the demo did not start"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json()["backend"] in {"alpha", "beta", "gamma"}
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"gateway on http://127.0.0.1:{port}" in out
