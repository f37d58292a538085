"""Small request/response value types: headers, query parameters, URL, client address.

Why our own: ASGI hands us headers as a list of ``(bytes, bytes)`` pairs with
lower-case names, and a gateway must keep every value (several ``Set-Cookie``,
several ``X-Forwarded-For``) in order. These classes are thin views over those
lists: nothing is parsed until asked for, and ``raw`` gives the pairs back
unchanged so forwarding stays byte-exact.

Lookup conventions (documented once, used everywhere):

* ``get(name)`` returns the **first** value, ``getlist(name)`` all of them in order;
* header names are case-insensitive; query keys are case-sensitive.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple, TypeVar
from urllib.parse import parse_qsl

_T = TypeVar("_T")

RawHeaders = list[tuple[bytes, bytes]]
_MISSING: object = object()


class Address(NamedTuple):
    """The peer of a connection, as the server reported it in ``scope["client"]``."""

    host: str
    port: int


class URL:
    """The parts of a request URL a handler usually needs (no parsing library involved)."""

    __slots__ = ("scheme", "netloc", "path", "query")

    def __init__(self, *, scheme: str = "http", netloc: str = "", path: str = "/",
                 query: str = "") -> None:
        self.scheme = scheme
        self.netloc = netloc
        self.path = path
        self.query = query

    def __str__(self) -> str:
        base = f"{self.scheme}://{self.netloc}{self.path}" if self.netloc else self.path
        return f"{base}?{self.query}" if self.query else base

    def __repr__(self) -> str:
        return f"URL({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, URL):
            return str(self) == str(other)
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def _encode_header(name: str | bytes, value: str | bytes) -> tuple[bytes, bytes]:
    """Validate and encode one user-supplied header (lower-case name, latin-1)."""
    raw_name = name.encode("latin-1") if isinstance(name, str) else bytes(name)
    raw_value = value.encode("latin-1") if isinstance(value, str) else bytes(value)
    if not raw_name or b"\r" in raw_name or b"\n" in raw_name or b":" in raw_name:
        raise ValueError(f"invalid header name {name!r}")
    if b"\r" in raw_value or b"\n" in raw_value or b"\x00" in raw_value:
        raise ValueError(f"invalid value for header {name!r}: line breaks and NUL are not allowed")
    return raw_name.lower(), raw_value


def encode_headers(
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] | None,
) -> RawHeaders:
    """Turn a dict or a list of pairs (duplicates kept, order kept) into ASGI raw headers."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [_encode_header(name, value) for name, value in items]


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive multi-dict over ASGI raw header pairs.

    ``headers["x"]`` and ``headers.get("x")`` give the first value;
    ``getlist`` gives every value; ``raw`` is the underlying list of byte pairs.
    """

    __slots__ = ("_raw",)

    def __init__(
        self,
        headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] | None = None,
        *,
        raw: RawHeaders | None = None,
    ) -> None:
        if raw is not None:
            if headers is not None:
                raise TypeError("pass either headers or raw, not both")
            self._raw = raw
        else:
            self._raw = encode_headers(headers)

    @property
    def raw(self) -> RawHeaders:
        return self._raw

    def getlist(self, key: str) -> list[str]:
        name = key.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self._raw if k == name]

    def get(self, key: str, default: _T | None = None) -> str | _T | None:  # type: ignore[override]
        name = key.lower().encode("latin-1")
        for k, v in self._raw:
            if k == name:
                return v.decode("latin-1")
        return default

    def __getitem__(self, key: str) -> str:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[return-value]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        name = key.lower().encode("latin-1")
        return any(k == name for k, _ in self._raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:  # type: ignore[override]
        """Distinct names, in first-seen order."""
        return list(dict.fromkeys(k.decode("latin-1") for k, _ in self._raw))

    def values(self) -> list[str]:  # type: ignore[override]
        return [v.decode("latin-1") for _, v in self._raw]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        """Every (name, value) pair, duplicates included, in order."""
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return sorted(self._raw) == sorted(other._raw)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.items()!r})"


class MutableHeaders(Headers):
    """Headers that write through to the raw list they wrap (used by responses)."""

    __slots__ = ()

    def __setitem__(self, key: str, value: str) -> None:
        """Replace every value of ``key`` by one value (kept at the first position)."""
        name, raw_value = _encode_header(key, value)
        found = False
        kept: RawHeaders = []
        for k, v in self._raw:
            if k == name:
                if not found:
                    kept.append((name, raw_value))
                    found = True
            else:
                kept.append((k, v))
        if not found:
            kept.append((name, raw_value))
        self._raw[:] = kept

    def __delitem__(self, key: str) -> None:
        name = key.lower().encode("latin-1")
        if not any(k == name for k, _ in self._raw):
            raise KeyError(key)
        self._raw[:] = [(k, v) for k, v in self._raw if k != name]

    def append(self, key: str, value: str) -> None:
        """Add one more value, keeping the existing ones (e.g. another ``Set-Cookie``)."""
        self._raw.append(_encode_header(key, value))

    def setdefault(self, key: str, value: str) -> str:
        existing = self.get(key)
        if existing is None:
            self.append(key, value)
            return value
        return existing

    def update(self, other: Mapping[str, str]) -> None:
        for key, value in other.items():
            self[key] = value


class QueryParams(Mapping[str, str]):
    """Multi-valued query string parameters, percent-decoded as UTF-8.

    ``get``/``[]`` give the first value, ``getlist`` every value, ``items()`` every pair
    in order (duplicates included). Blank values are kept (``?flag`` gives ``""``).
    """

    __slots__ = ("_list",)

    def __init__(self, query: str | bytes | Sequence[tuple[str, str]] = "") -> None:
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        if isinstance(query, str):
            self._list = parse_qsl(query, keep_blank_values=True)
        else:
            self._list = [(str(k), str(v)) for k, v in query]

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self._list if k == key]

    def get(self, key: str, default: _T | None = None) -> str | _T | None:  # type: ignore[override]
        for k, v in self._list:
            if k == key:
                return v
        return default

    def __getitem__(self, key: str) -> str:
        for k, v in self._list:
            if k == key:
                return v
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self._list)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(dict.fromkeys(k for k, _ in self._list))

    def values(self) -> list[str]:  # type: ignore[override]
        return [v for _, v in self._list]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return list(self._list)

    def multi_items(self) -> list[tuple[str, str]]:
        """Alias of ``items()`` (Starlette's name for the same thing)."""
        return list(self._list)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QueryParams):
            return sorted(self._list) == sorted(other._list)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"QueryParams({self._list!r})"

