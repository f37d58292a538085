"""https and wss served directly: the scope, a gateway over TLS, client certificates, the
handshake deadline, what the TLS port refuses, certificate reload, the redirect listener
and HSTS. Real sockets on 127.0.0.1, trustme certificates, small real timeouts."""

from __future__ import annotations

import logging
import socket
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio_websocket

from velithon import Velithon
from velithon.gateway import GatewayRoute
from velithon.server import (
    ServerConfig,
    ServerStartupError,
    TLSCertificates,
    TLSConfig,
    serve_tcp,
)
from velithon.testing import open_ws_backend

from support.gateway import backends
from support.server import Recorder, parse_responses, read_until_closed
from support.tls import Certs, expired_leaf, make_certs, open_tls, read_response, serial_of

LIMIT = 10.0


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


@asynccontextmanager
async def tls_server(app: Any, certs: Certs, tls: TLSConfig | None = None, *,
                     certificates: TLSCertificates | None = None,
                     redirect: socket.socket | None = None, **options: Any
                     ) -> AsyncIterator[int]:
    """serve_tcp over TLS (``certs``' certificate by default) on an ephemeral port; yields
    the port. ``redirect``: a listening socket for the redirect listener."""
    tls = tls if tls is not None else certs.config()
    if redirect is not None:
        tls = attrs.evolve(tls, redirect_port=redirect.getsockname()[1])
    config = ServerConfig(host="127.0.0.1", port=0, tls=tls, **options)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        [(_, port)] = await nursery.start(
            lambda task_status: serve_tcp(
                app, config, shutdown_trigger=stop, certificates=certificates,
                redirect_sockets=None if redirect is None else [redirect],
                task_status=task_status))
        try:
            yield port
        finally:
            stop.set()


async def echo_scheme(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": scope["scheme"]})
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        raise RuntimeError("no lifespan")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body",
                "body": f"{scope['scheme']} {scope['client'][1]}".encode()})


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


# -- the basics -------------------------------------------------------------------------


async def test_https_scope_keep_alive_and_alpn(certs: Certs) -> None:
    async with tls_server(echo_scheme, certs) as port:
        async with httpx.AsyncClient(verify=certs.client_context()) as client:
            answers = [(await client.get(f"https://127.0.0.1:{port}/")).text for _ in range(3)]
        context = certs.client_context()
        context.set_alpn_protocols(["h2", "http/1.1"])
        stream = await open_tls(port, context)
        assert stream.selected_alpn_protocol() == "http/1.1"
        assert stream.version() in ("TLSv1.2", "TLSv1.3")
        await stream.aclose()
    schemes, client_ports = zip(*(a.split() for a in answers), strict=True)
    assert set(schemes) == {"https"}
    assert len(set(client_ports)) == 1  # one TLS connection kept alive


async def test_websocket_over_tls_has_the_wss_scheme(certs: Certs) -> None:
    async with tls_server(echo_scheme, certs) as port:
        async with trio_websocket.open_websocket_url(
                f"wss://127.0.0.1:{port}/ws", ssl_context=certs.client_context()) as ws:
            assert await ws.get_message() == "wss"


async def test_tls_1_1_is_refused_by_the_server(certs: Certs, caplog: pytest.LogCaptureFixture
                                               ) -> None:
    caplog.set_level(logging.DEBUG, "velithon.server")
    context = certs.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1 itself
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer it at all
    async with tls_server(echo_scheme, certs) as port:
        with pytest.raises(trio.BrokenResourceError):
            await open_tls(port, context)
        with trio.fail_after(LIMIT):
            while "UNSUPPORTED_PROTOCOL" not in caplog.text:
                await trio.sleep(0.01)


async def test_https_through_a_gateway_tells_the_backend_it_was_https(certs: Certs) -> None:
    async with backends("b1") as (backend,):
        app = Velithon()
        app.routes.append(GatewayRoute("/api/{path:path}", [backend.url]))
        async with tls_server(app, certs) as port:
            async with httpx.AsyncClient(verify=certs.client_context()) as client:
                response = await client.get(f"https://127.0.0.1:{port}/api/x")
    assert response.status_code == 200
    headers = {name.lower(): value for name, value in response.json()["headers"]}
    assert headers["x-forwarded-proto"] == "https"
    assert "proto=https" in headers["forwarded"]


async def test_wss_through_a_gateway(certs: Certs) -> None:
    async with open_ws_backend(name="echo") as backend:
        app = Velithon()
        app.routes.append(GatewayRoute("/ws/{path:path}", [backend.http_url]))
        async with tls_server(app, certs) as port:
            async with trio_websocket.open_websocket_url(
                    f"wss://127.0.0.1:{port}/ws/chat", ssl_context=certs.client_context()) as ws:
                for text in ("one", "two"):
                    await ws.send_message(text)
                    assert await ws.get_message() == text
    [session] = backend.sessions
    assert session.messages == ["one", "two"]
    headers = {name.lower(): value for name, value in session.headers}
    assert headers["x-forwarded-proto"] == "https"


async def test_the_last_response_ends_with_close_notify(certs: Certs) -> None:
    """A strict client (``https_compatible=False``) reads a clean end of the stream only after
    the server's close_notify: for a refused request, a ``Connection: close`` response and
    an HTTP/1.0 response whose body ends with the connection."""

    async def streamed(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})

    requests = [
        (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 "),  # no Host
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"HTTP/1.1 200 "),
        (b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 "),  # ends with the stream
    ]
    async with tls_server(streamed, certs) as port:
        for request, status_line in requests:
            stream = await open_tls(port, certs.client_context())
            await stream.send_all(request)
            data = b""
            with trio.fail_after(LIMIT):
                while piece := await stream.receive_some(65536):  # raises without close_notify
                    data += piece
            await stream.aclose()
            assert data.startswith(status_line), data
            if b"HTTP/1.0" in request:
                assert data.endswith(b"\r\n\r\npartend")


# -- client certificates ----------------------------------------------------------------


async def test_client_certificate_required(certs: Certs, caplog: pytest.LogCaptureFixture
                                          ) -> None:
    caplog.set_level(logging.DEBUG, "velithon.server")
    tls = certs.config(ca_certs=certs.ca_file, cert_reqs="required")
    async with tls_server(echo_scheme, certs, tls) as port:
        url = f"https://127.0.0.1:{port}/"
        async with httpx.AsyncClient(verify=certs.client_context()) as anonymous:
            with pytest.raises(httpx.TransportError):
                await anonymous.get(url)
        async with httpx.AsyncClient(verify=certs.client_context(client_cert=True)) as client:
            assert (await client.get(url)).text.startswith("https")
    refusals = [r for r in caplog.records if "handshake" in r.getMessage()]
    assert len(refusals) == 1 and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in refusals[0].getMessage()
    assert refusals[0].levelno == logging.DEBUG and refusals[0].exc_info is None


async def test_client_certificate_optional_accepts_both(certs: Certs) -> None:
    tls = certs.config(ca_certs=certs.ca_file, cert_reqs=1)  # uvicorn's spelling
    async with tls_server(echo_scheme, certs, tls) as port:
        for with_cert in (False, True):
            context = certs.client_context(client_cert=with_cert)
            async with httpx.AsyncClient(verify=context) as client:
                assert (await client.get(f"https://127.0.0.1:{port}/")).status_code == 200


async def test_a_client_certificate_from_another_ca_is_refused(certs: Certs,
                                                               tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    stranger = make_certs(tmp_path / "other")
    context = certs.client_context()
    stranger.ca.issue_cert("intruder@example.test").configure_cert(context)
    tls = certs.config(ca_certs=certs.ca_file, cert_reqs="required")
    async with tls_server(echo_scheme, certs, tls) as port:
        async with httpx.AsyncClient(verify=context) as client:
            with pytest.raises(httpx.TransportError):
                await client.get(f"https://127.0.0.1:{port}/")


# -- what the TLS port refuses ------------------------------------------------------------


async def test_plain_http_gets_a_cleartext_400_and_garbage_is_closed(
        certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with tls_server(echo_scheme, certs) as port:
        plain = await trio.open_tcp_stream("127.0.0.1", port)
        await plain.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [response] = parse_responses(await read_until_closed(plain))
        assert response.status == 400
        assert response.json()["detail"] == "plain HTTP request sent to HTTPS port"
        for garbage in (b"OPTIONS * HTTP/1.1\r\n\r\n", b"\x00\xff" * 300, b"\x16\x03\x01\x00"):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(garbage)
            if garbage.startswith(b"\x16"):  # a record header, then silence: the deadline
                await stream.send_eof()
            assert await read_until_closed(stream) == b""
        async with httpx.AsyncClient(verify=certs.client_context()) as client:
            assert (await client.get(f"https://127.0.0.1:{port}/")).status_code == 200
    assert not [r for r in caplog.records if r.levelno > logging.INFO or r.exc_info]
    assert len([r for r in caplog.records if r.name == "velithon.server"
                and ("TLS" in r.getMessage() or "plain HTTP" in r.getMessage())]) == 4


async def test_stalled_handshakes_are_shed_while_a_good_client_is_served(certs: Certs) -> None:
    timeout = 3.0
    async with tls_server(echo_scheme, certs, certs.config(handshake_timeout=timeout)) as port:
        opened = trio.current_time()
        stalled = []
        for i in range(200):  # half send a partial ClientHello, half nothing at all
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            if i % 2:
                await stream.send_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            stalled.append(stream)
        async with httpx.AsyncClient(verify=certs.client_context()) as client:
            response = await client.get(f"https://127.0.0.1:{port}/")
        assert response.status_code == 200
        assert trio.current_time() - opened < timeout, "too slow to tell: the box is loaded"
        assert [tcp_state(s) for s in stalled] == [TCP_ESTABLISHED] * 200  # all pending
        with trio.fail_after(LIMIT):
            for stream in stalled:
                assert await read_until_closed(stream) == b""
                await stream.aclose()
        assert trio.current_time() - opened >= timeout - 0.2  # shed by the deadline


TCP_ESTABLISHED = 1


def tcp_state(stream: trio.SocketStream) -> int:
    """The kernel's state of the client's end (Linux ``TCP_INFO``: 8 once the server closed)."""
    return stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


async def test_a_stalled_handshake_frees_its_concurrency_slot(certs: Certs) -> None:
    async with tls_server(echo_scheme, certs, certs.config(handshake_timeout=0.3),
                          limit_concurrency=2) as port:
        stalled = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        start = trio.current_time()
        async with httpx.AsyncClient(verify=certs.client_context()) as client:
            with trio.fail_after(LIMIT):
                response = await client.get(f"https://127.0.0.1:{port}/")
        assert response.status_code == 200
        assert trio.current_time() - start >= 0.2  # it waited for a handshake deadline
        for stream in stalled:
            await stream.aclose()


async def test_shutdown_does_not_wait_for_a_pending_handshake(certs: Certs) -> None:
    done = trio.Event()
    config = ServerConfig(host="127.0.0.1", port=0, graceful_timeout=30,
                          tls=certs.config(handshake_timeout=30))
    stop = trio.Event()

    async def serve(*, task_status: trio.TaskStatus[Any]) -> None:
        await serve_tcp(echo_scheme, config, shutdown_trigger=stop, task_status=task_status)
        done.set()

    async with trio.open_nursery() as nursery:
        [(_, port)] = await nursery.start(serve)
        pending = await trio.open_tcp_stream("127.0.0.1", port)
        await trio.sleep(0.1)  # accepted, handshake under way
        stop.set()
        with trio.fail_after(2):
            await done.wait()
            assert await read_until_closed(pending) == b""
        await pending.aclose()


# -- certificates: reload, start-up checks ------------------------------------------------


async def test_reload_serves_the_new_certificate_to_new_connections_only(
        certs: Certs, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    live = tmp_path / "live.pem"
    first_path, first = certs.issue("first")
    second_path, second = certs.issue("second")
    live.write_bytes(first_path.read_bytes())
    certificates = TLSCertificates(TLSConfig(certfile=live))
    context = certs.client_context()
    async with tls_server(echo_scheme, certs, certificates=certificates) as port:
        old = await open_tls(port, context)
        assert old.getpeercert()["serialNumber"] == serial_of(first)
        await old.send_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in await read_response(old)

        live.write_bytes(second_path.read_bytes())
        assert certificates.reload()
        new = await open_tls(port, context)
        assert new.getpeercert()["serialNumber"] == serial_of(second)
        assert certificates.certificate.serial_hex == serial_of(second)
        await old.send_all(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")  # still the same connection
        assert b" 200 " in await read_response(old)

        live.write_text("not a certificate")
        caplog.set_level(logging.ERROR, "velithon.server")
        assert not certificates.reload()
        assert "still serving the previous certificate" in caplog.text
        again = await open_tls(port, context)
        assert again.getpeercert()["serialNumber"] == serial_of(second)
        for stream in (old, new, again):
            await stream.aclose()


@pytest.mark.parametrize("problem", ["expired", "missing", "mismatch", "no password",
                                     "wrong password", "no key"])
async def test_unusable_certificates_stop_the_start_up(certs: Certs, problem: str) -> None:
    if problem == "expired":
        expired_leaf(certs.ca).private_key_and_cert_chain_pem.write_to_path(str(certs.bundle))
        tls = TLSConfig(certfile=certs.bundle)
        expected = "expired on 2020-01-02 03:04:05 UTC"
    elif problem == "missing":
        tls = TLSConfig(certfile=certs.dir / "nope.pem")
        expected = "cannot read the certificate file .*nope.pem.*: No such file"
    elif problem == "mismatch":
        other, _ = certs.issue("other")
        tls = TLSConfig(certfile=certs.certfile, keyfile=other)
        expected = "the private key in .*other.pem.* does not match the certificate"
    elif problem == "no password":
        tls = TLSConfig(certfile=certs.certfile, keyfile=certs.encrypted_key(b"s3cret"))
        expected = "is encrypted: give its password"
    elif problem == "wrong password":
        tls = TLSConfig(certfile=certs.certfile, keyfile=certs.encrypted_key(b"s3cret"),
                        keyfile_password="guess")
        expected = "wrong password for the private key"
    else:
        tls = TLSConfig(certfile=certs.certfile)
        expected = "no PEM private key in .*cert.pem"
    started = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.append(scope["type"])  # the lifespan must not even start

    with pytest.raises(ServerStartupError, match=expected) as info:
        await serve_tcp(app, ServerConfig(port=0, tls=tls))
    assert "\n" not in str(info.value)
    assert started == []


async def test_encrypted_key_with_its_password_works(certs: Certs) -> None:
    tls = TLSConfig(certfile=certs.certfile, keyfile=certs.encrypted_key(b"s3cret"),
                    keyfile_password="s3cret")
    async with tls_server(echo_scheme, certs, tls) as port:
        async with httpx.AsyncClient(verify=certs.client_context()) as client:
            assert (await client.get(f"https://127.0.0.1:{port}/")).status_code == 200


# -- redirect listener and HSTS -------------------------------------------------------------


async def test_redirect_listener_and_hsts(certs: Certs) -> None:
    redirect = listening_socket()
    plain_port = redirect.getsockname()[1]
    tls = certs.config(hsts_max_age=31536000, hsts_include_subdomains=True)
    async with tls_server(Recorder(), certs, tls, redirect=redirect) as port:
        async with httpx.AsyncClient(follow_redirects=False) as plain:
            moved = await plain.get(f"http://127.0.0.1:{plain_port}/a/b%20c?x=1&y=2")
            kept = await plain.post(f"http://localhost:{plain_port}/form", content=b"body")
        async with httpx.AsyncClient(verify=certs.client_context()) as client:
            followed = await client.get(f"http://127.0.0.1:{plain_port}/p?q=1",
                                        follow_redirects=True)
    assert moved.status_code == 301
    assert moved.headers["location"] == f"https://127.0.0.1:{port}/a/b%20c?x=1&y=2"
    assert "strict-transport-security" not in moved.headers  # never over plain http
    assert kept.status_code == 308
    assert kept.headers["location"] == f"https://localhost:{port}/form"
    assert followed.status_code == 200 and followed.json()["path"] == "/p"
    assert followed.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


async def test_hsts_keeps_the_apps_own_header(certs: Certs) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"Strict-Transport-Security", b"max-age=5")]})
        await send({"type": "http.response.body", "body": b""})

    async with tls_server(app, certs, certs.config(hsts_max_age=100)) as port:
        async with httpx.AsyncClient(verify=certs.client_context()) as client:
            response = await client.get(f"https://127.0.0.1:{port}/")
    assert response.headers.get_list("strict-transport-security") == ["max-age=5"]


async def test_the_redirect_listener_follows_the_server_through_shutdown(certs: Certs) -> None:
    redirect = listening_socket()
    port = redirect.getsockname()[1]
    async with tls_server(echo_scheme, certs, redirect=redirect):
        async with httpx.AsyncClient() as plain:
            assert (await plain.get(f"http://127.0.0.1:{port}/")).status_code == 301
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)  # closed with the server
