"""``ProxyLoadBalancer``: ask a balanced pool of targets which one to use next.

A thin facade over the actor system in :mod:`velithon._lb.system`, for code
that sends its own requests and only wants the choice (and the targets'
health). It works two ways:

* inside ``async with lb:`` the actors run for the whole block (and, with
  ``health_check_interval``, probe on their own);
* awaited directly, each call runs the system just for that call. Health and
  the round-robin cursor persist between calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._discovery.specs import DiscoveryOptions, split_targets
from .._exceptions import NoTargetAvailable
from .._lb.breaker import BreakerConfig
from .._lb.health import HealthCheckConfig
from .._lb.probe import ProbeFn
from .._lb.snapshot import BalancerSnapshot, take_snapshot
from .._lb.system import Balancer, BalancerConfig
from .._proxy.origin import Origin
from .._proxy.pool import PoolConfig
from .base import BalancerHolder, HolderBacked
from .client import ProxyClient, ProxyRequestError, ProxyResult

__all__ = ["ProxyClient", "ProxyLoadBalancer", "ProxyRequestError", "ProxyResult"]


class ProxyLoadBalancer(HolderBacked):
    """Pick targets and check their health.

    Args:
        targets: backend URLs (``http://host:port`` or ``https://...``), or
            sources that follow DNS or a file (``dns+srv://...``, ``dns://...``,
            ``file://...``; see ``docs/discovery.md``).
        strategy: ``round_robin`` (default), ``random``, ``weighted``,
            ``least_request``, ``peak_ewma`` or ``hash``.
        weights: one non-negative integer per target (required for
            ``weighted``).
        health_check_url: the path probed by :meth:`health_check`
            (default ``/health``).
        health_check_interval: seconds between automatic probes while the
            balancer runs in ``async with`` (None: manual checks only).
        name: how the state-change logs name this balancer.

    Raises:
        ValueError: empty targets, a bad URL, an unknown strategy, or weights
            that do not match the targets.
    """

    def __init__(
        self,
        targets: Sequence[str],
        strategy: str = "round_robin",
        weights: Sequence[int] | None = None,
        health_check_url: str | None = None,
        *,
        health_check_interval: float | None = None,
        health_check_timeout: float = 5.0,
        healthy_threshold: int = 1,
        unhealthy_threshold: int = 1,
        max_failures: int = 5,
        recovery_timeout_ms: int = 60000,
        none_healthy: str = "fail",
        panic_threshold: float = 50.0,
        name: str = "load_balancer",
        probe: ProbeFn | None = None,
        dns_nameservers: Sequence[str] | None = None,
        dns_refresh: float | None = None,
        dns_timeout: float = 5.0,
        file_refresh: float = 1.0,
    ) -> None:
        plan = split_targets(targets, weights, DiscoveryOptions.from_keywords(
            dns_nameservers=dns_nameservers, dns_refresh=dns_refresh, dns_timeout=dns_timeout,
            file_refresh=file_refresh), Origin.parse)
        health = HealthCheckConfig(
            path=health_check_url or "/health",
            interval=health_check_interval or 30.0,
            timeout=health_check_timeout,
            healthy_threshold=healthy_threshold,
            unhealthy_threshold=unhealthy_threshold,
        )
        config = BalancerConfig(
            targets=plan.static,
            strategy=strategy,
            weights=plan.static_weights,
            health=health,
            active_health_checks=health_check_interval is not None,
            breaker=BreakerConfig(max_failures=max_failures,
                                  recovery_timeout_ms=recovery_timeout_ms),
            none_healthy=none_healthy,
            panic_threshold=panic_threshold,
            pools=PoolConfig(),
            name=name,
            sources=plan.sources,
        )
        self._holder = BalancerHolder(config, probe=probe)

    def __repr__(self) -> str:
        mode = "running" if self._holder.running is not None else "idle"
        return f"<ProxyLoadBalancer {self.strategy} {list(self.targets)} {mode}>"

    @property
    def strategy(self) -> str:
        return self._holder.config.strategy

    @property
    def weights(self) -> list[int]:
        return [m.weight for m in self._holder.state.router.members]

    async def get_next_target(self) -> str:
        """The next target by the strategy.

        Raises:
            NoTargetAvailable: (a ``RuntimeError``) "No healthy targets available".
        """
        async with self._holder.balancer() as balancer:
            async with await balancer.pick() as lease:  # only the choice is wanted
                return lease.url

    async def health_check(self) -> list[tuple[str, bool]]:
        """Probe every target once, concurrently; returns ``(url, healthy)``."""
        async with self._holder.balancer() as balancer:
            return await balancer.health_check()

    async def get_health_status(self) -> list[tuple[str, bool]]:
        """``[(url, healthy), ...]`` in constructor order."""
        async with self._holder.balancer() as balancer:
            return await balancer.get_health_status()

    async def status(self) -> list[dict[str, Any]]:
        """Per-target detail: health, breaker, ejection, in-flight, latency, counters."""
        async with self._holder.balancer() as balancer:
            return await target_details(balancer)

    def statistics(self) -> Any:
        running = self._holder.running
        return None if running is None else running.statistics()


async def target_details(balancer: Balancer) -> list[dict[str, Any]]:
    """Merge the router's view and each target actor's own status."""
    return target_rows(await take_snapshot(balancer))


def target_rows(snapshot: BalancerSnapshot) -> list[dict[str, Any]]:
    """One JSON-ready dict per target: the status rows every facade and page shows."""
    rows = []
    for target in snapshot.targets:
        v, s = target.view, target.status
        rows.append(
            {
                "url": v.url,
                "weight": v.weight,
                "healthy": v.healthy,
                "routable": v.healthy and v.breaker_state != "open" and not v.draining
                and v.ejected_until is None,
                "breaker_state": v.breaker_state,
                "failure_count": s.failure_count if s else 0,
                "draining": v.draining,
                "ejected": v.ejected_until is not None,
                "in_flight": v.in_flight,
                "latency_ms": v.latency_ms,
                "requests": s.requests if s else 0,
                "successes": s.successes if s else 0,
                "failures": s.failures if s else 0,
                "ejections": v.ejections,
                "probes": s.probes if s else 0,
                "last_probe": s.last_probe_detail if s else None,
                "restarts": s.restarts if s else 0,
                "pool_idle": v.pool_idle,
                "pool_open": v.pool_open,
            }
        )
    return rows


__all__ += ["NoTargetAvailable", "target_details", "target_rows"]
