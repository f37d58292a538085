"""Crashing an actor on purpose, for supervisor and protocol tests.

An actor that receives a message it does not understand raises, exactly as a bug in
its handler would; production code never sends one.
"""

from __future__ import annotations

from typing import Any


class Crash:
    """A message no actor understands."""

    def __repr__(self) -> str:
        return "<Crash injected by a test>"


async def inject_crash(balancer: Any, url: str | None = None) -> None:
    """Crash the router (``url=None``) or the actor of target ``url``."""
    if url is None:
        balancer._router_send.send_nowait(Crash())
    else:
        await balancer._entry(url).inbox.send(Crash())
