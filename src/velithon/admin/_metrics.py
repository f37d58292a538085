"""Prometheus metrics, built at scrape time from the balancers' snapshots.

Nothing here runs on the request path. The engine already counts what the metrics
report, where outcomes arrive: the router keeps per-target response counts by status
and a request-duration histogram, the target actors keep their request, probe and
restart counters. A scrape asks every balancer for a snapshot (a few actor messages),
hands the pictures to :class:`GatewayCollector`, and renders the app's own
:class:`~prometheus_client.CollectorRegistry` (never the process-wide default: two
apps in one process keep separate metrics).

Every per-target metric has the labels ``route`` (see ``_gather``) and ``target``
(the target's URL); ``docs/admin.md`` lists them all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .._lb.breaker import BreakerState
from .._lb.router import LATENCY_BUCKETS
from ._gather import Picture

#: the text exposition format generate_latest() writes
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TARGET = ["route", "target"]
_BREAKER_STATES = [state.value for state in BreakerState]


def _code(status: int) -> str:
    """The ``code`` label: the upstream status, or ``error`` when none came back."""
    return str(status) if status else "error"


class GatewayCollector(Collector):
    """Yields the gateway's metric families from the pictures of the current scrape."""

    def __init__(self) -> None:
        self._pictures: tuple[Picture, ...] = ()

    def update(self, pictures: Sequence[Picture]) -> None:
        self._pictures = tuple(pictures)

    def describe(self) -> list[Metric]:
        return []  # the families depend on the routes of the moment: nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "velithon_requests", "Requests a target ended with a verdict, by upstream status "
            "(code 'error': no complete response)", labels=[*_TARGET, "code"])
        duration = HistogramMetricFamily(
            "velithon_request_duration_seconds", "Time a target held a request, from the "
            "pick to the end of the response, client waits left out", labels=_TARGET)
        healthy = GaugeMetricFamily(
            "velithon_target_healthy", "1 when the target passes its health checks",
            labels=_TARGET)
        breaker = GaugeMetricFamily(
            "velithon_target_breaker_state", "1 for the circuit breaker's current state "
            "(closed, open, half_open), 0 for the others", labels=[*_TARGET, "state"])
        routable = GaugeMetricFamily(
            "velithon_target_routable", "1 when new requests may go to the target",
            labels=_TARGET)
        in_flight = GaugeMetricFamily(
            "velithon_target_in_flight", "Requests the target holds now", labels=_TARGET)
        weight = GaugeMetricFamily("velithon_target_weight", "The target's weight",
                                   labels=_TARGET)
        draining = GaugeMetricFamily(
            "velithon_target_draining", "1 while the target is drained (no new requests)",
            labels=_TARGET)
        ejected = GaugeMetricFamily(
            "velithon_target_ejected", "1 while passive outlier detection has the target out",
            labels=_TARGET)
        ejections = CounterMetricFamily(
            "velithon_target_ejections", "Times outlier detection ejected the target",
            labels=_TARGET)
        failures = CounterMetricFamily(
            "velithon_target_failures", "Requests that failed on the target (gateway "
            "failures, its own 5xx, no response)", labels=_TARGET)
        probes = CounterMetricFamily(
            "velithon_health_probes", "Active health probes sent to the target",
            labels=_TARGET)
        latency = GaugeMetricFamily(
            "velithon_target_latency_ewma_seconds", "The peak-EWMA latency the router keeps "
            "for the target (failures count as a 5 s sample)", labels=_TARGET)
        restarts = CounterMetricFamily(
            "velithon_target_actor_restarts", "Times the target's actor was restarted "
            "after a crash", labels=_TARGET)
        pool_idle = GaugeMetricFamily(
            "velithon_pool_idle_connections", "Idle keep-alive connections to the target",
            labels=_TARGET)
        pool_open = GaugeMetricFamily(
            "velithon_pool_open_connections", "Open connections to the target (idle and "
            "in use)", labels=_TARGET)
        route_families = {
            "retries": CounterMetricFamily(
                "velithon_retries", "Retries the route sent to another target",
                labels=["route"]),
            "retries_denied": CounterMetricFamily(
                "velithon_retries_denied", "Retries the retry budget refused",
                labels=["route"]),
            "rejected": CounterMetricFamily(
                "velithon_no_target_available", "Requests answered 503 because no target "
                "could take them", labels=["route"]),
            "overflows": CounterMetricFamily(
                "velithon_target_limit_overflows", "Requests refused because every target "
                "was at max_requests_per_target", labels=["route"]),
            "panic_picks": CounterMetricFamily(
                "velithon_panic_picks", "Picks made in panic mode", labels=["route"]),
        }
        panicking = GaugeMetricFamily(
            "velithon_route_panicking", "1 while the route is in panic mode",
            labels=["route"])

        source = ["route", "source"]
        discovery: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "size": GaugeMetricFamily(
                "velithon_discovery_targets", "Targets the source's last good answer named",
                labels=source),
            "ready": GaugeMetricFamily(
                "velithon_discovery_ready", "1 once a lookup of the source has succeeded",
                labels=source),
            "lookups": CounterMetricFamily(
                "velithon_discovery_lookups", "Lookups of the source", labels=source),
            "failures": CounterMetricFamily(
                "velithon_discovery_failures", "Failed or empty lookups of the source (the "
                "last good set is kept)", labels=source),
        }
        since_success = GaugeMetricFamily(
            "velithon_discovery_seconds_since_success", "Seconds since the source's last "
            "successful lookup", labels=source)

        for picture in self._pictures:
            route = picture.balanced.name
            snap = picture.snapshot
            for d in snap.discovery:
                for name, family in discovery.items():
                    family.add_metric([route, d.source], float(getattr(d, name)))
                if d.seconds_since_success is not None:
                    since_success.add_metric([route, d.source], d.seconds_since_success)
            for name, family in route_families.items():
                family.add_metric([route], getattr(snap, name))
            panicking.add_metric([route], float(snap.panicking))
            for target in snap.targets:
                v, s = target.view, target.status
                labels = [route, v.url]
                for status, count in v.responses:
                    requests.add_metric([*labels, _code(status)], count)
                cumulative, buckets = 0, []
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), v.latency_counts,
                                        strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound),
                                    float(cumulative)))
                duration.add_metric(labels, buckets, v.latency_sum)
                healthy.add_metric(labels, float(v.healthy))
                for state in _BREAKER_STATES:
                    breaker.add_metric([*labels, state], float(v.breaker_state == state))
                routable.add_metric(labels, float(
                    v.healthy and v.breaker_state != "open" and not v.draining
                    and v.ejected_until is None))
                in_flight.add_metric(labels, v.in_flight)
                weight.add_metric(labels, v.weight)
                draining.add_metric(labels, float(v.draining))
                ejected.add_metric(labels, float(v.ejected_until is not None))
                ejections.add_metric(labels, v.ejections)
                latency.add_metric(labels, v.latency_ms / 1000.0)
                pool_idle.add_metric(labels, v.pool_idle)
                pool_open.add_metric(labels, v.pool_open)
                if s is not None:
                    failures.add_metric(labels, s.failures)
                    probes.add_metric(labels, s.probes)
                    restarts.add_metric(labels, s.restarts)
        yield from (requests, duration, healthy, breaker, routable, in_flight, weight,
                    draining, ejected, ejections, failures, probes, latency, restarts,
                    pool_idle, pool_open, *route_families.values(), panicking,
                    *discovery.values(), since_success)


class AppMetrics:
    """One app's registry: the gateway collector plus the process's own metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = GatewayCollector()
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)

    def render(self, pictures: Sequence[Picture]) -> bytes:
        """The exposition text for this scrape (synchronous: one consistent picture)."""
        self.collector.update(pictures)
        return generate_latest(self.registry)
