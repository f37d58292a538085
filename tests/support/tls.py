"""Certificates for the TLS tests (trustme), written to files as a user would have them,
and clients that trust them."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import attrs
import trio
import trustme
from cryptography.hazmat.primitives import serialization

from velithon.server import TLSConfig


@attrs.define
class Certs:
    """A CA, a server certificate for 127.0.0.1 in ``dir``, and clients that trust the CA."""

    dir: Path
    ca: trustme.CA
    leaf: trustme.LeafCert
    certfile: Path  # certificate chain only
    keyfile: Path
    bundle: Path  # key and chain in one file
    ca_file: Path

    def config(self, **options: object) -> TLSConfig:
        return TLSConfig(certfile=self.certfile, keyfile=self.keyfile, **options)

    def client_context(self, *, client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if client_cert:
            self.ca.issue_cert("client@example.test").configure_cert(context)
        return context

    def issue(self, name: str, **kwargs: object) -> tuple[Path, trustme.LeafCert]:
        """Another server certificate from the same CA, as one key-and-chain file."""
        leaf = self.ca.issue_cert("127.0.0.1", "localhost", **kwargs)
        path = self.dir / f"{name}.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
        return path, leaf

    def encrypted_key(self, password: bytes) -> Path:
        key = serialization.load_pem_private_key(self.leaf.private_key_pem.bytes(), None)
        path = self.dir / "encrypted-key.pem"
        path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password)))
        return path


def make_certs(directory: Path) -> Certs:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    certs = Certs(directory, ca, leaf, directory / "cert.pem", directory / "key.pem",
                  directory / "bundle.pem", directory / "ca.pem")
    leaf.cert_chain_pems[0].write_to_path(str(certs.certfile))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(certs.certfile), append=True)
    leaf.private_key_pem.write_to_path(str(certs.keyfile))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(certs.bundle))
    ca.cert_pem.write_to_path(str(certs.ca_file))
    return certs


def serial_of(leaf: trustme.LeafCert) -> str:
    """The serial as ``getpeercert()["serialNumber"]`` spells it."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    text = f"{cert.serial_number:X}"
    return text if len(text) % 2 == 0 else "0" + text


def expired_leaf(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("127.0.0.1", not_after=datetime.datetime(2020, 1, 2, 3, 4, 5))


async def open_tls(port: int, context: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    """A client TLS connection to 127.0.0.1:``port``, handshake done."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream


async def read_response(stream: trio.abc.ReceiveStream, limit: float = 5.0) -> bytes:
    """One response with a Content-Length body (enough for these tests' apps)."""
    data = b""
    with trio.fail_after(limit):
        while b"\r\n\r\n" not in data:
            piece = await stream.receive_some(65536)
            if not piece:
                return data
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            piece = await stream.receive_some(65536)
            if not piece:
                break
            body += piece
    return head + b"\r\n\r\n" + body
