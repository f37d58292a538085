"""The warm-up, and why it primes the gateway before the baseline is taken.

The "RSS flat" gate (``report``) asks whether the gateway leaks: its RSS after each
scenario, compared with a baseline taken at the end of the warm-up. Steady traffic
alone does not bring a CPython process to the memory it will keep. When a burst of
connections ends, most of what it allocated is freed, but the process does not hand
all of it back: pymalloc returns an arena to the system only when every object in it
is free, a few survivors (interned strings, grown dicts and free lists, objects that
happened to be allocated late) pin partly used arenas, and glibc keeps the heap's top
and trimmed chunks. The first burst of 2,000 idle keep-alive connections thus leaves
RSS some 14 MB higher for good, and stalled uploads and slowloris add about 2 MB each.
That is a high-water mark, not a leak: repeating the same burst reuses the retained
memory and does not grow RSS further. Measured against a baseline taken before any
burst, the gate compared the high-water mark with the 20 MB tolerance, and the
60-second run sat on its edge (+18.6 to +20.2 MB, 1 run in 6 failed) without any
leak, while a real leak could hide under the same allowance.

So the warm-up has three parts, all under the steady client's traffic:

1. **steady traffic** alone (``plan.warmup`` seconds): pools and caches fill; the
   report's "warm-up (no attack)" row is the latency reference;
2. **priming bursts**: each connection-heavy attack the run will play (stalled
   uploads, slowloris, idle keep-alive; only those selected), one after another, at
   the *same size* as its scenario (the same number of connections at once) but for a
   couple of seconds only (``plan.priming``), each closed and settled like a scenario
   before the next. Same size, because the high-water mark follows the number of
   connections held at once; one after another, because held together they would
   raise the mark above anything a scenario does and so loosen the gate;
3. **quiet** (``plan.quiet`` seconds of steady traffic alone), then the baseline.

After that, the gate's 20 MB tolerance is headroom for noise, not for the allocator's
first-burst cost, and anything that grows scenario after scenario is a leak. A
per-connection leak specifically is caught more tightly by the idle keep-alive
scenario's two bursts (``scenarios``, ``rounds=2``): the second one's settled RSS may
exceed the first one's by at most ``report.REPEAT_TOLERANCE_MB``.

The priming bursts are client-side attacks like the scenarios they copy, so the
gateway must not blame a backend for them either; the report shows their counters in
the warm-up's priming row and the "backends not blamed" gate includes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import trio
from benchmarks.attacks.scenarios import SCENARIOS, Blame, Context, settle
from benchmarks.attacks.usage import Sample

__all__ = ["PRIMED", "Priming", "prime"]

#: The connection-heavy attacks the warm-up plays once, in the scenarios' order.
PRIMED = ("stalled uploads", "slowloris", "idle keep-alive")


@attrs.define
class Priming:
    """What the priming bursts did: the gateway's peak, and its usage once settled
    (which, after the quiet time, is the run's baseline)."""

    start: float
    end: float
    notes: str
    peak: Sample
    after: Sample
    cpu_percent: float
    max_lag: float
    blame: Blame | None
    error: str | None = None


async def prime(ctx: Context, selected: Sequence[str], fd_target: int) -> Priming:
    """Play a short burst of each selected connection-heavy attack, settle, stay quiet.

    Every burst is bounded by its own deadline, the settling by ``settle_max``.
    """
    ctx.sampler.reset_peak()
    states_before = await ctx.fleet.target_states()
    before = ctx.sampler.now()
    start = trio.current_time()
    notes: list[str] = []
    error: str | None = None
    for scenario in SCENARIOS:
        if scenario.name not in PRIMED or scenario.name not in selected:
            continue
        seconds = ctx.plan.priming[scenario.name]
        try:
            with trio.fail_after(seconds + 30.0):
                note = await scenario.run(ctx, seconds)
        except trio.TooSlowError:
            error = f"{scenario.name} did not finish within {seconds + 30.0:.0f} s"
        except Exception as exc:
            error = f"{scenario.name}: {type(exc).__name__}: {exc}"
        settled = await settle(ctx, trio.current_time(), fd_target)
        if error is not None:
            break
        notes.append(f"{scenario.name} for {seconds:.1f} s (settled at {settled.rss_mb:.1f} MB):"
                     f" {note}")
    await trio.sleep(ctx.plan.quiet)
    after = ctx.sampler.now()
    peak = Sample(after.t, ctx.sampler.peak_rss, ctx.sampler.peak_fds)
    cpu = 100 * (after.cpu_seconds - before.cpu_seconds) / max(after.t - before.t, 1e-9)
    blame = Blame.between(states_before, await ctx.fleet.target_states())
    return Priming(start, trio.current_time(), "; ".join(notes) or "none", peak, after, cpu,
                   ctx.sampler.max_lag, blame, error)
