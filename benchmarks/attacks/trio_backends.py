"""Two ``velithon.testing`` backends in one trio process, steered over stdin.

Run as ``python -m benchmarks.attacks.trio_backends a b``; it prints
``ready {"a": <port>, "b": <port>}`` once both listen. The backends answer the same
endpoints as ``stdlib_backend`` (``/health``, ``/blob``, ``/upload``), but they are
h11-based, so they also read chunked uploads: the runner sends its chunked uploads to
a route made of these two only.

They run in their own process so that hashing uploads and producing downloads does not
share an interpreter (and its GIL) with the client whose latencies are measured.
The runner steers them with one command per stdin line, each acknowledged on stdout
with ``ack <seq>`` once applied:

* ``<seq> health <name> <status>``: answer ``/health`` with that status;
* ``<seq> fault <name> <status>``: answer every other request with that status
  (a sick application), ``<seq> fault <name> none`` heals it.

The recorded requests are cleared every second (the harness keeps them for tests; a
soak would otherwise grow without bound), and the process exits when its parent dies
or stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import trio
from benchmarks.attacks.payloads import UploadReceipt, blob, parse_blob_target

from velithon.testing import (
    Backend,
    BackendResponse,
    Fault,
    RecordedRequest,
    open_backend,
)

_CLEAR_EVERY = 1.0


def _handler(name: str) -> Callable[[RecordedRequest], Awaitable[BackendResponse]]:
    """The request handler of backend ``name`` (a closure, so receipts carry the name)."""

    async def handle(request: RecordedRequest) -> BackendResponse:
        if request.path == "/blob" and request.method in ("GET", "HEAD"):
            try:
                size, seed = parse_blob_target(request.target)
            except (KeyError, ValueError):
                return BackendResponse.json({"error": "bad blob query"}, status=400)
            return BackendResponse(200, [("Content-Type", "application/octet-stream")],
                                   blob(size, seed))
        if request.path == "/upload" and request.method in ("PUT", "POST"):
            receipt = UploadReceipt(
                backend=name,
                length=request.body_length,
                sha256=request.body_sha256,
                content_length=request.header("content-length"),
                transfer_encoding=request.header("transfer-encoding"),
            )
            return BackendResponse(200, [("Content-Type", "application/json")],
                                   receipt.to_json())
        return BackendResponse.json({"error": "not found"}, status=404)

    return handle


def apply_command(backends: dict[str, Backend], line: str) -> str:
    """Apply one control line; returns the acknowledgement to print.

    Raises:
        ValueError: an unknown command, backend or status.
    """
    seq, verb, name, value = line.split()
    backend = backends[name]
    if verb == "health":
        backend.set_health(int(value))
    elif verb == "fault":
        backend.set_fault(None if value == "none" else Fault.status(int(value)))
    else:
        raise ValueError(f"unknown command {verb!r}")
    return f"ack {seq}"


async def _control(backends: dict[str, Backend], done: trio.CancelScope) -> None:
    """Read commands from stdin until it closes (the runner went away)."""
    buffer = b""
    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
        while True:
            data = await stdin.receive_some(4096)
            if not data:
                break
            buffer += data
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                try:
                    print(apply_command(backends, raw.decode()), flush=True)
                except (KeyError, ValueError) as exc:
                    print(f"error {raw!r}: {exc}", flush=True)
    done.cancel()


async def _housekeeping(backends: dict[str, Backend], done: trio.CancelScope) -> None:
    """Forget recorded requests regularly; stop when the parent process is gone."""
    parent = os.getppid()
    while os.getppid() == parent:
        await trio.sleep(_CLEAR_EVERY)
        for backend in backends.values():
            backend.clear()
    done.cancel()


async def serve(names: list[str]) -> None:
    """Run the backends until stdin closes or the parent dies."""
    async with AsyncExitStack() as stack:
        backends = {
            name: await stack.enter_async_context(
                open_backend(_handler(name), name=name, max_recorded_body=0, strict=False))
            for name in names
        }
        print("ready " + json.dumps({name: b.port for name, b in backends.items()}), flush=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_control, backends, nursery.cancel_scope)
            nursery.start_soon(_housekeeping, backends, nursery.cancel_scope)


def main(argv: list[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv) or ["a", "b"]
    try:
        trio.run(serve, names)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
