"""Giving a lease back with an outcome, as the forwarder does, in one call."""

from __future__ import annotations

from typing import Any

from velithon._lb.messages import OutcomeKind


async def give_back(lease: Any, kind: str = "neutral", status: int | None = None) -> None:
    """Report ``kind`` (an :class:`OutcomeKind` value) and end the lease."""
    async with lease:
        lease.report(OutcomeKind(kind), status)
