"""The seven scenarios, the time plan that sizes them, and how one scenario is run.

A run of ``duration`` seconds sets aside :data:`_OVERHEAD` seconds for starting the
processes, letting each scenario settle and stopping everything. Of the rest, the
warm-up takes a little (steady traffic alone, then the priming bursts of ``warmup``,
each a few seconds at most), and the scenarios share the remainder: each first gets
the floor it needs to mean anything (:func:`_floors`), and what is left is shared by
:data:`_SHARES`, so the whole run takes about ``duration`` seconds. In the 60-second
run the floors take nearly everything; in the 10-minute run the shares dominate. The
floors: the stalled uploads outlast the gateway's 5 s per-try timeout, the point
where a gateway that blames backends for a slow client starts opening breakers; each
idle keep-alive burst holds the first half of its connections past the server's 5 s
keep-alive timeout, so the gateway closes some of them itself; the backend faults
hold a detection window *and* steady time after each change. Connection counts
follow the variant: the 60-second run opens 2,000 idle connections and 300 slowloris
ones, the 10-minute run 9,000 and 1,000, all capped by the descriptor limit (minus a
reserve for the runner).

Each scenario runs for its share while the steady client keeps going; then the
attack's sockets are closed and the scenario *settles*: it waits (at most
``settle_max``) until the gateway's descriptor count is back near the baseline, and
records the gateway's usage at that moment. A scenario with ``rounds=2`` (the idle
keep-alive one) runs its attack twice, each round for half its time, and settles
after each round: the report gates that the second round's settled RSS exceeds the
first's by no more than a small tolerance (see ``report``), since a per-connection
leak grows RSS with every repetition while an allocator's high-water mark does not.
A scenario that raises or overruns is recorded as failed, and the run goes on to the
next one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio
from benchmarks.attacks import backend_faults, connections, slow_clients
from benchmarks.attacks.backend_faults import FaultMark
from benchmarks.attacks.client import SteadyClient
from benchmarks.attacks.fleet import Fleet, TargetState
from benchmarks.attacks.gateway_app import ROUTE_OPTIONS, detection_window
from benchmarks.attacks.usage import Sample, Sampler

__all__ = [
    "SCENARIOS", "Blame", "Context", "Plan", "Scenario", "ScenarioResult", "run_scenario",
    "settle",
]

LONG_RUN = 300.0
#: The gateway's per-try timeout, and the server's keep-alive timeout (its default).
_PER_TRY_TIMEOUT = ROUTE_OPTIONS["per_try_timeout_ms"] / 1000
_KEEPALIVE_TIMEOUT = 5.0
#: Idle connections opened per second (``connections.idle_keepalive``'s default).
_IDLE_OPEN_RATE = 2000.0
#: Relative weights of the scenarios' durations beyond their floors.
_SHARES = {
    "stalled uploads": 12,
    "slowloris": 8,
    "connection flood": 8,
    "idle keep-alive": 9,
    "backend killed": 12,
    "flapping": 13,
    "soak": 14,
}
#: Seconds of a run spent outside warm-up and scenarios (start-up, settling after each
#: scenario, each idle round and each priming burst, teardown).
_OVERHEAD = 12.0
#: Steady traffic alone at the start of the warm-up, before the priming bursts.
_WARMUP_SHARE = 0.04
#: Steady traffic after the priming bursts have settled, before the baseline is taken.
_QUIET = 0.5
#: Descriptors the runner keeps for itself (client pool, attackers' other sockets).
_FD_RESERVE = 1000
#: A gateway reports an aborted exchange's outcome a moment after the client left.
_OUTCOME_DELAY = 0.5


def _floors(idle_connections: int) -> dict[str, float]:
    """The least time each scenario needs to test what it is there for (see above)."""
    window = detection_window()
    # the first half of the connections is open for the keep-alive timeout or longer
    # (plus half a second: the first ones open a moment after the burst starts)
    burst = _KEEPALIVE_TIMEOUT + 0.5 * idle_connections / _IDLE_OPEN_RATE + 0.5
    return {
        "stalled uploads": _PER_TRY_TIMEOUT + 1.5,
        "slowloris": 3.0,
        "connection flood": 3.0,
        "idle keep-alive": 2 * burst,
        # killed at 15 %, restarted at 55 %: 40 % holds a window, and so do the last 45 %
        # once the restart (about half a second) is done
        "backend killed": (window + 0.6) / 0.45,
        "flapping": 2 * (window + 1.5) + 0.2,  # two phases of a window and steady time
        "soak": 3.0,
    }


@attrs.frozen
class Plan:
    """Every size and duration of one run, derived from ``--duration``."""

    duration: float
    warmup: float
    priming: dict[str, float]
    quiet: float
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
        idle_connections = min(9000 if long else 2000, usable)
        slowloris_connections = min(1000 if long else 300, usable)
        available = max(duration - _OVERHEAD, 10.0)
        warmup = max(2.0, _WARMUP_SHARE * available)
        # a burst at full size, held for a moment once every connection is open
        priming = {
            "stalled uploads": 1.0,  # 70 KB on loopback: streaming upstream at once
            "slowloris": 1.5,  # opened over 1 s (``slow_clients.slowloris``'s ramp)
            # opened at ``_IDLE_OPEN_RATE``, then held long enough for the gateway to
            # answer the requests of the half that sends one
            "idle keep-alive": idle_connections / _IDLE_OPEN_RATE + 1.0,
        }
        floors = _floors(idle_connections)
        rest = available - warmup - sum(priming.values()) - _QUIET
        extra = rest - sum(floors.values())
        if extra >= 0:
            seconds = {name: floors[name] + extra * share / sum(_SHARES.values())
                       for name, share in _SHARES.items()}
        else:  # a short run: the floors, scaled down
            seconds = {name: max(rest, 10.0) * floor / sum(floors.values())
                       for name, floor in floors.items()}
        return cls(
            duration=duration,
            warmup=warmup,
            priming=priming,
            quiet=_QUIET,
            seconds=seconds,
            settle_max=max(3.0, duration / 60),
            sample_every=30.0 * duration / 600,
            idle_connections=idle_connections,
            slowloris_connections=slowloris_connections,
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
    single failure against any of them while they run. ``rounds`` > 1 runs the attack
    that many times, settling after each (see the module docstring).
    """

    name: str
    what: str
    run: Callable[[Context, float], Awaitable[str]]
    client_side: bool
    rounds: int = 1


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
    #: the settled usage after each round (``after`` is the last one)
    rounds: list[Sample] = attrs.field(factory=list)


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
             "before any); those the gateway closes are not reopened; two bursts, the "
             "second must not leave more memory behind than the first", _idle,
             client_side=True, rounds=2),
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


async def settle(ctx: Context, active_end: float, fd_target: int) -> Sample:
    """Wait until the gateway's descriptors are back at ``fd_target`` (at most
    ``settle_max`` after ``active_end``); the gateway's usage at that moment."""
    await trio.sleep(_OUTCOME_DELAY)
    deadline = active_end + ctx.plan.settle_max
    while True:  # bounded by ``deadline``
        after = ctx.sampler.now()
        if after.fds <= fd_target or trio.current_time() >= deadline:
            return after
        await trio.sleep(0.25)


async def run_scenario(ctx: Context, scenario: Scenario, fd_target: int) -> ScenarioResult:
    """Run one scenario for its share of the plan, then let it settle (both bounded)."""
    seconds = ctx.plan.seconds[scenario.name] / scenario.rounds
    ctx.sampler.reset_peak()
    states_before = await ctx.fleet.target_states()
    before = ctx.sampler.now()
    start = trio.current_time()
    notes: list[str] = []
    error: str | None = None
    settled: list[Sample] = []
    for _ in range(scenario.rounds):
        try:
            with trio.fail_after(seconds + 30.0):
                notes.append(await scenario.run(ctx, seconds))
        except trio.TooSlowError:
            error = f"did not finish within {seconds + 30.0:.0f} s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        active_end = trio.current_time()
        settled.append(await settle(ctx, active_end, fd_target))
        if error is not None:
            break
    after = settled[-1]
    peak = Sample(active_end, ctx.sampler.peak_rss, ctx.sampler.peak_fds)
    cpu = 100 * (after.cpu_seconds - before.cpu_seconds) / max(after.t - before.t, 1e-9)
    blame = Blame.between(states_before, await ctx.fleet.target_states())
    text = notes[0] if len(notes) == 1 else "; ".join(
        f"burst {i}: {note}" for i, note in enumerate(notes, 1))
    return ScenarioResult(scenario.name, scenario.what, start, active_end,
                          trio.current_time(), text, peak, after, cpu, ctx.sampler.max_lag,
                          scenario.client_side, blame, error, settled)
