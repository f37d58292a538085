"""What ``velithon run`` and ``velithon demo`` write to stderr, as an operator sees it:
every line stamped and named, an access line per request when asked, no per-probe lines
from the HTTP client, alike with one process or several."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.logs import parse

LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                  r"(velithon[\w.]*): (.*)")

GATEWAY = textwrap.dedent(
    """
    import os
    from velithon import Velithon
    from velithon.gateway import GatewayRoute

    app = Velithon()
    app.routes.append(GatewayRoute("/api/{path:path}", [os.environ["BACKEND"]], name="api",
                                   strip_path=True,
                                   health_check_path="/", health_check_interval=0.1))

    @app.get("/plain")
    async def plain():
        return {"plain": True}
    """
)


@pytest.fixture(autouse=True)
def _both_parsers() -> None:
    """Subprocess tests: the parser is the command line's concern (see test_parser_choice)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[str]:
    """A plain HTTP server whose ``/`` answers 200: health probes pass (and would log)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(f"http://127.0.0.1:{port}/", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def _wait_for(url: str, proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            assert proc.poll() is None, "the process exited"
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return err


def _velithon_lines(err: str) -> list[tuple[str, str, str]]:
    """Every stderr line, which must all be stamped ``<time> <LEVEL> <logger>: ...``."""
    found = []
    for raw in err.splitlines():
        match = LINE.fullmatch(raw)
        assert match, f"unstamped line: {raw!r}"
        found.append((match.group(1), match.group(2), match.group(3)))
    return found


@pytest.mark.parametrize("workers", ["1", "2"])
def test_run_logs_stamped_lines_access_lines_and_no_probe_chatter(
        tmp_path: Path, backend: str, workers: str) -> None:
    (tmp_path / "gw.py").write_text(GATEWAY)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "velithon", "run", "gw:app", "--port", str(port),
         "--workers", workers, "--access-log", "--log-level", "INFO"],
        cwd=tmp_path, env={"BACKEND": backend, "PATH": "", "PYTHONPATH": ":".join(sys.path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        response = _wait_for(f"http://127.0.0.1:{port}/api/", proc)
        assert response.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/plain", timeout=5).status_code == 200
        time.sleep(0.5)  # several health probes per worker, each a line if httpx logged
    finally:
        err = _stop(proc)
    logged = _velithon_lines(err)
    access = [parse(message) for _, name, message in logged if name == "velithon.access"]
    proxied = [a for a in access if a.get("route") == "api"]
    assert proxied and all(a["target"] == backend and a["status"] == "200" for a in proxied)
    assert any(a["path"] == "/plain" and "route" not in a for a in access)
    assert "HTTP Request" not in err  # httpx's per-request INFO line


def test_access_log_shows_at_a_quieter_level_and_only_when_asked(
        tmp_path: Path, backend: str) -> None:
    (tmp_path / "gw.py").write_text(GATEWAY)
    env = {"BACKEND": backend, "PATH": "", "PYTHONPATH": ":".join(sys.path)}
    errs = []
    for flags in (["--access-log", "--log-level", "Warning"], ["--log-level", "debug"]):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "velithon", "run", "gw:app", "--port", str(port), *flags],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(f"http://127.0.0.1:{port}/plain", proc)
        finally:
            errs.append(_stop(proc))
    quiet, debug = errs
    assert [level for level, name, _ in _velithon_lines(quiet)
            if name == "velithon.access"] == ["INFO"]  # asked for: shown despite WARNING
    assert "velithon.access" not in debug  # not asked for: absent even at debug


def test_demo_takes_access_log_and_names_its_route() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "velithon", "demo", "--port", str(port), "--access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/api/hello", proc).status_code == 200
    finally:
        err = _stop(proc, signal.SIGINT)
    access = [parse(message) for _, name, message in _velithon_lines(err)
              if name == "velithon.access"]
    assert any(a.get("route") == "api" and a["path"] == "/api/hello" for a in access)


def test_gateway_from_a_config_file_logs_access_lines_and_sends_trace_headers(
        tmp_path: Path, backend: str) -> None:
    (tmp_path / "gw.toml").write_text(textwrap.dedent(f"""
        [logging]
        access_log = true
        level = "warning"

        [[routes]]
        path = "/api/{{path:path}}"
        name = "api"
        targets = ["{backend}"]
        strip_path = true
        upstream_target_header = "X-Upstream-Target"
        """))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "velithon", "gateway", "-c", "gw.toml", "--port", str(port)],
        cwd=tmp_path, env={"PATH": "", "PYTHONPATH": ":".join(sys.path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        response = _wait_for(f"http://127.0.0.1:{port}/api/", proc)
    finally:
        err = _stop(proc)
    assert response.headers["x-upstream-target"] == backend
    access = [parse(message) for _, name, message in _velithon_lines(err)
              if name == "velithon.access"]
    assert [(a["route"], a["request_id"]) for a in access] == [
        ("api", response.headers["x-request-id"])]
