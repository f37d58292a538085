"""``velithon gateway -c FILE`` and ``velithon config check|schema``.

A configuration error is found before anything starts: ``gateway`` loads and validates
the whole file first, so a typo ends the command with one line per problem and exit
code 2, and no socket is opened. Command-line options win over the file's ``[server]``,
``[server.tls]`` and ``[logging]`` settings.

SIGHUP is handled by the server alone (:func:`~velithon.server._run.run_server`, or each
worker's with ``--workers``): it reloads the TLS certificate, then asks the gateway for a
configuration reload (``on_reload``). The gateway itself never listens for the signal:
trio gives a signal to one receiver only, so two listeners would split the work of one
SIGHUP between them. Until the server listens, SIGHUP is ignored (from the start of the
command's ``main``, before the file is read), so an early reload cannot kill the gateway.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import sys
from typing import Any

from ._cli_tls import add_tls_arguments, flag_names, tls_config
from ._exceptions import ConfigError
from ._http11.llhttp import PARSER_CHOICES
from .admin import mount_admin
from .config import (
    ConfigFileError,
    ConfigGateway,
    GatewayConfig,
    build_gateway,
    load_config_file,
    schema_text,
)
from .server._run import ServerStartupError, configure_logging, load_certificates, run_server
from .server._workers import ReloadableApp, run_workers

__all__ = ["add_commands", "load_gateway_app", "main_config", "main_gateway"]

EXIT_USAGE = 2
EXIT_STARTUP = 3


def add_commands(commands: Any, levels: list[str]) -> None:
    """Add ``gateway`` and ``config`` to the ``velithon`` parser's subcommands."""
    gateway = commands.add_parser(
        "gateway", help="run a gateway described by a TOML configuration file",
        description="Run a gateway from a configuration file (see docs/config.md). "
                    "SIGHUP re-reads the file and applies it without dropping requests, "
                    "and with TLS also reloads the certificate; options given here win "
                    "over the file.")
    gateway.add_argument("-c", "--config", required=True, metavar="FILE",
                         help="the TOML configuration file")
    gateway.add_argument("--host", default=None,
                         help="address to listen on (default: [server] host, else 127.0.0.1)")
    gateway.add_argument("--port", type=int, default=None,
                         help="port (default: [server] port, else 8000; 0: any)")
    gateway.add_argument("--workers", type=int, default=None, metavar="N",
                         help="processes accepting from one socket; each one reloads on "
                              "SIGHUP (default: [server] workers, else 1)")
    gateway.add_argument("--http", default=None, type=str.lower, choices=PARSER_CHOICES,
                         help="HTTP/1.1 parser for requests and upstream responses: "
                              "httptools, h11 or auto (default: [server] http, else auto)")
    gateway.add_argument("--gc-threshold", type=int, default=None, metavar="N",
                         help="collect young objects every N allocations once started, "
                              "0: Python's defaults (default: [server] gc_threshold, else "
                              "10000)")
    gateway.add_argument("--watch", action="store_true",
                         help="also reload when the file's content changes (checked every "
                              "second; default: off)")
    gateway.add_argument("--log-level", default=None, type=str.lower, choices=levels,
                         help="critical, error, warning, info or debug, any case "
                              "(default: [logging] level, else info)")
    gateway.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=None,
                         help="one log line per request (default: [logging] access_log, "
                              "else off)")
    add_tls_arguments(gateway, description="serve https and wss (uvicorn's --ssl-* options, "
                      "same meanings). Each option given wins over the [server.tls] key of "
                      "the same meaning, and the file's other keys stay; the defaults below "
                      "apply where neither sets a value")
    config = commands.add_parser("config", help="check a configuration file, or print its "
                                                "JSON Schema")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION",
                                    parser_class=type(config))
    check = actions.add_parser(
        "check", help="validate a file: exit 0 with a summary, or 2 listing every error",
        description="Validate a configuration file without starting anything; the "
                    "certificate, key and CA files of [server.tls] are read and checked "
                    "too (relative paths from the current folder).")
    check.add_argument("file", metavar="FILE", help="the TOML configuration file")
    actions.add_parser("schema", help="print the JSON Schema of configuration files "
                                      "(for editors)",
                       description="Print the JSON Schema (draft 2020-12) of configuration "
                                   "files on stdout.")


def _fail_lines(lines: list[str], code: int) -> int:
    for line in lines:
        print(f"velithon: error: {line}", file=sys.stderr, flush=True)
    return code


def main_config(args: argparse.Namespace) -> int:
    """``velithon config check FILE`` / ``velithon config schema``.

    ``check`` also reads the certificate, key and CA files ``[server.tls]`` names (relative
    paths from the current folder, as the gateway reads them), so a file that checks ok
    does not fail the gateway's start-up on them.
    """
    if args.config_command == "schema":
        sys.stdout.write(schema_text())
        return 0
    try:
        config = load_config_file(args.file)
    except ConfigFileError as exc:
        return _fail_lines(exc.lines(), EXIT_USAGE)
    try:  # the files [server.tls] names, read and checked as the gateway's start-up does
        load_certificates(config.server.server_config())
    except ServerStartupError as exc:
        return _fail_lines([f"{args.file}: server.tls: {exc}"], EXIT_USAGE)
    print(f"{args.file}: ok: {config.summary()}", flush=True)
    return 0


def load_gateway_app(path: str, *, watch: bool, log_level_fixed: bool) -> ReloadableApp:
    """Build the app of the gateway described by ``path`` (each worker process calls this),
    with its configuration reload as the worker server's SIGHUP ``on_reload``.

    Raises:
        ServerStartupError: the file is no longer valid (it changed since it was checked).
    """
    try:
        config = load_config_file(path)
    except ConfigFileError as exc:
        raise ServerStartupError(" | ".join(exc.lines())) from None
    gateway = _build(config, path, watch=watch, log_level_fixed=log_level_fixed)
    return ReloadableApp(gateway.app, gateway.request_reload)


def _build(config: GatewayConfig, path: str, *, watch: bool,
           log_level_fixed: bool) -> ConfigGateway:
    # the server owns SIGHUP and passes it on (see the module docstring)
    return build_gateway(config, path=path, mount_admin=mount_admin, watch=watch,
                         reload_on_signal=False, log_level_fixed=log_level_fixed)


def main_gateway(args: argparse.Namespace) -> int:
    """``velithon gateway -c FILE``: check the file, then serve until SIGTERM or SIGINT."""
    from ._cli import _announce

    try:
        config = load_config_file(args.config)
    except ConfigFileError as exc:
        return _fail_lines(exc.lines(), EXIT_USAGE)
    overrides: dict[str, Any] = {"access_log": config.logging.access_log}
    for name in ("host", "port", "access_log", "http", "gc_threshold"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    configure_logging((args.log_level or config.logging.level).upper(),
                      access_log=overrides["access_log"])
    try:
        server_config = config.server.server_config(**overrides)
    except ValueError as exc:  # a flag's value: name the flag as typed
        return _fail_lines([re.sub(r"ServerConfig\.(\w+)",
                                   lambda m: "--" + m.group(1).replace("_", "-"), str(exc))],
                           EXIT_USAGE)
    try:
        tls = tls_config(args, server_config.tls,
                         certfile_hint="--ssl-certfile or a [server.tls] table in the file")
        server_config = server_config.replace(tls=tls)
    except ValueError as exc:
        return _fail_lines([flag_names(str(exc))], EXIT_USAGE)
    workers = args.workers if args.workers is not None else config.server.workers
    if workers < 1:
        return _fail_lines(["--workers must be >= 1"], EXIT_USAGE)
    fixed = args.log_level is not None
    logging.getLogger("velithon.config").info("%s: %s", args.config, config.summary())
    announce = functools.partial(_announce, scheme=server_config.scheme)
    try:
        if workers > 1:
            loader = functools.partial(load_gateway_app, watch=args.watch,
                                       log_level_fixed=fixed)
            return run_workers(loader, args.config, server_config, workers,
                               on_started=announce)
        gateway = _build(config, args.config, watch=args.watch, log_level_fixed=fixed)
        run_server(gateway.app, server_config, on_started=announce,
                   on_reload=gateway.request_reload)
    except ServerStartupError as exc:
        return _fail_lines([str(exc)], EXIT_STARTUP)
    except ConfigError as exc:  # what the admin surface refuses (the loader checks it too)
        return _fail_lines([f"{args.config}: admin: {exc}"], EXIT_USAGE)
    return 0
