"""``velithon run --ssl-*`` as a user runs it: https served, SIGHUP reloading the certificate
(also through ``--workers``), the redirect listener, and one-line start-up and usage errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from support.forkserver import ForkServer
from support.tls import Certs, expired_leaf, make_certs, serial_of

APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["scheme"].encode()})
"""
LIMIT = 20.0


@pytest.fixture(autouse=True)
def _both_parsers() -> None:
    """Subprocess tests: the parser is the command line's concern (see test_parser_choice)."""


class Server:
    """A ``velithon run`` process group whose output goes to files, a child of the fork
    server (see support.forkserver)."""

    def __init__(self, cli: ForkServer, cwd: Path, name: str, args: tuple[str, ...]) -> None:
        self.out_path, self.err_path = cwd / f"{name}.out", cwd / f"{name}.err"
        self.proc = cli.start("run", "app:app", *args, module="velithon._cli", cwd=cwd,
                              stdout=self.out_path, stderr=self.err_path, new_session=True)

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, pattern: str, *, stream: str = "out", count: int = 1) -> re.Match[str]:
        deadline = time.monotonic() + LIMIT
        while True:
            exited = self.proc.poll() is not None
            matches = list(re.finditer(pattern, self.out if stream == "out" else self.err))
            if len(matches) >= count:
                return matches[count - 1]
            if exited or time.monotonic() > deadline:
                pytest.fail(f"{pattern!r} not seen; exit {self.proc.poll()}\n{self.out}\n"
                            f"{self.err}")
            time.sleep(0.02)

    def port(self) -> int:
        return int(self.wait_for(r"velithon serving on https://127\.0\.0\.1:(\d+)\n").group(1))

    def wait(self) -> int:
        return self.proc.wait(timeout=LIMIT)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=LIMIT)


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    (tmp_path / "app.py").write_text(APP)
    return make_certs(tmp_path)


@pytest.fixture
def start(certs: Certs, cli: ForkServer) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def launch(*args: str) -> Server:
        server = Server(cli, certs.dir, f"server{len(servers)}", args)
        servers.append(server)
        return server

    yield launch
    for server in servers:
        server.kill()


def tls_connect(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=LIMIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(sock, server_hostname="127.0.0.1")


def get(sock: ssl.SSLSocket, path: str = "/") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while not data.endswith(b"\r\n\r\nhttps"):
        piece = sock.recv(4096)
        assert piece, data
        data += piece
    return data


def test_run_serves_https_and_reloads_the_certificate_on_sighup(
        start: Callable[..., Server], certs: Certs) -> None:
    live = certs.dir / "live.pem"
    first_path, first = certs.issue("first")
    second_path, second = certs.issue("second")
    live.write_bytes(first_path.read_bytes())
    server = start("--port", "0", "--ssl-certfile", str(live))
    port = server.port()
    context = certs.client_context()
    kept = tls_connect(port, context)
    assert kept.getpeercert()["serialNumber"] == serial_of(first)
    assert get(kept).startswith(b"HTTP/1.1 200 ")

    live.write_bytes(second_path.read_bytes())
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("TLS certificate reloaded", stream="err")
    fresh = tls_connect(port, context)
    assert fresh.getpeercert()["serialNumber"] == serial_of(second)
    assert get(fresh).startswith(b"HTTP/1.1 200 ")
    assert get(kept).startswith(b"HTTP/1.1 200 ")  # the open connection goes on
    kept.close()
    fresh.close()
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 0, server.err
    assert "Traceback" not in server.err


def test_workers_reload_on_sighup_and_redirect(start: Callable[..., Server], certs: Certs) -> None:
    live = certs.dir / "live.pem"
    first_path, _ = certs.issue("first")
    second_path, second = certs.issue("second")
    live.write_bytes(first_path.read_bytes())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        redirect_port = probe.getsockname()[1]
    server = start("--port", "0", "--workers", "2", "--ssl-certfile", str(live),
                   "--https-redirect-port", str(redirect_port))
    port = server.port()
    moved = httpx.get(f"http://127.0.0.1:{redirect_port}/x?y=1", timeout=LIMIT)
    assert moved.status_code == 301
    assert moved.headers["location"] == f"https://127.0.0.1:{port}/x?y=1"

    live.write_bytes(second_path.read_bytes())
    os.killpg(server.proc.pid, signal.SIGHUP)  # the group: supervisor and workers alike
    server.wait_for("TLS certificate reloaded", stream="err", count=2)
    context = certs.client_context()
    for _ in range(8):  # whichever worker accepts
        sock = tls_connect(port, context)
        assert sock.getpeercert()["serialNumber"] == serial_of(second)
        sock.close()
    os.killpg(server.proc.pid, signal.SIGTERM)
    assert server.wait() == 0, server.err
    assert "Traceback" not in server.err


def test_an_expired_certificate_is_refused_at_start_up(cli: ForkServer, certs: Certs) -> None:
    expired = certs.dir / "expired.pem"
    expired_leaf(certs.ca).private_key_and_cert_chain_pem.write_to_path(str(expired))
    for workers in ("1", "2"):
        done = cli.run("run", "app:app", "--port", "0", "--workers", workers, "--ssl-certfile",
                       str(expired), module="velithon._cli", cwd=certs.dir)
        assert done.returncode == 3
        assert done.stderr == (f"velithon: error: the certificate in {str(expired)!r} expired "
                               "on 2020-01-02 03:04:05 UTC\n")
        assert "serving on" not in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--hsts", "60"), "--hsts needs --ssl-certfile"),
    (("--ssl-certfile", "c.pem", "--ssl-cert-reqs", "2"),
     "--ssl-cert-reqs required needs --ssl-ca-certs"),
    (("--ssl-certfile", "c.pem", "--ssl-cert-reqs", "always"),
     "argument --ssl-cert-reqs: invalid value 'always'"),
    (("--ssl-certfile", "c.pem", "--ssl-handshake-timeout", "0"),
     "--ssl-handshake-timeout must be > 0"),
    (("--ssl-certfile", "c.pem", "--https-redirect-port", "70000"),
     "--https-redirect-port must be in 0..65535"),
    (("--ssl-certfile", "c.pem", "--port", "8443", "--https-redirect-port", "8443"),
     "velithon: error: --https-redirect-port 8443 is also the https port: the redirect "
     "listener needs a port of its own"),
])
def test_option_mistakes_are_one_line_usage_errors(
        cli: ForkServer, certs: Certs, args: tuple[str, ...], message: str) -> None:
    done = cli.run("run", "app:app", "--port", "0", *args, module="velithon._cli",
                   cwd=certs.dir)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
