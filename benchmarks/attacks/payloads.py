"""The bodies the client and the backends agree on, so either side can verify the other.

A body is named by ``(size, seed)`` and generated the same way everywhere (SHAKE-256 of
the seed, which is fast and never repeats within a body), so a shifted, truncated or
mixed-up body changes its hash. Downloads: ``GET /blob?n=<size>&seed=<seed>`` answers
that body. Uploads: ``PUT``/``POST /upload`` answers an :class:`UploadReceipt` saying
what the backend actually received, including the framing it saw, so a body lost to
re-framing (an upload with ``Content-Length`` forwarded chunked to a backend that
only reads ``Content-Length``) shows up as a short body rather than passing silently.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

__all__ = [
    "DOWNLOAD_SIZES",
    "MAX_BLOB",
    "SEEDS",
    "UploadReceipt",
    "blob",
    "blob_query",
    "blob_sha256",
    "parse_blob_target",
]

#: Every body is at most this large, so a hostile query cannot make a backend allocate.
MAX_BLOB = 4 * 1024 * 1024
#: A handful of seeds per size keeps the caches small and still varies the bytes.
SEEDS = (1, 2, 3, 4)
DOWNLOAD_SIZES = (1024, 100_000, 3_000_000)


@functools.lru_cache(maxsize=64)
def blob(size: int, seed: int) -> bytes:
    """The body named ``(size, seed)``; cached because the same few are sent repeatedly."""
    if not 0 <= size <= MAX_BLOB:
        raise ValueError(f"blob size {size} outside 0..{MAX_BLOB}")
    return hashlib.shake_256(f"velithon-attacks:{seed}".encode()).digest(size)


@functools.lru_cache(maxsize=64)
def blob_sha256(size: int, seed: int) -> str:
    """Hex SHA-256 of :func:`blob`, cached so verifying costs one hash of the received body."""
    return hashlib.sha256(blob(size, seed)).hexdigest()


def blob_query(size: int, seed: int) -> str:
    """The download path (after the route prefix) for body ``(size, seed)``."""
    return f"/blob?n={size}&seed={seed}"


def parse_blob_target(target: str) -> tuple[int, int]:
    """``(size, seed)`` from a ``/blob?n=..&seed=..`` target.

    Raises:
        ValueError: a missing or malformed parameter, or a size over :data:`MAX_BLOB`.
    """
    query = parse_qs(urlsplit(target).query)
    size, seed = int(query["n"][0]), int(query["seed"][0])
    if not 0 <= size <= MAX_BLOB:
        raise ValueError(f"blob size {size} outside 0..{MAX_BLOB}")
    return size, seed


@attrs.frozen
class UploadReceipt:
    """What a backend received for one upload, as it reports it back (JSON).

    ``content_length`` and ``transfer_encoding`` are the request's framing headers as the
    backend saw them (``None`` when absent); ``length`` and ``sha256`` describe the body
    bytes it actually read.
    """

    backend: str
    length: int
    sha256: str
    content_length: str | None
    transfer_encoding: str | None

    def to_json(self) -> bytes:
        """The wire form of the receipt."""
        return json.dumps(attrs.asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> UploadReceipt:
        """Parse a receipt.

        Raises:
            ValueError: not JSON, or not a receipt (a gateway error body, say).
        """
        raw: Any = json.loads(data)
        try:
            if not isinstance(raw, dict):
                raise KeyError("the body is not a JSON object")
            return cls(
                backend=str(raw["backend"]),
                length=int(raw["length"]),
                sha256=str(raw["sha256"]),
                content_length=raw.get("content_length"),
                transfer_encoding=raw.get("transfer_encoding"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an upload receipt: {exc}") from None
