"""CPU instructions per proxied request of a whole gateway process, counted by callgrind.

    python benchmarks/bench_instructions.py [--requests 1000] [--rounds 3]
        [--tree NAME=PATH/TO/src ...] [--write]

Wall-clock benchmarks (``bench_proxy.py``) need a quiet machine: on a shared 2-core box
the same code varies by 25 % from one run to the next. An instruction count does not
depend on what else runs, so it can tell a 0.1 % change from noise. It misses what the
kernel does (socket calls) and how fast each instruction goes, so use it to compare two
versions of the code, not to predict requests per second.

Each tree (``--tree``; by default this checkout) runs ``velithon run`` under
``valgrind --tool=callgrind`` with instrumentation off; a client on one keep-alive
connection sends warm-up requests, turns instrumentation on (``callgrind_control -i
on``), sends ``--requests`` sequential ``GET`` requests through a ``GatewayRoute`` to an
asyncio backend (outside valgrind), and turns it off. Variants, per tree: the default
route; the route with ``request_id_header=None``, if the tree has that keyword; and the
default route with ``--access-log`` (lines to a file), if the tree writes access lines.
Rounds alternate trees and variants; the median of the rounds is reported.
``PYTHONHASHSEED`` is fixed, and the route has no health checks, so nothing runs on a
timer while instructions are counted. ``--write`` puts the table in
``benchmarks/RESULTS.md`` under "Instructions per proxied request".
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _proxies import BACKEND, free_port
from _results import write_section

APP = """
import os
from velithon import Velithon
from velithon.gateway import GatewayRoute
app = Velithon()
app.routes.append(GatewayRoute(
    "/{path:path}", os.environ["BENCH_TARGETS"].split(","), max_retries=3,
    **({"request_id_header": None} if os.environ.get("BENCH_NO_REQUEST_ID") else {})))
"""
REQUEST = b"GET /x HTTP/1.1\r\nHost: gw\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
WARM_UP = 200
HERE = Path(__file__).resolve().parent


def _exchange(conn: socket.socket) -> None:
    conn.sendall(REQUEST)
    data = b""
    while not data.endswith(b"Hello, World!"):
        chunk = conn.recv(65536)
        if not chunk:
            raise RuntimeError("the gateway closed the connection")
        data += chunk


def count(src: Path, work: Path, backend_port: int, requests: int, *, access_log: bool,
          no_request_id: bool) -> int:
    """Instructions per request for one gateway process (callgrind's ``Collected``)."""
    port = free_port()
    out = work / f"callgrind.{port}"
    env = dict(os.environ, PYTHONPATH=f"{src}:{work}", PYTHONHASHSEED="0",
               BENCH_TARGETS=f"http://127.0.0.1:{backend_port}")
    if no_request_id:
        env["BENCH_NO_REQUEST_ID"] = "1"
    python = os.path.realpath(sys.executable)  # valgrind must run the interpreter itself
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
           f"--callgrind-out-file={out}", python, "-m", "velithon", "run", "gateway:app",
           "--port", str(port), "--log-level", "warning"]
    if access_log:
        cmd.append("--access-log")
    with open(work / f"stderr.{port}", "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((work / f"stderr.{port}").read_text()) from None
                time.sleep(0.2)
        conn.settimeout(120)
        with conn:
            for _ in range(WARM_UP):
                _exchange(conn)
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)],
                           check=True, capture_output=True)
            for _ in range(requests):
                _exchange(conn)
            subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)],
                           check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(120)
    for line in (work / f"stderr.{port}").read_text().splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1]) // requests
    raise RuntimeError(f"no instruction count in {work / f'stderr.{port}'}")


def _has(src: Path, text: str, module: str) -> bool:
    return text in (src / "velithon" / module).read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                        help="a source tree (its src/ folder); repeat to compare")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install valgrind")
    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("this checkout",
                                                             str(HERE.parent / "src"))]
    variants = []
    for name, path in trees:
        src = Path(path).resolve()
        variants.append((name, src, "default", False, False))
        if _has(src, "request_id_header", "_facades/route.py"):
            variants.append((name, src, "request_id_header=None", False, True))
        if _has(src, "AccessRecord", "server/_http.py"):
            variants.append((name, src, "--access-log", True, False))
    work = Path(tempfile.mkdtemp(prefix="velithon-instr-"))
    (work / "backend.py").write_text(BACKEND)
    (work / "gateway.py").write_text(APP)
    backend_port = free_port()
    backend = subprocess.Popen([sys.executable, "backend.py", str(backend_port)], cwd=work)
    counts: dict[tuple[str, str], list[int]] = {(v[0], v[2]): [] for v in variants}
    try:
        time.sleep(1)
        for round_ in range(args.rounds):
            for name, src, label, access_log, no_rid in variants:
                n = count(src, work, backend_port, args.requests, access_log=access_log,
                          no_request_id=no_rid)
                counts[(name, label)].append(n)
                print(f"round {round_ + 1} {name} {label}: {n:,} instructions/request",
                      flush=True)
    finally:
        backend.terminate()
        shutil.rmtree(work, ignore_errors=True)
    first = statistics.median(counts[(trees[0][0], "default")])
    rows = ["| tree | variant | instructions per request (median) | vs first tree's default |"
            " rounds |", "|---|---|---|---|---|"]
    for (name, label), values in counts.items():
        median = statistics.median(values)
        rows.append(f"| {name} | {label} | {median:,.0f} | {median / first - 1:+.2%} | "
                    f"{', '.join(f'{v:,}' for v in values)} |")
    table = "\n".join(rows)
    print(table)
    if args.write:
        trees_text = " ".join(f"--tree '{n}=...'" for n, _ in trees)
        write_section("Instructions per proxied request", (
            f"Command: `python benchmarks/bench_instructions.py --requests {args.requests} "
            f"--rounds {args.rounds} {trees_text}`. User-space instructions counted by "
            "callgrind in the whole `velithon run` process, per sequential keep-alive GET "
            "through a GatewayRoute (no health checks) to an asyncio backend.\n\n" + table))


if __name__ == "__main__":
    main()
