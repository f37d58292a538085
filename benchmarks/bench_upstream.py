"""Requests per second through ``UpstreamPool`` vs httpx (and aiohttp), same backend, same run.

    python benchmarks/bench_upstream.py [--requests 20000] [--rounds 4] [--concurrency 1 16]

The backend is a minimal keep-alive HTTP/1.1 responder (an asyncio protocol that
answers every request head with a fixed 2-byte response) in a subprocess, so the
client is the bottleneck. Each client sends GET requests and reads every body:

* ``UpstreamPool.request`` + ``read()`` (trio);
* ``httpx.AsyncClient.get`` (trio, through httpcore);
* ``aiohttp.ClientSession.get`` + ``read()`` (asyncio, default loop) for reference;
* a bare trio stream writing fixed request bytes and doing one receive: the floor
  that any trio client pays on this machine.

Results go to ``benchmarks/RESULTS.md`` under "Upstream client".
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from _results import write_section

HERE = Path(__file__).resolve().parent
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


# ---- backend (runs in the subprocess) ------------------------------------------------


class _Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        count = self.buf.count(b"\r\n\r\n")
        if count:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * count)  # type: ignore[attr-defined]


async def _serve_backend() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Responder, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


# ---- clients -------------------------------------------------------------------------


async def _run_trio(make: Callable[[], Awaitable[object]], total: int, concurrency: int) -> float:
    per_task = total // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            await make()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return (time.perf_counter() - start) / (per_task * concurrency)


async def bench_pool(port: int, total: int, concurrency: int) -> float:
    from velithon._proxy.pool import UpstreamPool

    headers = [(b"host", b"127.0.0.1:%d" % port), (b"user-agent", b"bench"),
               (b"accept", b"*/*")]
    async with UpstreamPool(f"http://127.0.0.1:{port}", max_idle=64) as pool:

        async def one() -> None:
            response = await pool.request(b"GET", b"/", headers)
            await response.read()

        await _run_trio(one, 500, concurrency)  # warm-up: connections and caches
        return await _run_trio(one, total, concurrency)


async def bench_floor(port: int, total: int, concurrency: int) -> float:
    """Fixed request bytes out, one receive in, no parsing: trio's own round-trip cost."""
    request = b"GET / HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n\r\n" % port
    streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(concurrency)]
    free = list(streams)

    async def one() -> None:
        stream = free.pop()
        await stream.send_all(request)
        await stream.receive_some(65536)
        free.append(stream)

    try:
        await _run_trio(one, 500, concurrency)
        return await _run_trio(one, total, concurrency)
    finally:
        for stream in streams:
            await stream.aclose()


async def bench_httpx(port: int, total: int, concurrency: int) -> float:
    import httpx

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:

        async def one() -> None:
            response = await client.get("/", headers={"user-agent": "bench"})
            response.read()

        await _run_trio(one, 500, concurrency)
        return await _run_trio(one, total, concurrency)


async def bench_aiohttp(port: int, total: int, concurrency: int) -> float:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"http://127.0.0.1:{port}/"

        async def one() -> None:
            async with session.get(url, headers={"user-agent": "bench"}) as response:
                await response.read()

        async def run(n: int) -> float:
            per_task = n // concurrency

            async def worker() -> None:
                for _ in range(per_task):
                    await one()

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return (time.perf_counter() - start) / (per_task * concurrency)

        await run(500)
        return await run(total)


CLIENTS = (
    ("bare trio stream, no HTTP parsing (floor)",
     lambda port, n, c: trio.run(bench_floor, port, n, c)),
    ("`UpstreamPool` (trio)", lambda port, n, c: trio.run(bench_pool, port, n, c)),
    ("httpx `AsyncClient` (trio)", lambda port, n, c: trio.run(bench_httpx, port, n, c)),
    ("aiohttp `ClientSession` (asyncio)",
     lambda port, n, c: asyncio.run(bench_aiohttp(port, n, c))),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000, help="per client and concurrency")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds; best is kept")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--serve-backend", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_backend:
        asyncio.run(_serve_backend())
        return
    backend = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-backend"],
                               stdout=subprocess.PIPE, cwd=HERE)
    per_round = args.requests // args.rounds
    rows = []
    try:
        assert backend.stdout is not None
        port = int(backend.stdout.readline())
        for concurrency in args.concurrency:
            samples: dict[str, list[float]] = {label: [] for label, _ in CLIENTS}
            for _ in range(args.rounds):  # interleaved, so background load hits all alike
                for label, run in CLIENTS:
                    samples[label].append(run(port, per_round, concurrency))
            for label, _ in CLIENTS:
                best, median = min(samples[label]), statistics.median(samples[label])
                rows.append((label, concurrency, best, median))
                print(f"{label:42} c={concurrency:<3} best {best * 1e6:7.1f} µs "
                      f"({1 / best:8,.0f} req/s), median {median * 1e6:7.1f} µs", flush=True)
    finally:
        backend.terminate()
        backend.wait(timeout=10)
    lines = ["| client | concurrency | µs per request (best) | requests/s (best) "
             "| µs per request (median) |", "|---|---:|---:|---:|---:|"]
    for label, concurrency, best, median in rows:
        lines.append(f"| {label} | {concurrency} | {best * 1e6:.1f} | {1 / best:,.0f} "
                     f"| {median * 1e6:.1f} |")
    table = "\n".join(lines)
    command = (f"python benchmarks/bench_upstream.py --requests {args.requests} "
               f"--rounds {args.rounds} --concurrency {' '.join(map(str, args.concurrency))}")
    write_section(
        "Upstream client",
        "GET + read the whole body against a minimal keep-alive backend (asyncio, one\n"
        "subprocess); one client process. Concurrency = that many tasks sharing one\n"
        "pool/client. The clients run in interleaved rounds of requests/rounds each\n"
        "(after a 500-request warm-up); best and median round are shown.\n\n"
        f"Command: `{command}`\n\n{table}\n",
    )


if __name__ == "__main__":
    main()
