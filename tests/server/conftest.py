"""Every test here runs with both parsers (llhttp and h11): same requests, same verdicts."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _both_parsers(http_parser: str) -> None:
    """Depend on the parametrised ``http_parser`` fixture, so each test runs in each mode."""
