"""Tiny scripted HTTP/1.1 backends on 127.0.0.1 for the upstream-pool tests.

Requests are parsed by hand (not h11) because responses are raw bytes chosen by
the test, often malformed, so no server-side state machine could follow them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import attrs
import trio

Handler = Callable[[trio.SocketStream], Awaitable[None]]


@attrs.define
class Request:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    body_size: int
    head: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]


class Reader:
    """Buffered reads from one connection."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.eof = False

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def until(self, marker: bytes) -> bytes | None:
        while (i := self.buf.find(marker)) < 0:
            if not await self._fill():
                return None
        out = bytes(self.buf[: i + len(marker)])
        del self.buf[: i + len(marker)]
        return out

    async def exactly(self, n: int, *, keep: bool = True) -> bytes:
        chunks = []
        while n:
            if not self.buf and not await self._fill():
                raise EOFError("peer closed mid-body")
            take = min(n, len(self.buf))
            if keep:
                chunks.append(bytes(self.buf[:take]))
            del self.buf[:take]
            n -= take
        return b"".join(chunks)

    async def drain_to_eof(self) -> None:
        with contextlib.suppress(trio.BrokenResourceError, OSError):
            while await self._fill():
                self.buf.clear()

    async def request(self, *, keep_body: bool = True) -> Request | None:
        """The next request, or None at EOF before a head."""
        head = await self.until(b"\r\n\r\n")
        if head is None:
            return None
        lines = head[:-4].split(b"\r\n")
        method, target, _ = lines[0].split(b" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        hdrs = dict(headers)
        size = 0
        body = b""
        if hdrs.get(b"transfer-encoding") == b"chunked":
            parts = []
            while True:
                line = await self.until(b"\r\n")
                if line is None:
                    raise EOFError("peer closed mid-chunk")
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    await self.until(b"\r\n")
                    break
                chunk = await self.exactly(n, keep=keep_body)
                parts.append(chunk)
                size += n
                await self.exactly(2)
            body = b"".join(parts)
        elif b"content-length" in hdrs:
            size = int(hdrs[b"content-length"])
            body = await self.exactly(size, keep=keep_body)
        return Request(method, target, headers, body, size, head)


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[int]:
    """Run ``handler`` for every connection to an ephemeral port; yield the port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


#: Script item: read the request, then close without answering.
CLOSE = b"<close>"
#: Script item: close right after the previous answer.
THEN_CLOSE = b"<then-close>"


def ok(body: bytes = b"ok", *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(extra) + b"\r\n" + body


class Scripted:
    """Connection *i* answers its requests with ``scripts[i]``, then keeps reading.

    When a connection's script runs out it serves ``default`` (or closes, with
    ``close_when_done``). Records every connection and request.
    """

    def __init__(self, *scripts: list[bytes], default: bytes | None = None,
                 close_when_done: bool = False) -> None:
        self.scripts = list(scripts)
        self.default = default if default is not None else ok(b"default")
        self.close_when_done = close_when_done
        self.connections = 0
        self.requests: list[Request] = []
        self.closed = 0
        self.changed = trio.Event()

    async def __call__(self, stream: trio.SocketStream) -> None:
        index = self.connections
        self.connections += 1
        script = list(self.scripts[index]) if index < len(self.scripts) else None
        reader = Reader(stream)
        try:
            while True:
                req = await reader.request()
                if req is None:
                    break
                self.requests.append(req)
                if script:
                    raw = script.pop(0)
                elif script is not None and self.close_when_done:
                    break  # read the request, then close without answering
                else:
                    raw = self.default
                if raw == CLOSE:
                    break
                await stream.send_all(raw)
                if script and script[0] == THEN_CLOSE:
                    break  # close right after answering, while the client holds it idle
        except (trio.BrokenResourceError, OSError, EOFError):
            pass
        finally:
            self.closed += 1
            self.changed.set()
            self.changed = trio.Event()
            await trio.aclose_forcefully(stream)

    async def wait_closed(self, n: int) -> None:
        while self.closed < n:
            await self.changed.wait()
