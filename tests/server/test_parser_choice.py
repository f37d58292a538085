"""Choosing the HTTP/1.1 parser: ``ServerConfig(http=...)``, ``velithon run --http``.

The choice covers both legs of a gateway: the server parses requests with it, and the
app's upstream pools, left on ``auto``, read responses with it too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from velithon import Velithon
from velithon._exceptions import ConfigError
from velithon._http11 import llhttp
from velithon._http11.llhttp import resolve_parser, using_parser
from velithon._proxy.connection import H11Connection, LlhttpConnection
from velithon.gateway import GatewayRoute
from velithon.server import ServerConfig

from support.forkserver import ForkServer
from support.gateway import backends, client, serving


@pytest.fixture(autouse=True)
def _both_parsers() -> None:
    """Each test here picks its parsers itself (overrides the directory's fixture)."""


def test_auto_is_httptools_when_installed_and_h11_without_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_parser("auto") == "httptools"
    monkeypatch.setattr(llhttp, "httptools", None)
    assert resolve_parser("auto") == "h11"
    with pytest.raises(ConfigError, match="pip install httptools"):
        resolve_parser("httptools")


def test_unknown_parser_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="auto, httptools, h11"):
        ServerConfig(http="llhttp")


def test_using_parser_sets_what_auto_means_and_restores_it() -> None:
    with using_parser("h11"):
        assert resolve_parser("auto") == "h11"
        assert resolve_parser("httptools") == "httptools"  # an explicit choice wins
    assert resolve_parser("auto") == "httptools"


@pytest.mark.parametrize(("mode", "connection"), [("h11", H11Connection),
                                                  ("httptools", LlhttpConnection)])
async def test_the_servers_choice_reaches_the_apps_upstream_pools(
        mode: str, connection: type) -> None:
    seen: list[str] = []
    async with backends("a") as [a]:
        route = GatewayRoute(path="/api/{path:path}", targets=[a.url], health_check_path=None)
        app = Velithon(routes=[route])

        @app.get("/parser")
        async def parser() -> dict[str, str]:
            seen.append(resolve_parser("auto"))
            return {"parser": seen[-1]}

        async with serving(app, http=mode) as url, client(url) as c:
            assert (await c.get("/parser")).json() == {"parser": mode}
            response = await c.get("/api/hello")
            assert response.status_code == 200 and response.json()["backend"] == "a"
            balancer = route._holder.running
            assert balancer is not None
            pools = [entry.pool for entry in balancer.state.router.entries]
            assert pools and all(pool._connection_type is connection for pool in pools)
    assert seen == [mode]


def test_velithon_run_takes_http(tmp_path: Path, cli: ForkServer) -> None:
    (tmp_path / "hello.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'hi'})\n")
    bad = cli.run("run", "hello:app", "--http", "picohttp", module="velithon._cli",
                  cwd=tmp_path)
    assert bad.returncode == 2 and "--http" in bad.stderr and "h11" in bad.stderr
    assert bad.stderr.count("\n") == 1, bad.stderr  # one line, no usage block
    for mode in ("h11", "HTTPTOOLS"):
        proc = subprocess.Popen([sys.executable, "-m", "velithon._cli", "run", "hello:app",
                                 "--port", "0", "--http", mode], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("velithon serving on "), proc.stderr
            assert httpx.get(line.split()[-1], timeout=5).text == "hi"
        finally:
            proc.terminate()
            proc.communicate(timeout=20)


async def test_gateway_serves_the_same_in_both_modes_under_concurrency() -> None:
    async with backends("a", "b") as running:
        for mode in ("h11", "httptools"):
            route = GatewayRoute(path="/api/{path:path}", targets=[b.url for b in running],
                                 health_check_path=None)
            app = Velithon(routes=[route])
            async with serving(app, http=mode) as url, client(url) as c:
                results: list[int] = []

                async def one(i: int, c: httpx.AsyncClient = c,
                              results: list[int] = results) -> None:
                    body = b"x" * (i * 1000)
                    response = await c.post(f"/api/echo/{i}", content=body)
                    assert response.status_code == 200
                    results.append(i)

                async with trio.open_nursery() as nursery:
                    for i in range(40):
                        nursery.start_soon(one, i)
                assert sorted(results) == list(range(40))
