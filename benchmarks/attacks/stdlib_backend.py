"""A backend on the standard library's ``http.server``, as many small services are.

Run as ``python -m benchmarks.attacks.stdlib_backend --port 0 --name c``; it prints
``ready <port>`` once listening. It answers ``GET /health``, ``GET /blob?n=&seed=``
(see ``payloads``) and ``PUT``/``POST /upload``, which reads the body the way
``BaseHTTPRequestHandler`` code usually does: exactly ``Content-Length`` bytes, and
nothing when that header is absent. ``http.server`` has no chunked request decoding, so
an upload that a gateway re-frames as chunked arrives here as an empty body; the
receipt then reports ``length`` 0 and the framing it saw, which is the point: the
client can tell a lost body from a delivered one. After such a request the connection
is closed, because the unread chunked bytes would otherwise be parsed as the next
request and the damage would land on an unrelated request.

The process exits by itself when its parent goes away (it polls its parent id), so a
runner killed with SIGKILL does not leave it behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from benchmarks.attacks.payloads import UploadReceipt, blob, parse_blob_target

_READ_SIZE = 65536
#: A stalled upload may hold a handler thread this long at most.
_SOCKET_TIMEOUT = 60.0


class _Handler(BaseHTTPRequestHandler):
    """The three endpoints; ``server.name`` tags every answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, so the gateway's pool is exercised
    server_version = "stdlib-backend"
    timeout = _SOCKET_TIMEOUT

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log line: thousands per run would only cost CPU."""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.server.name)  # type: ignore[attr-defined]
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            self._json(200, {"status": "healthy", "backend": self.server.name})  # type: ignore[attr-defined]
        elif path == "/blob":
            try:
                size, seed = parse_blob_target(self.path)
            except (KeyError, ValueError):
                self._json(400, {"error": "bad blob query"})
                return
            self._send(200, blob(size, seed), "application/octet-stream")
        else:
            self._json(404, {"error": "not found"})

    def _upload(self) -> None:
        if urlsplit(self.path).path != "/upload":
            self._json(404, {"error": "not found"})
            return
        declared = self.headers.get("Content-Length")
        chunked = self.headers.get("Transfer-Encoding")
        if chunked is not None:
            self.close_connection = True  # see the module docstring
        remaining = int(declared) if declared and declared.isdigit() else 0
        digest, length = hashlib.sha256(), 0
        while remaining > 0:
            data = self.rfile.read(min(_READ_SIZE, remaining))
            if not data:  # the peer gave up mid-body: nobody to answer
                self.close_connection = True
                return
            digest.update(data)
            length += len(data)
            remaining -= len(data)
        receipt = UploadReceipt(
            backend=self.server.name,  # type: ignore[attr-defined]
            length=length,
            sha256=digest.hexdigest(),
            content_length=declared,
            transfer_encoding=chunked,
        )
        self._send(200, receipt.to_json(), "application/json")

    do_PUT = _upload
    do_POST = _upload


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default (5) drops connects under a gateway's burst
    allow_reuse_address = True  # a restarted backend must get its old port back

    def __init__(self, port: int, name: str) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.name = name


def _exit_with_parent(parent: int) -> None:
    """End the process once it has been re-parented (its runner died)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Serve until killed or orphaned."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="stdlib")
    args = parser.parse_args(argv)
    server = _Server(args.port, args.name)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    print(f"ready {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
