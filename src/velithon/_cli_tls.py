"""The TLS options of ``velithon run`` and ``velithon gateway``: uvicorn's ``--ssl-*`` names
and meanings, plus the HTTPS redirect listener and HSTS.

They build one :class:`~velithon.server.TLSConfig` (``ServerConfig.tls``), or change the
one a configuration file's ``[server.tls]`` describes: each option given replaces the
setting of the same meaning, the others keep their value. Every option therefore defaults
to "not given" (``None``); the defaults shown in ``--help`` are :class:`TLSConfig`'s. A
mistake in them is a usage error naming the flag, while a problem with the files
themselves (missing, mismatched, expired) is a start-up error reported when the server
starts.
"""

from __future__ import annotations

import argparse
import re
import ssl

import attrs

from .server._config import TLSConfig, cert_reqs

__all__ = ["add_tls_arguments", "tls_config"]

# TLSConfig field → the flag that sets it (its argparse dest is the flag in snake case);
# error messages, which name fields as tls.X, are rewritten with it.
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


def add_tls_arguments(command: argparse.ArgumentParser, *,
                      description: str = "serve https and wss directly (uvicorn's --ssl-* "
                                         "options, same meanings)") -> None:
    """Add the TLS options to a sub-command (``run``, ``gateway``), as one help group."""
    group = command.add_argument_group("TLS", description)
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
    group.add_argument("--ssl-cert-reqs", type=_cert_reqs, metavar="REQS",
                       help="client certificates: 0 or none, 1 or optional, 2 or required "
                            f"(needs --ssl-ca-certs) (default {int(_DEFAULTS.cert_reqs)})")
    group.add_argument("--ssl-handshake-timeout", type=float, metavar="SECONDS",
                       help="time to finish the TLS handshake "
                            f"(default {_DEFAULTS.handshake_timeout:g} s)")
    group.add_argument("--https-redirect-port", type=int, metavar="PORT",
                       help="also listen for plain HTTP on PORT and redirect every request "
                            "to https (301 for GET/HEAD, 308 otherwise) (default: none)")
    group.add_argument("--hsts", type=int, metavar="SECONDS",
                       help="send Strict-Transport-Security: max-age=SECONDS on https "
                            "responses (default: none; one year is 31536000 s)")
    group.add_argument("--hsts-include-subdomains", action="store_true", default=None,
                       help="add includeSubDomains to that header (default: off)")


def tls_config(args: argparse.Namespace, base: TLSConfig | None = None, *,
               certfile_hint: str = "--ssl-certfile") -> TLSConfig | None:
    """The :class:`TLSConfig` the options ask for: ``base`` (a file's ``[server.tls]``)
    with the options given replacing its settings, or built from the options alone.
    ``None`` when there is neither ``base`` nor ``--ssl-certfile``.

    ``certfile_hint`` names what turns TLS on, for the error when an option comes without
    it (``gateway`` adds its ``[server.tls]`` table).

    Raises:
        ValueError: an inconsistent option, with the flags named as on the command line.
    """
    values = {name: getattr(args, flag.removeprefix("--").replace("-", "_"))
              for name, flag in _FLAGS.items()}
    given = {name: value for name, value in values.items() if value is not None}
    try:
        if base is not None:
            return attrs.evolve(base, **given)
        if "certfile" not in given:
            if given:
                raise ValueError(f"{_FLAGS[next(iter(given))]} needs {certfile_hint}")
            return None
        return TLSConfig(**given)
    except ValueError as exc:
        raise ValueError(flag_names(str(exc))) from None


def flag_names(message: str) -> str:
    """Name TLS settings the way the command line spells them (``tls.ca_certs`` →
    ``--ssl-ca-certs``)."""
    return re.sub(r"\btls\.([a-z_]+)\b",
                  lambda m: _FLAGS.get(m.group(1), m.group(0)), message)
