"""``velithon status URL``, as a user runs it: a subprocess against a running gateway."""

from __future__ import annotations

import functools
import subprocess

import pytest
import trio

from velithon._cli import main
from velithon.admin._table import StatusUsageError, render_table, status_url
from velithon.gateway import GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware

from support.admin import admin_gateway, eventually
from support.forkserver import ForkServer
from support.gateway import backends


async def velithon_status(cli: ForkServer, *args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(functools.partial(cli.run, "status", *args))


async def test_status_prints_a_table_of_routes_and_targets(cli: ForkServer) -> None:
    async with backends("a", "b", "p") as (a, b, p):
        route = GatewayRoute("/api/{path:path}", [a.url, b.url], health_check_path="/health",
                             health_check_interval=0.1)
        proxy = ProxyMiddleware(targets=[p.url], path_prefix="/p", enable_health_checks=False)
        async with admin_gateway(route, middleware=[proxy]) as gw:
            b.set_health(503)

            async def b_is_down() -> bool:
                return not (await gw.targets("/api/{path:path}"))[b.url]["healthy"]

            await eventually(b_is_down)
            for _ in range(3):
                await gw.client.get("/api/x")
            await gw.client.post("/p/y")
            for url in (gw.url, gw.url + "/_velithon/status"):  # every form: status_url tests
                done = await velithon_status(cli, url)
                assert done.returncode == 0, done.stderr
                assert done.stderr == ""
                out = done.stdout
                lines = out.splitlines()
                assert lines[0] == ("/api/{path:path}  route · round_robin · 1/2 healthy · "
                                    "0 retries")
                assert lines[1].split() == ["TARGET", "HEALTH", "BREAKER", "IN-FLIGHT",
                                            "REQUESTS", "FAILURES", "LATENCY", "WEIGHT", "NOTE"]
                assert lines[2].split()[:6] == [a.url, "healthy", "closed", "0", "3", "0"]
                assert lines[3].split()[:6] == [b.url, "UNHEALTHY", "closed", "0", "0", "0"]
                assert "/p/*  proxy · round_robin · 1/1 healthy" in out
                assert any(line.split()[:5] == [p.url, "healthy", "closed", "0", "1"]
                           for line in lines)
            as_json = await velithon_status(cli, "--json", gw.url)
            assert as_json.returncode == 0
            assert '"routes"' in as_json.stdout and '"proxies"' in as_json.stdout


async def test_status_fails_in_one_line_when_unreachable_or_not_a_gateway(
        capsys: pytest.CaptureFixture[str]) -> None:
    async with backends("plain") as (plain,):
        await plain.stop()
        assert await trio.to_thread.run_sync(main, ["status", plain.url]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err == (f"velithon: error: cannot reach {plain.url}/_velithon/status: "
                       "[Errno 111] Connection refused\n")
        await plain.start()
        url = plain.url + "/_velithon/status"
        assert await trio.to_thread.run_sync(main, ["status", url]) == 1
        out, err = capsys.readouterr()
        assert err == f"velithon: error: {url} did not answer with a velithon status document\n"


@pytest.mark.parametrize(("args", "message"), [
    (["ftp://host/x"], "unsupported URL scheme 'ftp'"),
    (["http://"], "no host in 'http://'"),
    (["http://h:99999"], "invalid port in 'http://h:99999'"),
    (["--timeout", "0", "http://h"], "--timeout must be > 0"),
])
def test_status_usage_errors_exit_2(args: list[str], message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("velithon: error: " + message) and err.count("\n") == 1


def test_status_without_a_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == ("velithon: error: the following arguments are "
                                       "required: url\n")


@pytest.mark.parametrize(("given", "expected"), [
    ("http://h:8000", "http://h:8000/_velithon/status"),
    ("http://h:8000/", "http://h:8000/_velithon/status"),
    ("h:8000", "http://h:8000/_velithon/status"),
    ("https://h/ops", "https://h/ops/status"),
    ("https://h/ops/", "https://h/ops/status"),
    ("http://h:8000/_velithon/status", "http://h:8000/_velithon/status"),
    ("http://[::1]:8000", "http://[::1]:8000/_velithon/status"),
])
def test_status_url_accepts_the_base_an_admin_path_or_the_status_url(
        given: str, expected: str) -> None:
    assert status_url(given) == expected


@pytest.mark.parametrize("given", ["ftp://h", "http://", "http://h:x"])
def test_status_url_refuses_what_cannot_be_a_gateway(given: str) -> None:
    with pytest.raises(StatusUsageError):
        status_url(given)


def test_render_table_marks_draining_ejected_and_panic() -> None:
    row = {"url": "http://t:1", "healthy": True, "breaker_state": "half_open", "in_flight": 2,
           "requests": 10, "failures": 1, "latency_ms": 12.345, "weight": 3, "draining": True,
           "ejected": True}
    text = render_table({"routes": [{"route": "/r", "strategy": "random", "retries": 4,
                                     "panicking": True, "targets": [row]}], "proxies": []})
    heading, header, line = text.splitlines()
    assert heading == "/r  route · random · 1/1 healthy · 4 retries · PANIC MODE"
    assert line.split() == ["http://t:1", "healthy", "half-open", "2", "10", "1", "12.3", "ms",
                            "3", "draining,", "ejected"]
    assert render_table({"routes": [], "proxies": []}) == "no load-balanced routes or proxies"
