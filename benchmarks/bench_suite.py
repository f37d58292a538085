"""Four reverse proxies in front of the same three backends, measured in one run.

    python benchmarks/bench_suite.py [--seconds 10] [--rounds 3] [--connections 10,50,200]
        [--velithon-args "..."] [--no-memory] [--idle-connections 10000] [--transfer-mb 1024]

The proxies, each forwarding round robin to three backends (one asyncio process
answering a fixed 200 with a 13-byte body on three ports; see ``_proxies.py``):

* **velithon**: ``velithon run gateway_app:app``, a ``GatewayRoute`` with every gateway
  feature on (health checks, breakers, outlier detection, retries, header hygiene),
  plus ``--velithon-args`` (shlex-split, appended to every ``velithon run``); also
  **velithon -w2** (``--workers 2``), measured at c=50 only;
* **aiohttp**: an aiohttp + uvloop proxy with one pooled ``ClientSession``;
* **hypercorn**: ``hypercorn --worker-class trio`` serving a small ASGI proxy that
  forwards with one shared ``httpx.AsyncClient``;
* **nginx**: the practical limit (one worker, upstream keepalive 32); skipped with a
  note when ``nginx`` is not installed.

Sections:

1. **Throughput**: ``wrk -t1`` at each ``--connections`` count for ``--seconds``, after a
   1-second warm-up; ``--rounds`` rounds, the proxies alternating inside each round (the
   order rotates from round to round), best round per proxy and connection count kept.
   Requests/s, CPU µs per request of the proxy's whole process tree (psutil), errors.
2. **Fixed-rate latency**: every proxy is driven at half of velithon's best requests/s
   at c=50 (measured just before) over 50 keep-alive connections for ``--seconds``, by
   the open-loop generator in ``_proxies.LOADGEN`` (wrk2 and vegeta are not packaged in
   Debian 12; ``hey`` is, but it is closed-loop and reports no p99.9). Latency counts
   from the scheduled send time whenever a connection was still busy, so a slow
   response also delays the requests queued behind it (no coordinated omission).
3. **Memory** (``--memory``, the default; ``--no-memory`` skips it): RSS per idle
   keep-alive connection (``--idle-connections`` held by a separate process, each
   after one request) for velithon and aiohttp, each on a fresh process; then a
   ``--transfer-mb`` upload and download through a fresh velithon (aiohttp: download
   only, its recipe reads a request body whole), with RSS sampled every 50 ms during
   the transfer (peak minus the baseline before it).

Everything runs on 127.0.0.1; every process is stopped at the end. Results go to
``benchmarks/RESULTS.md`` under "Suite: velithon vs aiohttp, hypercorn, nginx"
(``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import select
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
from _proxies import (
    Child,
    Throughput,
    aiohttp_cmd,
    free_port,
    hypercorn_cmd,
    measure_throughput,
    nginx_cmd,
    python_path,
    run_wrk,
    tree_rss,
    velithon_cmd,
    write_nginx_conf,
    write_scripts,
)
from _results import write_section

SECTION = "Suite: velithon vs aiohttp, hypercorn, nginx"
REPO = Path(__file__).resolve().parent.parent
RATE_CONNECTIONS = 50  # the fixed-rate load and velithon's reference peak use this many
RATE_FRACTION = 0.5
WARMUP_SECONDS = 1.0
KEEPALIVE_SECONDS = 600  # idle connections must outlive the memory test
FIXED_RATE_TOOL = (
    "benchmarks' own open-loop generator (`_proxies.LOADGEN`: asyncio + uvloop, one "
    "process, wrk2-style per-connection schedule, latency from the scheduled send time "
    "when the connection was still busy); wrk2 and vegeta have no Debian 12 package, and "
    "`hey` is closed-loop with no p99.9")
GRACE_NOTE = "2 s after the schedule ended, given up (the proxy could not keep up)"
MIB = 1 << 20
T = TypeVar("T")


@dataclass
class Proxy:
    """One proxy under test: how to start it, and at which connection counts to load it."""

    name: str
    cmd: list[str]
    port: int
    connections: frozenset[int] | None = None  # None: every --connections value
    child: Child | None = field(default=None, repr=False)

    def measured_at(self, connections: int) -> bool:
        return self.connections is None or connections in self.connections


@dataclass
class Run:
    """What the run measured, for the report."""

    notes: list[str] = field(default_factory=list)
    best: dict[tuple[str, int], Throughput] = field(default_factory=dict)
    rate: float = 0.0
    rate_basis: str = ""
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    idle: dict[str, dict[str, float]] = field(default_factory=dict)
    transfers: list[dict[str, Any]] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="each wrk run and the fixed-rate run per proxy (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, best kept (default 3)")
    parser.add_argument("--connections", default="10,50,200",
                        help="comma-separated wrk connection counts (default 10,50,200)")
    parser.add_argument("--velithon-args", default="",
                        help='extra arguments for every "velithon run", e.g. "--http h11"')
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="run the memory section (default: on)")
    parser.add_argument("--idle-connections", type=int, default=10_000,
                        help="idle keep-alive connections for the RSS test (default 10000)")
    parser.add_argument("--transfer-mb", type=int, default=1024,
                        help="size of the upload and the download in MiB (default 1024)")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True,
                        help="write the results into benchmarks/RESULTS.md (default: on)")
    args = parser.parse_args(argv)
    args.connection_counts = [int(c) for c in args.connections.split(",") if c.strip()]
    args.extra = shlex.split(args.velithon_args)
    if args.seconds <= 0 or args.rounds < 1 or not args.connection_counts:
        parser.error("--seconds, --rounds and --connections must be positive")
    return args


def raise_nofile(need: int) -> int:
    """Raise this process's descriptor limit (children inherit it); return the new soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(need, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the run's identity -------------------------------------------------------------


def _first_line(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def tool_versions() -> str:
    wrk = _first_line(["wrk", "-v"]).split(" [")[0].removeprefix("wrk ")
    nginx = _first_line(["nginx", "-v"]).removeprefix("nginx version: nginx/")
    parts = [f"Python {platform.python_version()}", f"wrk {wrk}", f"nginx {nginx}"]
    for dist in ("velithon", "trio", "httptools", "h11", "aiohttp", "uvloop", "hypercorn",
                 "httpx"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return commit + (" (with uncommitted changes)" if dirty else "")


# --- section 1: throughput ------------------------------------------------------------


def build_proxies(args: argparse.Namespace, work: Path, backend_ports: Sequence[int],
                  run: Run) -> list[Proxy]:
    targets = [f"http://127.0.0.1:{p}" for p in backend_ports]
    proxies = [Proxy("velithon", [], free_port())]
    proxies[0].cmd = velithon_cmd(proxies[0].port, args.extra)
    if RATE_CONNECTIONS in args.connection_counts:
        port = free_port()
        proxies.append(Proxy("velithon -w2", velithon_cmd(port, ["--workers", "2", *args.extra]),
                             port, frozenset({RATE_CONNECTIONS})))
    port = free_port()
    proxies.append(Proxy("aiohttp", aiohttp_cmd(port, targets), port))
    if importlib.util.find_spec("hypercorn") and importlib.util.find_spec("httpx"):
        port = free_port()
        proxies.append(Proxy("hypercorn", hypercorn_cmd(port), port))
    else:
        run.notes.append("hypercorn skipped: `pip install hypercorn httpx` (the bench extra)")
    if shutil.which("nginx"):
        port = free_port()
        proxies.append(Proxy("nginx", nginx_cmd(write_nginx_conf(work, port, backend_ports),
                                                work), port))
    else:
        run.notes.append("nginx skipped: not installed (`apt-get install nginx`)")
    return proxies


def throughput(proxies: Sequence[Proxy], args: argparse.Namespace, run: Run) -> None:
    for r in range(args.rounds):
        order = [*proxies[r % len(proxies):], *proxies[:r % len(proxies)]]
        for c in args.connection_counts:
            for proxy in order:
                if not proxy.measured_at(c) or proxy.child is None:
                    continue
                result = measure_throughput(proxy.child, proxy.port, args.seconds, c,
                                            warmup=WARMUP_SECONDS)
                progress(f"round {r + 1} c={c} {proxy.name}: {result.rps:,.0f} req/s, "
                         f"{result.cpu_us:.0f} µs CPU/req, {result.errors} errors")
                key = (proxy.name, c)
                if key not in run.best or result.rps > run.best[key].rps:
                    run.best[key] = result


# --- section 2: fixed-rate latency -----------------------------------------------------


def fixed_rate(proxies: Sequence[Proxy], args: argparse.Namespace, work: Path,
               run: Run) -> None:
    c = min(args.connection_counts, key=lambda n: abs(n - RATE_CONNECTIONS))
    run.rate = RATE_FRACTION * run.best[("velithon", c)].rps
    run.rate_basis = f"{RATE_FRACTION:.0%} of velithon's best at c={c}"
    for proxy in proxies:
        done = subprocess.run(
            [sys.executable, "loadgen.py", "rate", str(proxy.port), f"{run.rate:.1f}",
             str(args.seconds), str(RATE_CONNECTIONS)],
            cwd=work, capture_output=True, text=True, timeout=args.seconds + 60)
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed against {proxy.name}:\n{done.stderr}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        run.latency[proxy.name] = result
        progress(f"fixed rate {run.rate:,.0f}/s {proxy.name}: p50 {result['p50']:.2f} ms, "
                 f"p99 {result['p99']:.2f} ms, p99.9 {result['p999']:.2f} ms")


# --- section 3: memory -------------------------------------------------------------------


def read_json_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"no answer from the load generator within {timeout:g} s")
    result: dict[str, Any] = json.loads(line)
    return result


def established(procs: Sequence[psutil.Process], port: int) -> int:
    """Connections to ``port`` the processes hold open, as the kernel sees them."""
    total = 0
    for p in procs:
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        total += sum(1 for c in conns
                     if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)
    return total


def idle_connections(name: str, cmd: list[str], port: int, env: dict[str, str], work: Path,
                     count: int) -> dict[str, float]:
    """RSS of a fresh proxy before and after ``count`` idle keep-alive connections."""
    child = Child(f"{name} idle", cmd, work, env)
    client: subprocess.Popen[str] | None = None
    try:
        child.wait_port(port)
        run_wrk(port, WARMUP_SECONDS, 10)
        time.sleep(1.0)
        procs = child.tree()
        before = tree_rss(procs)
        client = subprocess.Popen(
            [sys.executable, "loadgen.py", "idle", str(port), str(count)], cwd=work,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        opened = read_json_line(client, 60 + count / 50)
        time.sleep(1.0)
        after = tree_rss(procs)
        server_side = established(procs, port)
        assert client.stdin is not None
        client.stdin.write("\n")
        client.stdin.flush()
        still_open = read_json_line(client, 60)["still_open"]
        held = max(opened["held"], 1)
        return {"held": opened["held"], "failed": opened["failed"],
                "open_seconds": opened["seconds"], "server_side": server_side,
                "still_open": still_open, "before": before / MIB, "after": after / MIB,
                "kib_per_connection": (after - before) / held / 1024}
    finally:
        if client is not None:
            client.kill()
            client.wait(10)
        child.stop()


def _read_http_response(sock: socket.socket) -> tuple[int, int, bytes]:
    """Status, body length and the body's first bytes (Content-Length, else until close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError("connection closed before the response head")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(fields["content-length"]) if "content-length" in fields else None
    received = len(body)
    buffer = bytearray(MIB)
    while length is None or received < length:
        n = sock.recv_into(buffer)
        if n == 0:
            break
        if received < 64:
            body += buffer[:n]
        received += n
    return status, received, body[:64]


def upload(port: int, size: int) -> tuple[int, int]:
    """POST ``size`` zero bytes with Content-Length, 1 MiB at a time.

    Returns the status and the byte count the backend says it received.
    """
    chunk = memoryview(bytes(MIB))
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        left = size
        try:
            while left:
                n = min(left, MIB)
                sock.sendall(chunk[:n])
                left -= n
        except OSError:
            pass  # an early answer (413, 502) closed the connection: read it
        status, _, body = _read_http_response(sock)
    return status, int(body) if status == 200 and body.isdigit() else 0


def download(port: int, size: int) -> tuple[int, int]:
    """GET ``size`` bytes; returns the status and the body bytes received."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"GET /download/{size} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Connection: close\r\n\r\n".encode())
        status, received, _ = _read_http_response(sock)
        return status, received


def peak_rss_during(procs: Sequence[psutil.Process], work: Callable[[], T],
                    interval: float = 0.05) -> tuple[T, int]:
    """Run ``work`` in a thread, sampling the processes' RSS; return its result and the peak."""
    peak = tree_rss(procs)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(work)
        while not future.done():
            peak = max(peak, tree_rss(procs))
            concurrent.futures.wait([future], timeout=interval)
    return future.result(), max(peak, tree_rss(procs))


def transfers(name: str, cmd: list[str], port: int, env: dict[str, str], work: Path,
              size_mb: int, directions: Sequence[str]) -> list[dict[str, Any]]:
    size = size_mb * MIB
    child = Child(f"{name} transfer", cmd, work, env)
    rows = []
    try:
        child.wait_port(port)
        for direction in directions:
            move = upload if direction == "upload" else download
            move(port, MIB)  # warm-up: pooled upstream connection, code paths loaded
            time.sleep(0.5)
            procs = child.tree()
            before = tree_rss(procs)
            began = time.perf_counter()
            try:
                (status, moved), peak = peak_rss_during(procs, functools.partial(move, port, size))
            except OSError as exc:  # reset, timeout: reported as a failed transfer
                progress(f"{direction} via {name} failed: {exc!r}")
                (status, moved), peak = (0, 0), tree_rss(procs)
            seconds = time.perf_counter() - began
            rows.append({"proxy": name, "direction": direction, "status": status,
                         "mib": moved / MIB, "seconds": seconds,
                         "mib_per_s": moved / MIB / seconds,
                         "growth_mib": (peak - before) / MIB, "ok": status == 200
                         and moved == size})
            progress(f"{direction} {size_mb} MiB via {name}: status {status}, "
                     f"{seconds:.1f} s, RSS +{(peak - before) / MIB:.1f} MiB")
    finally:
        child.stop()
    return rows


def memory(args: argparse.Namespace, work: Path, env: dict[str, str],
           children: list[Child], run: Run) -> None:
    limit = raise_nofile(args.idle_connections + 1024)
    if limit < args.idle_connections + 256:
        run.notes.append(f"descriptor limit {limit}: fewer idle connections may be held")
    targets = env["BENCH_TARGETS"].split(",")
    for name in ("velithon", "aiohttp"):
        port = free_port()
        if name == "velithon":
            cmd = velithon_cmd(port, ["--keepalive-timeout", str(KEEPALIVE_SECONDS), *args.extra])
        else:
            cmd = aiohttp_cmd(port, targets)
        run.idle[name] = idle_connections(
            name, cmd, port, dict(env, BENCH_KEEPALIVE=str(KEEPALIVE_SECONDS)), work,
            args.idle_connections)
        progress(f"idle {name}: {run.idle[name]['kib_per_connection']:.1f} KiB/connection")
    transfer_port = free_port()
    backend = Child("transfer backend", [sys.executable, "transfer_backend.py",
                                         str(transfer_port)], work)
    children.append(backend)
    backend.wait_port(transfer_port)
    transfer_env = dict(env, BENCH_TARGETS=f"http://127.0.0.1:{transfer_port}",
                        BENCH_TIMEOUT_MS=str(max(60_000, args.transfer_mb * 1000)))
    port = free_port()
    run.transfers += transfers(
        "velithon", velithon_cmd(port, ["--max-body-size", f"{args.transfer_mb + 1}M",
                                        *args.extra]),
        port, transfer_env, work, args.transfer_mb, ("upload", "download"))
    port = free_port()
    run.transfers += transfers(
        "aiohttp", aiohttp_cmd(port, transfer_env["BENCH_TARGETS"].split(",")), port,
        transfer_env, work, args.transfer_mb, ("download",))


# --- the report ----------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def throughput_table(proxies: Sequence[Proxy], args: argparse.Namespace, run: Run) -> str:
    lines = ["| c | proxy | requests/s | CPU µs/request | errors |", "|---:|---|---:|---:|---:|"]
    ratios = []
    for c in args.connection_counts:
        for proxy in proxies:
            result = run.best.get((proxy.name, c))
            if result is not None:
                lines.append(f"| {c} | {proxy.name} | {result.rps:,.0f} | {result.cpu_us:.0f} "
                             f"| {result.errors} |")
        velithon, aiohttp = run.best.get(("velithon", c)), run.best.get(("aiohttp", c))
        if velithon and aiohttp:
            ratios.append(f"* c={c}: {velithon.rps / aiohttp.rps:.2f}× requests/s, "
                          f"{velithon.cpu_us / aiohttp.cpu_us:.2f}× CPU per request")
    return "\n".join([*lines, "", "velithon / aiohttp:", "", *ratios])


def latency_table(run: Run) -> str:
    lines = ["| proxy | target req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms "
             "| errors | not sent | generator oversleep p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in run.latency.items():
        lines.append(f"| {name} | {run.rate:,.0f} | {r['rate']:,.0f} | {r['p50']:.2f} "
                     f"| {r['p99']:.2f} | {r['p999']:.2f} | {r['max']:.2f} | {r['errors']} "
                     f"| {r['unsent']} | {r['oversleep_p99']:.2f} |")
    return "\n".join(lines)


def memory_tables(run: Run) -> str:
    lines = ["| proxy | connections held | seen open by the proxy | still open at the end "
             "| RSS before MiB | RSS after MiB | KiB/connection |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in run.idle.items():
        lines.append(f"| {name} | {r['held']:,} (failed {r['failed']}) | {r['server_side']:,} "
                     f"| {r['still_open']:,} | {r['before']:.1f} | {r['after']:.1f} "
                     f"| {r['kib_per_connection']:.1f} |")
    lines += ["", "| proxy | transfer | MiB moved | seconds | MiB/s | RSS growth MiB | status |",
              "|---|---|---:|---:|---:|---:|---|"]
    for t in run.transfers:
        verdict = "ok" if t["ok"] else "incomplete"
        lines.append(f"| {t['proxy']} | {t['direction']} | {t['mib']:,.0f} | "
                     f"{t['seconds']:.1f} | {t['mib_per_s']:,.0f} | {t['growth_mib']:.1f} "
                     f"| {t['status']} {verdict} |")
    return "\n".join(lines)


def report(proxies: Sequence[Proxy], args: argparse.Namespace, run: Run, started: str) -> str:
    command = shlex.join(["python", "benchmarks/bench_suite.py", *sys.argv[1:]])
    names = ", ".join(p.name for p in proxies)
    parts = [
        f"Command: `{command}`",
        f"Date: {started}; commit {git_commit()}.",
        f"Versions: {tool_versions()}.",
        f"Proxies ({names}) each forward round robin to three backends (one asyncio process, "
        f"fixed 200 with a 13-byte body); velithon runs a GatewayRoute with every feature on"
        + (f", started with `{args.velithon_args}`" if args.extra else "")
        + f". All processes share the {os.cpu_count()}-core machine with wrk and the backends.",
        *(f"Note: {n}." for n in run.notes),
        f"### Throughput\n\nwrk -t1, {args.seconds:g} s per run after a {WARMUP_SECONDS:g} s "
        f"warm-up, best of {args.rounds} round(s) (proxies alternating inside each round). "
        f"CPU is the proxy's whole process tree (nginx master + worker, supervisor + "
        f"workers).\n\n{throughput_table(proxies, args, run)}",
        f"### Fixed-rate latency\n\n{run.rate:,.0f} requests/s ({run.rate_basis}) over "
        f"{RATE_CONNECTIONS} keep-alive connections for {args.seconds:g} s per proxy. "
        f"Load: {FIXED_RATE_TOOL}. Not sent: requests still due {GRACE_NOTE}; they are "
        f"not in the percentiles.\n\n{latency_table(run)}",
    ]
    if args.memory:
        parts.append(
            f"### Memory\n\n{args.idle_connections:,} idle keep-alive connections (one "
            f"request each, opened by a separate process) on a fresh proxy; KiB/connection "
            f"is the RSS growth divided by the connections held. Then a {args.transfer_mb:,} "
            f"MiB upload and download through a fresh proxy to a backend that discards / "
            f"generates the bytes; RSS growth is the peak (sampled every 50 ms) minus the "
            f"RSS before the transfer. aiohttp: download only (the recipe reads a request "
            f"body whole, up to its 1 MiB default limit).\n\n{memory_tables(run)}")
    return "\n\n".join(parts) + "\n"


# --- main ----------------------------------------------------------------------------------


def start_proxies(proxies: Sequence[Proxy], work: Path, env: dict[str, str],
                  children: list[Child]) -> None:
    for proxy in proxies:
        proxy.child = Child(proxy.name, proxy.cmd, work, env)
        children.append(proxy.child)
    for proxy in proxies:
        assert proxy.child is not None
        proxy.child.wait_port(proxy.port)


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    raise_nofile(4096)
    work = Path(tempfile.mkdtemp(prefix="velithon-suite-"))
    write_scripts(work)
    backend_ports = [free_port() for _ in range(3)]
    env = dict(os.environ, PYTHONPATH=python_path(work),
               BENCH_TARGETS=",".join(f"http://127.0.0.1:{p}" for p in backend_ports))
    run = Run()
    children: list[Child] = []
    try:
        backend = Child("backend", [sys.executable, "backend.py", *map(str, backend_ports)],
                        work)
        children.append(backend)
        for p in backend_ports:
            backend.wait_port(p)
        proxies = build_proxies(args, work, backend_ports, run)
        start_proxies(proxies, work, env, children)
        throughput(proxies, args, run)
        fixed_rate(proxies, args, work, run)
        for proxy in proxies:  # the memory section starts fresh processes
            assert proxy.child is not None
            proxy.child.stop()
        if args.memory:
            memory(args, work, env, children, run)
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
