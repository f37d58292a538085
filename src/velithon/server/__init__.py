"""velithon's HTTP/1.1 + WebSocket server for ASGI 3 apps, on trio and h11.

Two entry points:

* :func:`serve` — blocking; runs until SIGINT/SIGTERM, then drains gracefully::

      from velithon.server import serve
      serve(app, host="127.0.0.1", port=8000, max_body_size=1_000_000)

* :func:`serve_tcp` — in-process, for tests and embedding::

      async with trio.open_nursery() as nursery:
          [(host, port)] = await nursery.start(serve_tcp, app, ServerConfig(port=0))

Options are the fields of :class:`ServerConfig`. :func:`configure_logging` sets up
logging as ``velithon run`` does (stamped lines; the access log with ``access_log=True``).
For https and wss, pass ``tls=TLSConfig(certfile=..., keyfile=...)``;
:class:`TLSCertificates` is the loaded, reloadable certificate
(``serve_tcp(..., certificates=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._exceptions import ResponseAborted as ResponseAborted
from .._exports import fixup_module_metadata
from .._types import ASGIApp
from ._config import ServerConfig as ServerConfig
from ._config import TLSConfig as TLSConfig
from ._run import ServerStartupError as ServerStartupError
from ._run import configure_logging as configure_logging
from ._run import run_server
from ._run import serve_tcp as serve_tcp
from ._state import ClientDisconnected as ClientDisconnected
from ._state import logger
from ._tls import TLSCertificates as TLSCertificates
from ._tls import TLSConfigError as TLSConfigError

__all__ = ["ClientDisconnected", "ResponseAborted", "ServerConfig", "ServerStartupError",
           "TLSCertificates", "TLSConfig", "TLSConfigError", "configure_logging", "serve",
           "serve_tcp"]



def serve(app: ASGIApp, host: str | None = None, port: int | None = None, *,
          config: ServerConfig | None = None, on_reload: Callable[[], object] | None = None,
          **options: Any) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then shut down gracefully and return.

    ``options`` are :class:`ServerConfig` fields (``max_body_size=...``,
    ``graceful_timeout=...``, ...). ``config`` is a whole :class:`ServerConfig` to start
    from (a configuration file's ``[server]`` and ``[server.tls]``:
    ``GatewayConfig.server.server_config()``); ``host``, ``port`` and ``options`` given
    win over its fields. Without either, the defaults: 127.0.0.1, port 8000.

    SIGHUP reloads the TLS certificate (with ``tls``), then calls ``on_reload`` (sync, in
    the server's thread): pass a configuration gateway's ``request_reload`` there, so that
    one SIGHUP reloads both. With neither, SIGHUP only logs that there is nothing to
    reload.

    Raises:
        TypeError: an unknown option.
        ValueError: an option value out of range.
        ServerStartupError: lifespan startup failed, the address could not be bound, or
            the TLS certificate or key cannot be used.
    """
    changes = dict(options)
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["port"] = port
    base = config if config is not None else ServerConfig()
    server_config = base.replace(**changes) if changes else base

    def announce(addresses: list[tuple[str, int]]) -> None:
        for bound_host, bound_port in addresses:
            logger.info("velithon serving on %s://%s:%d", server_config.scheme, bound_host,
                        bound_port)

    run_server(app, server_config, on_started=announce, on_reload=on_reload)


fixup_module_metadata(__name__, globals())
