"""The seven scenarios, the time plan that sizes them, and how one scenario is run.

A run of ``duration`` seconds sets aside :data:`_OVERHEAD` seconds for starting the
processes, letting each scenario settle and stopping everything; of the rest, 6 % is
warm-up and the remainder is shared among the scenarios by :data:`_SHARES`, so the
whole run takes about ``duration`` seconds. The backend faults get more room, since
they need a detection window *and* steady time after it, and so do the stalled
uploads: in the 60-second run their 8 s still outlast the gateway's 5 s per-try
timeout, the point where a gateway that blames backends for a slow client starts
opening breakers. Connection counts follow the variant: the
60-second run opens 2,000 idle connections and 300 slowloris ones, the 10-minute run
9,000 and 1,000, all capped by the descriptor limit (minus a reserve for the runner).

Each scenario runs for its share while the steady client keeps going; then the
attack's sockets are closed and the scenario *settles*: it waits (at most
``settle_max``) until the gateway's descriptor count is back near the baseline, and
records the gateway's usage at that moment. A scenario that raises or overruns is
recorded as failed, and the run goes on to the next one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio
from benchmarks.attacks import backend_faults, connections, slow_clients
from benchmarks.attacks.backend_faults import FaultMark
from benchmarks.attacks.client import SteadyClient
from benchmarks.attacks.fleet import Fleet, TargetState
from benchmarks.attacks.gateway_app import detection_window
from benchmarks.attacks.usage import Sample, Sampler

__all__ = [
    "SCENARIOS", "Blame", "Context", "Plan", "Scenario", "ScenarioResult", "run_scenario",
]

LONG_RUN = 300.0
#: Relative weights of the scenarios' durations.
_SHARES = {
    "stalled uploads": 12,
    "slowloris": 8,
    "connection flood": 8,
    "idle keep-alive": 9,
    "backend killed": 12,
    "flapping": 13,
    "soak": 14,
}
#: Seconds of a run spent outside warm-up and scenarios (start-up, settling, teardown).
_OVERHEAD = 8.0
_WARMUP_SHARE = 0.06
#: Descriptors the runner keeps for itself (client pool, attackers' other sockets).
_FD_RESERVE = 1000
#: A gateway reports an aborted exchange's outcome a moment after the client left.
_OUTCOME_DELAY = 0.5


@attrs.frozen
class Plan:
    """Every size and duration of one run, derived from ``--duration``."""

    duration: float
    warmup: float
    seconds: dict[str, float]
    settle_max: float
    sample_every: float
    idle_connections: int
    slowloris_connections: int
    flood_rate: float
    workers: int = 4
    rate_per_worker: float = 8.0
    soak_workers: int = 2

    @classmethod
    def build(cls, duration: float, fd_limit: int) -> Plan:
        """The plan for a run of ``duration`` seconds with ``fd_limit`` descriptors."""
        long = duration >= LONG_RUN
        usable = max(100, fd_limit - _FD_RESERVE)
        available = max(duration - _OVERHEAD, 10.0)
        warmup = max(3.0, _WARMUP_SHARE * available)
        total = sum(_SHARES.values())
        return cls(
            duration=duration,
            warmup=warmup,
            seconds={name: (available - warmup) * share / total
                     for name, share in _SHARES.items()},
            settle_max=max(3.0, duration / 60),
            sample_every=30.0 * duration / 600,
            idle_connections=min(9000 if long else 2000, usable),
            slowloris_connections=min(1000 if long else 300, usable),
            flood_rate=300.0,
        )

    def max_requests(self) -> int:
        """A per-worker cap, far above what the pace allows: a bound, not a target."""
        return int(self.rate_per_worker * (2 * self.duration + 60))


@attrs.define
class Context:
    """What a scenario may use; ``mark`` records a fault for the detection windows."""

    fleet: Fleet
    plan: Plan
    client: SteadyClient
    sampler: Sampler
    faults: list[FaultMark] = attrs.field(factory=list)

    def mark(self, label: str, began: float) -> None:
        """Record a change that began at ``began`` and is complete now."""
        self.faults.append(FaultMark(began, trio.current_time(), label))


@attrs.frozen
class Scenario:
    """A named attack or fault; ``run(context, seconds)`` returns a note for the report.

    ``client_side`` attacks leave the backends alone, so the gateway must not count a
    single failure against any of them while they run.
    """

    name: str
    what: str
    run: Callable[[Context, float], Awaitable[str]]
    client_side: bool


@attrs.frozen
class Blame:
    """How the gateway's view of the backends changed over one scenario."""

    failures: int
    detail: str

    @classmethod
    def between(cls, before: dict[str, TargetState] | None,
                after: dict[str, TargetState] | None) -> Blame | None:
        """Failure counters' growth, and breakers open or targets ejected at the end."""
        if before is None or after is None:
            return None
        grown = {key: state.failures - before[key].failures for key, state in after.items()
                 if key in before and state.failures > before[key].failures}
        opened = [key for key, state in after.items() if state.breaker_state != "closed"]
        ejected = [key for key, state in after.items() if state.ejected]
        parts = [", ".join(f"{key} +{n}" for key, n in grown.items()) or "no failures"]
        parts += [f"{label}: {', '.join(keys)}" for label, keys
                  in (("breaker not closed", opened), ("ejected", ejected)) if keys]
        return cls(sum(grown.values()) + len(opened) + len(ejected), "; ".join(parts))


@attrs.define
class ScenarioResult:
    """One scenario's timing, notes and the gateway's usage (peak, and after settling)."""

    name: str
    what: str
    start: float
    active_end: float
    end: float
    notes: str
    peak: Sample
    after: Sample
    cpu_percent: float
    max_lag: float
    client_side: bool
    blame: Blame | None
    error: str | None = None


async def _stalled(ctx: Context, seconds: float) -> str:
    stats = await slow_clients.stalled_uploads(
        ctx.fleet.gateway_host, ctx.fleet.gateway_port, seconds=seconds,
        hold=min(seconds, 35.0))
    return stats.summary()


async def _slowloris(ctx: Context, seconds: float) -> str:
    stats = await slow_clients.slowloris(
        ctx.fleet.gateway_host, ctx.fleet.gateway_port, seconds=seconds,
        connections=ctx.plan.slowloris_connections)
    return stats.summary()


async def _flood(ctx: Context, seconds: float) -> str:
    stats = await connections.flood(ctx.fleet.gateway_host, ctx.fleet.gateway_port,
                                    seconds=seconds, rate=ctx.plan.flood_rate)
    return stats.summary()


async def _idle(ctx: Context, seconds: float) -> str:
    stats, note = await connections.idle_keepalive(
        ctx.fleet.gateway_host, ctx.fleet.gateway_port, seconds=seconds,
        count=ctx.plan.idle_connections)
    return stats.summary() + note


async def _kill(ctx: Context, seconds: float) -> str:
    return await backend_faults.kill_and_restart(ctx.fleet, seconds=seconds, mark=ctx.mark)


async def _flapping(ctx: Context, seconds: float) -> str:
    # a phase holds a detection window plus steady time, yet there is at least one flip
    half_period = min(max(detection_window() + 1.5, seconds / 6), seconds / 2)
    return await backend_faults.flapping(ctx.fleet, seconds=seconds, half_period=half_period,
                                         mark=ctx.mark)


async def _soak(ctx: Context, seconds: float) -> str:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(ctx.client.run, ctx.plan.soak_workers, stop, ctx.plan.max_requests())
        await trio.sleep(seconds)
        stop.set()
    return (f"{ctx.plan.soak_workers} extra paced workers on top of the steady ones; "
            f"usage sampled every {ctx.plan.sample_every:g} s")


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("stalled uploads",
             "15 connections send 70 KB of a declared 1 MB upload, then stall (held, then "
             "dropped; reopened when the gateway ends one)", _stalled, client_side=True),
    Scenario("slowloris",
             "connections dribble header bytes (1 byte/s) and never finish the head",
             _slowloris, client_side=True),
    Scenario("connection flood",
             "connections opened and ended at once (FIN, RST, half a request line, a full "
             "request)", _flood, client_side=True),
    Scenario("idle keep-alive",
             "thousands of idle connections opened and held (half after a request, half "
             "before any); those the gateway closes are not reopened", _idle,
             client_side=True),
    Scenario("backend killed",
             "backend c (http.server) SIGKILLed under load, restarted on the same port",
             _kill, client_side=False),
    Scenario("flapping",
             "a and b alternate healthy/sick (503) out of phase while c is stopped",
             _flapping, client_side=False),
    Scenario("soak",
             "hashed uploads and downloads continuously, more workers, gateway RSS/FDs "
             "sampled", _soak, client_side=False),
)


async def run_scenario(ctx: Context, scenario: Scenario, fd_target: int) -> ScenarioResult:
    """Run one scenario for its share of the plan, then let it settle (both bounded)."""
    seconds = ctx.plan.seconds[scenario.name]
    ctx.sampler.reset_peak()
    states_before = await ctx.fleet.target_states()
    before = ctx.sampler.now()
    start = trio.current_time()
    notes, error = "", None
    try:
        with trio.fail_after(seconds + 30.0):
            notes = await scenario.run(ctx, seconds)
    except trio.TooSlowError:
        error = f"did not finish within {seconds + 30.0:.0f} s"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    active_end = trio.current_time()
    await trio.sleep(_OUTCOME_DELAY)
    deadline = active_end + ctx.plan.settle_max
    while True:  # bounded by ``deadline``
        after = ctx.sampler.now()
        if after.fds <= fd_target or trio.current_time() >= deadline:
            break
        await trio.sleep(0.25)
    peak = Sample(active_end, ctx.sampler.peak_rss, ctx.sampler.peak_fds)
    cpu = 100 * (after.cpu_seconds - before.cpu_seconds) / max(after.t - before.t, 1e-9)
    blame = Blame.between(states_before, await ctx.fleet.target_states())
    return ScenarioResult(scenario.name, scenario.what, start, active_end,
                          trio.current_time(), notes, peak, after, cpu, ctx.sampler.max_lag,
                          scenario.client_side, blame, error)
