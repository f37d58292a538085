"""Shared pieces of the reverse-proxy benchmarks (``bench_proxy.py``, ``bench_suite.py``).

The helper programs are kept here as source text and written into a temporary folder
at run time, so every process under test is a plain ``python script.py`` (or ``velithon
run``, ``hypercorn``, ``nginx``) that the benchmark can start, measure and kill:

* ``backend.py``: one asyncio process answering every request (``/health`` included)
  with a fixed 200 and a 13-byte body, on each port it is given;
* ``aioproxy.py``: an aiohttp + uvloop reverse proxy (one pooled ``ClientSession``,
  round robin, streamed response body: the common aiohttp recipe); over TLS when
  ``BENCH_CERTFILE`` names a key-and-certificate PEM file;
* ``gateway_app.py``: a ``Velithon`` app whose only route is a ``GatewayRoute`` with
  every gateway feature on, served by ``velithon run gateway_app:app``;
* ``hcproxy.py``: a tiny ASGI proxy (one shared ``httpx.AsyncClient``, round robin)
  for ``hypercorn --worker-class trio``;
* ``transfer_backend.py``: discards uploads of any size and streams downloads of any
  size, generated on the fly, for the memory test;
* ``loadgen.py``: a fixed-rate (open-loop) load generator and an idle keep-alive
  connection holder.

CPU and memory are read from ``/proc`` through psutil, summed over the process tree
(nginx's master and worker, ``velithon run --workers 2``'s supervisor and workers,
hypercorn's supervisor and worker).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import psutil

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
    import itertools, os, sys
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
    tls = None
    if os.environ.get("BENCH_CERTFILE"):
        import ssl
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(os.environ["BENCH_CERTFILE"])
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
                keepalive_timeout=float(os.environ.get("BENCH_KEEPALIVE", "75")),
                ssl_context=tls)
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
        timeout_ms=int(os.environ.get("BENCH_TIMEOUT_MS", "30000")),
        max_retries=3,
        max_failures=5,
        recovery_timeout_ms=60000,
    ))
''')

HYPERCORN_PROXY = textwrap.dedent('''
    """An ASGI reverse proxy: one shared httpx.AsyncClient, round robin, streamed body."""
    import itertools, os
    import httpx
    TARGETS = itertools.cycle(os.environ["BENCH_TARGETS"].split(","))
    HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer",
           b"proxy-connection", b"proxy-authorization"}
    REQUEST_SKIP = HOP | {b"host", b"content-length"}
    client = None
    async def lifespan(receive, send):
        global client
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                client = httpx.AsyncClient(
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
                    timeout=30.0, trust_env=False)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in REQUEST_SKIP]
        headers.append((b"x-forwarded-for", scope["client"][0].encode()))
        path = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            path += b"?" + scope["query_string"]
        request = client.build_request(scope["method"], next(TARGETS) + path.decode("latin-1"),
                                       headers=headers, content=body)
        upstream = await client.send(request, stream=True)
        try:
            await send({"type": "http.response.start", "status": upstream.status_code,
                        "headers": [(k, v) for k, v in upstream.headers.raw
                                    if k.lower() not in HOP]})
            async for chunk in upstream.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await upstream.aclose()
''')

TRANSFER_BACKEND = textwrap.dedent('''
    """POST /upload: read and discard the body. GET /download/N: N bytes. Else: 200 "ok"."""
    import asyncio, sys
    try:
        import uvloop; uvloop.install()
    except ImportError:
        pass
    CHUNK = bytes(1 << 20)
    def head(status, length, close):
        return (f"HTTP/1.1 {status}\\r\\nContent-Length: {length}\\r\\n"
                f"Content-Type: application/octet-stream\\r\\n"
                + ("Connection: close\\r\\n" if close else "") + "\\r\\n").encode()
    async def handle(reader, writer):
        try:
            while True:
                lines = (await reader.readuntil(b"\\r\\n\\r\\n")).decode("latin-1").split("\\r\\n")
                method, target = lines[0].split(" ")[:2]
                fields = dict(line.lower().split(":", 1) for line in lines[1:] if ":" in line)
                fields = {k.strip(): v.strip() for k, v in fields.items()}
                close = fields.get("connection") == "close"
                if "chunked" in fields.get("transfer-encoding", ""):
                    writer.write(head("501 Not Implemented", 0, True))
                    break
                left = int(fields.get("content-length", "0"))
                received = left
                while left:
                    chunk = await reader.read(min(left, 1 << 20))
                    if not chunk:
                        return
                    left -= len(chunk)
                if target.startswith("/download/"):
                    size = int(target.rsplit("/", 1)[1])
                    writer.write(head("200 OK", size, close))
                    view = memoryview(CHUNK)
                    while size:
                        n = min(size, len(CHUNK))
                        writer.write(view[:n])
                        await writer.drain()
                        size -= n
                else:
                    body = str(received).encode() if method == "POST" else b"ok"
                    writer.write(head("200 OK", len(body), close) + body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
    async def main():
        await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
        await asyncio.Event().wait()
    asyncio.run(main())
''')

LOADGEN = textwrap.dedent('''
    """Two load patterns for bench_suite.py, printed as JSON lines on stdout.

    python loadgen.py rate PORT RATE SECONDS CONNECTIONS
        Open-loop fixed rate, wrk2-style: each keep-alive connection has its own
        schedule (request k at start + i/RATE + k*CONNECTIONS/RATE). When a response
        comes back after the next request was due, that request's latency is measured
        from its *scheduled* time (no coordinated omission). When the generator had to
        wait for the due time, latency starts at the actual send, so its own timer
        slack (reported as oversleep) is not blamed on the proxy.
    python loadgen.py idle PORT COUNT
        Open COUNT keep-alive connections, one request each, report, then hold them
        until a line arrives on stdin; report how many are still open and exit.
    """
    import asyncio, json, math, resource, sys, time
    REQUEST = b"GET /hello HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n"
    ERRORS = (OSError, EOFError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError,
              asyncio.LimitOverrunError)
    GRACE = 2.0  # after the schedule ends, requests still not sent are given up
    TIMEOUT = 5.0
    def raise_nofile(need):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    async def read_response(reader):
        lines = (await reader.readuntil(b"\\r\\n\\r\\n")).split(b"\\r\\n")
        status = int(lines[0].split()[1])
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            while True:
                size = int((await reader.readuntil(b"\\r\\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await reader.readexactly(length)
        return status
    def percentile(values, q):
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else math.nan
    async def rate(port, rps, seconds, connections):
        streams = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                         for _ in range(connections)))
        latencies, oversleep, errors, unsent = [], [], 0, 0
        interval = connections / rps
        start = time.perf_counter() + 0.1
        end = start + seconds
        async def worker(i, reader, writer):
            nonlocal errors, unsent
            scheduled = start + i / rps
            while scheduled < end:
                now = time.perf_counter()
                if now > end + GRACE:  # too far behind: give up the rest of the schedule
                    while scheduled < end:
                        unsent += 1
                        scheduled += interval
                    break
                if scheduled > now:
                    await asyncio.sleep(scheduled - now)
                    origin = time.perf_counter()
                    oversleep.append(origin - scheduled)
                else:
                    origin = scheduled  # late because of the previous response
                scheduled += interval
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(REQUEST)
                    status = await asyncio.wait_for(read_response(reader), TIMEOUT)
                except ERRORS:
                    errors += 1
                    if writer is not None:
                        writer.close()
                    writer = None
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - origin)
                else:
                    errors += 1
            if writer is not None:
                writer.close()
        await asyncio.gather(*(worker(i, r, w) for i, (r, w) in enumerate(streams)))
        latencies.sort()
        oversleep.sort()
        print(json.dumps({
            "ok": len(latencies), "errors": errors, "unsent": unsent,
            "rate": len(latencies) / seconds,
            "p50": percentile(latencies, 0.50), "p99": percentile(latencies, 0.99),
            "p999": percentile(latencies, 0.999),
            "max": latencies[-1] * 1000 if latencies else math.nan,
            "oversleep_p99": percentile(oversleep, 0.99)}), flush=True)
    async def idle(port, count):
        raise_nofile(count + 256)
        gate = asyncio.Semaphore(100)
        held, failed = [], 0
        async def one():
            nonlocal failed
            async with gate:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", port), TIMEOUT)
                    writer.write(REQUEST)
                    if await asyncio.wait_for(read_response(reader), TIMEOUT) == 200:
                        held.append((reader, writer))
                        return
                    writer.close()
                except ERRORS:
                    pass
                failed += 1
        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        print(json.dumps({"held": len(held), "failed": failed,
                          "seconds": time.perf_counter() - began}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print(json.dumps({"still_open": sum(not r.at_eof() for r, _ in held)}), flush=True)
        for _, writer in held:
            writer.close()
    def main():
        mode, port, *rest = sys.argv[1:]
        if mode == "rate":
            coro = rate(int(port), float(rest[0]), float(rest[1]), int(rest[2]))
        else:
            coro = idle(int(port), int(rest[0]))
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)
    main()
''')

NGINX_CONF = textwrap.dedent('''
    worker_processes 1;
    daemon off;
    pid {work}/nginx.pid;
    error_log {work}/nginx-error.log warn;
    events {{
        worker_connections 4096;
    }}
    http {{
        access_log off;
        client_body_temp_path {work}/nginx-temp/client_body;
        proxy_temp_path {work}/nginx-temp/proxy;
        fastcgi_temp_path {work}/nginx-temp/fastcgi;
        uwsgi_temp_path {work}/nginx-temp/uwsgi;
        scgi_temp_path {work}/nginx-temp/scgi;
        upstream backends {{
    {servers}
            keepalive 32;
        }}
        server {{
            listen 127.0.0.1:{port}{listen_tls};{tls}
            location / {{
                proxy_pass http://backends;
                proxy_http_version 1.1;
                proxy_set_header Connection "";
            }}
        }}
    }}
''')

SCRIPTS = {
    "backend.py": BACKEND,
    "aioproxy.py": AIOHTTP_PROXY,
    "gateway_app.py": VELITHON_APP,
    "hcproxy.py": HYPERCORN_PROXY,
    "transfer_backend.py": TRANSFER_BACKEND,
    "loadgen.py": LOADGEN,
}


def write_scripts(work: Path) -> None:
    """Write every helper program into ``work``."""
    for name, text in SCRIPTS.items():
        (work / name).write_text(text)


def write_nginx_conf(work: Path, port: int, backend_ports: Sequence[int],
                     certfile: Path | None = None) -> Path:
    """An nginx.conf proxying ``127.0.0.1:port`` round robin to the backends (over TLS
    with ``certfile``, a key-and-certificate PEM file)."""
    (work / "nginx-temp").mkdir(exist_ok=True)
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in backend_ports)
    tls = ""
    if certfile is not None:
        tls = (f"\n            ssl_certificate {certfile};\n"
               f"            ssl_certificate_key {certfile};\n"
               f"            ssl_protocols TLSv1.2 TLSv1.3;")
    conf = work / ("nginx-tls.conf" if certfile else "nginx.conf")
    conf.write_text(NGINX_CONF.format(work=work, port=port, servers=servers, tls=tls,
                                      listen_tls=" ssl" if certfile else ""))
    return conf


def python_path(work: Path) -> str:
    """PYTHONPATH for the children: the helper programs first, then the caller's own."""
    return os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class WrkResult(NamedTuple):
    rps: float
    total: int
    errors: int


def run_wrk(port: int, seconds: float, connections: int, *, scheme: str = "http",
            headers: Sequence[str] = ()) -> WrkResult:
    """``wrk -t1`` against ``/hello``: keep-alive connections unless ``headers`` say
    ``Connection: close``."""
    extra = [arg for header in headers for arg in ("-H", header)]
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", *extra,
         f"{scheme}://127.0.0.1:{port}/hello"],
        capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"cannot parse wrk's output:\n{out}")
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return WrkResult(float(rps.group(1)), int(total.group(1)), errors)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark dies (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """A process under test, in its own session so its whole tree can be stopped."""

    def __init__(self, name: str, cmd: Sequence[str], cwd: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.log = cwd / f"{name.replace(' ', '_')}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                list(cmd), cwd=cwd, env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent)

    def wait_port(self, port: int, timeout: float = 20.0) -> None:
        """Wait until ``port`` accepts; fail at once, with the log, if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name}: nothing listens on port {port}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def tree(self) -> list[psutil.Process]:
        """The process and all its descendants (read now: call after start-up)."""
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after 10 s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def tree_cpu(procs: Sequence[psutil.Process]) -> float:
    """User + system CPU seconds of the processes (ones that are gone count as 0)."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def tree_rss(procs: Sequence[psutil.Process]) -> int:
    """Resident bytes of the processes, summed."""
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class Throughput(NamedTuple):
    rps: float
    cpu_us: float  # CPU µs per request, the whole process tree
    errors: int


def measure_throughput(child: Child, port: int, seconds: float, connections: int,
                       warmup: float = 2.0, *, scheme: str = "http",
                       headers: Sequence[str] = ()) -> Throughput:
    """A ``warmup`` wrk run (pools filled, code hot), then the measured one."""
    run_wrk(port, warmup, connections, scheme=scheme, headers=headers)
    procs = child.tree()
    before = tree_cpu(procs)
    result = run_wrk(port, seconds, connections, scheme=scheme, headers=headers)
    cpu = tree_cpu(procs) - before
    return Throughput(result.rps, cpu / max(result.total, 1) * 1e6, result.errors)


def velithon_cmd(port: int, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "velithon", "run", "gateway_app:app", "--host", "127.0.0.1",
            "--port", str(port), *extra]


def aiohttp_cmd(port: int, targets: Sequence[str]) -> list[str]:
    return [sys.executable, "aioproxy.py", str(port), *targets]


def hypercorn_cmd(port: int) -> list[str]:
    return [sys.executable, "-m", "hypercorn", "--worker-class", "trio",
            "--bind", f"127.0.0.1:{port}", "hcproxy:app"]


def nginx_cmd(conf: Path, work: Path) -> list[str]:
    return ["nginx", "-c", str(conf), "-p", str(work), "-e", str(work / "nginx-error.log")]
