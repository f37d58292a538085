"""velithon against the aiohttp + uvloop proxy, each proxy alone on one CPU.

    python benchmarks/bench_pinned.py [--rounds 5] [--seconds 8] [--connections 50]
        [--write]

``bench_suite.py`` lets every process of a run (wrk, the backends, the proxy) share
the machine's cores, as a deployment would; on a small shared VM its rounds then vary
by up to ±25 %, more than the difference it is meant to show. Here the proxy under
test runs alone on the last CPU (``taskset``) while this script, wrk and the backends
share the others, so the proxy is the bottleneck and its requests/s and CPU per
request measure the proxy itself. The proxies are the suite's (``_proxies.py``):
velithon's gateway app with every feature on, and the aiohttp recipe, in alternating
rounds (the order swaps every round). Needs ``wrk``, ``taskset`` and two CPUs or more.
``--write`` puts the table in ``benchmarks/RESULTS.md`` under "Pinned: velithon vs
aiohttp".
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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

SECTION = "Pinned: velithon vs aiohttp"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None or shutil.which("wrk") is None:
        sys.exit("needs two CPUs or more, taskset (util-linux) and wrk")
    proxy_cpu, rest = cpus[-1], set(cpus[:-1])
    os.sched_setaffinity(0, rest)  # wrk and the backends inherit it
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    work = Path(tempfile.mkdtemp(prefix="velithon-pinned-"))
    write_scripts(work)
    backend_ports = [free_port() for _ in range(3)]
    targets = [f"http://127.0.0.1:{p}" for p in backend_ports]
    env = dict(os.environ, PYTHONPATH=python_path(work), BENCH_TARGETS=",".join(targets))
    pin = ["taskset", "-c", str(proxy_cpu)]
    ports = {"velithon": free_port(), "aiohttp": free_port()}
    commands = {"velithon": pin + velithon_cmd(ports["velithon"]),
                "aiohttp": pin + aiohttp_cmd(ports["aiohttp"], targets)}
    results: dict[str, list[Throughput]] = {name: [] for name in commands}
    children: list[Child] = []
    try:
        backend = Child("backend", [sys.executable, "backend.py", *map(str, backend_ports)],
                        work)
        children.append(backend)
        for port in backend_ports:
            backend.wait_port(port)
        proxies = {name: Child(name, cmd, work, env) for name, cmd in commands.items()}
        children.extend(proxies.values())
        for name, child in proxies.items():
            child.wait_port(ports[name])
        names = list(commands)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                result = measure_throughput(proxies[name], ports[name], args.seconds,
                                            args.connections)
                results[name].append(result)
                print(f"round {r + 1} {name}: {result.rps:,.0f} req/s, "
                      f"{result.cpu_us:.0f} µs CPU/req, {result.errors} errors", flush=True)
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, args, started, proxy_cpu)
    print(text)
    if args.write:
        write_section(SECTION, text)


def report(results: dict[str, list[Throughput]], args: argparse.Namespace, started: str,
           proxy_cpu: int) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or "unknown"
    rows = ["| proxy | rounds: requests/s | best req/s | median req/s | best CPU µs/req "
            "| median CPU µs/req | errors |", "|---|---|---:|---:|---:|---:|---:|"]
    summary: dict[str, tuple[float, float, float, float]] = {}
    for name, runs in results.items():
        rps = [r.rps for r in runs]
        cpu = [r.cpu_us for r in runs]
        summary[name] = (max(rps), statistics.median(rps), min(cpu), statistics.median(cpu))
        rows.append(f"| {name} | {', '.join(f'{x:,.0f}' for x in rps)} | {max(rps):,.0f} | "
                    f"{statistics.median(rps):,.0f} | {min(cpu):.0f} | "
                    f"{statistics.median(cpu):.0f} | {sum(r.errors for r in runs)} |")
    v, a = summary["velithon"], summary["aiohttp"]
    pairs = [f"{x.rps / y.rps:.2f}×" for x, y in zip(results["velithon"], results["aiohttp"],
                                                     strict=True)]
    return (
        f"Command: `python benchmarks/bench_pinned.py --rounds {args.rounds} --seconds "
        f"{args.seconds:g} --connections {args.connections}`. Date: {started}; commit "
        f"{commit}. Each proxy alone on CPU {proxy_cpu} (taskset); wrk -t1 "
        f"-c{args.connections}, the backends and this script on the other CPUs. velithon "
        "runs the suite's gateway app (every feature on), aiohttp the suite's recipe; "
        "rounds alternate.\n\n" + "\n".join(rows) + "\n\n"
        f"velithon / aiohttp: best rounds {v[0] / a[0]:.2f}× requests/s at "
        f"{v[2] / a[2]:.2f}× CPU per request; medians {v[1] / a[1]:.2f}× and "
        f"{v[3] / a[3]:.2f}×; round by round {', '.join(pairs)} requests/s.\n")


if __name__ == "__main__":
    main()
