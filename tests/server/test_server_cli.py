"""The ``velithon run`` command, as a user runs it: a child process serving a module from
the current folder, stopped with SIGTERM. The commands are children of the fork server
(see support.forkserver) but for the version and help check, which starts a fresh
interpreter, and the ``serve()`` script."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from support.fifo import held_at
from support.forkserver import ForkServer

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


@pytest.fixture(autouse=True)
def _both_parsers() -> None:
    """Subprocess tests: the parser is the command line's concern (see test_parser_choice)."""



@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "myapp.py").write_text(APP)
    (tmp_path / "failing.py").write_text(APP.replace("FAIL = False", "FAIL = True"))
    return tmp_path


class Command:
    """``python -m velithon._cli *args`` in ``cwd``, a child of the fork server, its
    output going to files there (the part of ``Popen`` these tests use)."""

    def __init__(self, cli: ForkServer, cwd: Path, args: tuple[str, ...],
                 new_session: bool) -> None:
        self.out_path, self.err_path = (Path(tempfile.mkstemp(dir=cwd, suffix=suffix)[1])
                                        for suffix in (".out", ".err"))
        self.proc = cli.start(*args, module="velithon._cli", cwd=cwd, stdout=self.out_path,
                              stderr=self.err_path, new_session=new_session)
        self.pid = self.proc.pid
        self.poll, self.send_signal, self.kill = (self.proc.poll, self.proc.send_signal,
                                                  self.proc.kill)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def first_line(self) -> str:
        """Its first line of output, once written (what ``stdout.readline()`` returns)."""
        deadline = time.monotonic() + 20
        while True:
            ended = self.poll() is not None  # checked first: its last output counts
            text = self.out_path.read_text()
            if "\n" in text or ended:
                return text.split("\n", 1)[0] + "\n" if "\n" in text else text
            assert time.monotonic() < deadline, "no line of output within 20 s"
            time.sleep(0.01)

    def communicate(self, timeout: float) -> tuple[str, str]:
        """Wait for the end; everything it printed."""
        self.proc.wait(timeout)
        return self.out_path.read_text(), self.err_path.read_text()


def velithon(cli: ForkServer, cwd: Path, *args: str, new_session: bool = False) -> Command:
    """``velithon *args`` in ``cwd``; ``new_session``: its own process group, so that a
    signal can go to the group (the supervisor and its workers)."""
    return Command(cli, cwd, args, new_session)


def wait_started(proc: Command) -> list[str]:
    line = proc.first_line()
    match = re.fullmatch(r"velithon serving on (http://127\.0\.0\.1:\d+)\n", line)
    assert match, (line, proc.err_path.read_text() if proc.poll() is not None else "")
    return [match.group(1)]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_run_serves_and_exits_0_on_sigterm(project: Path, cli: ForkServer, workers: str) -> None:
    proc = velithon(cli, project, "run", "myapp:app", "--port", "0", "--workers", workers,
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
    project: Path, cli: ForkServer, target: str, message: str
) -> None:
    done = cli.run("run", target, "--port", "0", module="velithon._cli", cwd=project)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_lifespan_startup_failure_exits_non_zero_with_the_message(
    project: Path, cli: ForkServer, workers: str
) -> None:
    done = cli.run("run", "failing:app", "--port", "0", "--workers", workers,
                   module="velithon._cli", cwd=project)
    assert done.returncode == 3
    assert "no database" in done.stderr and "serving on" not in done.stdout
    assert "Traceback" not in done.stderr


def test_invalid_option_value_exits_2(project: Path, cli: ForkServer) -> None:
    done = cli.run("run", "myapp:app", "--max-body-size", "0", module="velithon._cli",
                   cwd=project)
    assert done.returncode == 2 and "--max-body-size must be > 0" in done.stderr


NOTHING_TO_RELOAD = ("SIGHUP received: nothing to reload (no TLS certificate, no reload "
                     "handler); still serving")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_to_a_plain_run_is_logged_once_and_it_keeps_serving(
    project: Path, cli: ForkServer, workers: str
) -> None:
    """A service manager's "reload" of an app without TLS must not stop it (SIGHUP's
    default action would); with workers, a SIGHUP to the whole group is logged once."""
    proc = velithon(cli, project, "run", "myapp:app", "--port", "0", "--workers", workers,
                    new_session=True)
    try:
        [url] = wait_started(proc)
        os.killpg(proc.pid, signal.SIGHUP)
        assert httpx.get(url, timeout=5).text == "from cli"
        proc.send_signal(signal.SIGHUP)
        assert httpx.get(url, timeout=5).text == "from cli"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err.count(NOTHING_TO_RELOAD) == 2, err
    assert "reloading" not in err and "asking the workers" not in err
    assert out.count("lifespan shutdown done") == int(workers)


def test_sighup_while_the_app_module_is_imported_does_not_stop_run(
    project: Path, cli: ForkServer
) -> None:
    gate = project / "gate"
    os.mkfifo(gate)
    (project / "slowapp.py").write_text("open('gate').read()  # held here by the test\n"
                                        "from myapp import app\n")
    proc = velithon(cli, project, "run", "slowapp:app", "--port", "0")
    try:
        with held_at(gate, proc):
            proc.send_signal(signal.SIGHUP)
        [url] = wait_started(proc)
        assert httpx.get(url, timeout=5).text == "from cli"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "SIGHUP" not in err  # ignored before the server listened: nothing to say


def test_serve_function_runs_until_sigint_then_drains(project: Path) -> None:
    script = (
        "import logging, myapp\n"
        "from velithon.server import ServerConfig, serve\n"
        "logging.basicConfig(level='INFO', format='%(message)s')\n"
        "base = ServerConfig(host='no-such-host.invalid', port=8000, graceful_timeout=30)\n"
        "serve(myapp.app, '127.0.0.1', port=0, config=base, graceful_timeout=2)  # they win\n"
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
        proc.send_signal(signal.SIGHUP)  # no TLS, no on_reload: nothing to reload
        assert proc.stderr.readline() == NOTHING_TO_RELOAD + "\n"
        assert httpx.get(match.group(1), timeout=5).text == "from cli"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["lifespan shutdown done", "serve returned"]


NOT_APPS = textwrap.dedent(
    """
    from velithon import Velithon
    from velithon.gateway import GatewayRoute
    from velithon.middleware.proxy import ProxyMiddleware

    def make_app():
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"from factory"})
        return app

    middleware = ProxyMiddleware(targets=["http://127.0.0.1:9"])

    def two_args(scope, receive):
        pass
    """
)


@pytest.fixture
def odd_project(project: Path) -> Path:
    (project / "odd.py").write_text(NOT_APPS)
    (project / "badconfig.py").write_text(textwrap.dedent(
        """
        from velithon import Velithon
        from velithon.gateway import GatewayRoute

        app = Velithon()
        app.routes.append(GatewayRoute("/api/{path:path}", targets=["http://127.0.0.1:9"],
                                       headers_to_add={"X-A": "a\\r\\nb"}))
        """))
    for name, arguments in [
        ("badstrategy", '["http://127.0.0.1:9"], load_balancing_strategy="fastest"'),
        ("joined", '"http://127.0.0.1:9,http://127.0.0.1:10"'),
        ("twice", '["http://127.0.0.1:9", "HTTP://127.0.0.1:9/"]'),
        ("weighty", '["http://127.0.0.1:9", "http://127.0.0.1:10"], weights=[3, 1]'),
    ]:
        (project / f"{name}.py").write_text(
            "from velithon import Velithon\n"
            "from velithon.gateway import GatewayRoute\n"
            "app = Velithon()\n"
            f"app.routes.append(GatewayRoute('/api/{{path:path}}', {arguments}))\n")
    return project


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["badconfig:app"], "configuration error in 'badconfig': Invalid request header"),
        (["badstrategy:app"], "configuration error in 'badstrategy': Invalid strategy 'fastest'"),
        (["joined:app"], "Give each target as its own string in a list: "
                         "targets=['http://127.0.0.1:9', 'http://127.0.0.1:10']"),
        (["twice:app"], "both are 'http://127.0.0.1:9'"),
        (["myapp:app", "--port", "99999"], "velithon: error: --port must be in 0..65535"),
        (["myapp:app", "--header-timeout", "nan"], "error: --header-timeout must be > 0"),
        (["myapp:app", "--backlog", "0"], "error: --backlog must be > 0"),
        (["odd:make_app"], "takes no arguments: if it builds the app, run it with --factory"),
        (["odd:middleware"], "looks like a middleware, not an app"),
        (["odd:two_args"], "is not an ASGI app: it must accept (scope, receive, send)"),
        (["myapp:app", "--max-body-size", "lots"], "argument --max-body-size: invalid size"),
        (["myapp:app", "--log-level", "LOUD"], "argument --log-level: invalid choice"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    odd_project: Path, cli: ForkServer, args: list[str], message: str
) -> None:
    done = cli.run("run", *args, *([] if "--port" in args else ["--port", "0"]),
                   module="velithon._cli", cwd=odd_project)
    err = done.stderr
    assert done.returncode == 2, err
    assert message in err and "Traceback" not in err and "ServerConfig" not in err
    last = err.strip().splitlines()[-1]
    assert message in last  # the last line says it all
    assert last.startswith("velithon: error: ")  # argparse's errors too


def test_weights_the_strategy_ignores_are_a_warning_naming_the_users_line(
    odd_project: Path, cli: ForkServer,
) -> None:
    proc = velithon(cli, odd_project, "run", "weighty:app", "--port", "0")
    try:
        wait_started(proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "weighty.py:4: ConfigWarning: weights=[3, 1] have no effect" in err
    assert "Use the 'weighted' strategy" in err


def test_factory_size_suffix_and_level_in_any_case(odd_project: Path, cli: ForkServer) -> None:
    proc = velithon(cli, odd_project, "run", "odd:make_app", "--factory", "--port", "0",
                    "--max-body-size", "100M", "--log-level", "WARNING")
    try:
        [url] = wait_started(proc)
        assert httpx.get(url, timeout=5).text == "from factory"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0


def test_version_and_help_name_units_and_defaults(project: Path) -> None:
    version = subprocess.run([sys.executable, "-m", "velithon._cli", "--version"],
                             capture_output=True, text=True, timeout=20, check=False)
    assert version.returncode == 0 and version.stdout.startswith("velithon ")
    helptext = subprocess.run([sys.executable, "-m", "velithon._cli", "run", "--help"],
                              capture_output=True, text=True, timeout=20, check=False).stdout
    for flag in ("--max-body-size SIZE", "--body-timeout SECONDS", "--factory", "--workers"):
        assert flag in helptext
    words = " ".join(helptext.split())
    assert "(default 16M)" in words and "(default 30 s)" in words


@pytest.mark.parametrize("command", ["run", "demo"])
def test_every_option_states_its_default(command: str) -> None:
    from velithon._cli import _parser

    parser = _parser()._subparsers._group_actions[0].choices[command]
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 5
    for action in options:
        assert action.help is not None and "default" in action.help, action.option_strings
        if action.metavar == "SECONDS":
            assert " s)" in action.help % {"default": action.default}, action.option_strings


@pytest.mark.parametrize(("text", "size"), [("1024", 1024), ("512K", 512 * 1024),
                                             ("100M", 100 * 1024**2), ("1g", 1024**3),
                                             ("16MiB", 16 * 1024**2), ("2 MB", 2 * 1024**2)])
def test_sizes_take_suffixes(text: str, size: int) -> None:
    from velithon._cli import parse_size

    assert parse_size(text) == size


GC_APP = textwrap.dedent(
    """
    import gc, json

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        state = {"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(state).encode()})
    """
)


@pytest.mark.parametrize(("args", "threshold", "frozen"), [
    ((), 10_000, True),
    (("--gc-threshold", "2500"), 2500, True),
    (("--gc-threshold", "0"), 700, False),
])
def test_run_tunes_the_garbage_collector_once_the_app_has_started(
        tmp_path: Path, cli: ForkServer, args: tuple[str, ...], threshold: int,
        frozen: bool) -> None:
    (tmp_path / "gcapp.py").write_text(GC_APP)
    proc = velithon(cli, tmp_path, "run", "gcapp:app", "--port", "0", *args)
    try:
        [url] = wait_started(proc)
        state = httpx.get(url, timeout=5).json()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert state["threshold"] == threshold
    assert (state["frozen"] > 1000) is frozen  # the app, its modules and the server


@pytest.mark.parametrize("threshold", ["-1", str(2**31)])
def test_a_gc_threshold_out_of_range_is_refused_with_one_line(project: Path, cli: ForkServer,
                                                              threshold: str) -> None:
    done = cli.run("run", "myapp:app", "--gc-threshold", threshold, module="velithon._cli",
                   cwd=project)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "velithon: error: --gc-threshold must be an integer from 0 to 2147483647, "
        f"got {threshold}"]


def test_options_are_never_abbreviated(project: Path, cli: ForkServer) -> None:
    done = cli.run("run", "myapp:app", "--gc", "0", module="velithon._cli", cwd=project)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "velithon: error: unrecognized arguments: --gc 0"]
