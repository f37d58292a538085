"""``velithon run``'s TLS options: uvicorn's ``--ssl-*`` names and meanings, plus the HTTPS
redirect listener and HSTS.

They build one :class:`~velithon.server.TLSConfig` (``ServerConfig.tls``); a mistake in
them is a usage error naming the flag, while a problem with the files themselves (missing,
mismatched, expired) is a start-up error reported when the server starts.
"""

from __future__ import annotations

import argparse
import re
import ssl

from .server._config import TLSConfig, cert_reqs

__all__ = ["add_tls_arguments", "tls_config"]

# TLSConfig field → the flag that sets it (for error messages, which name fields as tls.X).
_FLAGS = {
    "certfile": "--ssl-certfile",
    "keyfile": "--ssl-keyfile",
    "keyfile_password": "--ssl-keyfile-password",
    "ca_certs": "--ssl-ca-certs",
    "cert_reqs": "--ssl-cert-reqs",
    "handshake_timeout": "--ssl-handshake-timeout",
    "redirect_port": "--https-redirect-port",
    "hsts_max_age": "--hsts",
    "hsts_include_subdomains": "--hsts-include-subdomains",
}
_DEFAULTS = TLSConfig(certfile="-")


def _cert_reqs(text: str) -> ssl.VerifyMode:
    try:
        return cert_reqs(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: use 0/none, 1/optional or 2/required") from None


def add_tls_arguments(run: argparse.ArgumentParser) -> None:
    """Add the TLS options to the ``run`` sub-command."""
    group = run.add_argument_group(
        "TLS", "serve https and wss directly (uvicorn's --ssl-* options, same meanings)")
    group.add_argument("--ssl-certfile", metavar="PATH",
                       help="PEM certificate, then its intermediates; turns TLS on "
                            "(default: none, plain HTTP)")
    group.add_argument("--ssl-keyfile", metavar="PATH",
                       help="PEM private key (default: the one in --ssl-certfile)")
    group.add_argument("--ssl-keyfile-password", metavar="PASSWORD",
                       help="password of an encrypted private key (default: none)")
    group.add_argument("--ssl-ca-certs", metavar="PATH",
                       help="PEM CA certificates that sign accepted client certificates "
                            "(default: none)")
    group.add_argument("--ssl-cert-reqs", type=_cert_reqs, default=_DEFAULTS.cert_reqs,
                       metavar="REQS", help="client certificates: 0 or none, 1 or optional, "
                       "2 or required (needs --ssl-ca-certs) (default 0)")
    group.add_argument("--ssl-handshake-timeout", type=float,
                       default=_DEFAULTS.handshake_timeout, metavar="SECONDS",
                       help="time to finish the TLS handshake (default %(default)g s)")
    group.add_argument("--https-redirect-port", type=int, metavar="PORT",
                       help="also listen for plain HTTP on PORT and redirect every request "
                            "to https (301 for GET/HEAD, 308 otherwise) (default: none)")
    group.add_argument("--hsts", type=int, metavar="SECONDS",
                       help="send Strict-Transport-Security: max-age=SECONDS on https "
                            "responses (default: none; one year is 31536000 s)")
    group.add_argument("--hsts-include-subdomains", action="store_true",
                       help="add includeSubDomains to that header (default: off)")


def tls_config(args: argparse.Namespace) -> TLSConfig | None:
    """The :class:`TLSConfig` the options ask for; ``None`` without ``--ssl-certfile``.

    Raises:
        ValueError: an inconsistent option, with the flags named as on the command line.
    """
    fields = {
        "keyfile": args.ssl_keyfile,
        "keyfile_password": args.ssl_keyfile_password,
        "ca_certs": args.ssl_ca_certs,
        "cert_reqs": args.ssl_cert_reqs,
        "handshake_timeout": args.ssl_handshake_timeout,
        "redirect_port": args.https_redirect_port,
        "hsts_max_age": args.hsts,
        "hsts_include_subdomains": args.hsts_include_subdomains,
    }
    if args.ssl_certfile is None:
        for name, value in fields.items():
            if value != getattr(_DEFAULTS, name):
                raise ValueError(f"{_FLAGS[name]} needs --ssl-certfile")
        return None
    try:
        return TLSConfig(certfile=args.ssl_certfile, **fields)
    except ValueError as exc:
        raise ValueError(flag_names(str(exc))) from None


def flag_names(message: str) -> str:
    """Name TLS settings the way the command line spells them (``tls.ca_certs`` →
    ``--ssl-ca-certs``)."""
    return re.sub(r"\btls\.([a-z_]+)\b",
                  lambda m: _FLAGS.get(m.group(1), m.group(0)), message)
