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

Load comes from ``wrk`` (``apt-get install wrk``), one thread, keep-alive
connections, for ``--seconds``. We report requests/s and the proxy process's
CPU time per request (user + system, from psutil). Each proxy is measured
``--rounds`` times, alternating, and the best round is kept. Results go to
``benchmarks/RESULTS.md`` under "Proxy: velithon vs aiohttp".
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
from _results import write_section

BACKEND = textwrap.dedent('''
    import asyncio, sys
    try:
        import uvloop; uvloop.install()
    except ImportError:
        pass
    RESPONSE = (b"HTTP/1.1 200 OK\\r\\nContent-Length: 13\\r\\n"
                b"Content-Type: text/plain\\r\\n\\r\\nHello, World!")
    class P(asyncio.Protocol):
        def connection_made(self, t): self.t = t; self.buf = b""
        def data_received(self, data):
            self.buf += data
            while True:
                i = self.buf.find(b"\\r\\n\\r\\n")
                if i < 0: return
                self.buf = self.buf[i + 4:]
                self.t.write(RESPONSE)
    async def main():
        ports = [int(p) for p in sys.argv[1:]]
        servers = [await asyncio.get_running_loop().create_server(P, "127.0.0.1", p) for p in ports]
        await asyncio.Event().wait()
    asyncio.run(main())
''')

AIOHTTP_PROXY = textwrap.dedent('''
    import itertools, sys
    import uvloop
    from aiohttp import web, ClientSession, TCPConnector
    targets = itertools.cycle(sys.argv[2:])
    HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
           "proxy-connection", "proxy-authorization", "host", "content-length"}
    async def on_startup(app):
        app["session"] = ClientSession(connector=TCPConnector(limit=0, limit_per_host=0))
    async def on_cleanup(app):
        await app["session"].close()
    async def handler(request):
        url = next(targets) + request.rel_url.raw_path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        headers["X-Forwarded-For"] = request.remote or ""
        body = await request.read()
        async with request.app["session"].request(request.method, url, headers=headers,
                                                  data=body or None) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP:
                    response.headers.add(k, v)
            response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(65536):
                await response.write(chunk)
            await response.write_eof()
            return response
    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", handler)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
''')

VELITHON_APP = textwrap.dedent('''
    import os
    from velithon import Velithon
    from velithon.gateway import GatewayRoute
    app = Velithon()
    app.routes.append(GatewayRoute(
        path="/{path:path}",
        targets=os.environ["BENCH_TARGETS"].split(","),
        load_balancing_strategy="round_robin",
        health_check_path="/health",
        health_check_interval=1.0,
        timeout_ms=30000,
        max_retries=3,
        max_failures=5,
        recovery_timeout_ms=60000,
    ))
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def run_wrk(port: int, seconds: int, connections: int) -> tuple[float, int, int]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/hello"],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return rps, total, errors


def measure(cmd: list[str], port: int, seconds: int, connections: int, env: dict[str, str],
            cwd: str) -> tuple[float, float, int]:
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_port(port)
        run_wrk(port, 2, connections)  # warm-up: pools filled, code paths hot
        ps = psutil.Process(proc.pid)
        before = ps.cpu_times()
        rps, total, errors = run_wrk(port, seconds, connections)
        after = ps.cpu_times()
        cpu = (after.user - before.user) + (after.system - before.system)
        return rps, cpu / max(total, 1) * 1e6, errors
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    work = tempfile.mkdtemp(prefix="velithon-bench-")
    Path(work, "backend.py").write_text(BACKEND)
    Path(work, "aioproxy.py").write_text(AIOHTTP_PROXY)
    Path(work, "gateway_app.py").write_text(VELITHON_APP)
    ports = [free_port() for _ in range(3)]
    targets = [f"http://127.0.0.1:{p}" for p in ports]
    backend = subprocess.Popen([sys.executable, "backend.py", *map(str, ports)], cwd=work)
    results: dict[str, list[tuple[float, float, int]]] = {"velithon": [], "aiohttp": []}
    try:
        for p in ports:
            wait_port(p)
        env = dict(os.environ, BENCH_TARGETS=",".join(targets), PYTHONPATH=work)
        for _ in range(args.rounds):
            port = free_port()
            results["velithon"].append(measure(
                [sys.executable, "-m", "velithon", "run", "gateway_app:app", "--host", "127.0.0.1",
                 "--port", str(port)], port, args.seconds, args.connections, env, work))
            port = free_port()
            results["aiohttp"].append(measure(
                [sys.executable, "aioproxy.py", str(port), *targets], port, args.seconds,
                args.connections, env, work))
    finally:
        backend.terminate()
        backend.wait(10)
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
