"""What the gateway process uses, read from ``/proc``, and sampled over time.

:func:`usage` reads resident memory (``VmRSS``), open descriptors (``/proc/<pid>/fd``)
and CPU time of a process and its descendants.

:class:`Sampler` samples at two cadences, for two questions. Every ``tick`` (half a
second) a sample updates the running peak, because an attack's cost is its peak
(thousands of idle connections are gone again a second after they close). Every
``every`` seconds a sample is also kept in :attr:`Sampler.series`, the time series the
report shows (30 s in the 10-minute run, proportionally less in shorter ones), because
a leak is a trend, not a value. Reading ``/proc`` costs about a millisecond, so
sampling does not disturb the measurement.

The sampler also watches the runner's own event loop: the client and the attackers
share one process (so that the load comes from a single process on a two-core
machine), and when an attack keeps that loop busy the client's latencies grow for
reasons that are not the gateway's. :attr:`Sampler.max_lag` (the longest a 20 ms sleep
overslept since the last reset) tells the two apart in the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

__all__ = ["Sample", "Sampler", "Usage", "usage"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_LAG_PROBE = 0.02


@attrs.frozen
class Usage:
    """Resident memory, open descriptors and CPU time of a process and its descendants."""

    rss_mb: float
    fds: int
    cpu_seconds: float = 0.0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name (field 2) may contain spaces; the ppid follows its ")"
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry))
    return found


def usage(pid: int) -> Usage:
    """VmRSS (``/proc/<pid>/status``), ``/proc/<pid>/fd`` entries and user + system CPU
    time (``/proc/<pid>/stat``), summed over the process tree.

    Descendants are included so the numbers stay right if ``velithon run`` serves from
    worker processes. A process that exits mid-count is skipped.
    """
    rss_kb, fds, ticks = 0, 0, 0
    todo, seen = [pid], set[int]()
    while todo and len(seen) < 64:  # a gateway has a handful of processes at most
        current = todo.pop()
        seen.add(current)
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kb += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{current}/fd"))
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        except OSError:
            continue
        todo.extend(child for child in _children(current) if child not in seen)
    return Usage(rss_mb=rss_kb / 1024, fds=fds, cpu_seconds=ticks / _CLOCK_TICKS)


@attrs.frozen
class Sample:
    """The gateway's usage at time ``t`` (``trio.current_time()``)."""

    t: float
    rss_mb: float
    fds: int
    cpu_seconds: float = 0.0


class Sampler:
    """Peak tracking and a sparse time series of one process tree's usage."""

    def __init__(self, read: Callable[[], Usage], *, every: float, tick: float = 0.5) -> None:
        self._read = read
        self.every = every
        self.tick = tick
        self.series: list[Sample] = []
        self.peak_rss = 0.0
        self.peak_fds = 0
        self.max_lag = 0.0

    def now(self) -> Sample:
        """Sample right now (and count it towards the current peak)."""
        usage = self._read()
        sample = Sample(trio.current_time(), usage.rss_mb, usage.fds, usage.cpu_seconds)
        self.peak_rss = max(self.peak_rss, sample.rss_mb)
        self.peak_fds = max(self.peak_fds, sample.fds)
        return sample

    def reset_peak(self) -> None:
        """Start a new peak window (at the start of each scenario)."""
        self.peak_rss, self.peak_fds, self.max_lag = 0.0, 0, 0.0

    async def _watch_lag(self) -> None:
        while True:  # ends when the runner cancels it
            due = trio.current_time() + _LAG_PROBE
            await trio.sleep_until(due)
            self.max_lag = max(self.max_lag, trio.current_time() - due)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Sample until cancelled by the owner's nursery."""
        next_kept = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_lag)
            task_status.started()
            while True:  # ends when the runner cancels it
                sample = self.now()
                if sample.t >= next_kept:
                    self.series.append(sample)
                    next_kept = sample.t + self.every
                await trio.sleep(self.tick)
