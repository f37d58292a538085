"""The well-behaved client: steady, paced traffic whose every body is verified.

Each worker walks :data:`MIX` (downloads and uploads from 1 KB to 3 MB, uploads with
``Content-Length`` and chunked ones) at a fixed pace, so the load does not depend on
how the gateway is doing, and records one :class:`Record` per request. A request ends
as one of:

* ``ok``: 2xx, and the body checks out (download hash; upload receipt length and hash);
* ``error``: no usable answer: a non-2xx status, a timeout, a refused or reset
  connection, or a response cut off mid-body (the gateway signals a failed download by
  closing the connection early, which is a failure, not a corruption);
* ``lost``: 2xx, yet fewer bytes arrived than were sent: an upload the backend received
  short or empty, or a download complete by its framing but short;
* ``corrupted``: 2xx with the right length and the wrong bytes, or an upload answer that
  is not a receipt at all.

``reframed`` marks uploads sent with ``Content-Length`` that reached the backend with
other framing (chunked), whether or not the backend coped.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator

import attrs
import httpx
import trio
from benchmarks.attacks.payloads import (
    SEEDS,
    UploadReceipt,
    blob,
    blob_query,
    blob_sha256,
)

__all__ = ["IDEMPOTENT", "MIX", "Record", "Spec", "SteadyClient"]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_CHUNK = 16 * 1024
#: httpx's own timeouts apply per operation; this bounds a whole request.
_REQUEST_DEADLINE = 20.0


@attrs.frozen
class Spec:
    """One kind of request in the mix."""

    method: str
    route: str
    kind: str  # "download" or "upload"
    size: int
    chunked: bool = False

    @property
    def label(self) -> str:
        size = f"{self.size / 1e6:g} MB" if self.size >= 1_000_000 else f"{self.size // 1000} KB"
        framing = " chunked" if self.chunked else (" CL" if self.kind == "upload" else "")
        return f"{self.method} {self.route} {size}{framing}"


MIX: tuple[Spec, ...] = (
    Spec("GET", "/api", "download", 1024),
    Spec("PUT", "/api", "upload", 1024),
    Spec("GET", "/api", "download", 100_000),
    Spec("PUT", "/api", "upload", 60_000),  # under 64 KiB: buffered, so replayable
    Spec("POST", "/api", "upload", 100_000),  # streamed and not idempotent: never retried
    Spec("PUT", "/streams", "upload", 10_000, chunked=True),
    Spec("GET", "/api", "download", 1024),
    Spec("PUT", "/api", "upload", 3_000_000),
    Spec("GET", "/api", "download", 3_000_000),
    Spec("POST", "/streams", "upload", 300_000, chunked=True),
    Spec("PUT", "/api", "upload", 200_000),
    Spec("GET", "/streams", "download", 100_000),
)


@attrs.define(slots=True)
class Record:
    """What happened to one request (times from ``trio.current_time()``)."""

    start: float
    end: float
    label: str
    method: str
    result: str
    status: int | None = None
    detail: str = ""
    reframed: bool = False

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT

    @property
    def latency(self) -> float:
        return self.end - self.start


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    """An async body of unknown length: httpx sends it ``Transfer-Encoding: chunked``."""
    for offset in range(0, len(data), _CHUNK):
        yield data[offset:offset + _CHUNK]


def _check_download(spec: Spec, seed: int, response: httpx.Response) -> tuple[str, str]:
    body = response.content
    if len(body) < spec.size:
        return "lost", f"{len(body)} of {spec.size} bytes in a complete response"
    if len(body) != spec.size or hashlib.sha256(body).hexdigest() != blob_sha256(spec.size, seed):
        return "corrupted", f"{len(body)} bytes, wrong hash"
    return "ok", ""


def _check_upload(spec: Spec, seed: int, response: httpx.Response) -> tuple[str, str, bool]:
    try:
        receipt = UploadReceipt.from_json(response.content)
    except ValueError as exc:
        return "corrupted", f"not a receipt: {exc}", False
    reframed = not spec.chunked and receipt.content_length != str(spec.size)
    seen = (f"backend {receipt.backend} saw CL={receipt.content_length} "
            f"TE={receipt.transfer_encoding}")
    if receipt.length < spec.size:
        return "lost", f"{receipt.length} of {spec.size} bytes arrived; {seen}", reframed
    if receipt.length != spec.size or receipt.sha256 != blob_sha256(spec.size, seed):
        return "corrupted", f"{receipt.length} bytes, wrong hash; {seen}", reframed
    return "ok", "", reframed


class SteadyClient:
    """Paced workers sharing one keep-alive ``httpx.AsyncClient``; see the module doc."""

    def __init__(self, base_url: str, *, rate_per_worker: float, timeout: float = 10.0) -> None:
        self.base_url = base_url
        self.rate_per_worker = rate_per_worker
        self.timeout = timeout
        self.records: list[Record] = []
        self._started = 0

    async def one(self, client: httpx.AsyncClient, spec: Spec, seed: int) -> Record:
        """Send one request of the mix and classify its outcome."""
        start = trio.current_time()
        record = Record(start, start, spec.label, spec.method, "error")
        try:
            with trio.fail_after(_REQUEST_DEADLINE):
                if spec.kind == "download":
                    response = await client.request(spec.method,
                                                    spec.route + blob_query(spec.size, seed))
                else:
                    data = blob(spec.size, seed)
                    response = await client.request(
                        spec.method, f"{spec.route}/upload",
                        content=_chunks(data) if spec.chunked else data,
                        headers={"Content-Type": "application/octet-stream"})
            record.status = response.status_code
            if not 200 <= response.status_code < 300:
                record.detail = response.text[:120]
            elif spec.kind == "download":
                record.result, record.detail = _check_download(spec, seed, response)
            else:
                record.result, record.detail, record.reframed = _check_upload(spec, seed, response)
        except trio.TooSlowError:
            record.detail = f"no answer in {_REQUEST_DEADLINE} s"
        except httpx.HTTPError as exc:
            record.detail = f"{type(exc).__name__}: {exc}"[:160]
        record.end = trio.current_time()
        return record

    async def worker(self, client: httpx.AsyncClient, index: int, stop: trio.Event,
                     max_requests: int) -> None:
        """Walk the mix from offset ``index`` at the configured pace until ``stop``."""
        period = 1.0 / self.rate_per_worker
        specs = itertools.islice(itertools.cycle(MIX), index * 5, None)
        seeds = itertools.cycle(SEEDS[index % len(SEEDS):] + SEEDS[:index % len(SEEDS)])
        for _, spec, seed in zip(range(max_requests), specs, seeds, strict=False):
            if stop.is_set():
                return
            record = await self.one(client, spec, seed)
            self.records.append(record)
            with trio.move_on_at(record.start + period):
                await stop.wait()

    async def run(self, workers: int, stop: trio.Event, max_requests: int,
                  *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run ``workers`` paced workers until ``stop`` is set (or each sent ``max_requests``)."""
        # Idle connections are dropped after 2 s, before the gateway's 5 s keep-alive
        # timeout: a client that reuses a connection the server is closing at that very
        # moment gets a disconnect that no server can prevent, and a well-behaved client
        # avoids the race (RFC 9112 §9.3.1 lets it retry instead; httpx does neither).
        limits = httpx.Limits(max_connections=workers + 4, max_keepalive_connections=workers + 4,
                              keepalive_expiry=2.0)
        async with (
            httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout,
                              limits=limits) as client,
            trio.open_nursery() as nursery,
        ):
            for _ in range(workers):
                nursery.start_soon(self.worker, client, self._started, stop, max_requests)
                self._started += 1
            task_status.started()
