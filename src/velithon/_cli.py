"""The ``velithon`` console script.

``velithon gateway -c FILE`` and ``velithon config check|schema`` live in
``_gateway_cli.py``.
``velithon run module:app [--host H] [--port P] [...]`` imports ``app`` from ``module``
(resolved from the current folder, like uvicorn) and serves it until SIGTERM or SIGINT
(graceful; a second SIGINT or a SIGQUIT stops at once); SIGHUP never stops it, not even
while the app module is imported. ``velithon status URL`` prints a
running gateway's routes and targets from its admin surface (``velithon.admin``).
Mistakes a user can make (a bad ``module:app`` string, a missing module or attribute, a
configuration error raised while the app module is imported, an object that is not an
ASGI app, an address in use, a failed lifespan startup) end with one clear line on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import inspect
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import attrs

from ._cli_tls import add_tls_arguments, flag_names, tls_config
from ._exceptions import ConfigError
from ._http11.llhttp import PARSER_CHOICES
from .server._config import ServerConfig
from .server._run import (
    ServerStartupError,
    configure_logging,
    ignore_reload_signals,
    run_server,
)

__all__ = ["AppLoadError", "load_app", "main", "parse_size"]

EXIT_USAGE = 2
EXIT_STARTUP = 3
EXIT_UNREACHABLE = 1


class AppLoadError(Exception):
    """The ``module:app`` string could not be resolved to a callable."""


def load_app(path: str, factory: bool = False) -> Any:
    """Import ``module:attr`` (attr may be dotted) with the current folder on ``sys.path``.

    With ``factory`` the attribute is called without arguments to build the app.

    Raises:
        AppLoadError: with a message naming what is wrong.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise AppLoadError(f'invalid app {path!r}: expected "module:attribute", e.g. "main:app"')
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ConfigError as exc:  # a route or middleware built with a bad setting
        raise AppLoadError(f"configuration error in {module_name!r}: {exc}") from None
    except ModuleNotFoundError as exc:
        # Only "the module itself is missing" is a usage error; an import failing *inside*
        # the user's module is their bug and keeps its traceback.
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise AppLoadError(f"could not import module {module_name!r}") from None
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        if not callable(obj):
            raise AppLoadError(f"{path!r} is not callable, so it cannot be a --factory")
        try:
            obj = obj()
        except ConfigError as exc:
            raise AppLoadError(f"configuration error in {path!r}: {exc}") from None
    if not callable(obj):
        raise AppLoadError(f"{path!r} is not callable (an ASGI app is a callable)")
    _check_asgi(path, obj, factory)
    return obj


def _check_asgi(path: str, obj: Any, factory: bool) -> None:
    """Refuse, at start-up, what cannot be an ASGI app (rather than serving 500s)."""
    if inspect.isclass(obj):
        return  # a class-based app, instantiated per call
    if hasattr(obj, "bind") and getattr(obj, "app", True) is None:
        raise AppLoadError(f"{path!r} looks like a middleware, not an app: add it to an "
                           "app with app.add_middleware(...) and serve the app")
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return
    positional = [p for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values())
    if takes_varargs or len(positional) == 3:
        return
    if not positional and not factory:
        raise AppLoadError(f"{path!r} takes no arguments: if it builds the app, "
                           "run it with --factory")
    raise AppLoadError(f"{path!r} is not an ASGI app: it must accept (scope, receive, send)")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the flag and what is wrong);
    ``--help`` still shows the usage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # no abbreviations: `--http` must never be taken for `--https-redirect-port`
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # "velithon: error: ...", a sub-command's too, as every other error the CLI prints
        self.exit(2, f"{self.prog.partition(' ')[0]}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="velithon", description="velithon gateway tools")
    parser.add_argument("--version", action="version", version=f"velithon {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)
    run = commands.add_parser("run", help="serve an ASGI app over HTTP/1.1 and WebSocket")
    defaults = ServerConfig()
    run.add_argument("app", help='the app to serve, as "module:attribute"')
    run.add_argument("--factory", action="store_true",
                     help="the attribute is a function that returns the app (default: off)")
    run.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default %(default)s)")
    run.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0: any)")
    run.add_argument("--backlog", type=int, default=2048,
                     help="listen queue length (default %(default)s)")
    run.add_argument("--workers", type=int, default=1,
                     help="processes accepting from one socket, bound once by a supervisor "
                          "(default %(default)s)")
    run.add_argument("--max-body-size", type=parse_size, default=defaults.max_body_size,
                     metavar="SIZE", help="largest request body: bytes, or with a suffix "
                     "K/M/G (1024-based: 100M); larger bodies get 413 (default 16M)")
    run.add_argument("--max-header-size", type=parse_size, default=defaults.max_header_size,
                     metavar="SIZE", help="largest request head (default 32K)")
    run.add_argument("--max-headers", type=int, default=defaults.max_headers,
                     help="most header fields in a request (default %(default)s)")
    run.add_argument("--header-timeout", type=float, default=defaults.header_timeout,
                     metavar="SECONDS", help="time to receive a request head "
                     "(default %(default)g s)")
    run.add_argument("--keepalive-timeout", type=float, default=defaults.keepalive_timeout,
                     metavar="SECONDS", help="idle time before a keep-alive connection is "
                     "closed (default %(default)g s)")
    run.add_argument("--body-timeout", type=float, default=defaults.body_timeout,
                     metavar="SECONDS", help="longest wait for the next piece of a request "
                     "body (default %(default)g s)")
    run.add_argument("--graceful-timeout", type=float, default=defaults.graceful_timeout,
                     metavar="SECONDS", help="how long in-flight requests may finish at "
                     "shutdown (default %(default)g s)")
    run.add_argument("--limit-concurrency", type=int, default=None, metavar="N",
                     help="max open connections; at the limit, stop accepting (default: none)")
    run.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False,
                     help="one velithon.access line per request, key=value (default: off)")
    run.add_argument("--gc-threshold", type=int, default=defaults.gc_threshold, metavar="N",
                     help="once the app has started, freeze it out of Python's garbage "
                          "collector and collect young objects every N allocations; 0 "
                          "leaves Python's collector alone (default %(default)s)")
    run.add_argument("--http", default="auto", type=str.lower, choices=PARSER_CHOICES,
                     help="HTTP/1.1 parser for requests and upstream responses: httptools "
                          "(llhttp, fast), h11 (pure Python) or auto: httptools when "
                          "installed (default %(default)s)")
    run.add_argument("--log-level", default="info", type=str.lower, choices=_LEVELS,
                     help="critical, error, warning, info or debug, any case "
                          "(default %(default)s)")
    add_tls_arguments(run)
    _demo_options(commands.add_parser(
        "demo", help="run a gateway over three local backends (no configuration needed)",
        description="A gateway over three local backends (normal, slow, flapping) with "
                    "controls to make them slow, unhealthy, or kill and restart them. "
                    "It prints every URL and the controls once it serves."))
    status = commands.add_parser(
        "status", help="show a running gateway's routes and targets (from its admin surface)")
    status.add_argument("url", help="the gateway's URL (http://host:port, admin surface at "
                        "/_velithon), its admin path, or the full .../status URL")
    status.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for the answer (default %(default)g s)")
    status.add_argument("--json", action="store_true",
                        help="print the status document as JSON instead of a table")
    from ._gateway_cli import add_commands

    add_commands(commands, _LEVELS)
    return parser


def _demo_options(demo: argparse.ArgumentParser) -> None:
    from ._demo import DEFAULT_TRAFFIC_RATE, STRATEGIES

    demo.add_argument("--host", default="127.0.0.1",
                      help="address the gateway listens on (default %(default)s)")
    demo.add_argument("--port", type=int, default=8000,
                      help="the gateway's port (default %(default)s; 0: any free port, printed)")
    demo.add_argument("--traffic", type=float, nargs="?", const=DEFAULT_TRAFFIC_RATE,
                      default=None, metavar="RATE",
                      help="send light traffic through the gateway: RATE requests per second "
                           f"(default {DEFAULT_TRAFFIC_RATE:g} when given without a value; "
                           "at most 100)")
    demo.add_argument("--strategy", default="round_robin", type=str.lower, choices=STRATEGIES,
                      help="how the gateway picks a backend; peak_ewma sends less to the slow "
                           "one (default %(default)s)")
    demo.add_argument("--flap-period", type=float, default=5.0, metavar="SECONDS",
                      help="the flapping backend's /health fails for SECONDS, then passes for "
                           "as long (default %(default)g s)")
    demo.add_argument("--health-interval", type=float, default=1.0, metavar="SECONDS",
                      help="how often the gateway probes each backend's /health "
                           "(default %(default)g s)")
    demo.add_argument("--log-level", default="info", type=str.lower, choices=_LEVELS,
                      help="info shows health changes and retries; any case "
                           "(default %(default)s)")
    demo.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False,
                      help="one velithon.access line per request, key=value (default: off)")


_LEVELS = ["critical", "error", "warning", "info", "debug"]
_SUFFIXES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"\s*([0-9]+)\s*([kmg]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"16777216"``, ``"512K"``, ``"100M"``, ``"1G"`` (1024-based; ``MB``/``MiB`` too)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: use bytes or a number with K, M or G (e.g. 100M)")
    return int(match.group(1)) * _SUFFIXES[match.group(2).lower()]


def _version() -> str:
    try:
        return importlib.metadata.version("velithon")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _flag_names(message: str) -> str:
    """Name settings the way the command line spells them (``--max-body-size``)."""
    fields = {f.name for f in attrs.fields(ServerConfig)}

    def flag(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(0)
        return "--" + name.replace("_", "-") if name in fields else match.group(0)

    return re.sub(r"\bServerConfig\.(\w+)|\b[a-z]+(?:_[a-z]+)+\b", flag, message)


def _config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        backlog=args.backlog,
        max_body_size=args.max_body_size,
        max_header_size=args.max_header_size,
        max_headers=args.max_headers,
        header_timeout=args.header_timeout,
        keepalive_timeout=args.keepalive_timeout,
        body_timeout=args.body_timeout,
        graceful_timeout=args.graceful_timeout,
        limit_concurrency=args.limit_concurrency,
        access_log=args.access_log,
        http=args.http,
        gc_threshold=args.gc_threshold,
        tls=tls_config(args),
    )


def _announce(addresses: list[tuple[str, int]], scheme: str = "http") -> None:
    for host, port in addresses:
        shown = f"[{host}]" if ":" in host else host
        print(f"velithon serving on {scheme}://{shown}:{port}", flush=True)


def _fail(message: str, code: int) -> int:
    print(f"velithon: error: {message}", file=sys.stderr, flush=True)
    return code


def _status(args: argparse.Namespace) -> int:
    """``velithon status URL``: 0 with a table, 1 when unreachable, 2 for a bad URL."""
    from .admin._table import (
        StatusFetchError,
        StatusUsageError,
        fetch_status,
        render_table,
        status_url,
    )

    if not args.timeout > 0:
        return _fail("--timeout must be > 0", EXIT_USAGE)
    try:
        url = status_url(args.url)
    except StatusUsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        doc = fetch_status(url, timeout=args.timeout)
    except StatusFetchError as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    try:
        print(json.dumps(doc, indent=2) if args.json else render_table(doc), flush=True)
    except BrokenPipeError:  # piped into `head` and the like: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["run"], ["gateway"]):  # commands that serve: see ignore_reload_signals
        ignore_reload_signals()
    args = _parser().parse_args(argv)
    if args.command == "status":
        return _status(args)
    if args.command in ("gateway", "config"):  # they read the log level from the file too
        from ._gateway_cli import main_config, main_gateway

        return main_gateway(args) if args.command == "gateway" else main_config(args)
    configure_logging(args.log_level.upper(), access_log=args.access_log)
    if args.command == "demo":
        from ._demo import DemoOptions, main_demo

        try:
            options = DemoOptions(host=args.host, port=args.port, strategy=args.strategy,
                                  traffic=args.traffic, flap_period=args.flap_period,
                                  health_interval=args.health_interval,
                                  access_log=args.access_log)
        except ValueError as exc:
            return _fail(str(exc), EXIT_USAGE)
        try:
            return main_demo(options)
        except ServerStartupError as exc:
            return _fail(str(exc), EXIT_STARTUP)
    try:
        config = _config(args)
    except ValueError as exc:
        return _fail(flag_names(_flag_names(str(exc))), EXIT_USAGE)
    if args.workers < 1:
        return _fail("--workers must be >= 1", EXIT_USAGE)
    try:
        app = load_app(args.app, args.factory)
    except AppLoadError as exc:
        return _fail(str(exc), EXIT_USAGE)
    announce = functools.partial(_announce, scheme=config.scheme)
    try:
        if args.workers > 1:
            from .server._workers import run_workers

            loader = functools.partial(load_app, factory=args.factory)
            return run_workers(loader, args.app, config, args.workers, on_started=announce)
        run_server(app, config, on_started=announce)
    except ServerStartupError as exc:
        return _fail(str(exc), EXIT_STARTUP)
    return 0


if __name__ == "__main__":
    sys.exit(main())
