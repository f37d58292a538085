"""Fixtures for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from velithon._http11.llhttp import HttpParser, using_parser


@pytest.fixture(params=["httptools", "h11"])
def http_parser(request: pytest.FixtureRequest) -> Iterator[HttpParser]:
    """Run the test once per parser: servers and upstream pools left on ``auto`` use it."""
    parser: HttpParser = request.param
    with using_parser(parser):
        yield parser
