"""``python -m benchmarks.attacks --duration 60``: run the scenarios, print the report.

``--duration 60`` is the CI variant (about a minute in all); ``--duration 600`` is the
10-minute run to start by hand. The exit code is 0 only if every gate passes, 1 if a
gate fails or the run could not start, 130 if it was interrupted. ``--write-results``
also records the report in ``benchmarks/RESULTS.md`` (a section per duration), so
only runs someone chose to keep end up there. ``--only NAME`` (repeatable) runs a
subset, to study one attack; such runs are never written to the results.

Before starting, the descriptor soft limit is raised to the hard limit: the idle
keep-alive scenario needs thousands of sockets on both ends, and the gateway, as a
child, inherits the raised limit.

One run, start to end (:func:`run`): processes up, steady traffic, warm-up, scenarios,
teardown. The order matters for what the numbers mean. The steady client starts before
the warm-up and runs through every scenario and every settling pause, so each phase's
latencies are measured under exactly that phase. The gateway's baseline (RSS, open
descriptors) is taken at the end of the warm-up, once its pools and caches have
filled *and* short priming bursts of the connection-heavy attacks have brought its
memory to the high-water mark CPython's allocator keeps after such bursts (see
``warmup``: a high-water mark is not a leak, and the "RSS flat" gate is about
leaks). Everything is bounded: each scenario by its own deadline, the whole run by
``1.5 × duration + 120 s``; SIGTERM and SIGHUP end the run early like a Ctrl-C does,
and in every case the :class:`ChildGroup` stops all subprocesses on the way out.
"""

from __future__ import annotations

import argparse
import datetime
import math
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from benchmarks.attacks.client import SteadyClient
from benchmarks.attacks.fleet import Fleet
from benchmarks.attacks.gateway_app import detection_window
from benchmarks.attacks.processes import ChildGroup
from benchmarks.attacks.report import FD_TOLERANCE, RunResult, evaluate, render
from benchmarks.attacks.scenarios import (
    SCENARIOS,
    Context,
    Plan,
    Scenario,
    run_scenario,
)
from benchmarks.attacks.usage import Sample, Sampler
from benchmarks.attacks.warmup import PRIMED, prime

ROOT = Path(__file__).resolve().parents[2]
_FD_CAP = 65536


async def _cancel_on_signal(scope: trio.CancelScope, note: list[str]) -> None:
    """Turn SIGTERM/SIGHUP into a cancellation, so cleanup runs as for Ctrl-C."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            note.append(signal.Signals(signum).name)
            scope.cancel()
            return


async def run(plan: Plan, scenarios: list[Scenario], command: str, tree: str, *, root: Path,
              log_dir: Path) -> RunResult:
    """Run ``scenarios`` in order against a freshly started gateway."""
    wall = time.monotonic()
    result = RunResult(command=command, tree=tree, plan=plan, window=detection_window(),
                       traffic_start=math.nan, warmup_end=math.nan,
                       baseline=Sample(math.nan, math.nan, 0), scenarios=[], records=[],
                       faults=[], series=[], gateway_alive=False, finished=False)
    interrupted: list[str] = []
    async with ChildGroup(log_dir, cwd=root) as group:
        fleet = Fleet(group)
        with trio.move_on_after(1.5 * plan.duration + 120.0) as run_scope:
            async with trio.open_nursery() as watch:
                watch.start_soon(_cancel_on_signal, run_scope, interrupted)
                await fleet.start()
                sampler = Sampler(fleet.gateway_usage, every=plan.sample_every)
                client = SteadyClient(fleet.gateway_url, rate_per_worker=plan.rate_per_worker)
                context = Context(fleet, plan, client, sampler, faults=result.faults)
                result.records, result.series = client.records, sampler.series
                await watch.start(sampler.run)
                stop = trio.Event()
                async with trio.open_nursery() as traffic:
                    await traffic.start(client.run, plan.workers, stop, plan.max_requests())
                    result.traffic_start = trio.current_time()
                    result.traffic_start_epoch = time.time()
                    sampler.reset_peak()
                    first = sampler.now()
                    await trio.sleep(plan.warmup)
                    steady = sampler.now()
                    result.priming_start = trio.current_time()
                    result.warmup_cpu_percent = 100 * (
                        steady.cpu_seconds - first.cpu_seconds) / plan.warmup
                    result.warmup_lag = sampler.max_lag
                    selected = [s.name for s in scenarios]
                    if any(name in PRIMED for name in selected):
                        result.pre_priming = steady
                        result.priming = await prime(context, selected,
                                                     steady.fds + FD_TOLERANCE)
                        result.baseline = result.priming.after
                    else:
                        result.baseline = steady
                    result.warmup_end = trio.current_time()
                    for scenario in scenarios:
                        result.scenarios.append(await run_scenario(
                            context, scenario, result.baseline.fds + FD_TOLERANCE))
                        if not fleet.gateway_alive():
                            break
                    stop.set()
                result.finished = not interrupted and len(result.scenarios) == len(scenarios)
                watch.cancel_scope.cancel()
        result.gateway_alive = fleet.gateway_alive()
        if not result.gateway_alive or not result.finished:
            result.diagnostics = f"gateway log tail:\n{fleet.gateway_log_tail()}"
    result.wall_seconds = time.monotonic() - wall
    if interrupted:
        raise KeyboardInterrupt(f"stopped by {interrupted[0]}")
    return result


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (capped); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _FD_CAP if hard == resource.RLIM_INFINITY else min(hard, _FD_CAP)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def describe_tree() -> str:
    """Which velithon runs: this checkout's commit and whether ``src/`` has uncommitted
    changes (others edit it live), or the folder it was imported from when ``PYTHONPATH``
    points elsewhere (the gateway subprocess inherits the same path)."""
    import velithon

    source = Path(velithon.__file__).resolve().parent.parent
    if source != ROOT / "src":
        return f"velithon imported from {source} (not this checkout)"

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = [line for line in git("status", "--porcelain", "--", "src").splitlines() if line]
    return commit + (f" + uncommitted changes to {len(dirty)} files in src/" if dirty else "")


def _find(exc: BaseException,
          kinds: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    """``exc`` itself or the first matching exception inside a (nested) exception group."""
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kinds)
            if found is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attacks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of traffic and scenarios (60: CI, 600: the long run)")
    parser.add_argument("--only", action="append", metavar="SCENARIO",
                        choices=[s.name for s in SCENARIOS],
                        help="run only this scenario (repeatable; default: all, in order)")
    parser.add_argument("--write-results", action="store_true",
                        help="record the report in benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if not 30 <= args.duration <= 3600:
        parser.error("--duration must be between 30 and 3600 seconds")
    scenarios = [s for s in SCENARIOS if not args.only or s.name in args.only]
    fd_limit = raise_fd_limit()
    plan = Plan.build(args.duration, fd_limit)
    command = f"python -m benchmarks.attacks --duration {args.duration:g}" + "".join(
        f" --only '{s.name}'" for s in scenarios if args.only)
    log_dir = Path(tempfile.mkdtemp(prefix="velithon-attacks-"))
    print(f"{command}: {len(scenarios)} scenarios, idle connections "
          f"{plan.idle_connections} (descriptor limit {fd_limit}), logs in {log_dir}",
          flush=True)
    try:
        result = trio.run(lambda: run(plan, scenarios, command, describe_tree(),
                                      root=ROOT, log_dir=log_dir))
    except BaseException as exc:  # trio wraps what its nurseries raise in groups
        interrupt = _find(exc, KeyboardInterrupt)
        if interrupt is not None:
            print(f"interrupted ({str(interrupt) or 'Ctrl-C'}); every subprocess was stopped; "
                  f"logs in {log_dir}", file=sys.stderr)
            return 130
        failure = _find(exc, (RuntimeError, OSError))
        if failure is None:
            raise
        print(f"the run could not complete: {failure}\nlogs in {log_dir}", file=sys.stderr)
        return 1
    gates = evaluate(result, [s.name for s in scenarios])
    text = render(result, gates)
    passed = all(g.passed for g in gates)
    print(text)
    print(f"\nRESULT: {'PASS' if passed else 'FAIL'} "
          f"({sum(g.passed for g in gates)}/{len(gates)} gates)")
    if args.write_results and not args.only:
        from benchmarks._results import write_section

        today = datetime.date.today().isoformat()
        write_section(f"Attacks: {args.duration:g}-second run",
                      f"Run on {today}. "
                      f"Gates: {'all pass' if passed else 'some FAIL'}.\n\n{text}\n")
    if passed:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        print(f"logs kept in {log_dir}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
