"""Reading the key=value log lines back, as an operator's script would."""

from __future__ import annotations

import logging
import shlex

import pytest


def parse(line: str) -> dict[str, str]:
    """A logfmt line as a dict (the parser docs/server.md shows)."""
    return dict(pair.split("=", 1) for pair in shlex.split(line))


def lines(caplog: pytest.LogCaptureFixture, logger: str,
          level: int | None = None) -> list[dict[str, str]]:
    """Every record of ``logger`` (at ``level`` if given), parsed."""
    return [parse(r.getMessage()) for r in caplog.records
            if r.name == logger and (level is None or r.levelno == level)]


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    """The records of one state-change event (``event=<name>``)."""
    return [r for r in caplog.records
            if r.name.startswith("velithon.") and r.getMessage().startswith(f"event={event} ")]
