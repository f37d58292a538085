"""Fault-injection harness for testing trio services and gateways against bad backends.

Everything here runs real sockets on loopback, ephemeral ports, inside ``async with``
blocks that own their tasks. It shares no code with the gateway itself. See
``docs/testing.md`` for a guide.
"""

from __future__ import annotations

from .._exports import fixup_module_metadata
from ._backend import Backend as Backend
from ._backend import open_backend as open_backend
from ._canary import Canary as Canary
from ._canary import open_canary as open_canary
from ._client import NoResponseError as NoResponseError
from ._client import RawConnection as RawConnection
from ._client import RawResponse as RawResponse
from ._client import open_raw_connection as open_raw_connection
from ._dns import DNSQuery as DNSQuery
from ._dns import DNSServer as DNSServer
from ._dns import SrvRecord as SrvRecord
from ._dns import open_dns_server as open_dns_server
from ._faults import Fault as Fault
from ._http import BackendResponse as BackendResponse
from ._http import RecordedRequest as RecordedRequest
from ._leaks import close_wait_count as close_wait_count
from ._leaks import open_fd_count as open_fd_count
from ._scripted import Close as Close
from ._scripted import Expect as Expect
from ._scripted import ReadRequest as ReadRequest
from ._scripted import Reset as Reset
from ._scripted import ScriptedBackend as ScriptedBackend
from ._scripted import ScriptedConnection as ScriptedConnection
from ._scripted import ScriptError as ScriptError
from ._scripted import Send as Send
from ._scripted import Sleep as Sleep
from ._scripted import open_scripted_backend as open_scripted_backend
from ._toxic import ToxicProxy as ToxicProxy
from ._toxic import open_toxic_proxy as open_toxic_proxy
from ._toxics import Toxic as Toxic
from ._ws import WsBackend as WsBackend
from ._ws import WsSession as WsSession
from ._ws import open_ws_backend as open_ws_backend

__all__ = [
    "Backend",
    "BackendResponse",
    "Canary",
    "Close",
    "DNSQuery",
    "DNSServer",
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
    "SrvRecord",
    "Toxic",
    "ToxicProxy",
    "WsBackend",
    "WsSession",
    "close_wait_count",
    "open_backend",
    "open_canary",
    "open_dns_server",
    "open_fd_count",
    "open_raw_connection",
    "open_scripted_backend",
    "open_toxic_proxy",
    "open_ws_backend",
]


fixup_module_metadata(__name__, globals())
