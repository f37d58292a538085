"""The gateway vs an aiohttp + uvloop reverse proxy, same machine, same run.

    python benchmarks/bench_proxy.py [--seconds 10] [--connections 32] [--rounds 2] [--pin]

Three backends (one asyncio process answering a fixed 200 with a 13-byte
body on three ports) sit behind each proxy in turn:

* **velithon**: ``velithon run`` serving a ``Velithon`` app whose only route is a
  ``GatewayRoute`` with every gateway feature on (round robin, active health
  checks every second, circuit breakers, outlier detection, retries with a
  budget, X-Forwarded-*/Forwarded headers, hop-by-hop stripping, pooled
  keep-alive upstream connections);
* **aiohttp**: an aiohttp + uvloop server whose handler forwards with one
  pooled ``aiohttp.ClientSession`` round robin over the same backends,
  streaming the body (the common aiohttp reverse-proxy recipe).

The helper programs live in ``_proxies.py``, shared with ``bench_suite.py`` (which
also measures hypercorn and nginx, latency at a fixed rate and memory).

Load comes from ``wrk`` (``apt-get install wrk``), one thread, keep-alive
connections, for ``--seconds``. We report requests/s and the proxy process's
CPU time per request (user + system, from psutil, over its process tree). Each
proxy is measured ``--rounds`` times, alternating, on a fresh process, and the
best round is kept. Results go to ``benchmarks/RESULTS.md`` under "Proxy: velithon
vs aiohttp" (``--no-write``: printed only).

``--pin`` takes the sharing out: the proxy under test runs alone on the last CPU
(``taskset``) while this script, wrk and the backends share the others, so the proxy
is the bottleneck and the figures measure the proxy itself. On a small shared VM,
where every process of a run competes for two cores, rounds otherwise vary by up to
±25 %. Pinned results go under "Proxy: velithon vs aiohttp, each pinned to one CPU",
with every round and the medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _proxies import (
    Child,
    Throughput,
    aiohttp_cmd,
    free_port,
    measure_throughput,
    python_path,
    velithon_cmd,
    write_scripts,
)
from _results import write_section


def measure(name: str, cmd: list[str], port: int, seconds: float, connections: int,
            env: dict[str, str], work: Path) -> Throughput:
    """Start a fresh proxy, warm it up, measure it, stop it."""
    child = Child(name, cmd, work, env)
    try:
        child.wait_port(port)
        return measure_throughput(child, port, seconds, connections)
    finally:
        child.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pin", action="store_true",
                        help="each proxy alone on the last CPU; wrk and backends on the others")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True,
                        help="put the table in benchmarks/RESULTS.md (default: yes)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    pin: list[str] = []
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or shutil.which("taskset") is None:
            sys.exit("--pin needs two CPUs or more and taskset (util-linux)")
        os.sched_setaffinity(0, set(cpus[:-1]))  # wrk and the backends inherit it
        pin = ["taskset", "-c", str(cpus[-1])]
    work = Path(tempfile.mkdtemp(prefix="velithon-bench-"))
    write_scripts(work)
    ports = [free_port() for _ in range(3)]
    targets = [f"http://127.0.0.1:{p}" for p in ports]
    env = dict(os.environ, BENCH_TARGETS=",".join(targets), PYTHONPATH=python_path(work))
    backend = Child("backend", [sys.executable, "backend.py", *map(str, ports)], work)
    results: dict[str, list[Throughput]] = {"velithon": [], "aiohttp": []}
    try:
        for p in ports:
            backend.wait_port(p)
        for _ in range(args.rounds):
            port = free_port()
            results["velithon"].append(measure(
                "velithon", pin + velithon_cmd(port), port, args.seconds, args.connections,
                env, work))
            port = free_port()
            results["aiohttp"].append(measure(
                "aiohttp", pin + aiohttp_cmd(port, targets), port, args.seconds,
                args.connections, env, work))
    finally:
        backend.stop()
        shutil.rmtree(work, ignore_errors=True)
    table = report(results, pinned=args.pin)
    print(table)
    command = (f"python benchmarks/bench_proxy.py --seconds {args.seconds:g} "
               f"--connections {args.connections} --rounds {args.rounds}"
               + (" --pin" if args.pin else ""))
    if not args.write:
        return
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.pin:
        title = "Proxy: velithon vs aiohttp, each pinned to one CPU"
        write_section(title, (
            f"Three backends behind each proxy; each proxy alone on the last CPU, wrk -t1 "
            f"-c{args.connections}, the backends and the script on the others; "
            f"{args.seconds:g} s per round, {args.rounds} alternating rounds, a fresh "
            f"process each.\n\nCommand: `{command}` ({when})\n\n{table}\n"))
    else:
        title = "Proxy: velithon vs aiohttp"
        write_section(title, (
            f"Three backends behind each proxy; wrk -t1 -c{args.connections}, "
            f"{args.seconds:g} s per round, best of {args.rounds} alternating rounds; the "
            f"2-core machine also runs wrk and the backends.\n\nCommand: `{command}` "
            f"({when})\n\n{table}\n"))
    print(f"written to benchmarks/RESULTS.md under \"{title}\" (--no-write: print only)")


def report(results: dict[str, list[Throughput]], *, pinned: bool) -> str:
    """Best rounds (and, pinned, every round and the medians) with the ratios."""
    lines = ["| proxy | requests/s | CPU µs/request | errors |", "|---|---:|---:|---:|"]
    if pinned:
        lines = ["| proxy | rounds: requests/s | best req/s | median req/s | best CPU µs/req "
                 "| median CPU µs/req | errors |", "|---|---|---:|---:|---:|---:|---:|"]
    best = {}
    median = {}
    for name, rows in results.items():
        rps, cpu, errors = max(rows)
        best[name] = (rps, min(r.cpu_us for r in rows) if pinned else cpu)
        median[name] = (statistics.median(r.rps for r in rows),
                        statistics.median(r.cpu_us for r in rows))
        if pinned:
            lines.append(f"| {name} | {', '.join(f'{r.rps:,.0f}' for r in rows)} | {rps:,.0f} "
                         f"| {median[name][0]:,.0f} | {best[name][1]:.0f} "
                         f"| {median[name][1]:.0f} | {sum(r.errors for r in rows)} |")
        else:
            lines.append(f"| {name} | {rps:,.0f} | {cpu:.0f} | {errors} |")
    v, a = best["velithon"], best["aiohttp"]
    lines.append("")
    if pinned:
        pairs = ", ".join(f"{x.rps / y.rps:.2f}×" for x, y in
                          zip(results["velithon"], results["aiohttp"], strict=True))
        lines.append(f"velithon / aiohttp: best rounds {v[0] / a[0]:.2f}× requests/s at "
                     f"{v[1] / a[1]:.2f}× CPU per request; medians "
                     f"{median['velithon'][0] / median['aiohttp'][0]:.2f}× and "
                     f"{median['velithon'][1] / median['aiohttp'][1]:.2f}×; round by round "
                     f"{pairs} requests/s.")
    else:
        lines.append(f"velithon / aiohttp: {v[0] / a[0]:.2f}× requests/s, "
                     f"{v[1] / a[1]:.2f}× CPU per request.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
