"""``velithon gateway -c FILE`` serving https as a user runs it: one SIGHUP reloads both the
certificate and the configuration (also through ``--workers``), the ``--ssl-*`` options
with and without a ``[server.tls]`` table, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import ssl
import tomllib
from pathlib import Path

import jsonschema
import pytest

from velithon.config import config_schema

from support.forkserver import ForkServer
from support.gateway import backends
from support.gateway_cli import Launch, client, config_for, served_by
from support.tls import Certs, expired_leaf, make_certs, open_tls, serial_of


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    folder = tmp_path / "certs"
    folder.mkdir()
    return make_certs(folder)


def tls_table(certfile: Path, extra: str = "") -> str:
    return f'[server.tls]\ncertfile = "{certfile}"\n{extra}'


def unstarted(server: str = "") -> str:
    """A configuration for gateways that must not start (nothing listens at its target)."""
    return f'[server]\n{server}\n[[routes]]\npath = "/"\ntargets = ["http://127.0.0.1:9"]\n'


async def serials(port: int, context: ssl.SSLContext, n: int) -> set[str]:
    """The serial numbers ``n`` new connections were shown."""
    seen = set()
    for _ in range(n):
        stream = await open_tls(port, context)
        seen.add(stream.getpeercert()["serialNumber"])
        await stream.aclose()
    return seen


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_one_sighup_reloads_the_certificate_and_the_configuration(
        tmp_path: Path, start: Launch, certs: Certs, workers: str) -> None:
    live = tmp_path / "live.pem"
    first_path, first = certs.issue("first")
    second_path, second = certs.issue("second")
    live.write_bytes(first_path.read_bytes())
    context = certs.client_context()
    async with backends("a", "b") as (a, b):
        path = tmp_path / "gw.toml"
        path.write_text(config_for(a, server=tls_table(live)))
        gateway = start(path, "--workers", workers)
        url = await gateway.url("https")
        async with client(url, verify=context) as cl:
            assert await serials(port_of(url), context, 4) == {serial_of(first)}
            assert await served_by(cl, 4) == {"a": 4}

            live.write_bytes(second_path.read_bytes())
            path.write_text(config_for(b, server=tls_table(live)))
            os.kill(gateway.proc.pid, signal.SIGHUP)  # to the supervisor alone with workers
            await gateway.wait_for("TLS certificate reloaded", count=int(workers))
            await gateway.wait_for("INFO velithon.config: reloaded", count=int(workers))
            assert await serials(port_of(url), context, 8) == {serial_of(second)}
            assert await served_by(cl, 8) == {"b": 8}
        assert await gateway.stop() == 0
    assert "Traceback" not in gateway.err


async def test_ssl_options_serve_https_without_a_tls_table(
        tmp_path: Path, start: Launch, certs: Certs) -> None:
    async with backends("a") as (a,):
        path = tmp_path / "gw.toml"
        path.write_text(config_for(a))
        gateway = start(path, "--ssl-certfile", str(certs.certfile),
                        "--ssl-keyfile", str(certs.keyfile))
        url = await gateway.url("https")
        async with client(url, verify=certs.client_context()) as cl:
            response = await cl.get("/api/x")
        assert response.status_code == 200
        echoed = response.json()
        assert echoed["backend"] == "a"
        assert ["x-forwarded-proto", "https"] in [[k.lower(), v] for k, v in echoed["headers"]]
        assert await gateway.stop() == 0
    assert "Traceback" not in gateway.err


async def test_an_option_wins_over_its_key_and_the_other_keys_stay(
        tmp_path: Path, start: Launch, certs: Certs) -> None:
    first_path, _ = certs.issue("first")
    second_path, second = certs.issue("second")
    async with backends("a") as (a,):
        path = tmp_path / "gw.toml"
        path.write_text(config_for(a, server=tls_table(
            first_path, "hsts_max_age = 60\nhsts_include_subdomains = true\n")))
        gateway = start(path, "--ssl-certfile", str(second_path), "--hsts", "120")
        url = await gateway.url("https")
        context = certs.client_context()
        assert await serials(port_of(url), context, 1) == {serial_of(second)}
        async with client(url, verify=context) as cl:
            response = await cl.get("/api/x")
        assert response.status_code == 200
        assert response.headers["strict-transport-security"] == "max-age=120; includeSubDomains"
        assert await gateway.stop() == 0


@pytest.mark.parametrize(("table", "args", "message"), [
    (False, ("--hsts", "60"),
     "--hsts needs --ssl-certfile or a [server.tls] table in the file"),
    (False, ("--ssl-keyfile", "k.pem"),
     "--ssl-keyfile needs --ssl-certfile or a [server.tls] table in the file"),
    (True, ("--ssl-cert-reqs", "required"), "--ssl-cert-reqs required needs --ssl-ca-certs"),
    (True, ("--hsts-include-subdomains",), "--hsts-include-subdomains needs --hsts"),
    (True, ("--ssl-handshake-timeout", "0"), "--ssl-handshake-timeout must be > 0"),
    (False, ("--ssl-certfile", "c.pem", "--https-redirect-port", "70000"),
     "--https-redirect-port must be in 0..65535"),
    (True, ("--ssl-cert-reqs", "always"), "argument --ssl-cert-reqs: invalid value 'always'"),
    (False, ("--port", "8443", "--ssl-certfile", "c.pem", "--https-redirect-port", "8443"),
     "--https-redirect-port 8443 is also the https port"),
    (True, ("--port", "8443", "--https-redirect-port", "8443"),
     "--https-redirect-port 8443 is also the https port"),
])
def test_option_mistakes_are_one_line_usage_errors(
        tmp_path: Path, cli: ForkServer, table: bool, args: tuple[str, ...], message: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(unstarted(tls_table(tmp_path / "c.pem") if table else ""))
    result = cli.run("gateway", "-c", str(path), "--port", "0", *args)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "serving on" not in result.stdout


@pytest.mark.parametrize("workers", ["1", "2"])
def test_certificate_problems_stop_the_start_up_with_exit_3(
        tmp_path: Path, cli: ForkServer, certs: Certs, workers: str) -> None:
    expired = certs.dir / "expired.pem"
    expired_leaf(certs.ca).private_key_and_cert_chain_pem.write_to_path(str(expired))
    missing = certs.dir / "missing.pem"
    path = tmp_path / "gw.toml"
    path.write_text(unstarted(tls_table(missing)))
    for args, error in [
        (("--ssl-certfile", str(expired)),
         f"the certificate in {str(expired)!r} expired on 2020-01-02 03:04:05 UTC"),
        ((), f"cannot read the certificate file {str(missing)!r}: No such file or directory"),
    ]:
        result = cli.run("gateway", "-c", str(path), "--port", "0", "--workers", workers,
                          *args)
        assert result.returncode == 3, result.stderr
        assert result.stderr.splitlines()[-1] == f"velithon: error: {error}"
        assert "serving on" not in result.stdout


def test_config_check_reads_the_tls_files_as_the_start_up_does(
        tmp_path: Path, cli: ForkServer, certs: Certs) -> None:
    """A file that checks ok does not fail the gateway's start-up on its certificate, and
    relative paths are from the current folder, for both commands."""
    expired = certs.dir / "expired.pem"
    expired_leaf(certs.ca).private_key_and_cert_chain_pem.write_to_path(str(expired))
    path = tmp_path / "gw.toml"
    for table, cwd, error in [
        (tls_table(certs.dir / "missing.pem"), tmp_path,
         f"cannot read the certificate file {str(certs.dir / 'missing.pem')!r}: "
         "No such file or directory"),
        (tls_table(expired), tmp_path,
         f"the certificate in {str(expired)!r} expired on 2020-01-02 03:04:05 UTC"),
        (tls_table(certs.certfile), tmp_path,
         f"no PEM private key in {str(certs.certfile)!r} (give the key file with "
         "--ssl-keyfile or tls.keyfile)"),
        (tls_table(Path("bundle.pem")), tmp_path,  # relative: not from the file's folder
         "cannot read the certificate file 'bundle.pem': No such file or directory"),
        (tls_table(Path("bundle.pem"), 'ca_certs = "nowhere.pem"\ncert_reqs = "required"\n'),
         certs.dir, "cannot read the CA certificates 'nowhere.pem': No such file or directory"),
    ]:
        path.write_text(unstarted(table))
        result = cli.run("config", "check", str(path), cwd=cwd)
        assert result.returncode == 2, (table, result.stderr)
        assert result.stderr == f"velithon: error: {path}: server.tls: {error}\n"
        assert result.stdout == ""
        started = cli.run("gateway", "-c", str(path), "--port", "0", cwd=cwd)
        assert started.returncode == 3, started.stderr
        assert started.stderr.splitlines()[-1] == f"velithon: error: {error}"
    for table, cwd in [(tls_table(Path("bundle.pem")), certs.dir),
                       (tls_table(certs.certfile, f'keyfile = "{certs.keyfile}"\n'), tmp_path)]:
        path.write_text(unstarted(table))
        result = cli.run("config", "check", str(path), cwd=cwd)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{path}: ok: 1 route, 0 proxies, 1 target\n"


@pytest.mark.parametrize("value", ["none", "optional", "required", "Required", "2",
                                   "CERT_REQUIRED", 2, "always"])
def test_config_check_and_the_schema_agree_on_cert_reqs(
        tmp_path: Path, cli: ForkServer, certs: Certs, value: object) -> None:
    """What the loader takes, the schema (for editors) allows, and the reverse (the schema
    lists lower-case names; the loader takes any case, as for [logging] level)."""
    table = tls_table(certs.bundle, f'ca_certs = "{certs.ca_file}"\ncert_reqs = '
                                    f"{json.dumps(value)}\n")
    path = tmp_path / "gw.toml"
    path.write_text(unstarted(table))
    result = cli.run("config", "check", str(path))
    schema_ok = not list(jsonschema.Draft202012Validator(config_schema()).iter_errors(
        tomllib.loads(path.read_text())))
    loads = result.returncode == 0
    assert loads == (value in ("none", "optional", "required", "Required", "2",
                               "CERT_REQUIRED")), result.stderr
    assert schema_ok == (loads and isinstance(value, str) and value == value.lower())
    if not loads:
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"velithon: error: {path}: server.tls.cert_reqs: ")
