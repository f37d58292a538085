"""Message heads read by llhttp, and the choice between llhttp and h11.

llhttp (the C parser inside Node.js, reached through the ``httptools`` package) parses
a head in about 3 µs where h11 takes about 40, which is most of what a proxied request
costs. Both legs of the gateway use it for *heads only*: the caller finds the end of a
head in its own buffer, feeds exactly those bytes, and frames the body itself (counting
``Content-Length`` or decoding chunks with :class:`~velithon._http11.ChunkedDecoder`).
Feeding heads only is what keeps pipelined messages apart and lets a HEAD response have
no body, two things llhttp cannot be told; it also means llhttp never needs to pause.

What llhttp refuses on its own (in its default strict mode): CL together with TE,
duplicate or list ``Content-Length``, obs-fold, bare CR or LF, bad name characters,
control bytes in values and targets, unknown methods, versions other than 0.9 to 2.0.
What it accepts and the callers must check: versions other than 1.0/1.1, a missing or
repeated ``Host``, TE on HTTP/1.0, CONNECT, status codes outside 100-599, and the size
of a head (llhttp has no limit). Field values keep trailing whitespace in llhttp; it is
stripped here, as h11 does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from .._exceptions import ConfigError

try:
    import httptools
except ImportError:  # pragma: no cover - httptools is a dependency; h11 is the fallback
    httptools = None  # type: ignore[assignment]

__all__ = [
    "LLHTTP_METHODS",
    "PARSER_CHOICES",
    "HeadError",
    "HttpParser",
    "RequestHeadReader",
    "ResponseHeadReader",
    "resolve_parser",
    "using_parser",
]

HttpParser = Literal["httptools", "h11"]
#: What ``--http`` accepts: ``auto`` is httptools when it can be imported, else h11.
PARSER_CHOICES = ("auto", "httptools", "h11")

#: The request methods llhttp knows in HTTP mode. Any other token is answered 501 in both
#: parser modes, so a request is never accepted by one and refused by the other.
LLHTTP_METHODS = frozenset({
    b"DELETE", b"GET", b"HEAD", b"POST", b"PUT", b"CONNECT", b"OPTIONS", b"TRACE",
    b"COPY", b"LOCK", b"MKCOL", b"MOVE", b"PROPFIND", b"PROPPATCH", b"SEARCH", b"UNLOCK",
    b"BIND", b"REBIND", b"UNBIND", b"ACL", b"REPORT", b"MKACTIVITY", b"CHECKOUT", b"MERGE",
    b"M-SEARCH", b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE", b"PATCH", b"PURGE", b"MKCALENDAR",
    b"LINK", b"UNLINK", b"SOURCE", b"QUERY",
})
_OWS = b" \t"
# The parser "auto" means in this task and the tasks it starts: set by the server for
# everything it runs (the app's lifespan, its services, their upstream pools), so one
# ``--http`` choice covers both legs of a gateway. Unset: httptools when installed.
_AUTO: ContextVar[HttpParser | None] = ContextVar("velithon_http_parser", default=None)


def resolve_parser(choice: str) -> HttpParser:
    """The parser to use for ``choice`` (one of :data:`PARSER_CHOICES`).

    ``auto`` is the parser of the server this code runs under (see :func:`using_parser`),
    else httptools when it is installed, else h11.

    Raises:
        ConfigError: an unknown choice, or ``httptools`` asked for but not installed.
    """
    if choice == "auto":
        chosen = _AUTO.get()
        if chosen is not None:
            return chosen
        return "httptools" if httptools is not None else "h11"
    if choice == "httptools":
        if httptools is None:
            raise ConfigError(
                "the httptools parser is not installed: pip install httptools, "
                "or choose the h11 parser")
        return "httptools"
    if choice == "h11":
        return "h11"
    raise ConfigError(
        f"unknown HTTP parser {choice!r}: choose one of {', '.join(PARSER_CHOICES)}")


class HeadError(Exception):
    """llhttp refused a head. ``status`` is what a server answers; the message is fixed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class _HeadReader:
    """One llhttp parser reading heads one after the other, reused while it can be.

    Call :meth:`begin` before each head, then :meth:`feed` it the head's bytes (never
    past the blank line). The parser is reused when the previous message ended inside
    it (no body); otherwise llhttp would take the next head for body bytes, so a fresh
    one is made.
    """

    __slots__ = ("_ended", "_parser", "headers")

    def __init__(self) -> None:
        self._parser = self._new_parser()
        self._ended = True
        self.headers: list[tuple[bytes, bytes]] = []

    def _new_parser(self) -> Any:
        raise NotImplementedError

    def _error(self, exc: Exception) -> HeadError:
        raise NotImplementedError

    def _clear(self) -> None:
        """Forget the previous head's parts."""
        self.headers = []

    # llhttp callback (httptools only calls the ones that exist)
    def on_message_complete(self) -> None:
        # A message that does not keep the connection (an HTTP/1.0 one, an interim
        # response labelled HTTP/1.0 included) leaves llhttp refusing whatever comes
        # next: the next head then gets a fresh parser, as h11 reads it.
        self._ended = self._parser.should_keep_alive()

    def release(self) -> None:
        """Drop the parser for good (the reader is not used again).

        The parser holds the reader's callbacks and the reader holds the parser: a
        reference cycle, which only the garbage collector's next pass would free, with
        everything the connection that owned them still refers to. Releasing breaks it,
        so a closed connection is freed at once.
        """
        self._parser = None

    def begin(self) -> None:
        if not self._ended:
            self._parser = self._new_parser()
        self._ended = False
        self._clear()

    def feed(self, data: bytes) -> None:
        """Parse the head. Raises :class:`HeadError` for a head llhttp refuses."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade or CONNECT: llhttp stops after the head; the caller decides what
            # to do, and the next head (if any) needs a new parser.
            self._ended = False
        except httptools.HttpParserError as exc:
            self._ended = False
            raise self._error(exc) from None

    @property
    def version(self) -> bytes:
        return self._parser.get_http_version().encode()  # type: ignore[no-any-return]


class RequestHeadReader(_HeadReader):
    """Reads request heads; field names come lowercased, values without trailing OWS."""

    __slots__ = ("target",)

    def __init__(self) -> None:
        super().__init__()
        self.target = b""

    def _new_parser(self) -> httptools.HttpRequestParser:
        return httptools.HttpRequestParser(self)

    def _error(self, exc: Exception) -> HeadError:
        # The server checks method, version and framing fields before llhttp sees a
        # head (so both parsers answer 501/505 alike): what llhttp refuses is syntax.
        return HeadError(400, "malformed request")

    def _clear(self) -> None:
        self.headers = []
        self.target = b""

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value.rstrip(_OWS)))

    @property
    def method(self) -> bytes:
        return self._parser.get_method()  # type: ignore[no-any-return]


class ResponseHeadReader(_HeadReader):
    """Reads response heads from one upstream connection; names lowercased, values
    without trailing OWS."""

    __slots__ = ("reason",)

    def __init__(self) -> None:
        super().__init__()
        self.reason = b""

    def _new_parser(self) -> httptools.HttpResponseParser:
        parser = httptools.HttpResponseParser(self)
        # A response with both Transfer-Encoding and Content-Length is read as chunked
        # (RFC 9112 §6.3) and its connection is not reused, as with h11; strict llhttp
        # would refuse it outright.
        parser.set_dangerous_leniencies(lenient_chunked_length=True)
        return parser

    def _error(self, exc: Exception) -> HeadError:
        return HeadError(502, str(exc))

    def _clear(self) -> None:
        self.headers = []
        self.reason = b""

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value.rstrip(_OWS)))

    @property
    def status(self) -> int:
        return self._parser.get_status_code()  # type: ignore[no-any-return]


@contextmanager
def using_parser(parser: HttpParser) -> Iterator[None]:
    """Make ``auto`` mean ``parser`` in this task and every task it starts from now on."""
    token = _AUTO.set(parser)
    try:
        yield
    finally:
        _AUTO.reset(token)
