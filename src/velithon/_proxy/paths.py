"""Path rules for forwarding: what we refuse, how routes capture, what we send upstream.

One canonical form: routes match the **raw**, percent-encoded path and the upstream
target is built from that same raw path, so the routing decision and the forwarded
bytes cannot disagree. Nothing is normalised; a path that would need normalising is
refused instead (``UnsafePathError`` → 400).

Policy:

* **Refused:** ``.`` / ``..`` segments in the raw *or once-decoded* path (so ``%2e``,
  ``.%2e``, ``..%2f``, ``%2e%2e%5c`` too, and Tomcat-style ``..;x``); ``\\`` or
  ``%5c``; control characters, space, DEL or non-ASCII bytes; ``%00``.
* **Forwarded byte-exact:** ``%2F`` (an encoded slash is data, not a separator:
  Envoy's ``KEEP_UNCHANGED``), ``%20``, other escapes such as ``%0d%0a`` (they stay
  encoded), and double encodings like ``%252e`` (we decode at most once, to check).
* **``//``:** empty segments are kept, in matching and in forwarding, except at the
  start of the upstream target, where leading slashes collapse to one: a target
  can never look like ``//host/...`` (which a backend could read as another host).
* **Query:** forwarded byte-exact after ``?``; only characters that could split
  the request line (controls, space, non-ASCII) are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, unquote_to_bytes

import attrs

from .._exceptions import ConfigError, UnsafePathError
from .._templates import CONVERTER_PATTERNS, Param, parse_template

__all__ = [
    "PathRewrite",
    "PathTemplate",
    "check_path_safety",
    "compile_rewrite",
    "compile_template",
    "prefix_match",
    "upstream_target",
]

_RAW_BAD = re.compile(rb"[^\x21-\x7e]|\\")
_QUERY_BAD = re.compile(rb"[^\x21-\x7e]|#")
_DOT_SEGMENT = re.compile(rb"(?:^|/)\.\.?(?:;[^/]*)?(?=/|\Z)")
_PARAM = re.compile(r"\{([^{}]*)\}")
_NOT_RAW_SAFE = re.compile(r"[^A-Za-z0-9/._~!$&'()*+,;=:@%-]")
_SAFE = "/._~!$&'()*+,;=:@-"


def _unsafe(raw: bytes, why: str) -> UnsafePathError:
    shown = raw if len(raw) <= 120 else raw[:120] + b"..."
    return UnsafePathError(f"Refused request path {shown!r}: {why}",
                           f"The request path was refused: {why}")


def check_path_safety(raw_path: bytes) -> None:
    """Refuse a raw request path that could climb, confuse a backend, or split a request.

    Raises:
        UnsafePathError: with the reason (see the module docstring for the policy).
    """
    if not raw_path.startswith(b"/"):
        raise _unsafe(raw_path, "it must start with '/'")
    bad = _RAW_BAD.search(raw_path)
    if bad is not None:
        what = "a backslash" if bad.group() == b"\\" else "a control, space or non-ASCII byte"
        raise _unsafe(raw_path, f"it contains {what}")
    decoded = raw_path
    # find, not `in` (on the hot path): `bytes in bytes` raises and clears a TypeError inside
    if raw_path.find(b"%") >= 0:
        decoded = unquote_to_bytes(raw_path)
        if b"\x00" in decoded:
            raise _unsafe(raw_path, "it contains an encoded NUL (%00)")
        if b"\\" in decoded:
            raise _unsafe(raw_path, "it contains an encoded backslash (%5C)")
    if decoded.find(b".") >= 0 and _DOT_SEGMENT.search(decoded):
        raise _unsafe(raw_path, "it contains a '.' or '..' segment (possibly percent-encoded)")


def _raw(text: str) -> str:
    """``text`` in raw (percent-encoded) form, for comparing with raw paths."""
    return quote(text, safe=_SAFE + "%") if _NOT_RAW_SAFE.search(text) else text


def _strip(path: str, prefix: str) -> str:
    """Remove ``prefix`` from ``path`` at a segment boundary; unchanged if it does not apply."""
    prefix = prefix.rstrip("/")
    if not prefix:
        return path
    if path == prefix:
        return "/"
    if path.startswith(prefix) and path[len(prefix)] == "/":
        return path[len(prefix):]
    return path


def prefix_match(path: str, prefix: str) -> bool:
    """Segment-aware prefix test: ``/api`` matches ``/api`` and ``/api/x``, not ``/apiv2``.

    A trailing slash on ``prefix`` is ignored; an empty prefix (or ``/``) matches all.
    """
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/")


@attrs.frozen
class PathTemplate:
    """A compiled route template that matches raw paths and returns raw captures."""

    template: str
    #: The leading literal segments, raw form, no trailing slash: ``/api`` for
    #: ``/api/{path:path}``; what ``strip_path`` removes.
    static_prefix: str
    param_names: tuple[str, ...]
    regex: re.Pattern[str] = attrs.field(repr=False, eq=False)

    def match(self, raw_path: bytes | str) -> dict[str, str] | None:
        """Raw (still percent-encoded) captures, or ``None`` if the path does not match.

        A template ending in ``/{name:path}`` also matches its bare prefix, with an
        empty capture (``/api/{path:path}`` matches ``/api``).
        """
        if isinstance(raw_path, bytes):
            raw_path = raw_path.decode("latin-1")
        m = self.regex.fullmatch(raw_path)
        if m is None:
            return None
        return {name: value or "" for name, value in m.groupdict().items()}


def compile_template(template: str) -> PathTemplate:
    """Compile ``/api/{path:path}``-style templates to match raw paths.

    Raises:
        ConfigError: no leading ``/``, a bad or duplicate parameter, an unknown converter.
    """
    parsed = parse_template(template)
    pieces = parsed.pieces
    parts: list[str] = []
    last = len(pieces) - 2  # index of the final parameter, if the template ends with one
    for i, piece in enumerate(pieces):
        if not isinstance(piece, Param):
            if i == len(pieces) - 1 or not _tail_path(pieces, i + 1, last):
                parts.append(re.escape(_raw(piece)))
            continue
        if _tail_path(pieces, i, last):
            # '/api/{p:path}' also matches '/api' itself, with p == ''.
            parts.append(re.escape(_raw(str(pieces[i - 1])[:-1])))
            parts.append(f"(?:/(?P<{piece.name}>.*))?")
        else:
            parts.append(f"(?P<{piece.name}>{CONVERTER_PATTERNS[piece.converter]})")
    params = parsed.params
    head = str(pieces[0])
    static = head[: head.rfind("/") + 1] if params else head
    return PathTemplate(template, _raw(static.rstrip("/")), tuple(p.name for p in params),
                        re.compile("".join(parts), re.DOTALL))


def _tail_path(pieces: tuple[str | Param, ...], i: int, last: int) -> bool:
    """Is ``pieces[i]`` a ``{name:path}`` that ends the template right after a ``/``?"""
    piece = pieces[i]
    return (i == last and isinstance(piece, Param) and piece.converter == "path"
            and pieces[-1] == "" and str(pieces[i - 1]).endswith("/"))


@attrs.frozen
class PathRewrite:
    """A compiled ``path_rewrite`` such as ``/v1/{path}``, bound to its route template."""

    rewrite: str
    template: PathTemplate
    parts: tuple[str, ...] = attrs.field(repr=False)
    names: tuple[str | None, ...] = attrs.field(repr=False)

    def apply(self, captures: Mapping[str, str]) -> str:
        pairs = zip(self.parts, self.names, strict=True)
        return "".join(captures[n] if n is not None else p for p, n in pairs)


def compile_rewrite(rewrite: str, template: PathTemplate) -> PathRewrite:
    """Compile a rewrite; ``{name}`` is replaced by the raw capture of that parameter.

    Raises:
        ConfigError: no leading ``/``, unsafe literal text, or a ``{name}`` the
            route template does not capture.
    """
    if not isinstance(rewrite, str) or not rewrite.startswith("/"):
        raise ConfigError(f"Invalid path_rewrite {rewrite!r}: it must start with '/'")
    parts: list[str] = []
    names: list[str | None] = []
    pos = 0
    for m in _PARAM.finditer(rewrite):
        parts.append(rewrite[pos : m.start()])
        names.append(None)
        name = m.group(1)
        if name not in template.param_names:
            have = ", ".join(template.param_names) or "none"
            raise ConfigError(f"Invalid path_rewrite {rewrite!r}: {{{name}}} is not a parameter "
                              f"of route {template.template!r} (it has: {have})")
        parts.append("")
        names.append(name)
        pos = m.end()
    parts.append(rewrite[pos:])
    names.append(None)
    sample = "".join(p if n is None else "x" for p, n in zip(parts, names, strict=True))
    if "{" in sample or "}" in sample or "?" in sample or "#" in sample:
        raise ConfigError(f"Invalid path_rewrite {rewrite!r}: stray brace, '?' or '#'")
    try:
        check_path_safety(_raw(sample).encode("ascii"))
    except UnsafePathError as exc:
        raise ConfigError(f"Invalid path_rewrite {rewrite!r}: {exc}") from None
    return PathRewrite(rewrite, template, tuple(_raw(p) for p in parts), tuple(names))


def upstream_target(
    raw_path: bytes,
    query: bytes,
    *,
    template: PathTemplate | None,
    strip_path: bool,
    rewrite: PathRewrite | None,
    base_path: str,
    strip_prefix: str | None = None,
) -> bytes:
    """The request-target sent upstream, built from the raw path.

    Steps: the full raw path; ``strip_path`` removes ``template.static_prefix``
    and ``strip_prefix`` removes that prefix (both anchored and segment-aware:
    ``/api/a/b`` → ``/a/b``, ``/api`` → ``/``); a ``rewrite`` instead replaces the
    whole path; leading slashes collapse to one; ``base_path`` is prepended;
    ``?query`` is appended byte-exact.

    Raises:
        UnsafePathError: the path fails :func:`check_path_safety`, the query holds
            control characters, or a rewrite's template does not match the raw path.
    """
    check_path_safety(raw_path)
    if (rewrite is None and not base_path and not strip_prefix
            and not (strip_path and template is not None) and raw_path[1:2] != b"/"):
        # The common case: the raw path as is (safe, so ASCII and starting with one '/').
        if not query:
            return raw_path
        if _QUERY_BAD.search(query):
            raise _unsafe(raw_path, f"its query {query[:120]!r} contains control characters")
        return raw_path + b"?" + query
    path = raw_path.decode("ascii")
    if rewrite is not None:
        captures = rewrite.template.match(path)
        if captures is None:
            raise _unsafe(raw_path, f"it does not match route {rewrite.template.template!r} "
                                    "in its raw (percent-encoded) form")
        path = rewrite.apply(captures)
    else:
        if strip_path and template is not None:
            path = _strip(path, template.static_prefix)
        if strip_prefix:
            path = _strip(path, _raw(strip_prefix))
    if path[1:2] == "/" or not path.startswith("/"):
        path = "/" + path.lstrip("/")
    if base_path:
        base = _raw(base_path.rstrip("/"))
        if base:
            check_path_safety(base.encode("ascii"))
        path = base + path
    target = path.encode("ascii")
    if query:
        if _QUERY_BAD.search(query):
            raise _unsafe(raw_path, f"its query {query[:120]!r} contains control characters")
        target += b"?" + query
    return target
