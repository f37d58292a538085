"""What a test backend records and answers, and the h11 reads and writes behind it.

Requests are recorded as the backend saw them on the wire: original header case and
order, repeated headers kept, the raw target. Bodies are hashed while they stream in and
kept only up to a threshold, so a test can push a large upload through a gateway without
the backend buffering it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import attrs
import h11
import trio

__all__ = [
    "BackendResponse",
    "RecordedRequest",
    "coerce_response",
    "decode_headers",
    "receive_request",
    "send_response",
]

_RECEIVE_SIZE = 65536
#: Request heads up to this size are accepted (h11's default, 16 KiB, is below what
#: gateways forward).
MAX_HEAD_SIZE = 256 * 1024


class HeaderLookup:
    """Case-insensitive reads over a ``headers`` list of ``(name, value)`` pairs."""

    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` in arrival order (case-insensitive)."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@attrs.frozen
class RecordedRequest(HeaderLookup):
    """One request as a test backend received it.

    ``body`` is ``None`` when the body was longer than the backend's
    ``max_recorded_body``; ``body_length`` and ``body_sha256`` are always exact.
    """

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes | None
    body_length: int
    body_sha256: str
    connection_id: int
    http_version: str = "1.1"

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: the body was not kept (too large) or is not JSON.
        """
        if self.body is None:
            raise ValueError(f"body of {self.body_length} bytes was not kept")
        return json.loads(self.body)


@attrs.frozen
class BackendResponse:
    """A response for a backend handler to return.

    ``Content-Length`` is added unless the headers set it or ``Transfer-Encoding``
    (h11 then frames the body as chunked).
    """

    status: int = 200
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    reason: str = ""

    @classmethod
    def json(
        cls, obj: Any, status: int = 200, headers: Sequence[tuple[str, str]] = ()
    ) -> BackendResponse:
        body = json.dumps(obj).encode()
        return cls(status, [("Content-Type", "application/json"), *headers], body)

    @classmethod
    def text(
        cls, text: str, status: int = 200, headers: Sequence[tuple[str, str]] = ()
    ) -> BackendResponse:
        hdrs = [("Content-Type", "text/plain; charset=utf-8"), *headers]
        return cls(status, hdrs, text.encode())


def coerce_response(value: object) -> BackendResponse:
    """Turn a handler's return value into a response (dict/list → JSON).

    Raises:
        TypeError: the handler returned something else.
    """
    if isinstance(value, BackendResponse):
        return value
    if isinstance(value, dict | list):
        return BackendResponse.json(value)
    if isinstance(value, bytes | bytearray):
        return BackendResponse(200, [("Content-Type", "application/octet-stream")], bytes(value))
    if isinstance(value, str):
        return BackendResponse.text(value)
    raise TypeError(f"backend handler returned {type(value).__name__}")


def decode_headers(
    event: h11.Request | h11.Response | h11.InformationalResponse,
) -> list[tuple[str, str]]:
    """Original-case names in arrival order (h11's iteration lowercases them)."""
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in event.headers.raw_items()
    ]


async def receive_request(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    *,
    connection_id: int,
    idle_timeout: float | None,
    max_body_kept: int,
) -> RecordedRequest | None:
    """Read one full request (head and body) from ``conn``.

    Returns ``None`` when the peer closed cleanly between requests, or stayed silent for
    ``idle_timeout`` seconds before starting one.

    Raises:
        h11.RemoteProtocolError: malformed request, or the peer closed mid-request.
    """
    head: h11.Request | None = None
    digest = hashlib.sha256()
    length = 0
    kept: bytearray | None = bytearray()
    while True:  # one h11 event per iteration; ends at EndOfMessage, EOF or idle timeout
        event = conn.next_event()
        if event is h11.NEED_DATA:
            idle = head is None and not conn.trailing_data[0]
            timeout = idle_timeout if idle and idle_timeout is not None else float("inf")
            with trio.move_on_after(timeout):
                conn.receive_data(bytes(await stream.receive_some(_RECEIVE_SIZE)))
                continue
            return None
        if isinstance(event, h11.Request):
            head = event
            if conn.client_is_waiting_for_100_continue:
                await stream.send_all(
                    conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                )
        elif isinstance(event, h11.Data):
            digest.update(event.data)
            length += len(event.data)
            if kept is not None:
                kept += event.data
                if len(kept) > max_body_kept:
                    kept = None
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return RecordedRequest(
                method=head.method.decode("ascii"),
                target=head.target.decode("latin-1"),
                headers=decode_headers(head),
                body=None if kept is None else bytes(kept),
                body_length=length,
                body_sha256=digest.hexdigest(),
                connection_id=connection_id,
                http_version=head.http_version.decode("ascii"),
            )
        else:  # ConnectionClosed between requests (PAUSED cannot precede EndOfMessage)
            return None


def _framed_headers(response: BackendResponse, *, has_body: bool) -> list[tuple[str, str]]:
    headers = list(response.headers)
    names = {name.lower() for name, _ in headers}
    if has_body and not names & {"content-length", "transfer-encoding"}:
        headers.append(("Content-Length", str(len(response.body))))
    return headers


async def send_response(
    stream: trio.abc.Stream, conn: h11.Connection, response: BackendResponse, *, head_only: bool
) -> None:
    """Write a complete response; ``head_only`` for HEAD requests."""
    has_body = response.status >= 200 and response.status not in (204, 304)
    out = (
        conn.send(
            h11.Response(
                status_code=response.status,
                headers=_framed_headers(response, has_body=has_body),
                reason=response.reason.encode("latin-1"),
            )
        )
        or b""
    )
    if has_body and response.body and not head_only:
        out += conn.send(h11.Data(data=response.body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)
