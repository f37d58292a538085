"""Fixtures for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from velithon._http11.llhttp import HttpParser, using_parser

from support.forkserver import ForkServer


@pytest.fixture(params=["httptools", "h11"])
def http_parser(request: pytest.FixtureRequest) -> Iterator[HttpParser]:
    """Run the test once per parser: servers and upstream pools left on ``auto`` use it."""
    parser: HttpParser = request.param
    with using_parser(parser):
        yield parser


@pytest.fixture(scope="session")
def cli() -> Iterator[ForkServer]:
    """``cli.run(*args)``: a ``velithon`` command that ends by itself, as a child process
    forked from one interpreter that already imported velithon (see support.forkserver)."""
    server = ForkServer()
    yield server
    server.close()
