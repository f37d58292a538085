"""Forwarding one request: the hot path shared by every facade.

``Forwarder.handle_http(scope, receive, send)`` turns an ASGI request into an
upstream request through a :class:`~velithon._lb.router.Lease`, streams the
response back, and reports the outcome. Policies:

* **Deadline.** ``timeout_ms`` bounds the time spent on the upstream side of
  the exchange, every try and the response body included; ``per_try_timeout``
  (default: the whole budget) bounds each try up to the response head. Time
  spent waiting for the client's upload is not counted in either.
* **Uploads** are read by :mod:`velithon._proxy.upload`: small bodies whole before
  a target is picked, large ones streamed with their own framing; time spent
  waiting for the client extends the deadlines instead of using them up, and a
  stalled client gets 408 without any target being blamed.
* **Outcomes.** Connect errors, resets, timeouts and the ``failure_statuses``
  (502/503/504 by default) are gateway failures that breakers count; any
  other 5xx is the application's answer and only feeds outlier detection.
* **Retries** follow :class:`~velithon._lb.retry.RetryPolicy`: each retry goes to
  a target not tried yet (when one is routable), after a jittered backoff, and
  only if the router's retry budget allows it. Bodies up to
  ``replay_buffer`` bytes are buffered so they can be replayed; larger ones
  stream and are never retried once sent.
* **Errors** are JSON and never carry a traceback: 502 (bad upstream), 503
  with ``Retry-After`` (no target, breakers open, overloaded), 504 (timeout).
  Once response bytes reached the client, an upstream failure aborts the
  client connection instead, so a truncated body is never passed off as
  complete. Gateway errors carry the request ID too.
* **Logs.** A request whose tries failed gets one ``velithon.proxy`` line
  listing them: WARNING when it failed in the end, INFO when a retry saved it.
  When the server's access log is on, the request's
  :class:`~velithon._access.AccessRecord` is filled in (route, target, tries,
  upstream time, request ID). With it off, the hot path only looks for the
  record once.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import attrs
import trio

from .._access import ACCESS_SCOPE_KEY, AccessRecord
from .._exceptions import (
    ConfigError,
    NoTargetAvailable,
    Overloaded,
    ResponseAborted,
    UnsafePathError,
    UpstreamBodyError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRequestError,
    UpstreamResetError,
)
from .._http11 import CheckedFields, error_body
from .._lb.alarms import AlarmClock
from .._lb.messages import OutcomeKind
from .._lb.retry import RetryPolicy
from .._lb.router import Lease
from .._logfmt import logfmt
from .._types import Scope
from .connection import UpstreamResponse
from .headers import (
    NO_TRACE,
    ForwardedConfig,
    TraceHeaders,
    build_request_headers,
    build_response_headers,
    client_ip,
    incoming_request_id,
    new_request_id,
    validate_header_config,
)
from .paths import PathTemplate, upstream_target
from .upload import (
    ClientBodyTimeout,
    ClientDisconnected,
    ClientWait,
    RequestBody,
    bodiless_request,
    read_request_body,
)

LOGGER = logging.getLogger("velithon.proxy")

_NONE_TRIED: frozenset[int] = frozenset()


class UpstreamAborted(ResponseAborted):
    """The upstream failed after the response started; the client connection must be aborted."""


@attrs.frozen
class ForwardConfig:
    """How a facade forwards: timeouts, retries, headers, paths, errors."""

    timeout_ms: int = 30000
    per_try_timeout: float | None = None
    retry: RetryPolicy = RetryPolicy()
    replay_buffer: int = 64 * 1024
    buffer_chunked_uploads: int = 0
    client_body_timeout: float = 10.0
    failure_statuses: frozenset[int] = frozenset({502, 503, 504})
    preserve_host: bool = False
    headers_to_add: Mapping[str, str] = attrs.field(factory=dict)
    headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: Mapping[str, str] = attrs.field(factory=dict)
    response_headers_to_remove: tuple[str, ...] = ()
    forwarded: ForwardedConfig = ForwardedConfig()
    trace: TraceHeaders = NO_TRACE
    template: PathTemplate | None = None
    strip_path: bool = False
    rewrite: Any = None
    strip_prefix: str | None = None
    upstream_prefix: str = ""
    hash_on: str | None = None
    retry_after: int = 1

    def __attrs_post_init__(self) -> None:
        if self.timeout_ms <= 0:
            raise ConfigError(f"timeout_ms must be positive, got {self.timeout_ms}")
        if not self.client_body_timeout > 0:
            raise ConfigError("client_body_timeout must be positive, "
                             f"got {self.client_body_timeout}")
        if self.buffer_chunked_uploads < 0:
            raise ConfigError("buffer_chunked_uploads must be >= 0 bytes, "
                             f"got {self.buffer_chunked_uploads}")
        for status in self.failure_statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
                raise ConfigError(f"failure_statuses must hold 5xx statuses, got {status!r}")
        if self.hash_on is not None:
            parse_hash_on(self.hash_on)
        validate_header_config(self.headers_to_add, self.headers_to_remove, direction="request")
        validate_header_config(self.response_headers_to_add, self.response_headers_to_remove,
                               direction="response")


def parse_hash_on(spec: str) -> tuple[str, str]:
    """``"header:X-User"``, ``"cookie:session"`` or ``"client_ip"``."""
    if spec == "client_ip":
        return ("client_ip", "")
    kind, _, name = spec.partition(":")
    if kind in ("header", "cookie") and name:
        return (kind, name.lower() if kind == "header" else name)
    raise ConfigError(f"Invalid hash_on {spec!r}. "
                     "Use 'header:<name>', 'cookie:<name>' or 'client_ip'")


def hash_key(spec: tuple[str, str] | None, scope: Mapping[str, Any],
             forwarded: ForwardedConfig | None = None) -> bytes | None:
    """Extract the consistent-hashing key from a request."""
    if spec is None:
        return None
    kind, name = spec
    if kind == "client_ip":
        client = scope.get("client")
        peer = client[0] if client else None
        if forwarded is not None and forwarded.trusted_proxies:
            return client_ip(peer, scope["headers"], forwarded).encode()
        return peer.encode() if peer else None
    wanted = name.encode()
    for key, value in scope["headers"]:
        if kind == "header" and key == wanted:
            return bytes(value)
        if kind == "cookie" and key == b"cookie":
            for part in value.split(b";"):
                k, _, v = part.strip().partition(b"=")
                if k == wanted:
                    return bytes(v)
    return None


_CONNECT_FAILED = (502, "Could not connect to the upstream service")
_RESET = (502, "The upstream service closed the connection before responding")
_INVALID = (502, "The upstream service sent an invalid response")
_TIMED_OUT = (504, "The upstream service did not respond in time")

async def send_error(send: Callable[..., Any], status: int, detail: str,
                     *, retry_after: int | None = None, overloaded: bool = False,
                     request_id: tuple[bytes, bytes] | None = None) -> None:
    """A complete, well-formed JSON error response (``request_id``: a ``(name, value)``)."""
    body = error_body(status, detail)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if overloaded:
        headers.append((b"x-velithon-overloaded", b"true"))
    if request_id is not None:
        headers.append(request_id)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _logged_path(scope: Scope) -> str:
    """The request target as the client sent it (raw path and query), for log lines."""
    raw: bytes | None = scope.get("raw_path")
    path = raw.decode("latin-1") if raw is not None else scope["path"]
    query: bytes = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


@attrs.define(eq=False)
class _Exchange:
    """One request being forwarded: what every try needs to know."""

    scope: Scope
    method: bytes
    target: bytes
    upload: RequestBody
    wait: ClientWait
    key: bytes | None
    base_deadline: float
    alarms: AlarmClock
    request_id: bytes | None
    access: AccessRecord | None

    @property
    def deadline(self) -> float:
        """The budget's end, moved out by every wait for the client so far."""
        return self.base_deadline + self.wait.total

    def upstream_seconds(self, budget: float) -> float:
        """Time spent since the budget started, waits for the client left out."""
        return trio.current_time() - (self.deadline - budget)


class _Try(NamedTuple):
    """What one try produced: a response head, or why there is none."""

    response: Any
    error_kind: str | None = None
    error: tuple[int, str] = (502, "No attempt made")
    cause: object = None
    client_time: float = 0.0


class Forwarder:
    """Forwards requests for one facade through its balancer."""

    def __init__(self, config: ForwardConfig, *, name: str = "proxy",
                 rng: random.Random | None = None) -> None:
        self.config = config
        #: the route or middleware this forwarder serves, as logs name it
        self.name = name
        self._hash = parse_hash_on(config.hash_on) if config.hash_on else None
        self._rng = rng or random.Random()
        self._budget = config.timeout_ms / 1000.0
        self._request_id_name = config.trace.request_id_name
        self.requests = 0
        self.retries = 0
        self.errors = 0

    def target_for(self, scope: Scope) -> bytes:
        """The upstream request-target for ``scope`` (raises :class:`UnsafePathError`)."""
        cfg = self.config
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        return upstream_target(  # checks the path's safety first
            raw_path, scope.get("query_string", b""), template=cfg.template,
            strip_path=cfg.strip_path, rewrite=cfg.rewrite, base_path=cfg.upstream_prefix,
            strip_prefix=cfg.strip_prefix,
        )

    def key_for(self, scope: Scope) -> bytes | None:
        """The consistent-hashing key of ``scope`` (None unless ``hash_on`` is set)."""
        return hash_key(self._hash, scope, self.config.forwarded)

    def request_id_for(self, scope: Scope) -> bytes | None:
        """The request's ID: the client's valid one, else a new one (None when off)."""
        name = self._request_id_name
        if name is None:
            return None
        return incoming_request_id(scope["headers"], name) or new_request_id(self._rng)

    def _rid_header(self, request_id: bytes | None) -> tuple[bytes, bytes] | None:
        name = self._request_id_name
        return None if request_id is None or name is None else (name, request_id)

    def _note(self, access: AccessRecord, scope: Scope, request_id: bytes | None,
              target: str | None = None, attempts: int = 0,
              upstream_seconds: float | None = None) -> None:
        """Fill in the access record (only called when the access log is on)."""
        access.proxied(self.name, target, attempts, upstream_seconds, request_id)
        forwarded = self.config.forwarded
        if forwarded.networks:
            client = scope.get("client")
            peer = str(client[0]) if client else None
            real = client_ip(peer, scope["headers"], forwarded)
            if real and real != peer:
                access.client_ip = real

    # ---- HTTP ----------------------------------------------------------------------

    async def handle_http(self, balancer: Any, scope: Scope, receive: Callable[..., Any],
                          send: Callable[..., Any]) -> tuple[int, str] | None:
        """Forward one request; returns ``(status, detail)`` when we answered with an error."""
        cfg = self.config
        self.requests += 1
        access: AccessRecord | None = scope.get(ACCESS_SCOPE_KEY)
        request_id = None if self._request_id_name is None else self.request_id_for(scope)
        try:
            target = self.target_for(scope)
        except UnsafePathError as exc:
            self.errors += 1
            LOGGER.info("%s", exc)  # the path goes to the log, never back to the client
            if access is not None:
                self._note(access, scope, request_id)
            await send_error(send, 400, exc.reason, request_id=self._rid_header(request_id))
            return (400, exc.reason)
        method: bytes = scope["method"].encode()
        wait = ClientWait(cfg.client_body_timeout)
        try:
            upload = bodiless_request(scope["headers"], method)
            if upload is None:
                upload = await read_request_body(
                    scope["headers"], receive, method, wait, buffer_limit=cfg.replay_buffer,
                    chunked_buffer_limit=cfg.buffer_chunked_uploads)
            # the budget starts once the gateway can act; client waits extend it
            exchange = _Exchange(scope, method, target, upload, wait, self.key_for(scope),
                                 trio.current_time() + self._budget - wait.total,
                                 balancer.alarms, request_id, access)
            return await self._forward(balancer, exchange, send)
        except ClientDisconnected:
            return None  # the client left: nobody to answer, no verdict on any target
        except ClientBodyTimeout as exc:
            if access is not None:
                self._note(access, scope, request_id)
            return await self._client_timed_out(send, exc, self._rid_header(request_id))
        except UpstreamRequestError as exc:
            # our own request could not be written (e.g. a header the upstream client
            # refuses): not the target's fault, and no other target would fare better
            self.errors += 1
            LOGGER.error("cannot forward %s %s: %s", scope["method"], scope["path"], exc)
            if access is not None:
                self._note(access, scope, request_id)
            detail = "The gateway could not build a valid upstream request"
            await send_error(send, 502, detail, request_id=self._rid_header(request_id))
            return (502, detail)

    async def _forward(self, balancer: Any, exchange: _Exchange,
                       send: Callable[..., Any]) -> tuple[int, str] | None:
        """Try targets until one answers or the retry policy says stop."""
        tried: set[int] = set()
        failures: list[str] = []  # one summary line per request, not one per try
        attempt = 0
        last_error: tuple[int, str] = (502, "No attempt made")
        last_url: str | None = None
        while True:
            attempt += 1
            try:
                lease = await self._pick(balancer, exchange, tried, attempt)
            except NoTargetAvailable as exc:
                if attempt > 1:  # budget exhausted or nobody left: report the last failure
                    attempt -= 1
                    break
                self.errors += 1
                if exchange.access is not None:
                    self._note(exchange.access, exchange.scope, exchange.request_id)
                await send_error(send, 503, str(exc), retry_after=self.config.retry_after,
                                 overloaded=isinstance(exc, Overloaded),
                                 request_id=self._rid_header(exchange.request_id))
                return (503, str(exc))
            tried.add(lease.target_id)
            last_url = lease.url
            async with lease:  # always given back, with the outcome reported inside
                outcome = await self._attempt(lease, exchange)
                if outcome.response is None:
                    lease.report(OutcomeKind.LOCAL, client_time=outcome.client_time)
                    last_error = outcome.error
                    failures.append(f"{lease.url} {outcome.error_kind}: {outcome.cause}")
                    retry = self._may_retry(attempt, exchange, error_kind=outcome.error_kind)
                else:
                    response = outcome.response
                    status = response.status
                    lease.report(self.outcome_kind(status), status,
                                 client_time=outcome.client_time)
                    retry = (status in self.config.retry.retry_on_statuses
                             and self._may_retry(attempt, exchange, status=status))
                    if not retry:
                        if exchange.access is not None:
                            self._note(exchange.access, exchange.scope, exchange.request_id,
                                       lease.url, attempt, exchange.upstream_seconds(self._budget))
                        if failures:  # a 5xx relayed after failed tries is still a failure
                            failures.append(f"{lease.url} answered {status}")
                            self._log_tries(status < 500, exchange, status, attempt, failures)
                        await self._relay_reporting(lease, response, send, exchange)
                        return None
                    await response.aclose()
                    last_error = (status, f"The upstream service answered {status}")
                    failures.append(f"{lease.url} answered {status}")
            if not retry:
                break
            await self._backoff(attempt, exchange.deadline)  # no lease held while waiting
        self.errors += 1
        status, detail = last_error
        # the client gets a generic reason; the specifics (addresses, errno) go to the log
        self._log_tries(False, exchange, status, attempt, failures)
        if exchange.access is not None:
            self._note(exchange.access, exchange.scope, exchange.request_id, last_url, attempt,
                       exchange.upstream_seconds(self._budget))
        if detail.startswith("The upstream service answered"):
            detail = f"{detail} after {attempt} attempt(s)"
        await send_error(send, status, detail,
                         retry_after=self.config.retry_after if status == 503 else None,
                         request_id=self._rid_header(exchange.request_id))
        return (status, detail)

    def _log_tries(self, saved: bool, exchange: _Exchange, status: int, attempts: int,
                   tries: list[str]) -> None:
        """The one line a request with failed tries gets, listing every try: INFO when a
        retry ``saved`` it, WARNING when the client got an error all the same."""
        level = logging.INFO if saved else logging.WARNING
        if LOGGER.isEnabledFor(level):
            scope = exchange.scope
            rid = exchange.request_id
            LOGGER.log(level, "%s", logfmt(
                event="retry_succeeded" if saved else "request_failed", route=self.name,
                method=scope["method"], path=_logged_path(scope), status=status,
                attempts=attempts, tries="; ".join(tries),
                request_id=None if rid is None else rid.decode("latin-1")))

    async def _pick(self, balancer: Any, exchange: _Exchange, tried: set[int],
                    attempt: int) -> Lease:
        """A lease from the router, within the request's deadline.

        No cancel scope (~10 µs on every request): the router answers every pick on its
        next wake-up, never queues one, and a crashed router's successor answers what
        it left, so the wait is short by design. A lease that arrives after the deadline
        all the same is given back unused.
        """
        lease: Lease = await balancer.pick(
            exchange.key, frozenset(tried) if tried else _NONE_TRIED, retry=attempt > 1)
        if trio.current_time() >= exchange.deadline:
            await lease.__aexit__(None, None, None)
            raise NoTargetAvailable("No target could be chosen before the request deadline")
        return lease

    async def _attempt(self, lease: Lease, exchange: _Exchange) -> _Try:
        """Send the request to the leased target and wait for its response head."""
        cfg = self.config
        origin = lease.pool.origin
        headers = build_request_headers(
            exchange.scope["headers"], peer=exchange.scope.get("client"),
            scheme=exchange.scope.get("scheme", "http"), upstream_host=origin.authority,
            preserve_host=cfg.preserve_host, add=cfg.headers_to_add,
            remove=cfg.headers_to_remove, cfg=cfg.forwarded, trace=cfg.trace,
            request_id=exchange.request_id,
        )
        upload = exchange.upload
        if upload.length is not None:
            if type(headers) is CheckedFields:  # a Content-Length we computed
                headers.add_checked(upload.framing_headers())
            else:
                headers.extend(upload.framing_headers())
        target = exchange.target
        path = (origin.base_path + target.decode("latin-1")).encode("latin-1") \
            if origin.base_path else target
        try_deadline = exchange.deadline
        if cfg.per_try_timeout is not None:
            try_deadline = min(try_deadline, trio.current_time() + cfg.per_try_timeout)
        wait = exchange.wait
        waited_before = wait.total
        failure: _Try | None = None
        response: UpstreamResponse | None = None
        alarms = exchange.alarms
        alarm = alarms.set(try_deadline)  # not a cancel scope: see velithon._lb.alarms
        wait.attach(alarm)  # waits for the client's upload move the deadline out
        try:
            response = await lease.pool.request(exchange.method, path, headers, upload.body,
                                                alarm)
        except UpstreamRequestError:
            raise
        except UpstreamConnectError as exc:
            failure = _Try(None, "connect", _CONNECT_FAILED, exc)
        except UpstreamResetError as exc:
            failure = _Try(None, "reset", _RESET, exc)
        except UpstreamProtocolError as exc:
            failure = _Try(None, "protocol", _INVALID, exc)
        except UpstreamError as exc:
            failure = _Try(None, "reset", _RESET, exc)
        finally:
            alarms.clear(alarm)
            wait.attach(None)
        if alarm.fired:  # whatever failed, the deadline was first (its alarm broke the I/O)
            if response is not None:
                response.close()
            failure = _Try(None, "timeout", _TIMED_OUT, "timed out")
        elif response is not None:
            return _Try(response, client_time=wait.total - waited_before)
        assert failure is not None
        return failure._replace(client_time=wait.total - waited_before)

    async def _relay_reporting(self, lease: Lease, response: Any, send: Callable[..., Any],
                               exchange: _Exchange) -> None:
        """Relay the response; a failure mid-body is the target's, reported as such."""
        try:
            await self._relay(response, send, exchange, lease.url)
        except trio.TooSlowError:
            lease.report(OutcomeKind.LOCAL, client_time=exchange.wait.total)
            await response.aclose()
            raise UpstreamAborted("upstream response timed out mid-body") from None
        except UpstreamBodyError as exc:
            lease.report(OutcomeKind.LOCAL, client_time=exchange.wait.total)
            await response.aclose()
            raise UpstreamAborted(f"upstream failed mid-body: {exc}") from exc
        except BaseException:
            lease.report(OutcomeKind.NEUTRAL)  # the client left, or we were cancelled
            with trio.CancelScope(shield=True):
                await response.aclose()
            raise
        response.close()  # no checkpoint: the relay just did I/O

    def outcome_kind(self, status: int) -> OutcomeKind:
        """How an upstream status counts: ``failure_statuses`` are gateway failures."""
        if status in self.config.failure_statuses:
            return OutcomeKind.GATEWAY
        if status >= 500:
            return OutcomeKind.APP_ERROR
        return OutcomeKind.SUCCESS

    async def _client_timed_out(self, send: Callable[..., Any], exc: ClientBodyTimeout,
                                request_id: tuple[bytes, bytes] | None) -> tuple[int, str]:
        """A stalled upload: 408 for the client, no verdict on any target."""
        self.errors += 1
        detail = "The client did not send the request body in time"
        LOGGER.info("request body stalled: %s", exc)
        try:
            await send_error(send, 408, detail, request_id=request_id)
        except OSError:
            pass  # the client is gone as well; nothing left to tell it
        return (408, detail)

    def _may_retry(self, attempt: int, exchange: _Exchange, *, status: int | None = None,
                   error_kind: str | None = None) -> bool:
        if trio.current_time() >= exchange.deadline:
            return False
        ok = self.config.retry.should_retry(
            attempt, exchange.method.decode("latin-1"), status=status, error=error_kind,
            body_replayable=exchange.upload.replayable,
        )
        if ok:
            self.retries += 1
        return ok

    async def _backoff(self, attempt: int, deadline: float) -> None:
        delay = self.config.retry.backoff(attempt, self._rng)
        await trio.sleep_until(min(trio.current_time() + delay, deadline))

    async def _relay(self, response: Any, send: Callable[..., Any], exchange: _Exchange,
                     url: str) -> None:
        cfg = self.config
        trace = cfg.trace
        headers = build_response_headers(
            response.headers, add=cfg.response_headers_to_add,
            remove=cfg.response_headers_to_remove,
            content_length=response.content_length, trace=trace,
            request_id=exchange.request_id,
            upstream_target=None if trace.upstream_target_name is None
            else url.encode("latin-1"),
        )
        deadline = exchange.deadline
        try:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": headers})
        except OSError as exc:
            raise ClientDisconnected() from exc
        # Body bytes already read need no I/O, hence no deadline scope; the usual
        # small response (head and body in one read) is sent in a single final message.
        chunk = response.receive_buffered()
        if chunk is not None and response.complete and response.content_length is not None:
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": False})
            except OSError as exc:
                raise ClientDisconnected() from exc
            return
        finite = math.isfinite(deadline)
        while True:
            if chunk is None:
                if finite:
                    with trio.fail_at(deadline):
                        chunk = await response.receive_some()
                else:
                    chunk = await response.receive_some()
            if not chunk:
                break
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OSError as exc:
                raise ClientDisconnected() from exc
            chunk = response.receive_buffered()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
