"""Fixtures of the configuration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.forkserver import ForkServer
from support.gateway_cli import GatewayProcess, Launch


@pytest.fixture
def start(tmp_path: Path, cli: ForkServer) -> Iterator[Launch]:
    """Start ``velithon gateway -c FILE --port 0 *options``; every one is killed at the end."""
    started: list[GatewayProcess] = []

    def launch(config: Path, *args: str) -> GatewayProcess:
        folder = tmp_path / f"gw{len(started)}"
        folder.mkdir()
        gateway = GatewayProcess(folder, config, args, cli=cli)
        started.append(gateway)
        return gateway

    yield launch
    for gateway in started:
        gateway.kill()
