"""Routes: the protocol every entry of ``app.routes`` follows, and the two built-in routes.

The route protocol (``BaseRoute``)
----------------------------------
``app.routes`` is a plain list, read on every request, so anything appended to it
(``GatewayRoute``, a user's own class) takes part in routing at once. An entry needs:

``matches(scope) -> tuple[Match, dict]``
    Pure and synchronous (no I/O; it runs for every request until one matches).
    ``Match.FULL``: this route handles the request. ``Match.PARTIAL``: the path is
    this route's but the method is not (the app answers 405 unless another route
    matches fully). ``Match.NONE``: not ours. The dict is merged into the scope
    before ``handle`` is called (built-in routes put ``endpoint`` and
    ``path_params`` there). A route must return ``NONE`` for scope types it does not
    serve; it sees ``http`` and ``websocket`` scopes (never ``lifespan``).
``async handle(scope, receive, send)``
    Serve the request: an ASGI app call. Exceptions from third-party routes reach
    the server (built-in routes turn handler errors into a 500 JSON themselves).
``allowed_methods(scope) -> set[str]``
    Only asked after ``PARTIAL``: the methods this path accepts, for the ``Allow``
    header of the 405 (the app unions them over all partial routes).

A route may also be a *service* (it has ``run_service``, see ``_services.py``): the
app starts it at lifespan start-up, or before its first request when it was
appended later.

``compile_path(template)`` turns ``/users/{id:int}/{rest:path}`` into an anchored
regex, a format string and the converters, so other routes match paths the same
way. Converters: ``str`` (default, ``[^/]+``), ``int``, ``float``, ``uuid``,
``path`` (``.*``, crosses slashes).
"""

from __future__ import annotations

import enum
import inspect
import math
import re
import typing
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from functools import partial
from types import MappingProxyType
from typing import Any

from .._templates import CONVERTER_PATTERNS, Param, parse_template
from .._types import Receive, Scope, Send
from .requests import Request
from .responses import (
    LOGGER,
    HTTPException,
    PlainTextResponse,
    Response,
    StreamingResponse,
    error_response,
    json_response,
)
from .websockets import WebSocket, WebSocketDisconnect, WebSocketState


class Match(enum.Enum):
    NONE = 0
    PARTIAL = 1
    FULL = 2


class BaseRoute:
    """Base class (and documentation) of the route protocol; see the module docstring."""

    def matches(self, scope: Scope) -> tuple[Match, dict[str, Any]]:
        raise NotImplementedError

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    def allowed_methods(self, scope: Scope) -> set[str]:
        return set()


# Returned for every miss; read-only so that no caller can corrupt it.
_NO_MATCH: tuple[Match, Any] = (Match.NONE, MappingProxyType({}))
_FULL = Match.FULL
_PARTIAL = Match.PARTIAL


class Convertor:
    """How one path parameter type is matched (``regex``) and converted."""

    def __init__(self, regex: str, convert: Callable[[str], Any],
                 to_string: Callable[[Any], str] = str) -> None:
        self.regex = regex
        self.convert = convert
        self.to_string = to_string

    def __repr__(self) -> str:
        return f"Convertor({self.regex!r})"


def _segment_to_string(value: Any) -> str:
    text = str(value)
    if not text or "/" in text:
        raise ValueError(f"a {{name}} path parameter must be non-empty without '/': {text!r}")
    return text


def _int_to_string(value: Any) -> str:
    if int(value) < 0:
        raise ValueError(f"an int path parameter must be >= 0, got {value!r}")
    return str(int(value))


def _float_to_string(value: Any) -> str:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"a float path parameter must be finite and >= 0, got {value!r}")
    # Fixed notation: repr() may use an exponent, which the matching regex refuses.
    return format(Decimal(repr(number)), "f")


CONVERTORS: typing.Final[typing.Mapping[str, Convertor]] = MappingProxyType({
    "str": Convertor(CONVERTER_PATTERNS["str"], str, _segment_to_string),
    "path": Convertor(CONVERTER_PATTERNS["path"], str),
    "int": Convertor(CONVERTER_PATTERNS["int"], int, _int_to_string),
    "float": Convertor(CONVERTER_PATTERNS["float"], float, _float_to_string),
    "uuid": Convertor(CONVERTER_PATTERNS["uuid"], uuid.UUID),
})

def compile_path(template: str) -> tuple[re.Pattern[str], str, dict[str, Convertor]]:
    """Compile a path template into ``(anchored regex, format string, converters)``.

    Use ``regex.match(scope["path"])``: the regex is anchored at both ends.

    Raises:
        ConfigError: (a ``ValueError``) the template does not start with ``/``, has a
            malformed or duplicate parameter, or names an unknown converter.
    """
    regex, fmt, convertors = "^", "", {}
    for piece in parse_template(template).pieces:
        if isinstance(piece, Param):
            convertors[piece.name] = CONVERTORS[piece.converter]
            regex += f"(?P<{piece.name}>{CONVERTER_PATTERNS[piece.converter]})"
            fmt += "{" + piece.name + "}"
        else:
            regex += re.escape(piece)
            fmt += piece
    # DOTALL and \Z: a decoded path may hold "\n" (from %0A); "$" would also accept
    # a trailing newline the path does not match.
    return re.compile(regex + r"\Z", re.DOTALL), fmt, convertors


_CONNECTION = object()  # plan marker: "pass the Request/WebSocket here"


def _is_connection(annotation: Any, cls: type) -> bool:
    if isinstance(annotation, str):
        return annotation.rsplit(".", 1)[-1] == cls.__name__
    return isinstance(annotation, type) and issubclass(annotation, cls)


def _plan_call(endpoint: Callable[..., Any], path_params: Iterable[str], cls: type,
               names: tuple[str, ...], template: str) -> tuple[tuple[str, object], ...]:
    """Decide once, at registration, what each handler parameter receives."""
    if not callable(endpoint):
        raise TypeError(f"route {template!r}: endpoint must be callable, got {endpoint!r}")
    try:
        hints = typing.get_type_hints(endpoint)
    except Exception:
        hints = {}
    plan: list[tuple[str, object]] = []
    wanted = set(path_params)
    for param in inspect.signature(endpoint).parameters.values():
        annotation = hints.get(param.name, param.annotation)
        if param.kind is param.VAR_KEYWORD:
            plan.extend((p, p) for p in path_params if p not in dict(plan))
        elif param.kind is param.VAR_POSITIONAL:
            continue
        elif param.kind is param.POSITIONAL_ONLY:
            raise TypeError(f"route {template!r}: positional-only parameter "
                            f"{param.name!r} is not supported")
        elif _is_connection(annotation, cls) or (
                param.name in names and param.name not in wanted):
            plan.append((param.name, _CONNECTION))
        elif param.name in wanted:
            plan.append((param.name, param.name))
        elif param.default is param.empty:
            raise TypeError(
                f"route {template!r}: handler parameter {param.name!r} is neither a path "
                f"parameter ({', '.join(sorted(wanted)) or 'none'}) nor a {cls.__name__}")
    return tuple(plan)


def _is_async_callable(obj: Any) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    # an instance whose class defines ``async def __call__``
    return callable(obj) and inspect.iscoroutinefunction(obj.__call__)


class _EndpointRoute(BaseRoute):
    """Shared by ``Route`` and ``WebSocketRoute``: path compilation and handler planning."""

    _connection_class: type = Request
    _connection_names: tuple[str, ...] = ("request",)

    def __init__(self, path: str, endpoint: Callable[..., Any], *,
                 name: str | None = None) -> None:
        self.path = path
        self.endpoint = endpoint
        self.name = name if name is not None else getattr(endpoint, "__name__", None)
        self.path_regex, self.path_format, self.param_convertors = compile_path(path)
        # Paths without parameters are compared as strings: faster than a regex.
        self._static: str | None = None if self.param_convertors else path
        self._plan = _plan_call(endpoint, self.param_convertors, self._connection_class,
                                self._connection_names, path)
        self._wants_connection = any(src is _CONNECTION for _, src in self._plan)
        self._is_async = _is_async_callable(endpoint)

    def _match_path(self, path: str) -> dict[str, Any] | None:
        if self._static is not None:
            return {} if path == self._static else None
        m = self.path_regex.match(path)
        if m is None:
            return None
        params = m.groupdict()
        for key, convertor in self.param_convertors.items():
            params[key] = convertor.convert(params[key])
        return params

    def _kwargs(self, scope: Scope, connection: Any) -> dict[str, Any]:
        params = scope["path_params"]
        return {name: connection if src is _CONNECTION else params[src]
                for name, src in self._plan}

    def url_path(self, **params: Any) -> str:
        """Build this route's path from parameter values (the inverse of matching)."""
        missing = set(self.param_convertors) - set(params)
        if missing:
            raise ValueError(f"missing path parameters for {self.path!r}: {sorted(missing)}")
        return self.path_format.format(**{
            k: c.to_string(params[k]) for k, c in self.param_convertors.items()})


def _to_response(result: Any, route: Route) -> Response:
    """Turn a handler's return value into a response (see ``Route``)."""
    if isinstance(result, (dict, list)):
        return json_response(result)
    if isinstance(result, str):
        return PlainTextResponse(result)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response(bytes(result))
    if result is None:
        return Response(status_code=204)
    if isinstance(result, (tuple, int, float)):
        return json_response(result)
    raise TypeError(f"handler {route.name!r} for {route.path!r} returned "
                    f"{type(result).__name__}; return a Response, dict, list, str, bytes or None")


async def _wait_for_disconnect(receive: Receive) -> bool:
    while (await receive())["type"] != "http.disconnect":
        pass
    return True


class Route(_EndpointRoute):
    """An HTTP route: ``Route("/users/{id:int}", endpoint, methods=["GET"])``.

    Handler parameters are filled by name: one annotated ``Request`` (or named
    ``request``) gets the request; the others get the converted path parameters.
    The return value becomes the response: a ``Response`` as is; ``dict``/``list``
    (and numbers, tuples) → ``JSONResponse``; ``str`` → ``PlainTextResponse``;
    ``bytes`` → ``Response``; ``None`` → ``204 No Content``. ``HTTPException``
    becomes its JSON error; any other exception a logged 500 JSON (no traceback).
    ``GET`` implies ``HEAD``.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], *,
                 methods: Iterable[str] | None = None, name: str | None = None) -> None:
        super().__init__(path, endpoint, name=name)
        if isinstance(methods, str):
            raise TypeError(f"route {path!r}: methods must be a list of strings, "
                            f"e.g. [{methods!r}]")
        wanted = {m.upper() for m in (methods or ("GET",))}
        if not wanted or not all(m.isalpha() for m in wanted):
            raise ValueError(f"route {path!r}: invalid methods {sorted(wanted)}")
        if "GET" in wanted:
            wanted.add("HEAD")
        self.methods: frozenset[str] = frozenset(wanted)

    def matches(self, scope: Scope) -> tuple[Match, dict[str, Any]]:
        if scope["type"] != "http":
            return _NO_MATCH
        params = self._match_path(scope["path"])
        if params is None:
            return _NO_MATCH
        child = {"endpoint": self.endpoint, "path_params": params}
        return (_FULL if scope["method"] in self.methods else _PARTIAL), child

    def allowed_methods(self, scope: Scope) -> set[str]:
        return set(self.methods)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = None
        try:
            if self._plan:
                if self._wants_connection:
                    request = Request(scope, receive)
                result = self.endpoint(**self._kwargs(scope, request))
            else:
                result = self.endpoint()
            if self._is_async or inspect.isawaitable(result):
                result = await result
            response = result if isinstance(result, Response) else _to_response(result, self)
        except HTTPException as exc:
            response = exc.response()
        except Exception:
            LOGGER.exception("handler %r failed for %s %s", self.name, scope.get("method"),
                             scope.get("path"))
            response = error_response(500)
        if isinstance(response, StreamingResponse) and response.disconnect_waiter is None:
            response.disconnect_waiter = (request.wait_disconnected if request is not None
                                          else partial(_wait_for_disconnect, receive))
        await response(scope, receive, send)

    def __repr__(self) -> str:
        return (f"Route(path={self.path!r}, name={self.name!r}, "
                f"methods={sorted(self.methods)!r})")


class WebSocketRoute(_EndpointRoute):
    """A websocket route; the handler gets a ``WebSocket`` (annotated, or named ``websocket``).

    After the handler returns, an open session is closed with 1000; if it raises, with
    1011 (a handshake never accepted turns into an HTTP 403 at the server).
    """

    _connection_class = WebSocket
    _connection_names = ("websocket", "ws")

    def matches(self, scope: Scope) -> tuple[Match, dict[str, Any]]:
        if scope["type"] != "websocket":
            return _NO_MATCH
        params = self._match_path(scope["path"])
        if params is None:
            return _NO_MATCH
        return _FULL, {"endpoint": self.endpoint, "path_params": params}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        code = 1000
        try:
            result = self.endpoint(**self._kwargs(scope, websocket))
            if self._is_async or inspect.isawaitable(result):
                await result
        except WebSocketDisconnect:
            return
        except Exception:
            LOGGER.exception("websocket handler %r failed for %s", self.name,
                             scope.get("path"))
            code = 1011
        if (websocket.application_state is not WebSocketState.DISCONNECTED
                and websocket.client_state is not WebSocketState.DISCONNECTED):
            await websocket.close(code)

    def __repr__(self) -> str:
        return f"WebSocketRoute(path={self.path!r}, name={self.name!r})"
