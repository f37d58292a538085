"""Hello-world throughput: velithon's h11 server vs hypercorn's trio worker.

Each server runs the same ASGI app in its own subprocess (one process each); load comes
from ``wrk`` when it is installed, else from a Python keep-alive load generator in a
separate process. For each row we report requests/s and the server process's CPU time per
request (user + system, via psutil). Results go to ``benchmarks/RESULTS.md`` under
``## Server: hello world`` (only that section is replaced).

    python benchmarks/bench_server.py [--duration 10] [--connections 50] [--load wrk|python]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
HEADING = "## Server: hello world"

BODY = json.dumps({"message": "Hello, World!"}).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI 3 hello world (with lifespan, which hypercorn's trio worker requires)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def _build_velithon_app() -> Any:
    try:
        from velithon import Velithon
    except ImportError:
        return None
    app = Velithon()

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"message": "Hello, World!"}

    return app


velithon_app = _build_velithon_app()


# -- servers --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_command(server: str, app: str, port: int) -> list[str]:
    if server == "velithon":
        return [sys.executable, "-m", "velithon._cli", "run", f"bench_server:{app}",
                "--port", str(port), "--log-level", "warning"]
    return [sys.executable, "-m", "hypercorn", "-k", "trio", "-b", f"127.0.0.1:{port}",
            "--log-level", "warning", f"bench_server:{app}"]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


# -- load generators ----------------------------------------------------------------


def _wrk(port: int, connections: int, duration: float) -> int:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", f"http://127.0.0.1:{port}/"],
        check=True, capture_output=True, text=True,
    ).stdout
    match = re.search(r"(\d+) requests in", out)
    if match is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk reported a problem:\n{out}")
    return int(match.group(1))


def _python_load_worker(port: int, connections: int, duration: float, result: Any) -> None:
    """Keep-alive GETs over raw sockets, one request in flight per connection."""
    import selectors

    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sel = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytearray] = {}
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sock.send(request)
        buffers[sock] = bytearray()
        sel.register(sock, selectors.EVENT_READ)
    done = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.1):
            sock = key.fileobj
            buf = buffers[sock]  # type: ignore[index]
            buf += sock.recv(65536)  # type: ignore[union-attr]
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                length = int(re.search(rb"(?i)content-length: *(\d+)", buf[:head_end]).group(1))
                total = head_end + 4 + length
                if len(buf) < total:
                    break
                del buf[:total]
                done += 1
                sock.send(request)  # type: ignore[union-attr]
    result.value = done


def _python_load(port: int, connections: int, duration: float) -> int:
    ctx = multiprocessing.get_context("spawn")
    result = ctx.Value("q", 0)
    proc = ctx.Process(target=_python_load_worker, args=(port, connections, duration, result))
    proc.start()
    proc.join()
    return int(result.value)


# -- one measurement ----------------------------------------------------------------


def measure(server: str, app: str, load: str, connections: int, duration: float) -> dict[str, Any]:
    import psutil

    port = _free_port()
    proc = subprocess.Popen(_server_command(server, app, port), cwd=HERE,
                            stdout=subprocess.DEVNULL)
    try:
        _wait_listening(port, proc)
        server_proc = psutil.Process(proc.pid)
        # hypercorn serves from a child worker process: measure the whole tree
        procs = [server_proc, *server_proc.children(recursive=True)]
        run = _wrk if load == "wrk" else _python_load
        run(port, connections, 1.0)  # warm-up
        cpu_before = sum(sum(p.cpu_times()[:2]) for p in procs)
        start = time.perf_counter()
        requests = run(port, connections, duration)
        elapsed = time.perf_counter() - start
        cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - cpu_before
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "server": server, "app": app, "requests": requests,
        "rps": requests / elapsed, "cpu_us": cpu / max(requests, 1) * 1e6,
    }


def _write_results(rows: list[dict[str, Any]], command: str, load_desc: str) -> str:
    base = {r["app"]: r["rps"] for r in rows if r["server"] == "hypercorn"}
    base_cpu = {r["app"]: r["cpu_us"] for r in rows if r["server"] == "hypercorn"}
    lines = [
        HEADING, "",
        f"Command: `{command}`", "",
        f"Load: {load_desc}. Machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}. Each server is one process; the load "
        "generator runs on the same machine.", "",
        "| app | server | req/s | server CPU µs/request | req/s vs hypercorn "
        "| CPU efficiency vs hypercorn |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["rps"] / base[r["app"]] if base.get(r["app"]) else float("nan")
        efficiency = base_cpu[r["app"]] / r["cpu_us"] if base_cpu.get(r["app"]) else float("nan")
        lines.append(f"| {r['app']} | {r['server']} | {r['rps']:,.0f} | {r['cpu_us']:,.0f} "
                     f"| {ratio:.2f}× | {efficiency:.2f}× |")
    section = "\n".join(lines) + "\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--load", choices=["wrk", "python"], default=None,
                        help="load generator (default: wrk if installed)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternate the servers this many times; keep each one's best row "
                             "(the machine may be shared, so the best run is the least disturbed)")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    load = args.load or ("wrk" if shutil.which("wrk") else "python")
    apps = ["raw_app"] + (["velithon_app"] if velithon_app is not None else [])
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(args.rounds):
        for app in apps:
            for server in ("hypercorn", "velithon"):
                row = measure(server, app, load, args.connections, args.duration)
                print(f"{app:13s} {server:10s} {row['rps']:10,.0f} req/s "
                      f"{row['cpu_us']:8,.0f} µs CPU/request", flush=True)
                if (app, server) not in best or row["rps"] > best[app, server]["rps"]:
                    best[app, server] = row
    rows = list(best.values())
    if load == "wrk":
        version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
        load_desc = f"wrk {version[1] if len(version) > 1 else ''}, 1 thread, " \
                    f"{args.connections} keep-alive connections, {args.duration:g} s per run"
    else:
        load_desc = (f"Python raw-socket load generator (separate process), "
                     f"{args.connections} keep-alive connections, {args.duration:g} s per run")
    load_desc += (f", best of {args.rounds} alternating runs per row, "
                  f"1-min load average at the end {os.getloadavg()[0]:.1f}")
    command = "python benchmarks/bench_server.py " + " ".join(sys.argv[1:])
    if not args.no_write:
        print(_write_results(rows, command.strip(), load_desc))


if __name__ == "__main__":
    main()
