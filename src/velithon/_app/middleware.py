"""Middleware entries and how the stack is built from them.

An entry of the app's middleware list is one of:

* a class ``X`` — built as ``X(next_app)``;
* a spec ``Middleware(X, *args, **kwargs)`` — built as ``X(next_app, *args, **kwargs)``;
* an instance with ``bind(next_app) -> ASGIApp`` (e.g. a ``ProxyMiddleware`` built
  before the app) — its ``bind`` is called with the next app.

Entries are validated when added, so a wrong entry fails at ``add_middleware`` with
a clear ``TypeError`` rather than on the first request. Entries are never
deduplicated: two instances of the same class both apply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .services import is_service

ASGIApp = Callable[..., Any]


class Middleware:
    """A lazy middleware spec: ``Middleware(cls, *args, **kwargs)``."""

    __slots__ = ("cls", "args", "kwargs")

    def __init__(self, cls: Callable[..., ASGIApp], /, *args: Any, **kwargs: Any) -> None:
        if not callable(cls):
            raise TypeError(f"Middleware() needs a middleware class, got {cls!r}")
        self.cls = cls
        self.args = args
        self.kwargs = kwargs

    def build(self, app: ASGIApp) -> ASGIApp:
        return self.cls(app, *self.args, **self.kwargs)

    def __iter__(self) -> Any:
        """Unpack as ``cls, args, kwargs`` (Starlette compatible)."""
        return iter((self.cls, self.args, self.kwargs))

    def __repr__(self) -> str:
        parts = [getattr(self.cls, "__name__", repr(self.cls))]
        parts += [repr(a) for a in self.args]
        parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"Middleware({', '.join(parts)})"


def check_entry(entry: object, kwargs: dict[str, Any] | None = None) -> object:
    """Validate one middleware entry; turn ``(class, kwargs)`` into a ``Middleware`` spec.

    Raises:
        TypeError: the entry is neither a class, a ``Middleware`` spec, nor an
            instance with a ``bind(app)`` method; or keyword arguments were given
            with something other than a class.
    """
    if isinstance(entry, Middleware):
        if kwargs:
            raise TypeError("keyword arguments go inside Middleware(cls, **kwargs)")
        return entry
    if isinstance(entry, type):
        return Middleware(entry, **(kwargs or {}))
    if callable(getattr(entry, "bind", None)):
        if kwargs:
            raise TypeError(f"keyword arguments only apply to middleware classes; "
                            f"{type(entry).__name__} is already an instance")
        return entry
    raise TypeError(
        f"middleware must be a class, a Middleware(cls, **kwargs) spec, or an instance "
        f"with a bind(app) method; got {entry!r}")


def build_stack(app: ASGIApp, entries: Sequence[object]) -> tuple[ASGIApp, list[object]]:
    """Wrap ``app`` in ``entries`` (first entry outermost) and list the services met.

    The services are the instances among the entries and the objects built from
    classes or returned by ``bind`` that follow the service protocol.
    """
    services: list[object] = []
    for entry in reversed(entries):
        if isinstance(entry, Middleware):
            layer = entry.build(app)
        else:
            layer = entry.bind(app)  # type: ignore[attr-defined]
        if not callable(layer):
            raise TypeError(f"middleware {entry!r} produced a non-callable ASGI app {layer!r}")
        for candidate in (entry, layer):
            if (not isinstance(candidate, (Middleware, type)) and is_service(candidate)
                    and not any(candidate is s for s in services)):
                services.append(candidate)
        app = layer
    return app, services
