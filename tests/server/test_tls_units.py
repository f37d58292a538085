"""The pure parts of the TLS server: reading a certificate's serial and validity, the
redirect's Location, ``cert_reqs`` spellings, TLSConfig's checks and the CLI's flag names."""

from __future__ import annotations

import argparse
import datetime
import signal
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon._cli_tls import add_tls_arguments, flag_names, tls_config
from velithon.server import ServerConfig, TLSConfig
from velithon.server._certinfo import certificate_info, first_certificate
from velithon.server._config import cert_reqs
from velithon.server._redirect import https_location
from velithon.server._run import _Reload

_KEY = ec.generate_private_key(ec.SECP256R1())
_UTC = datetime.UTC


@pytest.fixture(autouse=True)
def _both_parsers() -> None:
    """No parsing here: one run is enough."""


def _certificate(serial: int, not_before: datetime.datetime,
                 not_after: datetime.datetime) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(_KEY.public_key()).serial_number(serial)
            .not_valid_before(not_before).not_valid_after(not_after)
            .sign(_KEY, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


_TIMES = st.datetimes(min_value=datetime.datetime(1950, 1, 1),
                      max_value=datetime.datetime(9999, 12, 31)).map(
    lambda t: t.replace(microsecond=0, tzinfo=_UTC))


@settings(max_examples=60, deadline=None)
@given(serial=st.integers(1, 2**159 - 1), times=st.lists(_TIMES, min_size=2, max_size=2))
def test_certificate_info_reads_what_cryptography_wrote(
        serial: int, times: list[datetime.datetime]) -> None:
    start, end = sorted(times)
    pem = b"-----BEGIN PRIVATE KEY-----\nignored\n-----END PRIVATE KEY-----\n"
    pem += _certificate(serial, start, end)
    der = first_certificate(pem)
    assert der is not None
    info = certificate_info(der)
    assert (info.serial, info.not_before, info.not_after) == (serial, start, end)
    expected = x509.load_der_x509_certificate(der).serial_number
    assert int(info.serial_hex, 16) == expected and len(info.serial_hex) % 2 == 0


@pytest.mark.parametrize("data", [b"", b"\x30", b"\x30\x82\xff\xff", b"\x02\x01\x01",
                                  b"\x30\x03\x30\x01\x00", b"\x30\x85\x01\x01\x01\x01\x01"])
def test_certificate_info_refuses_what_is_not_a_certificate(data: bytes) -> None:
    with pytest.raises(ValueError):
        certificate_info(data)


def test_first_certificate() -> None:
    assert first_certificate(b"no pem here") is None
    with pytest.raises(ValueError):
        first_certificate(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError):
        first_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n")


@pytest.mark.parametrize(("host", "port", "target", "location"), [
    (b"example.com", 443, b"/a?b=1", b"https://example.com/a?b=1"),
    (b"example.com:80", 8443, b"/", b"https://example.com:8443/"),
    (b"[::1]:8080", 443, b"/x", b"https://[::1]/x"),
    (b"[::1]", 9443, b"/x", b"https://[::1]:9443/x"),
    (None, 443, b"/p", b"https://10.0.0.1/p"),
    (b"", 8443, b"", b"https://10.0.0.1:8443/"),
])
def test_https_location(host: bytes | None, port: int, target: bytes, location: bytes) -> None:
    assert https_location(host, "10.0.0.1", port, target) == location


def test_https_location_without_host_on_ipv6() -> None:
    assert https_location(None, "::1", 8443, b"/") == b"https://[::1]:8443/"


@pytest.mark.parametrize(("value", "mode"), [
    (0, ssl.CERT_NONE), (1, ssl.CERT_OPTIONAL), (2, ssl.CERT_REQUIRED),
    ("2", ssl.CERT_REQUIRED), ("none", ssl.CERT_NONE), ("Optional", ssl.CERT_OPTIONAL),
    ("CERT_REQUIRED", ssl.CERT_REQUIRED), (ssl.CERT_OPTIONAL, ssl.CERT_OPTIONAL),
])
def test_cert_reqs_spellings(value: object, mode: ssl.VerifyMode) -> None:
    assert cert_reqs(value) is mode


@pytest.mark.parametrize("value", [3, -1, True, "always", None, 1.0])
def test_cert_reqs_refuses_the_rest(value: object) -> None:
    with pytest.raises(ValueError, match="tls.cert_reqs must be 0, 1, 2"):
        cert_reqs(value)


def test_tls_config_checks() -> None:
    assert TLSConfig(certfile="c").hsts_header is None
    assert TLSConfig(certfile="c", hsts_max_age=0).hsts_header == (
        b"strict-transport-security", b"max-age=0")
    with pytest.raises(ValueError, match="tls.cert_reqs optional needs tls.ca_certs"):
        TLSConfig(certfile="c", cert_reqs="optional")
    with pytest.raises(ValueError, match="tls.hsts_max_age must be >= 0"):
        TLSConfig(certfile="c", hsts_max_age=-1)
    with pytest.raises(ValueError, match="tls.hsts_include_subdomains needs tls.hsts_max_age"):
        TLSConfig(certfile="c", hsts_include_subdomains=True)
    assert "secret" not in repr(TLSConfig(certfile="c", keyfile_password="secret"))


def test_the_redirect_port_cannot_be_the_https_port() -> None:
    """Both listeners on one port would stop the start-up with "Address already in use"."""
    tls = TLSConfig(certfile="c", redirect_port=8443)
    with pytest.raises(ValueError, match="^tls.redirect_port 8443 is also the https port"):
        ServerConfig(port=8443, tls=tls)
    with pytest.raises(ValueError, match="^tls.redirect_port 8443 is also the https port"):
        ServerConfig(port=8443).replace(tls=tls)
    assert ServerConfig(port=8444, tls=tls).tls == tls
    assert ServerConfig(port=0, tls=TLSConfig(certfile="c", redirect_port=0)).port == 0


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_tls_arguments(parser)
    return parser.parse_args(argv)


def test_cli_builds_the_tls_config() -> None:
    assert tls_config(_args()) is None
    config = tls_config(_args("--ssl-certfile", "c.pem", "--ssl-keyfile", "k.pem",
                              "--ssl-ca-certs", "ca.pem", "--ssl-cert-reqs", "2",
                              "--https-redirect-port", "80", "--hsts", "60"))
    assert config == TLSConfig(certfile="c.pem", keyfile="k.pem", ca_certs="ca.pem",
                               cert_reqs=ssl.CERT_REQUIRED, redirect_port=80, hsts_max_age=60)


def test_cli_options_change_a_files_tls_config() -> None:
    file = TLSConfig(certfile="file.pem", keyfile="file-key.pem", hsts_max_age=60,
                     hsts_include_subdomains=True)
    assert tls_config(_args(), file) == file
    assert tls_config(_args("--ssl-certfile", "flag.pem", "--hsts", "120",
                            "--ssl-handshake-timeout", "3"), file) == TLSConfig(
        certfile="flag.pem", keyfile="file-key.pem", hsts_max_age=120,
        hsts_include_subdomains=True, handshake_timeout=3)
    with pytest.raises(ValueError, match="^--ssl-cert-reqs optional needs --ssl-ca-certs"):
        tls_config(_args("--ssl-cert-reqs", "1"), file)
    with pytest.raises(ValueError, match=r"^--hsts needs --ssl-certfile or \[server.tls\]$"):
        tls_config(_args("--hsts", "1"), None, certfile_hint="--ssl-certfile or [server.tls]")


def test_flag_names() -> None:
    assert flag_names("tls.ca_certs and tls.hsts_max_age, tls.other") == (
        "--ssl-ca-certs and --hsts, tls.other")


def test_a_reload_calls_on_reload_and_survives_its_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken_reload() -> None:
        calls.append("called")
        raise RuntimeError("bad configuration")

    _Reload(None, (signal.SIGHUP,), broken_reload)("SIGHUP")
    assert calls == ["called"]
    assert "reload failed; still serving" in caplog.text and "bad configuration" in caplog.text
