"""The ASGI and header types every layer speaks, defined once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "HeaderList", "Headers", "Message", "Receive", "Scope", "Send"]

#: An ASGI connection scope (``type``, ``path``, ``headers``, ...).
Scope = MutableMapping[str, Any]
#: One ASGI event, received or sent.
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Header fields as they travel: lower-case names on the way in, bytes both sides.
Headers = Iterable[tuple[bytes, bytes]]
HeaderList = list[tuple[bytes, bytes]]
