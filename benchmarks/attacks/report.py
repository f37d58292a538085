"""Gates and the markdown report of a run.

The gates, all checked at the end of the run:

1. **bodies**: no lost and no corrupted body, anywhere in the run, with no excuse
   window: a failure must show as an error, never as a wrong 2xx.
2. **idempotent errors**: no failed GET/PUT outside the detection windows. A window
   opens when a backend change begins (kill, restart, each flip of the flapping) and
   closes ``gateway_app.detection_window()`` seconds after the change is complete; a
   request counts as inside if it overlapped one. Client-side attacks open no window:
   slow or hostile clients are not backend faults, and the backends stay healthy
   throughout. Non-idempotent POST errors are reported but not gated (a gateway may
   not retry them).
3. **RSS flat**: after warm-up, the gateway's RSS when each scenario has settled, and
   every soak sample, stays below baseline + :data:`RSS_TOLERANCE_MB`. Peaks during
   an attack are reported, not gated (holding 9,000 connections costs memory). The
   baseline is taken after the warm-up's priming bursts, at the memory CPython keeps
   after a burst of connections (its allocator's high-water mark, see ``warmup``), so
   what this gate sees is growth beyond that mark: a leak, not the first burst's cost.
4. **RSS repeat**: for a scenario that runs its attack twice (idle keep-alive), the
   RSS settled after the second burst exceeds the one settled after the first by at
   most :data:`REPEAT_TOLERANCE_MB`. A high-water mark is reached once (repeated
   bursts settle within a fraction of a MB of each other); a leak of 2 KB per
   connection would add 4 MB with every burst of 2,000.
5. **FDs back**: after each scenario settles, the gateway's open descriptors are
   within :data:`FD_TOLERANCE` of the baseline (pooled upstream connections vary).
6. **backends not blamed**: while a client-side attack runs (stalled uploads,
   slowloris, flood, idle connections), the gateway counts no failure against any
   backend, opens no breaker and ejects no target: the backends did nothing wrong,
   and a gateway that blames them for a client's behaviour takes them out of service
   (read from the gateway's own ``targets_status()`` before and after each scenario).
   The warm-up's priming bursts are client-side attacks too, and are held to the same.
7. **gateway alive**: the gateway process is still running at the end.
8. **all scenarios ran**: every scenario (and every priming burst of the warm-up) ran
   to its end without an error of its own.

The well-behaved client's p50/p99 under each scenario is reported, not gated: the
machine is shared, so absolute latencies say more in comparison than alone.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

import attrs
from benchmarks.attacks.backend_faults import FaultMark
from benchmarks.attacks.client import Record
from benchmarks.attacks.gateway_app import describe
from benchmarks.attacks.scenarios import Blame, Plan, ScenarioResult
from benchmarks.attacks.usage import Sample
from benchmarks.attacks.warmup import Priming

__all__ = [
    "FD_TOLERANCE", "REPEAT_TOLERANCE_MB", "RSS_TOLERANCE_MB", "Gate", "RunResult", "evaluate",
    "render",
]

RSS_TOLERANCE_MB = 20.0
REPEAT_TOLERANCE_MB = 3.0
FD_TOLERANCE = 10


@attrs.define
class RunResult:
    """Everything a run measured; times are ``trio.current_time()`` values."""

    command: str
    tree: str
    plan: Plan
    window: float
    traffic_start: float
    warmup_end: float
    baseline: Sample
    scenarios: list[ScenarioResult]
    records: list[Record]
    faults: list[FaultMark]
    series: list[Sample]
    gateway_alive: bool
    finished: bool
    wall_seconds: float = 0.0
    traffic_start_epoch: float = math.nan
    warmup_cpu_percent: float = math.nan
    warmup_lag: float = math.nan
    #: when the priming bursts began (the end of the warm-up's steady traffic alone)
    priming_start: float = math.nan
    #: the gateway's usage just before the priming bursts
    pre_priming: Sample | None = None
    priming: Priming | None = None
    diagnostics: str = ""


@attrs.frozen
class Gate:
    name: str
    rule: str
    measured: str
    passed: bool


def in_window(record: Record, faults: Sequence[FaultMark], window: float) -> bool:
    """Whether the request overlapped a fault or the detection window after it."""
    return any(record.start <= f.end + window and record.end >= f.start for f in faults)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@attrs.frozen
class PhaseStats:
    """The steady client's view of one phase."""

    requests: int
    gated_errors: int
    window_errors: int
    post_errors: int
    lost: int
    corrupted: int
    reframed: int
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, records: list[Record], result: RunResult) -> PhaseStats:
        errors = [(r, in_window(r, result.faults, result.window))
                  for r in records if r.result == "error"]
        latencies = [r.latency for r in records]
        return cls(
            requests=len(records),
            gated_errors=sum(1 for r, windowed in errors if r.idempotent and not windowed),
            window_errors=sum(1 for r, windowed in errors if r.idempotent and windowed),
            post_errors=sum(1 for r, _ in errors if not r.idempotent),
            lost=sum(1 for r in records if r.result == "lost"),
            corrupted=sum(1 for r in records if r.result == "corrupted"),
            reframed=sum(1 for r in records if r.reframed),
            p50_ms=1000 * _percentile(latencies, 0.50),
            p99_ms=1000 * _percentile(latencies, 0.99),
        )


def _between(records: list[Record], start: float, end: float) -> list[Record]:
    return [r for r in records if start <= r.start < end]


_PRIMING_ROW = "warm-up: priming bursts"


def phases(result: RunResult) -> list[tuple[str, list[Record], ScenarioResult | None]]:
    """(name, records, scenario) per phase; a phase includes its settling time."""
    steady_end = result.warmup_end if result.priming is None else result.priming_start
    out: list[tuple[str, list[Record], ScenarioResult | None]] = [
        ("warm-up (no attack)", _between(result.records, result.traffic_start, steady_end),
         None)]
    if result.priming is not None:
        out.append((_PRIMING_ROW, _between(result.records, result.priming_start,
                                           result.warmup_end), None))
    for i, scenario in enumerate(result.scenarios):
        end = result.scenarios[i + 1].start if i + 1 < len(result.scenarios) else math.inf
        out.append((scenario.name, _between(result.records, scenario.start, end), scenario))
    return out


def evaluate(result: RunResult, expected: Sequence[str]) -> list[Gate]:
    """The eight gates (see the module docstring)."""
    total = PhaseStats.of(result.records, result)
    base = result.baseline
    soak = next((s for s in result.scenarios if s.name == "soak"), None)
    rss_points = [(s.name, s.after.rss_mb) for s in result.scenarios]
    if soak is not None:
        rss_points += [("soak sample", x.rss_mb) for x in result.series
                       if soak.start <= x.t <= soak.end]
    worst_rss = max(rss_points, key=lambda p: p[1], default=("-", base.rss_mb))
    worst_fds = max(((s.name, s.after.fds) for s in result.scenarios),
                    key=lambda p: p[1], default=("-", base.fds))
    repeats = [(s.name, s.rounds[0].rss_mb, s.rounds[-1].rss_mb) for s in result.scenarios
               if len(s.rounds) > 1]
    grown = [name for name, first, last in repeats if last - first > REPEAT_TOLERANCE_MB]
    priming = result.priming
    failed = [s.name for s in result.scenarios if s.error]
    if priming is not None and priming.error:
        failed.insert(0, f"warm-up priming ({priming.error})")
    client_side: list[tuple[str, Blame | None]] = [
        (s.name, s.blame) for s in result.scenarios if s.client_side]
    if priming is not None:
        client_side.insert(0, ("warm-up priming", priming.blame))
    blamed = [f"{name}: {blame.detail if blame else 'gateway status unavailable'}"
              for name, blame in client_side if blame is None or blame.failures]
    missing = [name for name in expected if name not in {s.name for s in result.scenarios}]
    return [
        Gate("bodies", "0 lost, 0 corrupted", f"{total.lost} lost, {total.corrupted} corrupted",
             total.lost == 0 and total.corrupted == 0),
        Gate("idempotent errors", f"0 outside {result.window:.1f} s detection windows",
             f"{total.gated_errors} (plus {total.window_errors} inside windows; "
             f"{total.post_errors} POST errors, not gated)", total.gated_errors == 0),
        Gate("RSS flat", f"< baseline {base.rss_mb:.1f} MB + {RSS_TOLERANCE_MB:g} MB after each "
             "scenario and during the soak",
             f"max {worst_rss[1]:.1f} MB ({worst_rss[1] - base.rss_mb:+.1f} MB, {worst_rss[0]})",
             worst_rss[1] - base.rss_mb < RSS_TOLERANCE_MB),
        Gate("RSS repeat", "settled RSS after the second burst ≤ after the first + "
             f"{REPEAT_TOLERANCE_MB:g} MB", "; ".join(
                 f"{name}: {first:.1f} → {last:.1f} MB ({last - first:+.1f} MB)"
                 for name, first, last in repeats) or "no repeated scenario in this run",
             not grown),
        Gate("FDs back", f"≤ baseline {base.fds} + {FD_TOLERANCE} after each scenario",
             f"max {worst_fds[1]} ({worst_fds[0]})", worst_fds[1] <= base.fds + FD_TOLERANCE),
        Gate("backends not blamed", "during client-side attacks: no failure counted against a "
             "backend, no breaker opened, no target ejected",
             "; ".join(blamed) or (
                 f"none in {len(client_side)} client-side phases (the warm-up's priming "
                 "bursts and the scenarios)" if priming is not None
                 else f"none in {len(client_side)} client-side scenarios"),
             not blamed),
        Gate("gateway alive", "the gateway process is running at the end",
             "running" if result.gateway_alive else "DEAD", result.gateway_alive),
        Gate("all scenarios ran", "each scenario ran to its end, the run was not cut short",
             "yes" if result.finished and not failed and not missing
             else f"failed: {failed or '-'}, missing: {missing or '-'}, "
                  f"finished: {result.finished}",
             result.finished and not failed and not missing),
    ]


def _failure_examples(records: list[Record], result: RunResult, limit: int = 10) -> list[str]:
    kinds: collections.Counter[tuple[str, str, str]] = collections.Counter()
    times: dict[tuple[str, str, str], list[float]] = collections.defaultdict(list)
    for r in records:
        if r.result == "ok" or (r.result == "error" and in_window(r, result.faults, result.window)):
            continue
        key = (r.result, r.label, f"{r.status or '-'} {r.detail[:90]}")
        kinds[key] += 1
        times[key].append(r.start - result.traffic_start)
    return [f"- {n}× {kind} `{label}` (started at {_times(times[key])} s): {detail}"
            for key, n in kinds.most_common(limit) for kind, label, detail in [key]]


def _times(starts: list[float], shown: int = 4) -> str:
    text = ", ".join(f"{t:.1f}" for t in starts[:shown])
    return text + (", …" if len(starts) > shown else "")


def render(result: RunResult, gates: list[Gate]) -> str:
    """The markdown report: per-phase table, gates, soak series, faults, failure samples."""
    t0 = result.traffic_start
    lines = [
        (f"Command: `{result.command}`; tree: {result.tree}; "
         f"wall time {result.wall_seconds:.0f} s; steady client {result.plan.workers} workers "
         f"× {result.plan.rate_per_worker:g} req/s; detection window {result.window:.1f} s."),
        "",
        ("| scenario | requests | idempotent errors (gated / in window) | POST errors | lost | "
         "corrupted | CL uploads reframed | p50 ms | p99 ms | gateway CPU % | runner loop lag "
         "max ms | gateway RSS MB peak → settled | gateway FDs peak → settled | backend "
         "failures counted by the gateway | attack |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    base = result.baseline
    for name, records, scenario in phases(result):
        s = PhaseStats.of(records, result)
        priming = result.priming
        if scenario is None and name == _PRIMING_ROW and priming is not None:
            usage = f"{priming.peak.rss_mb:.1f} → {base.rss_mb:.1f} (baseline)"
            fds = f"{priming.peak.fds} → {base.fds} (baseline)"
            notes = priming.notes + (f" **ERROR: {priming.error}**" if priming.error else "")
            cpu, lag = priming.cpu_percent, priming.max_lag
            blame = priming.blame.detail if priming.blame else "unknown"
        elif scenario is None:
            pre = result.pre_priming
            usage = f"{base.rss_mb:.1f} (baseline)" if pre is None else f"{pre.rss_mb:.1f}"
            fds = f"{base.fds} (baseline)" if pre is None else f"{pre.fds}"
            notes, blame = "none", "-"
            cpu, lag = result.warmup_cpu_percent, result.warmup_lag
        else:
            settled = ", ".join(f"{r.rss_mb:.1f}" for r in scenario.rounds[:-1])
            usage = (f"{scenario.peak.rss_mb:.1f} → "
                     + (f"{settled} then " if settled else "") + f"{scenario.after.rss_mb:.1f}")
            fds = f"{scenario.peak.fds} → {scenario.after.fds}"
            notes = scenario.notes + (f" **ERROR: {scenario.error}**" if scenario.error else "")
            cpu, lag = scenario.cpu_percent, scenario.max_lag
            blame = scenario.blame.detail if scenario.blame else "unknown"
        lines.append(f"| {name} | {s.requests} | {s.gated_errors} / {s.window_errors} | "
                     f"{s.post_errors} | {s.lost} | {s.corrupted} | {s.reframed} | "
                     f"{s.p50_ms:.0f} | {s.p99_ms:.0f} | {cpu:.0f} | {1000 * lag:.0f} | "
                     f"{usage} | {fds} | {blame} | {notes} |")
    lines += ["", "Scenarios:", *(f"- **{s.name}**: {s.what}" for s in result.scenarios)]
    lines += ["", f"Gateway: {describe()}."]
    lines += ["", "| gate | rule | measured | result |", "|---|---|---|---|"]
    lines += [f"| {g.name} | {g.rule} | {g.measured} | {'PASS' if g.passed else 'FAIL'} |"
              for g in gates]
    lines += ["", "Gateway samples (s since traffic start: RSS MB / FDs): " + ", ".join(
        f"{max(0.0, x.t - t0):.0f}: {x.rss_mb:.0f}/{x.fds}" for x in result.series)]
    lines += ["", (f"Traffic started at Unix time {result.traffic_start_epoch:.3f} (the "
              "gateway log's timestamps are Unix times).")]
    lines += ["", "Backend faults (s since traffic start): " + ("; ".join(
        f"{f.start - t0:.1f} {f.label}" for f in result.faults) or "none")]
    examples = _failure_examples(result.records, result)
    if examples:
        lines += ["", "Failures outside detection windows, by kind (most frequent first):",
                  *examples]
    if result.diagnostics:
        lines += ["", "```", result.diagnostics, "```"]
    return "\n".join(lines)
