"""``velithon config check`` and ``velithon gateway -c`` as a user runs them: subprocesses,
real backends, SIGHUP and file changes while traffic flows."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from support.fifo import held_at
from support.forkserver import ForkServer
from support.gateway import backends
from support.gateway_cli import Launch, client, config_for, served_by

GOOD = """
[[routes]]
path = "/api/{path:path}"
targets = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
load_balancing_strategy = "weighted"
weights = [3, 1]
"""


def test_config_check_prints_a_summary_and_exits_0(tmp_path: Path, cli: ForkServer) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(GOOD)
    result = cli.run("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: ok: 1 route, 0 proxies, 2 targets\n"
    assert result.stderr == ""


def test_config_check_lists_every_error_and_exits_2(tmp_path: Path, cli: ForkServer) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(GOOD.replace("weights = [3, 1]", 'wieghts = [3, 1]\ntimeout_ms = "1"')
                    + '[[routes]]\npath = "/b"\ntargets = ["http://a:1"]\nweights = [1, 2]\n')
    result = cli.run("config", "check", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"velithon: error: {path}: routes[0].wieghts: unknown key (did you mean 'weights'?)",
        f"velithon: error: {path}: routes[0].timeout_ms: expected an integer, got '1'",
        f"velithon: error: {path}: routes[1]: Weights length must match targets length "
        "(got 2 weights for 1 targets)",
    ]


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read the file: No such file or directory"),
    ("[[routes]\n", "line 1, column 9: invalid TOML: expected ']]' at the end of an array"),
])
def test_unreadable_or_broken_files_exit_2_in_one_line(
        tmp_path: Path, cli: ForkServer, content: str | None, message: str) -> None:
    path = tmp_path / "gw.toml"
    if content is not None:
        path.write_text(content)
    gateway = ("gateway", "-c", str(path), "--port", "0")
    for command in [("config", "check", str(path))] + ([gateway] if content else []):
        result = cli.run(*command)
        assert result.returncode == 2, command
        [line] = result.stderr.splitlines()
        assert line.startswith(f"velithon: error: {path}: {message}"), line
        assert "serving on" not in result.stdout


def test_a_typo_never_starts_a_gateway(tmp_path: Path, cli: ForkServer) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(GOOD.replace("path =", "pth ="))
    result = cli.run("gateway", "-c", str(path), "--port", "0")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"velithon: error: {path}: routes[0].pth: unknown key "
                             "(did you mean 'path'?)\n"
                             f"velithon: error: {path}: routes[0].path: required key missing\n")


def test_bad_options_exit_2(tmp_path: Path, cli: ForkServer) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(GOOD)
    result = cli.run("gateway", "-c", str(path), "--port", "70000")
    assert result.returncode == 2
    assert result.stderr == "velithon: error: --port must be in 0..65535, got 70000\n"
    result = cli.run("gateway", "-c", str(path), "--workers", "0")
    assert result.returncode == 2 and "--workers must be >= 1" in result.stderr
    result = cli.run("gateway", "-c", str(path), "--gc-threshold", str(2**31))
    assert result.returncode == 2
    assert result.stderr == ("velithon: error: --gc-threshold must be an integer from 0 to "
                             "2147483647, got 2147483648\n")
    result = cli.run("gateway", "-c", str(path), "--http", "foo")
    assert result.returncode == 2 and "argument --http: invalid choice: 'foo'" in result.stderr
    # no abbreviations: --http was once taken for --https-redirect-port
    result = cli.run("gateway", "-c", str(path), "--https", "8443")
    assert result.returncode == 2 and "unrecognized arguments: --https 8443" in result.stderr


def test_config_check_lists_every_bad_server_setting(tmp_path: Path, cli: ForkServer) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[server]\nhttp = "foo"\ngc_threshold = -1\nmax_headers = -5\n' + GOOD)
    result = cli.run("config", "check", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"velithon: error: {path}: server.http: unknown HTTP parser 'foo': choose one of "
        "auto, httptools, h11",
        f"velithon: error: {path}: server.gc_threshold: must be an integer from 0 to "
        "2147483647, got -1",
        f"velithon: error: {path}: server.max_headers: must be > 0, got -5",
    ]


def test_a_gc_threshold_python_cannot_take_fails_the_check(
        tmp_path: Path, cli: ForkServer) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[server]\ngc_threshold = 2147483648\n" + GOOD)
    result = cli.run("config", "check", str(path))
    assert result.returncode == 2
    assert "server.gc_threshold: must be an integer from 0 to 2147483647" in result.stderr


def test_a_redirect_port_equal_to_the_port_fails_the_check(tmp_path: Path, cli: ForkServer) -> None:
    """It would only fail at start-up, with "Address already in use"."""
    path = tmp_path / "gw.toml"
    path.write_text('[server]\nport = 8443\n[server.tls]\ncertfile = "c.pem"\n'
                    "redirect_port = 8443\n" + GOOD)
    for command in [("config", "check", str(path)), ("gateway", "-c", str(path))]:
        result = cli.run(*command)
        assert result.returncode == 2, command
        assert result.stderr == (f"velithon: error: {path}: server.tls.redirect_port: 8443 "
                                 "is also the https port: the redirect listener needs a port "
                                 "of its own\n")


# ---- a running gateway process ------------------------------------------------------


async def test_a_gateway_serves_and_reloads_on_sighup(tmp_path: Path, start: Launch) -> None:
    async with backends("a", "b", "c") as (a, b, c):
        path = tmp_path / "gw.toml"
        path.write_text(config_for(a))
        gateway = start(path)
        async with client(await gateway.url()) as cl:
            assert await served_by(cl, 3) == {"a": 3}
            path.write_text(config_for(b, c))
            os.kill(gateway.proc.pid, signal.SIGHUP)
            await gateway.wait_for("INFO velithon.config: reloaded")
            assert set(await served_by(cl, 6)) == {"b", "c"}
            path.write_text(config_for(a).replace("targets", "targetz"))
            os.kill(gateway.proc.pid, signal.SIGHUP)
            line = await gateway.wait_for("ERROR velithon.config: reload refused.*")
            assert "routes[0].targetz: unknown key (did you mean 'targets'?)" in line
            assert set(await served_by(cl, 4)) == {"b", "c"}  # the old configuration serves
        assert await gateway.stop() == 0
    assert "Traceback" not in gateway.err


async def test_every_worker_reloads_on_sighup(tmp_path: Path, start: Launch) -> None:
    async with backends("a", "b") as (a, b):
        path = tmp_path / "gw.toml"
        path.write_text(config_for(a))
        gateway = start(path, "--workers", "2")
        async with client(await gateway.url()) as cl:
            assert await served_by(cl, 4) == {"a": 4}
            path.write_text(config_for(b))
            os.kill(gateway.proc.pid, signal.SIGHUP)  # the supervisor forwards it
            await gateway.wait_for("INFO velithon.config: reloaded", count=2)
            assert await served_by(cl, 8) == {"b": 8}
        assert await gateway.stop() == 0
    assert "Traceback" not in gateway.err


async def test_watch_reloads_when_the_file_changes(tmp_path: Path, start: Launch) -> None:
    async with backends("a", "b") as (a, b):
        path = tmp_path / "gw.toml"
        path.write_text(config_for(a))
        gateway = start(path, "--watch")
        async with client(await gateway.url()) as cl:
            assert await served_by(cl, 2) == {"a": 2}
            path.write_text(config_for(a, b, extra='load_balancing_strategy = "weighted"\n'
                                                     "weights = [1, 3]"))
            line = await gateway.wait_for("INFO velithon.config: reloaded.*")
            assert "rebuilt (targets, load_balancing_strategy, weights changed)" in line
            assert await served_by(cl, 8) == {"a": 2, "b": 6}
        assert await gateway.stop() == 0


async def test_sighup_while_the_file_is_read_does_not_stop_the_gateway(
        tmp_path: Path, start: Launch) -> None:
    """SIGHUP is ignored from the start of the command until the server listens for it."""
    async with backends("a") as (a,):
        fifo = tmp_path / "gw.toml"
        os.mkfifo(fifo)
        gateway = start(fifo)
        with held_at(fifo, gateway.proc, config_for(a)):  # the gateway reads its file
            os.kill(gateway.proc.pid, signal.SIGHUP)
        async with client(await gateway.url()) as cl:
            assert await served_by(cl, 2) == {"a": 2}
        assert await gateway.stop() == 0
    assert "SIGHUP" not in gateway.err
