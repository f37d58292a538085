"""Fixtures for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from velithon._http11.llhttp import HttpParser, using_parser

from support.forkserver import ForkServer


@pytest.fixture(scope="session", autouse=True)
def _one_certificate_ca_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``SSL_CERT_FILE`` names a file holding one CA certificate that nothing here uses.

    httpx loads the whole file ``SSL_CERT_FILE`` names (else certifi's bundle, about as
    big) into a new TLS context for every client it creates, about 50 ms of CPU each, and
    every balancer the suite starts creates one for its health probes (several hundred in
    a run). No test can reach a host whose certificate a public CA signed (all traffic
    stays on loopback, and the TLS tests pass their own contexts), so with one unrelated
    CA every certificate is refused or accepted exactly as with the system's CA store.
    Set for the session, so that the processes the tests start inherit it too.
    """
    bundle = tmp_path_factory.mktemp("ca-store") / "one-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", str(bundle))
        yield


@pytest.fixture(params=["httptools", "h11"])
def http_parser(request: pytest.FixtureRequest) -> Iterator[HttpParser]:
    """Run the test once per parser: servers and upstream pools left on ``auto`` use it."""
    parser: HttpParser = request.param
    with using_parser(parser):
        yield parser


@pytest.fixture(scope="session")
def cli() -> Iterator[ForkServer]:
    """``cli.run(*args)``: a ``velithon`` command that ends by itself, as a child process
    forked from one interpreter that already imported velithon (see support.forkserver)."""
    server = ForkServer()
    yield server
    server.close()
