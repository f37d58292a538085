"""Backend faults: the ways a real upstream misbehaves, as small typed values.

A fault is chosen per request *after* the backend has read the whole request, so the
request is always recorded and a test can tell "the gateway sent it and the backend
misbehaved" from "the gateway never sent it". Build faults with the ``Fault.*``
constructors and hand them to ``Backend.set_fault``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import h11
import trio

from ._net import NETWORK_ERRORS, close_gracefully, reset_now

__all__ = ["Fault", "act_out"]

_PATTERN = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"
_DEFAULT_GARBAGE = b"SSH-2.0-OpenSSH_9.6 not-http\r\n\x00\xff\r\n\r\n"


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def pattern_bytes(offset: int, size: int) -> bytes:
    """``size`` bytes of the repeating stream pattern, starting at ``offset``."""
    start = offset % len(_PATTERN)
    repeats = (start + size) // len(_PATTERN) + 1
    return (_PATTERN * repeats)[start : start + size]


@attrs.frozen(repr=False)
class Fault:
    """Base of every fault; use the constructors (``Fault.hang()``, ...)."""

    kind: ClassVar[str] = "fault"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in attrs.asdict(self, recurse=False).items())
        return f"Fault.{self.kind}({args})"

    def expected_body(self) -> bytes:
        """The body bytes this fault sends (stream, chunked, truncate), for assertions.

        Raises:
            TypeError: the fault sends no body.
        """
        raise TypeError(f"{self!r} sends no body")

    @staticmethod
    def hang() -> Fault:
        """Read the request, never answer (the connection closes when the peer gives up)."""
        return _Hang()

    @staticmethod
    def reset() -> Fault:
        """Read the request, then abort with an RST (``SO_LINGER`` 0)."""
        return _Reset()

    @staticmethod
    def close() -> Fault:
        """Read the request, then close with a FIN before sending any response."""
        return _Close()

    @staticmethod
    def status(
        code: int, body: bytes | None = None, headers: Sequence[tuple[str, str]] = ()
    ) -> Fault:
        """Answer with ``code`` (default body: a small JSON error) instead of the handler."""
        return _Status(code, body, tuple(headers))

    @staticmethod
    def delay(seconds: float) -> Fault:
        """Sleep ``seconds`` after reading the request, then answer normally."""
        return _Delay(seconds)

    @staticmethod
    def truncate(sent: int = 100, *, declared: int = 1000, rst: bool = False) -> Fault:
        """Send a head with ``Content-Length: declared``, only ``sent`` body bytes, then
        close (FIN, or RST with ``rst=True``)."""
        if not 0 <= sent < declared:
            raise ValueError("truncate needs 0 <= sent < declared")
        return _Truncate(sent, declared, rst)

    @staticmethod
    def garbage(data: bytes = _DEFAULT_GARBAGE) -> Fault:
        """Send bytes that are not an HTTP response, then close."""
        return _Garbage(data)

    @staticmethod
    def chunked(
        chunks: Sequence[bytes],
        *,
        finish: bool = True,
        interval: float = 0.0,
        rst: bool = False,
    ) -> Fault:
        """A chunked 200, one chunk every ``interval`` seconds; ``finish=False`` closes
        (FIN, or RST with ``rst=True``) instead of sending the last chunk."""
        return _Chunked(tuple(chunks), finish, interval, rst)

    @staticmethod
    def stream(total_bytes: int, chunk: int = 65536, *, interval: float = 0.0) -> Fault:
        """A 200 with ``Content-Length: total_bytes``, ``chunk`` bytes every ``interval`` s.

        The body is a fixed pattern; :meth:`expected_body` returns it.
        """
        if total_bytes < 0 or chunk <= 0:
            raise ValueError("stream needs total_bytes >= 0 and chunk > 0")
        return _Stream(total_bytes, chunk, interval)


@attrs.frozen(repr=False)
class _Hang(Fault):
    kind: ClassVar[str] = "hang"


@attrs.frozen(repr=False)
class _Reset(Fault):
    kind: ClassVar[str] = "reset"


@attrs.frozen(repr=False)
class _Close(Fault):
    kind: ClassVar[str] = "close"


@attrs.frozen(repr=False)
class _Status(Fault):
    kind: ClassVar[str] = "status"
    code: int = attrs.field(validator=[attrs.validators.ge(100), attrs.validators.le(599)])
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen(repr=False)
class _Delay(Fault):
    kind: ClassVar[str] = "delay"
    seconds: float = attrs.field(validator=_positive)


@attrs.frozen(repr=False)
class _Truncate(Fault):
    kind: ClassVar[str] = "truncate"
    sent: int
    declared: int
    rst: bool = False

    def expected_body(self) -> bytes:
        return pattern_bytes(0, self.sent)


@attrs.frozen(repr=False)
class _Garbage(Fault):
    kind: ClassVar[str] = "garbage"
    data: bytes = _DEFAULT_GARBAGE


@attrs.frozen(repr=False)
class _Chunked(Fault):
    kind: ClassVar[str] = "chunked"
    chunks: tuple[bytes, ...]
    finish: bool = True
    interval: float = attrs.field(default=0.0, validator=_positive)
    rst: bool = False

    def expected_body(self) -> bytes:
        return b"".join(self.chunks)


@attrs.frozen(repr=False)
class _Stream(Fault):
    kind: ClassVar[str] = "stream"
    total_bytes: int
    chunk: int = 65536
    interval: float = attrs.field(default=0.0, validator=_positive)

    def expected_body(self) -> bytes:
        return pattern_bytes(0, self.total_bytes)


def _send(conn: h11.Connection, event: h11.Event) -> bytes:
    return conn.send(event) or b""


async def _abort(stream: trio.SocketStream, *, rst: bool) -> None:
    if rst:
        reset_now(stream)
    else:
        await close_gracefully(stream)


async def _drain_until_close(stream: trio.SocketStream) -> None:
    """Read and drop bytes until the peer closes, so a hung socket never sits in CLOSE_WAIT."""
    with contextlib.suppress(*NETWORK_ERRORS):
        while await stream.receive_some(65536):  # ends at peer EOF or backend stop
            pass


async def act_out(
    fault: Fault, stream: trio.SocketStream, conn: h11.Connection, *, head_only: bool
) -> bool:
    """Play a wire-level fault after the request was read; True if the connection may be reused.

    ``_Status`` and ``_Delay`` are not handled here: they end in a normal response, which
    the backend writes itself.
    """
    match fault:
        case _Hang():
            await _drain_until_close(stream)
        case _Reset():
            reset_now(stream)
        case _Close():
            await close_gracefully(stream)
        case _Garbage(data=data):
            await stream.send_all(data)
            await close_gracefully(stream)
        case _Truncate(sent=sent, declared=declared, rst=rst):
            head = h11.Response(status_code=200, headers=[("Content-Length", str(declared))])
            out = _send(conn, head)
            if not head_only:
                out += _send(conn, h11.Data(data=pattern_bytes(0, sent)))
            await stream.send_all(out)
            await _abort(stream, rst=rst)
        case _Chunked(chunks=chunks, finish=finish, interval=interval, rst=rst):
            head = h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")])
            await stream.send_all(_send(conn, head))
            for chunk in chunks:
                if interval:
                    await trio.sleep(interval)
                if chunk and not head_only:
                    await stream.send_all(_send(conn, h11.Data(data=chunk)))
            if not finish:
                await _abort(stream, rst=rst)
                return False
            await stream.send_all(_send(conn, h11.EndOfMessage()))
            return True
        case _Stream(total_bytes=total, chunk=size, interval=interval):
            head = h11.Response(status_code=200, headers=[("Content-Length", str(total))])
            await stream.send_all(_send(conn, head))
            offset = 0
            while offset < total and not head_only:  # bounded by total_bytes
                if interval:
                    await trio.sleep(interval)
                piece = pattern_bytes(offset, min(size, total - offset))
                await stream.send_all(_send(conn, h11.Data(data=piece)))
                offset += len(piece)
            await stream.send_all(_send(conn, h11.EndOfMessage()))
            return True
        case _:
            raise TypeError(f"{fault!r} is not a wire-level fault")
    return False
