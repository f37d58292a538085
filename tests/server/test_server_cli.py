"""The ``velithon run`` command, as a user runs it: a subprocess serving a module from the
current folder, stopped with SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

APP = textwrap.dedent(
    """
    events = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup" and FAIL:
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    print("lifespan shutdown done", flush=True)
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"from cli"})

    FAIL = False
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "myapp.py").write_text(APP)
    (tmp_path / "failing.py").write_text(APP.replace("FAIL = False", "FAIL = True"))
    return tmp_path


def velithon(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "velithon._cli", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_started(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.fullmatch(r"velithon serving on (http://127\.0\.0\.1:\d+)\n", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return [match.group(1)]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_run_serves_and_exits_0_on_sigterm(project: Path, workers: str) -> None:
    proc = velithon(project, "run", "myapp:app", "--port", "0", "--workers", workers,
                    "--graceful-timeout", "2")
    try:
        [url] = wait_started(proc)
        for _ in range(3):
            assert httpx.get(url, timeout=5).text == "from cli"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.count("lifespan shutdown done") == int(workers)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("myapp", 'expected "module:attribute"'),
        (":app", 'expected "module:attribute"'),
        ("nosuchmodule:app", "could not import module 'nosuchmodule'"),
        ("myapp:nope", "module 'myapp' has no attribute 'nope'"),
        ("myapp:events", "is not callable"),
    ],
)
def test_bad_app_string_exits_2_with_a_clear_message(
    project: Path, target: str, message: str
) -> None:
    proc = velithon(project, "run", target, "--port", "0")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_lifespan_startup_failure_exits_non_zero_with_the_message(
    project: Path, workers: str
) -> None:
    proc = velithon(project, "run", "failing:app", "--port", "0", "--workers", workers)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 3
    assert "no database" in err and "serving on" not in out and "Traceback" not in err


def test_invalid_option_value_exits_2(project: Path) -> None:
    proc = velithon(project, "run", "myapp:app", "--max-body-size", "0")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "max_body_size must be > 0" in err


def test_serve_function_runs_until_sigint_then_drains(project: Path) -> None:
    script = (
        "import logging, myapp\n"
        "from velithon.server import serve\n"
        "logging.basicConfig(level='INFO', format='%(message)s')\n"
        "serve(myapp.app, port=0, graceful_timeout=2)\n"
        "print('serve returned', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=project,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.fullmatch(r"velithon serving on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        assert httpx.get(match.group(1), timeout=5).text == "from cli"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["lifespan shutdown done", "serve returned"]
