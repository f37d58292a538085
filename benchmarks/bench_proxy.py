"""The gateway vs an aiohttp + uvloop reverse proxy, same machine, same run.

    python benchmarks/bench_proxy.py [--seconds 10] [--connections 32] [--rounds 2]

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
best round is kept. Results go to ``benchmarks/RESULTS.md`` under "Proxy:
velithon vs aiohttp".
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def measure(name: str, cmd: list[str], port: int, seconds: int, connections: int,
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
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
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
                "velithon", velithon_cmd(port), port, args.seconds, args.connections, env, work))
            port = free_port()
            results["aiohttp"].append(measure(
                "aiohttp", aiohttp_cmd(port, targets), port, args.seconds, args.connections,
                env, work))
    finally:
        backend.stop()
        shutil.rmtree(work, ignore_errors=True)
    lines = ["| proxy | requests/s | CPU µs/request | errors |", "|---|---:|---:|---:|"]
    best = {}
    for name, rows in results.items():
        rps, cpu, errors = max(rows)
        best[name] = (rps, cpu)
        lines.append(f"| {name} | {rps:,.0f} | {cpu:.0f} | {errors} |")
    ratio_rps = best["velithon"][0] / best["aiohttp"][0]
    ratio_cpu = best["velithon"][1] / best["aiohttp"][1]
    lines.append("")
    lines.append(f"velithon / aiohttp: {ratio_rps:.2f}× requests/s, "
                 f"{ratio_cpu:.2f}× CPU per request.")
    table = "\n".join(lines)
    print(table)
    command = (f"python benchmarks/bench_proxy.py --seconds {args.seconds} "
               f"--connections {args.connections} --rounds {args.rounds}")
    write_section("Proxy: velithon vs aiohttp", (
        f"Three backends behind each proxy; wrk -t1 -c{args.connections}, "
        f"{args.seconds} s per round, "
        f"best of {args.rounds} alternating rounds; the 2-core machine also runs wrk and the "
        f"backends.\n\nCommand: `{command}`\n\n{table}\n"))


if __name__ == "__main__":
    main()
