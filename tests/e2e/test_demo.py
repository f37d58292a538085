"""``velithon demo``: the README's first command, as a new user runs it.

Most tests run the command in a child process (forked from the session's pre-imported
interpreter, see support.forkserver) on an ephemeral port (``--port 0``), read the URLs
from its banner, and use the gateway and the backend controls the banner lists. They
poll with deadlines: the demo runs on real time in another process.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from velithon._demo import DemoOptions, run_demo
from velithon._demo.backends import BackendSettings, DemoBackend

from support.catalogue import bounded
from support.forkserver import ForkedProcess, ForkServer


@attrs.frozen
class RunningDemo:
    url: str
    backends: dict[str, str]  # name -> URL, as the banner lists them
    banner: str
    proc: ForkedProcess
    stdout: Path
    stderr: Path

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)

    def control(self, name: str, action: str, **params: str) -> httpx.Response:
        return httpx.post(f"{self.url}/demo/backends/{name}/{action}", params=params,
                          timeout=10)

    def target(self, name: str) -> dict[str, Any]:
        [row] = [t for t in self.get("/status").json()["targets"] if t["backend"] == name]
        return row

    def stop(self) -> tuple[int, str, str]:
        """SIGINT, as Ctrl-C does; the exit code and everything printed."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=30)
        return code, self.stdout.read_text(), self.stderr.read_text()


def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


@contextmanager
def demo(cli: ForkServer, tmp_path: Path, *args: str) -> Iterator[RunningDemo]:
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    proc = cli.start("demo", "--port", "0", *args, stdout=stdout, stderr=stderr)
    try:
        eventually(lambda: "Ctrl-C stops everything" in stdout.read_text()
                   or proc.poll() is not None, 30, "the banner")
        banner = stdout.read_text()
        match = re.match(r"velithon demo: gateway on (http://127\.0\.0\.1:\d+) ", banner)
        assert match, banner + stderr.read_text()
        backends = dict(re.findall(r"^  (alpha|beta|gamma) +(http://\S+)", banner, re.M))
        yield RunningDemo(match.group(1), backends, banner, proc, stdout, stderr)
    finally:
        proc.kill()
        proc.wait()


def answered_by(running: RunningDemo, n: int) -> list[str]:
    names = []
    for _ in range(n):
        response = running.get("/api/hello")
        assert response.status_code == 200, response.text
        names.append(response.json()["backend"])
    return names


def test_the_banner_lists_urls_backends_and_controls(cli: ForkServer, tmp_path: Path) -> None:
    with demo(cli, tmp_path) as running:
        assert set(running.backends) == {"alpha", "beta", "gamma"}
        for line in (f"dashboard   {running.url}/", f"status      {running.url}/status",
                     f"admin       {running.url}/_velithon/status",
                     "slow: +300 ms per answer", "flapping: /health fails 5 s out of every 10",
                     f"curl -X POST {running.url}/demo/backends/NAME/ACTION"):
            assert line in running.banner
        for action in ("slow", "fast", "unhealthy", "healthy", "flap", "kill", "restart"):
            assert re.search(rf"^    {action} ", running.banner, re.M), action
        dashboard = running.get("/")
        assert dashboard.headers["content-type"].startswith("text/html")
        assert "<title>velithon gateway</title>" in dashboard.text
        [route] = running.get("/_velithon/status").json()["routes"]
        assert route["path"] == "/api/{path:path}"
        assert [t["url"] for t in route["targets"]] == [
            running.backends[name] for name in ("alpha", "beta", "gamma")]
        code, _, err = running.stop()
    assert code == 0 and "Traceback" not in err


def test_requests_spread_and_the_flapping_backend_leaves_and_returns(
    cli: ForkServer, tmp_path: Path,
) -> None:
    # a short cycle, and health checks often enough to see each phase of it
    with demo(cli, tmp_path, "--flap-period", "1", "--health-interval", "0.25") as running:
        seen: set[str] = set()
        eventually(lambda: seen.update(answered_by(running, 3)) or len(seen) == 3, 20,
                   "all three backends answer")
        assert running.get("/status").json()["strategy"] == "round_robin"
        eventually(lambda: not running.target("gamma")["healthy"], 15, "gamma marked down")
        eventually(lambda: running.target("gamma")["healthy"], 15, "gamma back up")
        code, _, err = running.stop()
    assert code == 0, err
    assert re.search(r"event=target_down route=api target=http://127\.0\.0\.1:\d+ "
                     r"probe=\"HTTP 503\"", err)


def test_slow_fast_unhealthy_healthy_controls(cli: ForkServer, tmp_path: Path) -> None:
    with demo(cli, tmp_path, "--flap-period", "1000", "--health-interval", "0.25") as running:
        alpha = running.backends["alpha"]
        assert running.control("alpha", "slow", ms="400").json()["latency_ms"] == 400
        started = time.monotonic()
        assert httpx.get(alpha + "/x", timeout=10).json()["latency_ms"] == 400
        assert time.monotonic() - started >= 0.4
        assert running.control("alpha", "fast").json()["latency_ms"] == 0

        assert running.control("beta", "unhealthy").json()["health"] == "unhealthy"
        assert httpx.get(running.backends["beta"] + "/health", timeout=10).status_code == 503
        eventually(lambda: not running.target("beta")["healthy"], 10, "beta marked down")
        assert set(answered_by(running, 4)) == {"alpha", "gamma"}
        running.control("beta", "healthy")
        eventually(lambda: running.target("beta")["healthy"], 10, "beta back up")

        refused = running.control("delta", "kill")
        assert refused.status_code == 404 and "alpha|beta|gamma" in refused.json()["detail"]
        assert running.control("alpha", "slow", ms="soon").status_code == 409
        assert running.get("/demo/backends/alpha/kill").status_code == 405  # controls are POST
        code, _, err = running.stop()
    assert code == 0, err


def test_kill_closes_the_port_requests_are_retried_elsewhere_and_restart_reopens_it(
    cli: ForkServer, tmp_path: Path,
) -> None:
    # health checks rarely, so only retries and passive ejection can react to the kill
    with demo(cli, tmp_path, "--flap-period", "1000", "--health-interval", "60",
              "--traffic", "20") as running:
        alpha = running.backends["alpha"]
        assert running.control("alpha", "kill").json()["listening"] is False
        with pytest.raises(httpx.ConnectError):
            httpx.get(alpha + "/health", timeout=5)
        names = answered_by(running, 12)  # every one answered, by the others
        assert "alpha" not in names and set(names) <= {"beta", "gamma"}
        eventually(lambda: running.target("alpha")["ejected"], 10, "alpha ejected")
        assert running.control("alpha", "kill").status_code == 409  # already down

        assert running.control("alpha", "restart").json()["listening"] is True
        assert httpx.get(alpha + "/health", timeout=5).status_code == 200  # the same port
        # still ejected for 30 s (which of beta and gamma answers depends on how the
        # --traffic requests interleave with these in the round robin)
        assert set(answered_by(running, 6)) <= {"beta", "gamma"}
        code, _, err = running.stop()
    assert code == 0, err
    # retried elsewhere (a loaded machine may need a third try: beta is slow)
    assert re.search(rf"event=retry_succeeded .*attempts=[23] tries=\"{re.escape(alpha)} connect: ",
                     err)
    assert f"event=target_ejected route=api target={alpha} seconds=30.000" in err


def test_a_restarted_backend_is_back_in_rotation_after_its_next_health_check(
    cli: ForkServer, tmp_path: Path,
) -> None:
    with demo(cli, tmp_path, "--flap-period", "1000", "--health-interval", "0.25") as running:
        running.control("alpha", "kill")
        eventually(lambda: not running.target("alpha")["healthy"], 10, "alpha marked down")
        assert "alpha" not in answered_by(running, 6)
        running.control("alpha", "restart")
        eventually(lambda: "alpha" in answered_by(running, 3), 15, "alpha answers again")
        code, _, err = running.stop()
    assert code == 0, err


def test_traffic_moves_the_numbers_without_any_client(cli: ForkServer, tmp_path: Path) -> None:
    with demo(cli, tmp_path, "--traffic", "20", "--flap-period", "1000") as running:
        assert "traffic: 20 requests/s through the gateway" in running.banner

        def total() -> int:
            return sum(t["requests"] for t in running.get("/status").json()["targets"])

        before = total()
        eventually(lambda: total() >= before + 20, 15, "20 more requests through the gateway")
        assert all(t["requests"] > 0 for t in running.get("/status").json()["targets"])
        code, out, err = running.stop()
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--traffic", "0"], "--traffic must be in (0, 100]"),
     (["--traffic", "500"], "--traffic must be in (0, 100]"),
     (["--flap-period", "0"], "--flap-period must be > 0"),
     (["--port", "70000"], "--port must be in 0..65535"),
     (["--strategy", "hash"], "argument --strategy: invalid choice")],
)
def test_bad_options_are_one_line_and_exit_2(cli: ForkServer, args: list[str],
                                             message: str) -> None:
    proc = cli.run("demo", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_busy_port_is_one_line_and_exit_3(cli: ForkServer) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = cli.run("demo", "--port", str(port))
    assert proc.returncode == 3
    assert proc.stderr == (f"velithon: error: cannot listen on 127.0.0.1:{port}: "
                           "Address already in use\n")


# ---- in process -------------------------------------------------------------------------


@bounded(20)
async def test_run_demo_balances_round_robin_and_reports_status() -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: run_demo(
            DemoOptions(port=0, flap_period=1000), shutdown_trigger=stop,
            task_status=task_status))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bound[0][1]}") as client:
            names = [(await client.get("/api/hello")).json()["backend"] for _ in range(6)]
            assert names == ["alpha", "beta", "gamma"] * 2
            status = (await client.get("/status")).json()
            assert [(t["backend"], t["healthy"]) for t in status["targets"]] == [
                ("alpha", True), ("beta", True), ("gamma", True)]
        stop.set()


@bounded(20)
async def test_a_killed_backend_refuses_connections_and_restarts_on_its_port() -> None:
    backend = DemoBackend("alpha", "normal", BackendSettings(), flap_period=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(backend.run)
        url = backend.url
        async with httpx.AsyncClient(timeout=5) as client:
            held = await client.get(url + "/x")  # a kept-alive connection
            assert held.json()["backend"] == "alpha"
            assert await backend.kill() is None
            assert not backend.listening
            with pytest.raises(httpx.TransportError):
                await client.get(url + "/x")  # neither the old connection nor a new one
            assert await backend.restart() is None
            assert backend.url == url
            assert (await client.get(url + "/x")).json()["backend"] == "alpha"
            assert await backend.restart() == "alpha is already running"
        nursery.cancel_scope.cancel()


async def test_the_flapping_health_check_alternates_every_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = DemoBackend("gamma", "flapping", BackendSettings(), flap_period=3)
    backend.change(health="flapping")  # the cycle starts now, healthy
    start = trio.current_time()
    assert [backend.healthy_at(start + t) for t in (0, 2.9, 3, 5.9, 6, 9)] == [
        True, True, False, False, True, False]
    backend.change(health="unhealthy")
    assert not backend.healthy_at(start)
    backend.change(health="healthy")
    assert backend.healthy_at(start + 4)


def test_the_demo_page_lists_every_control_and_option() -> None:
    from velithon._cli import _parser
    from velithon._demo.gateway_app import ACTIONS

    page = (Path(__file__).parents[2] / "docs" / "demo.md").read_text()
    controls = page.split("## The controls")[1].split("## Options")[0]
    assert re.findall(r"^\| `(\w+)`", controls, re.M) == list(ACTIONS)
    documented = set(re.findall(r"`(--[a-z-]+)", page.split("## Options")[1]))
    demo_parser = _parser()._subparsers._group_actions[0].choices["demo"]
    flags = {flag for action in demo_parser._actions for flag in action.option_strings}
    assert documented == flags - {"-h", "--help"}
