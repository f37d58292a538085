"""``velithon run`` as real process groups: one listening socket bound by the supervisor,
a busy port refused, stop signals sent to the whole group as service managers send them,
and quiet HTTP-client loggers in every process. The supervisor is a child of the fork
server (see support.forkserver); its workers are spawned as in production."""

from __future__ import annotations

import os
import re
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from support.forkserver import ForkServer

APP = textwrap.dedent(
    """
    import logging
    import os

    import trio

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    logging.getLogger("httpx").info("HTTP Request: GET /health (probe)")
                    logging.getLogger("velithon.test").info("worker %d started", os.getpid())
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    print("lifespan shutdown done", flush=True)
                    return
        delay = {"/slow": 1.0, "/stuck": 30.0}.get(scope["path"], 0.0)
        if delay:
            print("request started on", scope["path"], flush=True)
            await trio.sleep(delay)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
    """
)
LIMIT = 20.0  # seconds: an upper bound for any single wait, never a sleep


class Server:
    """A ``velithon run`` process group whose output goes to files (no pipe can fill), a
    child of the fork server."""

    def __init__(self, cli: ForkServer, cwd: Path, name: str, args: tuple[str, ...]) -> None:
        self.out_path = cwd / f"{name}.out"
        self.err_path = cwd / f"{name}.err"
        self.proc = cli.start("run", "app:app", *args, module="velithon._cli", cwd=cwd,
                              stdout=self.out_path, stderr=self.err_path, new_session=True)
        self.pgid = self.proc.pid  # start_new_session: the leader's pid is the group id

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, pattern: str, *, stream: str = "out", count: int = 1) -> re.Match[str]:
        """Poll the output until ``pattern`` matched ``count`` times; fail if the process
        exits first or ``LIMIT`` passes."""
        deadline = time.monotonic() + LIMIT
        while True:
            exited = self.proc.poll() is not None  # checked first: its last output counts
            text = self.out if stream == "out" else self.err
            matches = list(re.finditer(pattern, text))
            if len(matches) >= count:
                return matches[count - 1]
            if exited or time.monotonic() > deadline:
                pytest.fail(f"{pattern!r} not seen; exit {self.proc.poll()}\n"
                            f"{self.out}\n{self.err}")
            time.sleep(0.02)

    def url(self) -> str:
        return self.wait_for(r"velithon serving on (http://127\.0\.0\.1:\d+)\n").group(1)

    def signal_group(self, signum: int) -> None:
        os.killpg(self.pgid, signum)

    def wait(self) -> int:
        return self.proc.wait(timeout=LIMIT)

    def group_alive(self) -> bool:
        """Whether any live (non-zombie) process is still in the group."""
        for proc in psutil.process_iter(["status"]):
            try:
                if os.getpgid(proc.pid) == self.pgid and proc.info["status"] != "zombie":
                    return True
            except (ProcessLookupError, psutil.Error):
                continue
        return False

    def kill(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=LIMIT)


Start = Callable[..., Server]


@pytest.fixture(autouse=True)
def _both_parsers() -> None:
    """Subprocess tests: the parser is the command line's concern (see test_parser_choice)."""



@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


@pytest.fixture
def start(tmp_path: Path, pool: ThreadPoolExecutor, cli: ForkServer) -> Iterator[Start]:
    """``start(*args)`` launches a server in its own process group; every group started is
    killed at teardown, whatever the test did (before ``pool`` waits for its requests, which
    then fail at once)."""
    (tmp_path / "app.py").write_text(APP)
    servers: list[Server] = []

    def launch(*args: str) -> Server:
        server = Server(cli, tmp_path, f"server{len(servers)}", args)
        servers.append(server)
        return server

    yield launch
    for server in servers:
        server.kill()


def in_background(pool: ThreadPoolExecutor, url: str) -> Future[httpx.Response]:
    return pool.submit(httpx.get, url, timeout=LIMIT)


@pytest.mark.parametrize(("first", "second"), [("2", "2"), ("2", "1"), ("1", "2")])
def test_busy_port_is_refused_and_the_first_server_keeps_serving(
    start: Start, first: str, second: str
) -> None:
    server = start("--port", "0", "--workers", first)
    url = server.url()
    port = url.rsplit(":", 1)[1]
    intruder = start("--port", port, "--workers", second)
    assert intruder.wait() == 3  # as for any server that cannot start
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in intruder.err
    assert "Traceback" not in intruder.err and "serving on" not in intruder.out
    for _ in range(4):
        assert httpx.get(url, timeout=LIMIT).status_code == 200
    server.signal_group(signal.SIGTERM)
    assert server.wait() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_repeated_sigterm_to_the_group_still_drains_in_flight_requests(
    start: Start, pool: ThreadPoolExecutor, workers: str
) -> None:
    server = start("--port", "0", "--workers", workers, "--graceful-timeout", "5")
    url = server.url()
    worker_pids = {int(m) for m in re.findall(r"worker (\d+) started", server.err)}
    slow = in_background(pool, url + "/slow")
    server.wait_for("request started on /slow")
    server.signal_group(signal.SIGTERM)
    # every process has begun its drain before the second SIGTERM arrives
    server.wait_for(r"SIGTERM received: shutting down gracefully", stream="err",
                    count=int(workers))
    server.signal_group(signal.SIGTERM)
    response = slow.result(timeout=LIMIT)
    assert response.status_code == 200 and int(response.text) in worker_pids
    assert server.wait() == 0, server.err
    assert server.out.count("lifespan shutdown done") == int(workers)
    assert "stopping now" not in server.err and "Traceback" not in server.err
    deadline = time.monotonic() + LIMIT
    while server.group_alive():
        assert time.monotonic() < deadline, "processes left in the group"
        time.sleep(0.02)


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("signals", [("SIGQUIT",), ("SIGINT", "SIGINT")])
def test_sigquit_or_a_second_sigint_stops_at_once(
    start: Start, pool: ThreadPoolExecutor, workers: str, signals: tuple[str, ...]
) -> None:
    server = start("--port", "0", "--workers", workers, "--graceful-timeout", "10")
    url = server.url()
    stuck = in_background(pool, url + "/stuck")
    server.wait_for("request started on /stuck")
    began = time.monotonic()
    for sent, name in enumerate(signals, start=1):
        server.signal_group(signal.Signals[name])
        server.wait_for(f"{name} received", stream="err", count=sent)
    assert server.wait() == 0, server.err
    assert time.monotonic() - began < 5  # neither the 10 s grace nor the 30 s handler
    # the process holding the stuck request was not waited for (after a first SIGINT an
    # idle worker may have finished its drain normally)
    assert server.out.count("lifespan shutdown done") < int(workers)
    with pytest.raises(httpx.TransportError):
        stuck.result(timeout=LIMIT)


def test_port_0_with_workers_serves_from_worker_processes(start: Start) -> None:
    server = start("--port", "0", "--workers", "2")
    url = server.url()
    assert not url.endswith(":0")
    children = {child.pid for child in psutil.Process(server.proc.pid).children()}
    pids = set()
    for _ in range(8):
        with httpx.Client() as client:  # a fresh connection each time
            response = client.get(url, timeout=LIMIT)
        assert response.status_code == 200
        pids.add(int(response.text))
    assert pids <= children  # served by workers, never by the supervisor
    server.signal_group(signal.SIGTERM)
    assert server.wait() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_http_client_info_lines_are_silenced_in_every_process(
    start: Start, workers: str
) -> None:
    server = start("--port", "0", "--workers", workers)
    server.url()
    server.wait_for(r"velithon\.test: worker \d+ started", stream="err", count=int(workers))
    assert "HTTP Request" not in server.err
    server.signal_group(signal.SIGTERM)
    assert server.wait() == 0


def test_sighup_to_the_group_kills_no_process_of_it(start: Start) -> None:
    """A "reload" sent to the whole group of a plain app: the supervisor says once that
    there is nothing to reload, and neither a worker nor multiprocessing's resource
    tracker dies of it (a dead tracker would show when a worker is next restarted)."""
    server = start("--port", "0", "--workers", "2")
    url = server.url()
    server.wait_for(r"worker \d+ started", stream="err", count=2)
    server.signal_group(signal.SIGHUP)
    server.wait_for("SIGHUP received: nothing to reload", stream="err")
    served = {int(httpx.get(url, timeout=LIMIT).text) for _ in range(4)}
    os.kill(served.pop(), signal.SIGKILL)  # a crash: the supervisor starts another worker
    server.wait_for(r"worker \d+ started", stream="err", count=3)
    assert httpx.get(url, timeout=LIMIT).status_code == 200
    server.signal_group(signal.SIGTERM)
    assert server.wait() == 0, server.err
    assert server.err.count("SIGHUP received") == 1, server.err
    assert "resource_tracker" not in server.err and "Traceback" not in server.err
