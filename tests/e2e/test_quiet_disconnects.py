"""A client that goes away is a normal event: no ERROR and no traceback in the log."""

from __future__ import annotations

import logging

import pytest
import trio

from velithon import Velithon
from velithon.gateway import GatewayRoute
from velithon.testing import open_backend, open_raw_connection

from support.catalogue import bounded, gateway, request_bytes


def _loud(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name.startswith("velithon") and (r.levelno >= logging.WARNING or r.exc_info)]


async def _abandon_upload(host: str, port: int, path: str) -> None:
    head = request_bytes("POST", path, [("Content-Length", str(1024 * 1024))])
    async with open_raw_connection(host, port) as conn:
        await conn.send(head + b"x" * 100_000)
        await trio.sleep(0.2)  # the upload is under way: the gateway or app is reading it


@bounded(15)
async def test_an_abandoned_upload_through_a_gateway_logs_nothing_loud(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_backend() as b:
        async with gateway(GatewayRoute("/api/{path:path}", [b.url])) as gw:
            await _abandon_upload(gw.host, gw.port, "/api/upload")
            await trio.sleep(0.3)
            await gw.assert_serves()
    assert _loud(caplog) == []


@bounded(15)
async def test_an_abandoned_upload_to_an_app_handler_logs_nothing_loud(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = Velithon()

    @app.post("/upload")
    async def upload(request: object) -> dict[str, int]:
        body = await request.body()  # type: ignore[attr-defined]
        return {"size": len(body)}

    from support.gateway import serving
    async with serving(app) as url:
        port = int(url.rsplit(":", 1)[1])
        await _abandon_upload("127.0.0.1", port, "/upload")
        await trio.sleep(0.3)
    assert _loud(caplog) == []
