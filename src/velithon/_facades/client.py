"""``ProxyClient``: forward single requests to one target, breaker included.

The original returned ``(status, body, headers)`` from a Rust client while its
type stub claimed another order. Here :class:`ProxyResult` is a named result
that still unpacks in the original order, so old code keeps working.

It runs the same actor system as the gateway (one target), so its circuit
breaker has a real half-open state and retries use the shared retry policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import attrs

from .._exceptions import ConfigError
from .._lb.breaker import BreakerConfig
from .._lb.retry import RetryPolicy
from .._lb.system import BalancerConfig
from .._proxy.forwarder import ForwardConfig, Forwarder
from .._proxy.pool import PoolConfig
from .base import BalancerHolder, HolderBacked


class ProxyRequestError(RuntimeError):
    """A request could not be forwarded (the message says why)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@attrs.frozen
class ProxyResult:
    """An upstream response: unpacks as ``status, body, headers``."""

    status: int
    body: bytes
    raw_headers: tuple[tuple[bytes, bytes], ...]

    @property
    def headers(self) -> dict[str, str]:
        """Headers as a dict (repeated names joined with ``, ``; see ``raw_headers``)."""
        merged: dict[str, str] = {}
        for key, value in self.raw_headers:
            name = key.decode("latin-1")
            text = value.decode("latin-1")
            merged[name] = f"{merged[name]}, {text}" if name in merged else text
        return merged

    def __iter__(self) -> Any:
        return iter((self.status, self.body, self.headers))

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> Any:
        return (self.status, self.body, self.headers)[index]


class ProxyClient(HolderBacked):
    """Forward requests to ``target_url`` with retries and a circuit breaker."""

    def __init__(self, target_url: str, timeout_ms: int = 30000, max_retries: int = 3,
                 max_failures: int = 5, recovery_timeout_ms: int = 60000) -> None:
        for name, value in (("timeout_ms", timeout_ms), ("max_retries", max_retries),
                            ("max_failures", max_failures),
                            ("recovery_timeout_ms", recovery_timeout_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        self.target_url = target_url
        self.timeout_ms = timeout_ms
        self.max_retries = max_retries
        config = BalancerConfig(
            targets=(target_url,),
            breaker=BreakerConfig(max_failures=max_failures,
                                  recovery_timeout_ms=recovery_timeout_ms),
            panic_threshold=0,  # one target: its open breaker must fail fast, not be ignored
            pools=PoolConfig(),
            name="proxy_client",
        )
        self._holder = BalancerHolder(config)
        self._forwarder = Forwarder(
            ForwardConfig(timeout_ms=timeout_ms, retry=RetryPolicy(max_retries=max_retries),
                          preserve_host=False), name="proxy_client")

    def __repr__(self) -> str:
        return f"<ProxyClient {self.target_url}>"

    async def forward_request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        query_params: Mapping[str, str] | None = None,
    ) -> ProxyResult:
        """Send one request; raises :class:`ProxyRequestError` when it fails.

        ``path`` may carry a query (``/items?x=1``); ``query_params`` are
        appended to it. Characters outside the URL-safe set are
        percent-encoded; existing ``%XX`` escapes are kept.
        """
        if not method or not method.isalpha():
            raise ValueError(f"Invalid HTTP method: {method!r}")
        path, _, inline_query = path.partition("?")
        raw_path = quote(path if path.startswith("/") else "/" + path, safe="/%:@!$&'()*+,;=-._~")
        extra = urlencode(list((query_params or {}).items()))
        query = "&".join(q for q in (quote(inline_query, safe="=&%+:@/?!$'()*,;-._~"), extra) if q)
        query_bytes = query.encode()
        header_list: list[tuple[bytes, bytes]] = []
        for key, value in (headers or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("header names and values must be str")
            header_list.append((key.lower().encode("latin-1"), value.encode("latin-1")))
        if body:
            header_list.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http", "method": method.upper(), "path": path, "raw_path": raw_path.encode(),
            "query_string": query_bytes, "headers": header_list, "client": None, "scheme": "http",
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body or b"", "more_body": False}

        status = 0
        out_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers = list(message.get("headers", []))
            else:
                chunks.append(message.get("body", b""))

        async with self._holder.balancer() as balancer:
            error = await self._forwarder.handle_http(balancer, scope, receive, send)
        if error is not None:
            raise ProxyRequestError(*error)
        return ProxyResult(status, b"".join(chunks), tuple(out_headers))

    async def get_circuit_breaker_status(self) -> tuple[str, int, int | None]:
        """``(state, failure_count, ms_since_last_failure | None)``."""
        async with self._holder.balancer() as balancer:
            (status,) = await balancer.target_statuses()
        return (status.breaker_state, status.failure_count, status.ms_since_last_failure)

    async def reset_circuit_breaker(self) -> None:
        async with self._holder.balancer() as balancer:
            await balancer.reset_breakers()
