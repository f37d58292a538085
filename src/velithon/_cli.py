"""The ``velithon`` console script.

``velithon run module:app [--host H] [--port P] [...]`` imports ``app`` from ``module``
(resolved from the current folder, like uvicorn) and serves it until SIGTERM or SIGINT
(graceful; a second SIGINT or a SIGQUIT stops at once).
Mistakes a user can make (a bad ``module:app`` string, a missing module or attribute, an
address in use, a failed lifespan startup) end with one clear line on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from .server._config import ServerConfig
from .server._run import ServerStartupError, configure_logging, run_server

__all__ = ["AppLoadError", "load_app", "main"]

EXIT_USAGE = 2
EXIT_STARTUP = 3


class AppLoadError(Exception):
    """The ``module:app`` string could not be resolved to a callable."""


def load_app(path: str) -> Any:
    """Import ``module:attr`` (attr may be dotted) with the current folder on ``sys.path``.

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
    if not callable(obj):
        raise AppLoadError(f"{path!r} is not callable (an ASGI app is a callable)")
    return obj


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="velithon", description="velithon gateway tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="serve an ASGI app over HTTP/1.1 and WebSocket")
    run.add_argument("app", help='the app to serve, as "module:attribute"')
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--backlog", type=int, default=2048)
    run.add_argument("--workers", type=int, default=1,
                     help="processes accepting from one socket, bound once by a supervisor")
    run.add_argument("--max-body-size", type=int, default=ServerConfig().max_body_size,
                     help="bytes (default 16 MiB); larger request bodies get 413")
    run.add_argument("--max-header-size", type=int, default=ServerConfig().max_header_size)
    run.add_argument("--max-headers", type=int, default=ServerConfig().max_headers)
    run.add_argument("--header-timeout", type=float, default=ServerConfig().header_timeout)
    run.add_argument("--keepalive-timeout", type=float,
                     default=ServerConfig().keepalive_timeout)
    run.add_argument("--body-timeout", type=float, default=ServerConfig().body_timeout)
    run.add_argument("--graceful-timeout", type=float, default=ServerConfig().graceful_timeout)
    run.add_argument("--limit-concurrency", type=int, default=None,
                     help="max open connections; at the limit, stop accepting")
    run.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False)
    run.add_argument("--log-level", default="info",
                     choices=["critical", "error", "warning", "info", "debug"])
    demo = commands.add_parser(
        "demo", help="run a gateway over three local backends (no configuration needed)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--log-level", default="warning",
                      choices=["critical", "error", "warning", "info", "debug"])
    return parser


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
    )


def _announce(addresses: list[tuple[str, int]]) -> None:
    for host, port in addresses:
        shown = f"[{host}]" if ":" in host else host
        print(f"velithon serving on http://{shown}:{port}", flush=True)


def _fail(message: str, code: int) -> int:
    print(f"velithon: error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    configure_logging(args.log_level.upper())
    if args.command == "demo":
        from ._demo import main_demo

        try:
            return main_demo(args.host, args.port)
        except ServerStartupError as exc:
            return _fail(str(exc), EXIT_STARTUP)
    try:
        config = _config(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.workers < 1:
        return _fail("--workers must be >= 1", EXIT_USAGE)
    try:
        app = load_app(args.app)
    except AppLoadError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        if args.workers > 1:
            from .server._workers import run_workers

            return run_workers(load_app, args.app, config, args.workers, on_started=_announce)
        run_server(app, config, on_started=_announce)
    except ServerStartupError as exc:
        return _fail(str(exc), EXIT_STARTUP)
    return 0


if __name__ == "__main__":
    sys.exit(main())
