"""The server's access log: one ``velithon.access`` line per request, over raw sockets
(each test runs with both parsers, see conftest.py).

Lines are read after the server shut down (the line follows the response on the wire).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from support.logs import lines
from support.server import Recorder, get, hello, parse_responses, raw_exchange, running_server


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="velithon.access")
    return caplog


async def streamed(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A chunked response in three pieces, 10 body bytes in all."""
    await send({"type": "http.response.start", "status": 201, "headers": []})
    for piece in (b"abc", b"defg", b"hij"):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def test_a_plain_request_gets_the_fields_that_apply(
        logs: pytest.LogCaptureFixture) -> None:
    async with running_server(Recorder(), access_log=True) as server:
        data = await raw_exchange(server, get("/logged?q=1", b"Connection: close\r\n"))
    [response] = parse_responses(data)
    [line] = lines(logs, "velithon.access")
    assert line.keys() == {"client", "method", "path", "status", "bytes", "total_ms"}
    assert line["client"].startswith("127.0.0.1:")
    assert (line["method"], line["path"], line["status"]) == ("GET", "/logged?q=1", "200")
    assert line["bytes"] == str(len(response.body))
    assert float(line["total_ms"]) >= 0


async def test_streamed_and_head_responses_count_the_body_bytes_sent(
        logs: pytest.LogCaptureFixture) -> None:
    async with running_server(streamed, access_log=True) as server:
        await raw_exchange(server, get("/s", b"Connection: close\r\n"))
    async with running_server(hello, access_log=True) as server:
        await raw_exchange(server, b"HEAD / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    chunked, head = lines(logs, "velithon.access")
    assert (chunked["status"], chunked["bytes"]) == ("201", "10")
    assert (head["method"], head["bytes"]) == ("HEAD", "0")  # a HEAD answer has no body


async def test_every_request_of_a_keep_alive_connection_gets_its_own_line(
        logs: pytest.LogCaptureFixture) -> None:
    async with running_server(hello, access_log=True) as server:
        await raw_exchange(server, get("/1") + get("/2") + get("/3", b"Connection: close\r\n"))
    assert [line["path"] for line in lines(logs, "velithon.access")] == ["/1", "/2", "/3"]


async def test_a_request_the_server_refuses_is_logged_with_its_status(
        logs: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    async with running_server(recorder, access_log=True) as server:
        await raw_exchange(server, b"GET / HTTP/1.1\r\n\r\n")  # no Host
    assert recorder.requests == []
    [line] = lines(logs, "velithon.access")
    assert line["status"] == "400" and line["client"].startswith("127.0.0.1:")
    assert "error" in line and "method" not in line


async def test_a_client_chosen_path_cannot_forge_a_field(logs: pytest.LogCaptureFixture) -> None:
    async with running_server(hello, access_log=True) as server:
        await raw_exchange(server, get('/x%20status=500"', b"Connection: close\r\n"))
    [line] = lines(logs, "velithon.access")
    assert line["path"] == '/x%20status=500"' and line["status"] == "200"


async def test_nothing_is_logged_when_the_access_log_is_off(
        logs: pytest.LogCaptureFixture) -> None:
    async with running_server(hello) as server:
        await raw_exchange(server, get("/", b"Connection: close\r\n"))
        await raw_exchange(server, b"GET / HTTP/1.1\r\n\r\n")
    assert lines(logs, "velithon.access") == []
