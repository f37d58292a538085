"""The gateway under attack: a ``Velithon`` app with every gateway feature on.

``velithon run benchmarks.attacks.gateway_app:app`` serves it; the runner passes the
backend URLs in the environment (``ATTACK_TARGETS`` for the three-backend route,
``ATTACK_STREAM_TARGETS`` for the route that takes chunked uploads). Without them the
module still imports, with ``app = None``, so the runner can read the configuration
below and derive its detection window from the same numbers the gateway uses.

Two routes:

* ``/api/{path:path}`` over all three backends, the ``http.server`` one included:
  downloads and uploads with ``Content-Length``;
* ``/streams/{path:path}`` over the two h11 backends only: chunked uploads. A gateway
  may forward a chunked upload chunked (it cannot know the length without buffering
  it whole), and ``http.server`` cannot read chunked bodies, so sending those through
  the first route would blame the gateway for a backend's limitation.

Besides, ``GET /_attacks/targets`` reports the targets' state (see :func:`build_app`).

Time constants are scaled down from production defaults (30 s probes, 60 s breaker
recovery) so that detection and recovery fit in a 60-second run; the ratios between
them are kept (several probes per breaker recovery, ejections short enough to end
within a scenario).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from velithon import OutlierConfig, Velithon
from velithon.gateway import GatewayRoute

__all__ = [
    "HEALTH_INTERVAL",
    "HEALTH_JITTER",
    "OUTLIER_OPTIONS",
    "ROUTE_OPTIONS",
    "SERVER_ARGS",
    "STATUS_PATH",
    "UNHEALTHY_THRESHOLD",
    "app",
    "build_app",
    "describe",
    "detection_window",
]

ENV_TARGETS = "ATTACK_TARGETS"
STATUS_PATH = "/_attacks/targets"
ENV_STREAM_TARGETS = "ATTACK_STREAM_TARGETS"

HEALTH_INTERVAL = 0.5
#: velithon spreads probes by ±10 % of the interval (docs/load-balancing.md).
HEALTH_JITTER = 0.1
UNHEALTHY_THRESHOLD = 2
HEALTHY_THRESHOLD = 2

ROUTE_OPTIONS: dict[str, Any] = {
    "strip_path": True,
    "load_balancing_strategy": "round_robin",
    "health_check_path": "/health",
    "health_check_interval": HEALTH_INTERVAL,
    "health_check_timeout": 0.5,
    "healthy_threshold": HEALTHY_THRESHOLD,
    "unhealthy_threshold": UNHEALTHY_THRESHOLD,
    "timeout_ms": 15_000,
    "per_try_timeout_ms": 5_000,
    "max_retries": 2,
    "max_failures": 5,
    "recovery_timeout_ms": 2_000,
}

#: Options of ``velithon run``; everything not listed keeps the server's default
#: (header timeout 10 s, body timeout 30 s, keep-alive 5 s, no concurrency limit).
SERVER_ARGS: tuple[str, ...] = (
    "--max-body-size", str(64 * 1024 * 1024),
    "--log-level", "warning",
    "--no-access-log",
)


OUTLIER_OPTIONS: dict[str, Any] = {
    "consecutive_5xx": 5,
    "consecutive_gateway_failure": 5,
    "base_ejection_time": 2.0,
    "max_ejection_time": 10.0,
    "interval": 2.0,
}


def describe() -> str:
    """The configuration in one line, for the report."""
    o, x = ROUTE_OPTIONS, OUTLIER_OPTIONS
    return (f"routes /api (c, a, b) and /streams (a, b), {o['load_balancing_strategy']}; "
            f"probes every {o['health_check_interval']:g} s (fall {o['unhealthy_threshold']}, "
            f"rise {o['healthy_threshold']}); "
            f"per-try timeout {o['per_try_timeout_ms'] / 1000:g} s, "
            f"{o['max_retries']} retries; breaker {o['max_failures']} failures, "
            f"{o['recovery_timeout_ms'] / 1000:g} s recovery; outlier ejection after "
            f"{x['consecutive_5xx']} consecutive failures for {x['base_ejection_time']:g} s × n "
            f"(at most {x['max_ejection_time']:g} s); server defaults otherwise "
            f"({' '.join(SERVER_ARGS)})")


def detection_window() -> float:
    """Seconds after a fault during which errors are forgiven.

    The gateway needs ``unhealthy_threshold`` probes to mark a target down, each up to
    ``interval × (1 + jitter)`` apart; one more second covers the requests already in
    flight to the target when the fault began (they cannot be retried once a streamed
    body has been sent).
    """
    return HEALTH_INTERVAL * (1 + HEALTH_JITTER) * UNHEALTHY_THRESHOLD + 1.0


def build_app(targets: list[str], stream_targets: list[str]) -> Velithon:
    """The app: the two gateway routes with the options above, and a status endpoint.

    ``GET`` :data:`STATUS_PATH` answers each route's ``targets_status()`` (failure
    counters, breaker state, ejection), so the runner can tell whether the gateway
    blamed a backend for what a client did.
    """
    app = Velithon()
    routes = {
        "api": GatewayRoute("/api/{path:path}", targets=targets, name="api",
                            outlier_detection=OutlierConfig(**OUTLIER_OPTIONS), **ROUTE_OPTIONS),
        "streams": GatewayRoute("/streams/{path:path}", targets=stream_targets, name="streams",
                                outlier_detection=OutlierConfig(**OUTLIER_OPTIONS),
                                **ROUTE_OPTIONS),
    }
    app.routes.extend(routes.values())

    @app.get(STATUS_PATH)
    async def target_states() -> dict[str, Any]:
        return {name: await route.targets_status() for name, route in routes.items()}

    return app


def _timestamped_logs() -> None:
    """Prefix the gateway's log lines with Unix time, so the report can be lined up with them.

    ``velithon run`` configures logging before importing the app; only the format of the
    handlers it installed changes here.
    """
    formatter = logging.Formatter("%(created).3f %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def _from_environment() -> Velithon | None:
    targets = os.environ.get(ENV_TARGETS)
    stream_targets = os.environ.get(ENV_STREAM_TARGETS)
    if not targets or not stream_targets:
        return None
    _timestamped_logs()
    return build_app(targets.split(","), stream_targets.split(","))


app = _from_environment()
