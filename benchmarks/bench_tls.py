"""TLS on the listening side: velithon against aiohttp + uvloop and nginx, each serving https.

    python benchmarks/bench_tls.py [--seconds 10] [--rounds 5] [--connections 10,50]
        [--velithon-args "..."] [--no-write]

The proxies of ``bench_suite.py`` with TLS in front, forwarding round robin over plain
HTTP to the same three backends (``_proxies.py``):

* **velithon**: ``velithon run gateway_app:app --ssl-certfile ...`` (a ``GatewayRoute``
  with every gateway feature on);
* **velithon http**: the same without TLS, to show what TLS costs velithon itself;
* **aiohttp**: the aiohttp + uvloop proxy with ``ssl_context`` (the standard library's
  server defaults, as velithon);
* **nginx**: one worker, ``listen ... ssl``, TLS 1.2 and 1.3, upstream keepalive 32.

One certificate for all: trustme's default (ECDSA P-256), key and chain in one file.
Two cases, each at every ``--connections`` count, with ``wrk -t1`` over https:

* **keep-alive**: the handshake is paid once per connection;
* **new connection**: ``-H 'Connection: close'``, a TLS handshake per request (wrk offers
  the session it got before, so a server that issues session tickets resumes it: all
  three do, with their defaults).

The machine is shared and noisy, so what is reported is a ratio measured in alternating
rounds: inside each round every proxy runs once per case (the order rotates from round
to round), the round's ratios velithon / peer are taken, and the report gives their
median over the rounds, next to each proxy's best round (requests/s and CPU µs per
request of its whole process tree).

Results go to ``benchmarks/RESULTS.md`` under "TLS: velithon vs aiohttp and nginx"
(``--no-write``: print only). Needs wrk, nginx (else skipped with a note), aiohttp,
uvloop and trustme.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import ssl
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from _proxies import (
    Child,
    Throughput,
    aiohttp_cmd,
    free_port,
    measure_throughput,
    nginx_cmd,
    python_path,
    velithon_cmd,
    write_nginx_conf,
    write_scripts,
)
from _results import write_section
from bench_suite import git_commit, progress, raise_nofile, tool_versions

SECTION = "TLS: velithon vs aiohttp and nginx"
WARMUP_SECONDS = 1.0
CASES = {"keep-alive": (), "new connection": ("Connection: close",)}
PEERS = ("aiohttp", "nginx")


@dataclass
class Proxy:
    name: str
    cmd: list[str]
    port: int
    scheme: str = "https"
    env: dict[str, str] = field(default_factory=dict)
    child: Child | None = None


@dataclass
class Run:
    notes: list[str] = field(default_factory=list)
    load: list[float] = field(default_factory=list)  # 1-minute load average, start and end
    # (proxy, case, connections) → one result per round
    rounds: dict[tuple[str, str, int], list[Throughput]] = field(default_factory=dict)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="each wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--connections", default="10,50",
                        help="comma-separated wrk connection counts (default 10,50)")
    parser.add_argument("--velithon-args", default="",
                        help='extra arguments for every "velithon run", e.g. "--http h11"')
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True,
                        help="write the results into benchmarks/RESULTS.md (default: on)")
    args = parser.parse_args(argv)
    args.connection_counts = [int(c) for c in args.connections.split(",") if c.strip()]
    args.extra = shlex.split(args.velithon_args)
    if args.seconds <= 0 or args.rounds < 1 or not args.connection_counts:
        parser.error("--seconds, --rounds and --connections must be positive")
    return args


def write_certificate(work: Path) -> Path:
    path = work / "server.pem"
    trustme.CA().issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


def build_proxies(args: argparse.Namespace, work: Path, backend_ports: Sequence[int],
                  certfile: Path, run: Run) -> list[Proxy]:
    targets = [f"http://127.0.0.1:{p}" for p in backend_ports]
    port = free_port()
    proxies = [Proxy("velithon", velithon_cmd(port, ["--ssl-certfile", str(certfile),
                                                      *args.extra]), port)]
    port = free_port()
    proxies.append(Proxy("velithon http", velithon_cmd(port, args.extra), port, scheme="http"))
    port = free_port()
    proxies.append(Proxy("aiohttp", aiohttp_cmd(port, targets), port,
                         env={"BENCH_CERTFILE": str(certfile)}))
    if shutil.which("nginx"):
        port = free_port()
        conf = write_nginx_conf(work, port, backend_ports, certfile)
        proxies.append(Proxy("nginx", nginx_cmd(conf, work), port))
    else:
        run.notes.append("nginx skipped: not installed (`apt-get install nginx`)")
    return proxies


def measure(proxies: Sequence[Proxy], args: argparse.Namespace, run: Run) -> None:
    for r in range(args.rounds):
        order = [*proxies[r % len(proxies):], *proxies[:r % len(proxies)]]
        for case, headers in CASES.items():
            for c in args.connection_counts:
                for proxy in order:
                    assert proxy.child is not None
                    result = measure_throughput(proxy.child, proxy.port, args.seconds, c,
                                                warmup=WARMUP_SECONDS, scheme=proxy.scheme,
                                                headers=headers)
                    run.rounds.setdefault((proxy.name, case, c), []).append(result)
                    progress(f"round {r + 1} {case} c={c} {proxy.name}: {result.rps:,.0f} "
                             f"req/s, {result.cpu_us:.0f} µs CPU/req, {result.errors} errors")


def median_ratio(run: Run, case: str, c: int, peer: str, attr: str) -> float | None:
    mine, theirs = run.rounds.get(("velithon", case, c)), run.rounds.get((peer, case, c))
    if not mine or not theirs:
        return None
    return statistics.median(getattr(a, attr) / getattr(b, attr)
                             for a, b in zip(mine, theirs, strict=True)
                             if getattr(b, attr) > 0)


def report(proxies: Sequence[Proxy], args: argparse.Namespace, run: Run, started: str) -> str:
    command = shlex.join(["python", "benchmarks/bench_tls.py", *sys.argv[1:]])
    lines = ["| case | c | proxy | best requests/s | its CPU µs/request | errors (all rounds) |",
             "|---|---:|---|---:|---:|---:|"]
    ratios = []
    for case in CASES:
        for c in args.connection_counts:
            for proxy in proxies:
                results = run.rounds.get((proxy.name, case, c), [])
                if not results:
                    continue
                best = max(results, key=lambda t: t.rps)
                lines.append(f"| {case} | {c} | {proxy.name} | {best.rps:,.0f} | "
                             f"{best.cpu_us:.0f} | {sum(t.errors for t in results)} |")
            for peer in (*PEERS, "velithon http"):
                rps = median_ratio(run, case, c, peer, "rps")
                cpu = median_ratio(run, case, c, peer, "cpu_us")
                if rps is not None and cpu is not None:
                    ratios.append(f"| {case} | {c} | velithon / {peer} | {rps:.2f}× | "
                                  f"{cpu:.2f}× |")
    ratio_table = ["| case | c | ratio | requests/s (median of rounds) | CPU per request |",
                   "|---|---:|---|---:|---:|", *ratios]
    parts = [
        f"Command: `{command}`",
        f"Date: {started}; commit {git_commit()}.",
        f"Versions: {tool_versions()}, {ssl.OPENSSL_VERSION} (Python's ssl).",
        "Each proxy serves https (velithon http: plain, for reference) and forwards round "
        "robin over plain HTTP to three backends (one asyncio process, fixed 200 with a "
        "13-byte body); velithon runs a GatewayRoute with every feature on"
        + (f", started with `{args.velithon_args}`" if args.extra else "")
        + f". Certificate: trustme's default, ECDSA P-256. All processes share the "
        f"{os.cpu_count()}-core machine with wrk and the backends; the machine is shared "
        f"with other work too, so absolute numbers move from run to run (1-minute load "
        f"average {' at the start, '.join(f'{x:.1f}' for x in run.load)} at the end).",
        *(f"Note: {n}." for n in run.notes),
        f"wrk -t1 over https, {args.seconds:g} s per run after a {WARMUP_SECONDS:g} s warm-up, "
        f"{args.rounds} alternating rounds (every proxy once per case and connection count "
        f"in each round, the order rotating). New connection: `-H 'Connection: close'`, so "
        f"one TLS handshake per request (resumed: wrk offers its previous session). CPU is "
        f"the proxy's whole process tree.",
        "\n".join(lines),
        "Ratios, taken inside each round and then the median over the rounds (the robust "
        "number on a noisy machine):",
        "\n".join(ratio_table),
    ]
    return "\n\n".join(parts) + "\n"


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    raise_nofile(4096)
    work = Path(tempfile.mkdtemp(prefix="velithon-tls-"))
    write_scripts(work)
    certfile = write_certificate(work)
    backend_ports = [free_port() for _ in range(3)]
    env = dict(os.environ, PYTHONPATH=python_path(work),
               BENCH_TARGETS=",".join(f"http://127.0.0.1:{p}" for p in backend_ports))
    run = Run()
    children: list[Child] = []
    proxies: list[Proxy] = []
    try:
        backend = Child("backend", [sys.executable, "backend.py", *map(str, backend_ports)],
                        work)
        children.append(backend)
        for p in backend_ports:
            backend.wait_port(p)
        proxies = build_proxies(args, work, backend_ports, certfile, run)
        for proxy in proxies:
            proxy.child = Child(proxy.name, proxy.cmd, work, dict(env, **proxy.env))
            children.append(proxy.child)
        for proxy in proxies:
            assert proxy.child is not None
            proxy.child.wait_port(proxy.port)
        run.load.append(os.getloadavg()[0])
        measure(proxies, args, run)
        run.load.append(os.getloadavg()[0])
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = report(proxies, args, run, started)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
