"""The default active health probe: ``GET target + path`` over httpx.

Probes are rare and off the hot path, so httpx's convenience costs nothing
here. The probe is a plain function so tests (and users with exotic checks)
can pass their own to the balancer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from .health import HealthCheckConfig
from .messages import ProbeResult

ProbeFn = Callable[[str, HealthCheckConfig], Awaitable[ProbeResult]]


def probe_url(target: str, path: str) -> str:
    """Join a target URL and a health path without doubling slashes."""
    return target.rstrip("/") + path


def make_http_probe(client: httpx.AsyncClient) -> ProbeFn:
    """A probe that asks ``client`` for the health path of a target."""

    async def probe(target: str, config: HealthCheckConfig) -> ProbeResult:
        try:
            response = await client.request(
                config.method,
                probe_url(target, config.path),
                timeout=config.timeout,
                follow_redirects=False,
            )
        except httpx.TimeoutException:
            return ProbeResult(ok=False, status=None, detail=f"timeout after {config.timeout}s")
        except httpx.HTTPError as exc:
            reason = str(exc) or str(exc.__cause__ or exc.__context__ or "")
            return ProbeResult(ok=False, status=None, detail=f"{type(exc).__name__}: {reason}")
        ok = config.is_expected(response.status_code) if hasattr(config, "is_expected") else (
            200 <= response.status_code < 300
        )
        status = response.status_code
        return ProbeResult(ok=ok, status=status, detail=f"HTTP {status}")

    return probe
