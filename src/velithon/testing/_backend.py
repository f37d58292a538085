"""A real HTTP/1.1 backend for tests: records what arrives and misbehaves on request.

It is built on trio sockets and h11 only, so it can test a gateway without sharing any
code with it. Everything a test needs to control is on :class:`Backend`: the handler,
the health endpoint's answer, a fault for the next requests, and ``stop()``/``start()``
to kill and revive it on the same port.
"""

from __future__ import annotations

import contextlib
import http
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import h11
import trio

from ._faults import Fault, _Delay, _Status, act_out
from ._http import (
    MAX_HEAD_SIZE,
    BackendResponse,
    RecordedRequest,
    coerce_response,
    receive_request,
    send_response,
)
from ._net import (
    ChangeSignal,
    RestartableListener,
    RestartablePeer,
    close_gracefully,
    owning_nursery,
)

__all__ = ["Backend", "Handler", "open_backend"]

Handler = Callable[[RecordedRequest], Awaitable[Any]]


class Backend(RestartablePeer):
    """A running test backend; get one from :func:`open_backend`.

    Attributes:
        requests: normal requests in arrival order (health probes excluded).
        health_checks: requests to ``health_path``.
        errors: exceptions raised by the handler (each answered with a 500).
        connections_accepted: TCP connections accepted, probes included.
        close_idle_after: close a connection that stays silent this long while a
            request is awaited, the first one included (a keep-alive idle timeout);
            ``None`` never does. May be changed at any time.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        handler: Handler | None,
        *,
        name: str,
        host: str,
        port: int,
        health_path: str | None,
        close_idle_after: float | None,
        max_recorded_body: int,
    ) -> None:
        self.name = name
        self.health_path = health_path
        self.close_idle_after = close_idle_after
        self.max_recorded_body = max_recorded_body
        self.requests: list[RecordedRequest] = []
        self.health_checks: list[RecordedRequest] = []
        self.errors: list[Exception] = []
        self.connections_accepted = 0
        self._handler = handler or self._echo
        self._fault: Fault | None = None
        self._fault_left: int | None = None
        self._health: int | Fault = 200
        self._changed = ChangeSignal()
        self._listener = RestartableListener(nursery, self._serve_connection, host=host, port=port)

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return (
            f"<Backend {self.name!r} {self.url} {state} requests={len(self.requests)}"
            f" health={self._health!r} fault={self._fault!r}>"
        )

    @property
    def url(self) -> str:
        """``http://host:port``, stable across ``stop()``/``start()``."""
        return f"http://{self.host}:{self.port}"

    @property
    def fault(self) -> Fault | None:
        return self._fault

    @property
    def health(self) -> int | Fault:
        return self._health

    def set_fault(self, fault: Fault | None, *, times: int | None = None) -> None:
        """Apply ``fault`` to the next ``times`` normal requests (all of them if ``None``).

        ``set_fault(None)`` heals the backend. Health probes are not affected; use
        :meth:`set_health` for them.
        """
        if times is not None and times < 1:
            raise ValueError("times must be >= 1")
        self._fault = fault
        self._fault_left = None if fault is None else times

    def set_health(self, status: int | Fault) -> None:
        """Answer ``health_path`` with ``status`` (e.g. 200 or 503), or play a fault there."""
        self._health = status

    async def wait_for_requests(self, count: int, *, timeout: float = 5.0) -> None:
        """Wait until ``len(self.requests) >= count`` (``trio.TooSlowError`` on timeout)."""
        await self.wait_until(lambda: len(self.requests) >= count, timeout=timeout)

    def clear(self) -> None:
        """Forget recorded requests, health checks and errors (counters stay)."""
        self.requests.clear()
        self.health_checks.clear()
        self.errors.clear()

    def _record(self, target: list[RecordedRequest], request: RecordedRequest) -> None:
        target.append(request)
        self._changed.notify()

    def _take_fault(self) -> Fault | None:
        fault = self._fault
        if fault is not None and self._fault_left is not None:
            self._fault_left -= 1
            if self._fault_left == 0:
                self._fault, self._fault_left = None, None
        return fault

    def _is_health(self, request: RecordedRequest) -> bool:
        return (
            self.health_path is not None
            and request.method in ("GET", "HEAD")
            and request.path == self.health_path
        )

    def _tagged(self, response: BackendResponse) -> BackendResponse:
        if any(name.lower() == "x-backend" for name, _ in response.headers):
            return response
        return attrs.evolve(response, headers=[*response.headers, ("X-Backend", self.name)])

    async def _echo(self, request: RecordedRequest) -> dict[str, Any]:
        return {
            "backend": self.name,
            "method": request.method,
            "target": request.target,
            "headers": [list(pair) for pair in request.headers],
            "body_length": request.body_length,
            "body_sha256": request.body_sha256,
            "connection_id": request.connection_id,
        }

    async def _call_handler(self, request: RecordedRequest) -> BackendResponse:
        try:
            return coerce_response(await self._handler(request))
        except Exception as exc:  # Exception only: trio.Cancelled must propagate
            self.errors.append(exc)
            self._changed.notify()
            return BackendResponse.text(f"backend handler raised {exc!r}", status=500)

    def _status_response(self, fault: _Status) -> BackendResponse:
        if fault.body is not None:
            return BackendResponse(fault.code, fault.headers, fault.body)
        try:
            phrase = http.HTTPStatus(fault.code).phrase
        except ValueError:
            phrase = "status"
        body = {"error": phrase, "status": fault.code, "backend": self.name}
        return BackendResponse.json(body, status=fault.code, headers=fault.headers)

    def _health_response(self, status: int) -> BackendResponse:
        state = "healthy" if status < 400 else "unhealthy"
        return BackendResponse.json({"status": state, "backend": self.name}, status=status)

    async def _answer(
        self, stream: trio.SocketStream, conn: h11.Connection, request: RecordedRequest
    ) -> bool:
        """Answer one request; False when a fault ended the connection."""
        head_only = request.method == "HEAD"
        fault: Fault | None
        if self._is_health(request):
            self._record(self.health_checks, request)
            health = self._health
            fault = None if isinstance(health, int) else health
        else:
            self._record(self.requests, request)
            health, fault = None, self._take_fault()
        if isinstance(health, int):
            response = self._health_response(health)
        elif fault is None:
            response = await self._call_handler(request)
        elif isinstance(fault, _Delay):
            await trio.sleep(fault.seconds)
            response = await self._call_handler(request)
        elif isinstance(fault, _Status):
            response = self._status_response(fault)
        else:
            return await act_out(fault, stream, conn, head_only=head_only)
        await send_response(stream, conn, self._tagged(response), head_only=head_only)
        return True

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        connection_id = self.connections_accepted
        self.connections_accepted += 1
        self._changed.notify()
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
        while True:  # one request per turn; ends at peer close, a fault, or idle timeout
            try:
                request = await receive_request(
                    stream,
                    conn,
                    connection_id=connection_id,
                    idle_timeout=self.close_idle_after,
                    max_body_kept=self.max_recorded_body,
                )
            except h11.RemoteProtocolError:
                await _reject(stream, conn)
                return
            if request is None:
                break
            if not await self._answer(stream, conn, request):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break
            conn.start_next_cycle()
        await close_gracefully(stream)


async def _reject(stream: trio.SocketStream, conn: h11.Connection) -> None:
    """Answer a malformed request with 400 where h11 still allows it, then close."""
    if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
        with contextlib.suppress(h11.LocalProtocolError):
            response = BackendResponse.text(
                "bad request", status=400, headers=[("Connection", "close")]
            )
            await send_response(stream, conn, response, head_only=False)
    await close_gracefully(stream)


@contextlib.asynccontextmanager
async def open_backend(
    handler: Handler | None = None,
    *,
    name: str = "backend",
    host: str = "127.0.0.1",
    port: int = 0,
    health_path: str | None = "/health",
    close_idle_after: float | None = None,
    max_recorded_body: int = 1024 * 1024,
    strict: bool = True,
) -> AsyncIterator[Backend]:
    """Run an HTTP/1.1 test backend for the duration of the ``async with`` block.

    ``handler`` is ``async def handler(request: RecordedRequest)`` returning a
    :class:`BackendResponse`, a dict or list (sent as JSON), bytes or str. Without one the
    backend echoes the request as JSON. Bodies longer than ``max_recorded_body`` are
    consumed and hashed but not kept.

    Error handling: with ``strict`` (the default) the first exception a handler raised is
    re-raised when the block exits normally, so a broken handler cannot pass silently.
    """
    async with owning_nursery() as nursery:
        backend = Backend(
            nursery,
            handler,
            name=name,
            host=host,
            port=port,
            health_path=health_path,
            close_idle_after=close_idle_after,
            max_recorded_body=max_recorded_body,
        )
        backend._listener.open()
        try:
            yield backend
        finally:
            backend._listener.close()
    if strict and backend.errors:
        raise backend.errors[0]
