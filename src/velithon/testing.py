"""Fault-injection harness for testing trio services and gateways against bad backends.

Everything here runs real sockets on loopback, ephemeral ports, inside ``async with``
blocks that own their tasks. It shares no code with the gateway itself. See
``docs/testing.md`` for a guide.
"""

from __future__ import annotations

import attrs

from ._testing_backend import Backend as Backend
from ._testing_backend import open_backend as open_backend
from ._testing_canary import Canary as Canary
from ._testing_canary import open_canary as open_canary
from ._testing_client import NoResponseError as NoResponseError
from ._testing_client import RawConnection as RawConnection
from ._testing_client import RawResponse as RawResponse
from ._testing_client import open_raw_connection as open_raw_connection
from ._testing_faults import Fault as Fault
from ._testing_http import BackendResponse as BackendResponse
from ._testing_http import RecordedRequest as RecordedRequest
from ._testing_leaks import close_wait_count as close_wait_count
from ._testing_leaks import open_fd_count as open_fd_count
from ._testing_scripted import Close as Close
from ._testing_scripted import Expect as Expect
from ._testing_scripted import ReadRequest as ReadRequest
from ._testing_scripted import Reset as Reset
from ._testing_scripted import ScriptedBackend as ScriptedBackend
from ._testing_scripted import ScriptedConnection as ScriptedConnection
from ._testing_scripted import ScriptError as ScriptError
from ._testing_scripted import Send as Send
from ._testing_scripted import Sleep as Sleep
from ._testing_scripted import open_scripted_backend as open_scripted_backend
from ._testing_toxic import ToxicProxy as ToxicProxy
from ._testing_toxic import open_toxic_proxy as open_toxic_proxy
from ._testing_toxics import Toxic as Toxic
from ._testing_ws import WsBackend as WsBackend
from ._testing_ws import WsSession as WsSession
from ._testing_ws import open_ws_backend as open_ws_backend

__all__ = [
    "Backend",
    "BackendResponse",
    "Canary",
    "Close",
    "Expect",
    "Fault",
    "NoResponseError",
    "RawConnection",
    "RawResponse",
    "ReadRequest",
    "RecordedRequest",
    "Reset",
    "ScriptError",
    "ScriptedBackend",
    "ScriptedConnection",
    "Send",
    "Sleep",
    "Toxic",
    "ToxicProxy",
    "WsBackend",
    "WsSession",
    "close_wait_count",
    "open_backend",
    "open_canary",
    "open_fd_count",
    "open_raw_connection",
    "open_scripted_backend",
    "open_toxic_proxy",
    "open_ws_backend",
]


def _fixup_module_metadata() -> None:
    """Public objects report ``velithon.testing`` in reprs and tracebacks, as trio's do.

    attrs classes keep their real module: attrs resolves string annotations through
    ``sys.modules[cls.__module__]`` (same rule as ``velithon/__init__.py``).
    """
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("velithon._testing") and not attrs.has(obj):
            obj.__module__ = __name__


_fixup_module_metadata()
