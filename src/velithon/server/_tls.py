"""The TLS context a server presents to its clients: built, checked and reloaded here.

The context is the standard library's server default
(``ssl.create_default_context(Purpose.CLIENT_AUTH)``: its cipher list and options),
with TLS 1.2 as the oldest version, client renegotiation off, and ALPN offering only
``http/1.1`` (the server speaks nothing else, so a client offering ``h2`` falls back).

Every way the files can be wrong ends in :class:`TLSConfigError` with one line that names
the file and what is wrong. OpenSSL's own errors are too vague for that (a wrong password,
a missing key and a file of garbage all read ``[SSL] PEM lib``), so the PEM text is
inspected first: which blocks are there, whether the key is encrypted, when the
certificate expires. OpenSSL never prompts on a terminal for a password: the password
callback is always ours.

Reload: :class:`TLSCertificates` holds the current context; each new connection takes it
when it is accepted, so :meth:`TLSCertificates.reload` changes what new connections get
while open ones keep the context they started with.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from collections.abc import Callable

from ._certinfo import CertificateInfo, certificate_info, first_certificate
from ._config import TLSConfig

__all__ = ["TLSCertificates", "TLSConfigError", "load_tls_context"]

logger = logging.getLogger("velithon.server")

_ENCRYPTED_MARKERS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")
_ALPN = ["http/1.1"]


class TLSConfigError(Exception):
    """The TLS files cannot be used: missing, unreadable, mismatched, encrypted without
    (or with a wrong) password, or an expired certificate. The message is one line."""


class _NoPassword(Exception):
    """OpenSSL asked for a password that was not configured."""


def load_tls_context(config: TLSConfig, now: datetime.datetime
                     ) -> tuple[ssl.SSLContext, CertificateInfo]:
    """The server context for ``config`` and the certificate it presents, checked at ``now``.

    Raises:
        TLSConfigError: see the class.
    """
    certfile = config.certfile
    cert_pem = _read(certfile, "certificate")
    try:
        der = first_certificate(cert_pem)
        info = None if der is None else certificate_info(der)
    except ValueError as exc:
        raise TLSConfigError(f"cannot read the certificate in {certfile!r}: {exc}") from None
    if info is None:
        raise TLSConfigError(f"no PEM certificate in {certfile!r}")
    if info.not_after <= now:
        raise TLSConfigError(
            f"the certificate in {certfile!r} expired on {_date(info.not_after)}")
    keyfile = config.keyfile or certfile
    key_pem = cert_pem if config.keyfile is None else _read(keyfile, "private key")
    if b"PRIVATE KEY-----" not in key_pem:
        hint = "" if config.keyfile else " (give the key file with --ssl-keyfile or tls.keyfile)"
        raise TLSConfigError(f"no PEM private key in {keyfile!r}{hint}")
    encrypted = any(marker in key_pem for marker in _ENCRYPTED_MARKERS)
    if encrypted and config.keyfile_password is None:
        raise TLSConfigError(_encrypted_without_password(keyfile))
    context = _context(config)
    try:
        context.load_cert_chain(certfile, config.keyfile, password=_password(config))
    except _NoPassword:
        raise TLSConfigError(_encrypted_without_password(keyfile)) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(f"the private key in {keyfile!r} does not match the "
                                 f"certificate in {certfile!r}") from None
        if encrypted:
            raise TLSConfigError(f"wrong password for the private key in {keyfile!r}") from None
        raise TLSConfigError(f"cannot load the certificate in {certfile!r} and the private "
                             f"key in {keyfile!r}: {exc.reason or exc}") from None
    except OSError as exc:  # a file vanished between our read and OpenSSL's
        raise TLSConfigError(f"cannot read {exc.filename or certfile!r}: "
                             f"{exc.strerror or exc}") from None
    return context, info


def _context(config: TLSConfig) -> ssl.SSLContext:
    """The context before the server's own certificate is loaded."""
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=config.ca_certs)
    except ssl.SSLError as exc:  # before OSError, its base class
        raise TLSConfigError(f"no usable CA certificates in {config.ca_certs!r}: "
                             f"{exc.reason or exc}") from None
    except OSError as exc:
        raise TLSConfigError(f"cannot read the CA certificates {config.ca_certs!r}: "
                             f"{exc.strerror or exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.verify_mode = config.cert_reqs
    context.set_alpn_protocols(_ALPN)
    return context


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise TLSConfigError(f"cannot read the {what} file {path!r}: "
                             f"{exc.strerror or exc}") from None


def _password(config: TLSConfig) -> str | Callable[[], str]:
    if config.keyfile_password is not None:
        return config.keyfile_password
    return _refuse_prompt


def _refuse_prompt() -> str:
    raise _NoPassword


def _encrypted_without_password(keyfile: str) -> str:
    return (f"the private key in {keyfile!r} is encrypted: give its password "
            "(--ssl-keyfile-password or tls.keyfile_password)")


def _date(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _utc_now() -> datetime.datetime:
    """Calendar time: certificate validity is stated in it (timeouts use trio's clock)."""
    return datetime.datetime.now(datetime.UTC)


class TLSCertificates:
    """The certificate (and settings) a TLS server presents to new connections.

    Built from a :class:`TLSConfig`, which it loads at once (raising
    :class:`TLSConfigError`). :meth:`reload` reads the files again: connections accepted
    afterwards get the new certificate, open ones keep theirs. A server takes this object
    from ``serve_tcp(..., certificates=...)``, or builds its own from ``ServerConfig.tls``.
    """

    def __init__(self, config: TLSConfig) -> None:
        self.config = config
        self.context, self.certificate = load_tls_context(config, _utc_now())

    def reload(self, config: TLSConfig | None = None) -> bool:
        """Load the files again (or those of ``config``); True if the new ones are in use.

        A failure is logged and changes nothing: the server keeps presenting the
        certificate it had. With ``config``, its files, password, client-certificate
        settings, handshake timeout and HSTS apply to new connections; ``redirect_port``
        only takes effect at the next start.
        """
        config = config if config is not None else self.config
        try:
            context, certificate = load_tls_context(config, _utc_now())
        except TLSConfigError as exc:
            logger.error("TLS reload failed, still serving the previous certificate: %s", exc)
            return False
        self.config, self.context, self.certificate = config, context, certificate
        logger.info("TLS certificate reloaded from %r: serial %s, valid until %s",
                    config.certfile, certificate.serial_hex, _date(certificate.not_after))
        return True
