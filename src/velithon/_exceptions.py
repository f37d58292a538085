"""The exceptions velithon raises, in one place so callers can catch by family.

Hierarchy::

    VelithonError
    ├── ConfigError (also ValueError)          bad configuration, raised at construction
    ├── UnsafePathError (also ValueError)      request path rejected before forwarding (400)
    ├── NoTargetAvailable (also RuntimeError)  no healthy / admitted target (503)
    │   └── Overloaded                         shed: targets at max_requests, or a full router inbox
    ├── ResponseAborted                        app gave up mid-response: abort, no crash log
    └── UpstreamError                          talking to one upstream target failed
        ├── UpstreamConnectError               TCP/TLS connect failed; nothing was sent
        │   └── UpstreamConnectTimeout         ...within connect_timeout (also UpstreamTimeout)
        ├── UpstreamResetError                 closed/reset before the response head (.request_sent)
        ├── UpstreamProtocolError              malformed or oversized response head
        │   └── UpstreamRequestError           *our* request was unsendable (CR/LF in a header...)
        ├── UpstreamBodyError                  failed after the head: truncated or broken body
        └── UpstreamTimeout                    an upstream deadline expired

    ConfigWarning (a UserWarning)              a setting that is allowed but does nothing

Why a tree: the forwarding layer maps families to statuses (connect/reset/protocol → 502,
timeout → 504) and decides retries from them. ``UpstreamConnectError`` is always safe to
retry (no byte reached the upstream); ``UpstreamResetError`` is safe only when
``request_sent`` is false or the method is idempotent; ``UpstreamBodyError`` never is,
because the response already started.
"""

from __future__ import annotations

import sys
import warnings

__all__ = [
    "ConfigError",
    "ConfigWarning",
    "NoTargetAvailable",
    "Overloaded",
    "ResponseAborted",
    "UnsafePathError",
    "UpstreamBodyError",
    "UpstreamConnectError",
    "UpstreamConnectTimeout",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRequestError",
    "UpstreamResetError",
    "UpstreamTimeout",
    "VelithonError",
    "warn_config",
]


class VelithonError(Exception):
    """Base class of every exception velithon raises on purpose."""


class ConfigError(VelithonError, ValueError):
    """A configuration value is invalid; the message says which one and why."""


class ConfigWarning(UserWarning):
    """A setting that is accepted (the original accepted it) but has no effect as written.

    The message says what to write instead. Silence it with
    ``warnings.filterwarnings("ignore", category=velithon.ConfigWarning)``.
    """


def warn_config(message: str) -> None:
    """Issue a :class:`ConfigWarning` pointing at the user's line, not at velithon's.

    The frames of velithon itself are skipped, so the warning names the file and line
    where the route, middleware or balancer was built.
    """
    level, frame = 2, sys._getframe(1)  # stacklevel 2: whoever called warn_config
    while frame.f_back is not None and _is_velithon(frame.f_globals.get("__name__")):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, ConfigWarning, stacklevel=level)


def _is_velithon(module: object) -> bool:
    return isinstance(module, str) and (module == "velithon" or module.startswith("velithon."))


class UnsafePathError(VelithonError, ValueError):
    """A request path was refused (dot segments, backslashes, control characters...).

    ``reason`` says why without quoting the path, so it can be shown to the client;
    the message (for logs) includes the path.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class NoTargetAvailable(VelithonError, RuntimeError):
    """No target can take the request: all unhealthy, breakers open, or shutting down."""


class Overloaded(NoTargetAvailable):
    """Load was shed (not a failure of any target): 503 with ``x-velithon-overloaded``."""


class ClientDisconnected(VelithonError, OSError):
    """The downstream client went away mid-request.

    The server's ``send()`` raises it once the client is gone (an ``OSError``, as ASGI
    expects), and the gateway raises it when a client abandons its upload. Either way it
    is a normal event: the server logs it at DEBUG level, never as an application error.
    """


class ResponseAborted(VelithonError):
    """Raised by an app to abort a response it already started.

    The server closes the client connection without completing the message
    (so the client sees a truncated body, never a complete-looking one) and
    logs one warning line instead of a crash traceback. If the response head had
    not reached the socket yet, the client gets a ``502`` instead.
    """


class UpstreamError(VelithonError):
    """Base class for failures talking to one upstream target."""


class UpstreamConnectError(UpstreamError):
    """Opening the TCP (or TLS) connection failed; no request byte was sent."""


class UpstreamTimeout(UpstreamError):
    """An upstream deadline expired (connect, response head, or body)."""


class UpstreamConnectTimeout(UpstreamConnectError, UpstreamTimeout):
    """The connect (TCP and TLS handshake) did not finish within ``connect_timeout``."""


class UpstreamResetError(UpstreamError):
    """The upstream closed or reset the connection before sending a response head.

    ``request_sent`` says whether any byte of the request may have reached the
    upstream; when it is true only idempotent requests may be retried.
    """

    def __init__(
        self,
        message: str = "upstream closed the connection before the response head",
        *,
        request_sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class UpstreamProtocolError(UpstreamError):
    """The upstream's response head was malformed, oversized or not allowed."""


class UpstreamRequestError(UpstreamProtocolError):
    """The request we were asked to send is not valid HTTP (h11 refused to serialise it).

    Raised before the request reached the upstream, so it is not the target's
    fault; typical cause: a configured header value containing CR/LF.
    """


class UpstreamBodyError(UpstreamError):
    """The response body failed after the head: the upstream closed early or sent bad framing.

    The body received so far is incomplete and must not be passed off as complete.
    """
