"""``velithon demo``: a gateway over three local backends, to watch load balancing work.

Everything runs in one trio process, on loopback:

* three backends (:mod:`.backends`) on ephemeral ports: ``alpha`` (normal), ``beta``
  (slow: every answer takes 300 ms longer) and ``gamma`` (flapping: its ``/health``
  fails for ``flap_period`` seconds out of every two periods);
* the gateway app (:mod:`.gateway_app`) on ``--port``: ``/api/...`` balanced over the
  backends, ``/status``, the backend controls under ``/demo``, the dashboard at ``/``
  and the admin surface (``velithon.admin``) under ``/_velithon``;
* with ``--traffic``, a light client (:mod:`.traffic`) that keeps requests flowing
  through the gateway so the numbers move.

It prints every URL and the controls, then runs until SIGINT or SIGTERM: the traffic
stops, the gateway drains, the backends stop.
"""

from __future__ import annotations

import signal
from functools import partial

import attrs
import trio

from .._structured import first_leaf
from ..server._config import ServerConfig
from ..server._run import serve_tcp
from .backends import BackendSettings, DemoBackend
from .gateway_app import ACTIONS, ADMIN_PATH, DEFAULT_SLOW_MS, build_demo_app
from .traffic import MAX_RATE, send_traffic

__all__ = ["DEFAULT_TRAFFIC_RATE", "STRATEGIES", "DemoOptions", "main_demo", "run_demo"]

DEFAULT_TRAFFIC_RATE = 5.0  # requests per second for a bare --traffic
STRATEGIES = ("round_robin", "random", "least_request", "peak_ewma")


def _rate(instance: object, attribute: attrs.Attribute[float | None], value: float | None
          ) -> None:
    if value is not None and not 0 < value <= MAX_RATE:
        raise ValueError(f"--traffic must be in (0, {MAX_RATE:g}] requests per second, "
                         f"got {value:g}")


def _port(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {value}")


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"--{attribute.name.replace('_', '-')} must be > 0, got {value:g}")


@attrs.frozen(kw_only=True)
class DemoOptions:
    """What ``velithon demo`` was asked for (its command-line options)."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=8000, validator=_port)
    strategy: str = attrs.field(default="round_robin",
                                validator=attrs.validators.in_(STRATEGIES))
    traffic: float | None = attrs.field(default=None, validator=_rate)  # requests/s
    flap_period: float = attrs.field(default=5.0, validator=_positive)  # seconds
    health_interval: float = attrs.field(default=1.0, validator=_positive)  # seconds
    access_log: bool = False  # a velithon.access line per request to the gateway


def make_backends(options: DemoOptions) -> list[DemoBackend]:
    """alpha (normal), beta (slow) and gamma (flapping), not yet listening."""
    flap = options.flap_period
    return [
        DemoBackend("alpha", "normal", BackendSettings(), flap_period=flap),
        DemoBackend("beta", f"slow: +{DEFAULT_SLOW_MS} ms per answer",
                    BackendSettings(latency=DEFAULT_SLOW_MS / 1000), flap_period=flap),
        DemoBackend("gamma", f"flapping: /health fails {flap:g} s out of every {2 * flap:g}",
                    BackendSettings(health="flapping"), flap_period=flap),
    ]


def banner(url: str, options: DemoOptions, backends: list[DemoBackend]) -> str:
    """What the demo prints once it serves: every URL, and how to use the controls."""
    names = "|".join(b.name for b in backends)
    lines = [
        f"velithon demo: gateway on {url} ({options.strategy} over {len(backends)} backends, "
        f"health checks every {options.health_interval:g} s)",
        "",
        f"  dashboard   {url}/",
        f"  balanced    {url}/api/<anything>",
        f"  status      {url}/status",
        f"  backends    {url}/demo",
        f"  admin       {url}{ADMIN_PATH}/status   (or: velithon status {url})",
        "",
        *(f"  {b.name:<6} {b.url:<24} {b.role}" for b in backends),
        "",
        f"  controls: curl -X POST {url}/demo/backends/NAME/ACTION   (NAME: {names})",
        *(f"    {action:<10} {what}" for action, what in ACTIONS.items()),
        f"  e.g. curl -X POST {url}/demo/backends/alpha/kill",
        "",
    ]
    if options.traffic is not None:
        lines.append(f"  traffic: {options.traffic:g} requests/s through the gateway "
                     "(a summary line every 10 s)")
    lines.append("  Ctrl-C stops everything.")
    return "\n".join(lines)


async def run_demo(options: DemoOptions, *, shutdown_trigger: trio.Event | None = None,
                   task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
                   ) -> None:
    """Run the demo until ``shutdown_trigger`` is set (or until cancelled).

    ``task_status`` gets the gateway's bound addresses once everything serves.
    """
    trigger = shutdown_trigger if shutdown_trigger is not None else trio.Event()
    backends = make_backends(options)
    async with trio.open_nursery() as nursery:
        for backend in backends:
            await nursery.start(backend.run)
        app = build_demo_app(backends, strategy=options.strategy,
                             health_interval=options.health_interval)
        config = ServerConfig(host=options.host, port=options.port, graceful_timeout=5.0,
                              access_log=options.access_log)
        async with trio.open_nursery() as front:
            bound = await front.start(partial(serve_tcp, app, config, shutdown_trigger=trigger))
            host, port = bound[0][0], bound[0][1]
            url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
            print(banner(url, options, backends), flush=True)
            if options.traffic is not None:
                await front.start(send_traffic, url, options.traffic, trigger)
            task_status.started(bound)
        nursery.cancel_scope.cancel()  # the gateway has drained: stop the backends


def main_demo(options: DemoOptions) -> int:
    """Blocking entry point for the CLI: runs until SIGINT or SIGTERM."""

    async def main() -> None:
        trigger = trio.Event()
        async with trio.open_nursery() as nursery:

            async def on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        trigger.set()
                        return

            nursery.start_soon(on_signal)
            await run_demo(options, shutdown_trigger=trigger)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except BaseExceptionGroup as group:  # report a startup failure in one line, like `run`
        startup = group.subgroup(lambda e: type(e).__name__ == "ServerStartupError")
        if startup is None:
            raise
        raise first_leaf(startup) from None
    return 0
