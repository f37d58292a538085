"""Faults on the backend side: a backend killed under load, and out-of-phase flapping.

Every change is reported through ``mark(label, began)`` once it is complete, with the
time it began. The report forgives errors of requests that overlap the change or the
detection window after it (see
``gateway_app.detection_window``), and only those: a gateway with health checks,
retries, breakers and outlier detection has no excuse to fail an idempotent request
once it has had time to notice.

**Kill**: SIGKILL the ``http.server`` backend ``c`` at 15 % of the scenario (its
in-flight requests die with it), restart it on the same port at 55 %, and let the
rest of the scenario show that the gateway takes it back.

**Flapping**: ``c`` is stopped for the whole scenario; ``a`` and ``b`` alternate
between healthy and sick (503 to probes *and* to requests) in opposite phases, so at
every moment exactly one backend can serve. Each phase lasts long enough to contain a
full detection window plus some steady time after it. At the end both are healed and
``c`` restarted (also marked: recovery is a change the gateway must absorb).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio
from benchmarks.attacks.fleet import Fleet

__all__ = ["FaultMark", "Mark", "flapping", "kill_and_restart"]


@attrs.frozen
class FaultMark:
    """A change made to a backend, from the moment it began to the moment it was done.

    Both ends matter: a request in flight when the first command lands is affected,
    though the change may take a few milliseconds (or, for a restart, a second) to
    complete; the detection window runs from ``start`` to ``end`` + the window.
    """

    start: float
    end: float
    label: str


#: ``mark(label, began)``: record a change that began at ``began`` and is complete now.
Mark = Callable[[str, float], None]


async def kill_and_restart(fleet: Fleet, *, seconds: float, mark: Mark) -> str:
    """Kill backend ``c`` under load, then restart it; returns a note for the report."""
    start = trio.current_time()
    await trio.sleep_until(start + 0.15 * seconds)
    killed_at = trio.current_time()
    fleet.kill_stdlib()
    mark("c killed (SIGKILL)", killed_at)
    await trio.sleep_until(start + 0.55 * seconds)
    began = trio.current_time()
    await fleet.restart_stdlib()
    mark("c restarted", began)
    down = trio.current_time() - killed_at
    await trio.sleep_until(start + seconds)
    return f"backend c killed at {0.15 * seconds:.1f} s, down {down:.1f} s, then restarted"


async def flapping(fleet: Fleet, *, seconds: float, half_period: float, mark: Mark) -> str:
    """Stop ``c``; flip ``a``/``b`` health every ``half_period``; heal everything at the end."""
    start = trio.current_time()
    end = start + seconds
    await fleet.stop_stdlib()
    await fleet.set_sick("b", True)
    mark("c stopped; a healthy, b sick", start)
    sick, well = "b", "a"
    flips = 0
    try:
        # each flip is followed by a full phase before ``end``
        while start + (flips + 2) * half_period <= end + 1e-6:
            await trio.sleep_until(start + (flips + 1) * half_period)
            began = trio.current_time()
            sick, well = well, sick
            await fleet.set_sick(sick, True)
            await fleet.set_sick(well, False)
            flips += 1
            mark(f"{well} healthy, {sick} sick", began)
        await trio.sleep_until(end)
    finally:
        with trio.CancelScope(shield=True):
            began = trio.current_time()
            await fleet.set_sick(sick, False)
            if not fleet.stdlib_running():
                await fleet.restart_stdlib()
    mark("flapping over: a, b healthy, c restarted", began)
    return f"{flips} flips, {half_period:.1f} s apart, while c was stopped"
