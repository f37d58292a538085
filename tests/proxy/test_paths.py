"""Path rules (reliability.md §2.4–2.5, catalogue 18–23): tables plus properties."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon._exceptions import ConfigError, UnsafePathError
from velithon._proxy.paths import (
    check_path_safety,
    compile_rewrite,
    compile_template,
    prefix_match,
    upstream_target,
)

API = compile_template("/api/{path:path}")


def target(raw: bytes, query: bytes = b"", *, template: object = API, strip_path: bool = False,
           rewrite: object = None, base_path: str = "", strip_prefix: str | None = None) -> bytes:
    return upstream_target(raw, query, template=template, strip_path=strip_path,  # type: ignore[arg-type]
                           rewrite=rewrite, base_path=base_path,  # type: ignore[arg-type]
                           strip_prefix=strip_prefix)


# ---- catalogue 18: traversal -----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"/api/../admin", b"/api/./../admin", b"/api/%2e%2e/admin", b"/api/.%2e/admin",
        b"/api/%2E%2E%2Fadmin", b"/api/..%5cadmin", b"/api/x/../../admin", b"/api/..",
        b"/api/.", b"/..", b"/api/%2e", b"/api/..%2F", b"/api/..;/admin", b"/api/.;x/a",
        b"/api/a/%2e%2e%2f%2e%2e%2fetc/passwd",
    ],
)
def test_dot_segments_are_refused(raw: bytes) -> None:
    with pytest.raises(UnsafePathError, match="segment|backslash"):
        check_path_safety(raw)
    with pytest.raises(UnsafePathError):
        target(raw, strip_path=True, base_path="/svc")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"/api/a\\b", "backslash"), (b"/api/a%5Cb", "encoded backslash"),
        (b"/api/a%5cb", "encoded backslash"), (b"/api/a%00b", "encoded NUL"),
        (b"/api/a\x00b", "byte"), (b"/api/a\rb", "byte"), (b"/api/a\nX-Injected: 1", "byte"),
        (b"/api/a b", "byte"), (b"/api/\x7f", "byte"), (b"/api/caf\xc3\xa9", "byte"),
        (b"api/x", "start with '/'"), (b"", "start with '/'"), (b"*", "start with '/'"),
    ],
)
def test_backslashes_and_control_characters_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(UnsafePathError, match=why):
        check_path_safety(raw)


@pytest.mark.parametrize(
    "raw",
    [b"/api/...", b"/api/..a", b"/api/a..", b"/api/.well-known/x", b"/api/a.b/c.d",
     b"/api/%252e%252e/x", b"/api/a%2Fb", b"/api/a%20b", b"/api/a%0d%0aX-Injected:%201",
     b"/api//x", b"//api/x", b"/", b"/api/%zz", b"/api/a;b=c"],
)
def test_safe_paths_pass(raw: bytes) -> None:
    check_path_safety(raw)


# ---- catalogue 19-21, 23: what is forwarded --------------------------------------------


@pytest.mark.parametrize(
    ("raw", "query", "kwargs", "expected"),
    [
        # default: the whole raw path, byte-exact
        (b"/api/a/b", b"", {}, b"/api/a/b"),
        (b"/api/a%2Fb", b"", {"strip_path": True, "base_path": "/svc"}, b"/svc/a%2Fb"),
        (b"/api/%252e%252e/x", b"", {"strip_path": True, "base_path": "/svc"},
         b"/svc/%252e%252e/x"),
        (b"/api/a%20b%3Fc", b"", {}, b"/api/a%20b%3Fc"),
        (b"/api/a%0d%0aX-Injected:%201", b"", {}, b"/api/a%0d%0aX-Injected:%201"),
        (b"/api/x", b"u=%0d%0a&b=2&a=1&b=1&flag", {}, b"/api/x?u=%0d%0a&b=2&a=1&b=1&flag"),
        # strip_path: anchored and segment-aware
        (b"/api/a/b", b"q=1", {"strip_path": True}, b"/a/b?q=1"),
        (b"/api", b"", {"strip_path": True}, b"/"),
        (b"/api/", b"", {"strip_path": True}, b"/"),
        (b"/api/x//y", b"", {"strip_path": True}, b"/x//y"),
        # catalogue 20/21: leading slashes never produce '//host'
        (b"/api//x", b"", {"strip_path": True}, b"/x"),
        (b"/api///127.0.0.2:9/x", b"", {"strip_path": True}, b"/127.0.0.2:9/x"),
        (b"/api///127.0.0.2:9/x", b"", {"strip_path": True, "base_path": "/svc"},
         b"/svc/127.0.0.2:9/x"),
        (b"/api/http://127.0.0.2:9/x", b"", {"strip_path": True}, b"/http://127.0.0.2:9/x"),
        (b"/api/@127.0.0.2:9/x", b"", {"strip_path": True}, b"/@127.0.0.2:9/x"),
        (b"/api/%2F%2F127.0.0.2:9/x", b"", {"strip_path": True}, b"/%2F%2F127.0.0.2:9/x"),
        (b"//api/x", b"", {}, b"/api/x"),
        # strip_prefix (ProxyMiddleware's path_prefix), same semantics
        (b"/api/a", b"", {"template": None, "strip_prefix": "/api"}, b"/a"),
        (b"/api", b"", {"template": None, "strip_prefix": "/api/"}, b"/"),
        (b"/apiv2/a", b"", {"template": None, "strip_prefix": "/api"}, b"/apiv2/a"),
        (b"/api/a", b"", {"template": None, "strip_prefix": "/api", "base_path": "/up/"},
         b"/up/a"),
        (b"/my%20api/a", b"", {"template": None, "strip_prefix": "/my api"}, b"/a"),
        (b"/x", b"", {"template": None, "strip_prefix": ""}, b"/x"),
    ],
)
def test_upstream_target(raw: bytes, query: bytes, kwargs: dict[str, object],
                         expected: bytes) -> None:
    assert target(raw, query, **kwargs) == expected  # type: ignore[arg-type]


def test_strip_path_removes_only_the_static_prefix() -> None:
    multi = compile_template("/v2/{svc}/{rest:path}")
    assert multi.static_prefix == "/v2"
    stripped = target(b"/v2/inventory/items/7", template=multi, strip_path=True)
    assert stripped == b"/inventory/items/7"
    deep = compile_template("/api/v1/service/{path:path}")
    assert target(b"/api/v1/service/users/123", template=deep, strip_path=True) == b"/users/123"


def test_query_with_control_characters_is_refused() -> None:
    for query in (b"a=1\r\nX: y", b"a=\x00", b"a=b c", b"a=1#frag"):
        with pytest.raises(UnsafePathError, match="query"):
            target(b"/api/x", query)


# ---- templates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "raw", "captures"),
    [
        ("/api/{path:path}", b"/api/a%2Fb/c%20d", {"path": "a%2Fb/c%20d"}),
        ("/api/{path:path}", b"/api/", {"path": ""}),
        ("/api/{path:path}", b"/api", {"path": ""}),
        ("/api/{path:path}", b"/apiv2/x", None),
        ("/v2/{svc}/{rest:path}", b"/v2/inv/a/b", {"svc": "inv", "rest": "a/b"}),
        ("/v2/{svc}/{rest:path}", b"/v2//a", None),
        ("/items/{id:int}", b"/items/42", {"id": "42"}),
        ("/items/{id:int}", b"/items/4x", None),
        ("/price/{p:float}", b"/price/1.50", {"p": "1.50"}),
        ("/u/{u:uuid}", b"/u/12345678-1234-5678-1234-567812345678",
         {"u": "12345678-1234-5678-1234-567812345678"}),
        ("/u/{u:uuid}", b"/u/not-a-uuid", None),
        ("/files/{name}.txt", b"/files/a%20b.txt", {"name": "a%20b"}),
        ("/exact", b"/exact", {}),
        ("/exact", b"/exact/", None),
        ("/caf\u00e9/{x}", b"/caf%C3%A9/1", {"x": "1"}),
    ],
)
def test_template_matches_raw_paths(template: str, raw: bytes,
                                    captures: dict[str, str] | None) -> None:
    assert compile_template(template).match(raw) == captures


@pytest.mark.parametrize(
    ("template", "prefix"),
    [("/api/{path:path}", "/api"), ("/{path:path}", ""), ("/a/b/", "/a/b"), ("/ap{x}", ""),
     ("/a/b{x}/c", "/a"), ("/health", "/health")],
)
def test_static_prefix(template: str, prefix: str) -> None:
    assert compile_template(template).static_prefix == prefix


@pytest.mark.parametrize(
    ("template", "message"),
    [("api/{x}", "starting with '/'"), ("/a/{x}/{x}", "duplicate path parameter 'x'"),
     ("/a/{x:slug}", "unknown path converter 'slug'"), ("/a/{1x}", "invalid path parameter name"),
     ("/a/{x", "unbalanced"), ("/a/x}", "unbalanced")],
)
def test_bad_templates_are_config_errors(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        compile_template(template)


# ---- rewrites --------------------------------------------------------------------------


def test_rewrite_substitutes_raw_captures() -> None:
    rewrite = compile_rewrite("/v1/api/{path}", API)
    assert target(b"/api/a%2Fb/c%20d", b"q=1", rewrite=rewrite) == b"/v1/api/a%2Fb/c%20d?q=1"
    assert target(b"/api", rewrite=rewrite) == b"/v1/api/"
    assert target(b"/api/x", rewrite=rewrite, base_path="/base") == b"/base/v1/api/x"
    multi = compile_template("/v2/{svc}/{rest:path}")
    swap = compile_rewrite("/{rest}/by/{svc}", multi)
    assert target(b"/v2/inv/a/b", template=multi, rewrite=swap) == b"/a/b/by/inv"


def test_rewrite_needs_a_matching_raw_path() -> None:
    rewrite = compile_rewrite("/v1/{path}", API)
    with pytest.raises(UnsafePathError, match="does not match route"):
        target(b"/other/x", rewrite=rewrite)


@pytest.mark.parametrize(
    ("rewrite", "message"),
    [("/v1/{nope}", "{nope} is not a parameter of route '/api/{path:path}' (it has: path)"),
     ("v1/{path}", "must start with '/'"), ("/v1/../{path}", "segment"),
     ("/v1/{path}?x=1", "'?'"), ("/v1/{path", "stray brace")],
)
def test_bad_rewrites_are_config_errors(rewrite: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        compile_rewrite(rewrite, API)


# ---- prefix_match ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [("/api", "/api", True), ("/api/x", "/api", True), ("/api/", "/api", True),
     ("/apiv2", "/api", False), ("/ap", "/api", False), ("/x", "", True), ("/x", "/", True),
     ("/api/x", "/api/", True), ("/api", "/api/", True), ("/", "/api", False)],
)
def test_prefix_match_is_segment_aware(path: str, prefix: str, expected: bool) -> None:
    assert prefix_match(path, prefix) is expected


# ---- properties ------------------------------------------------------------------------

_segment = st.one_of(
    st.text(alphabet="abcxyz019-._~%2FfEe5Cc!$&'()*+,;=:@", min_size=0, max_size=8),
    st.sampled_from(["..", ".", "%2e%2e", "%2E.", "a%2Fb", "%20", "%252e", "", "..;", "%5c"]),
)
_raw_path = st.lists(_segment, min_size=1, max_size=6).map(lambda s: ("/" + "/".join(s)).encode())
_query = st.sampled_from([b"", b"a=1", b"x=%2F&y=%20", b"u=//evil"])


def _dot_segments(path: bytes) -> bool:
    return any(seg.split(b";")[0] in (b".", b"..") for seg in unquote_to_bytes(path).split(b"/"))


@settings(deadline=None, max_examples=400)
@given(raw=_raw_path, query=_query, strip=st.booleans(),
       base=st.sampled_from(["", "/svc", "/svc/", "/a/b"]),
       prefix=st.sampled_from([None, "/api", "/abc", ""]),
       rewrite=st.booleans())
def test_targets_start_with_one_slash_and_never_climb(raw: bytes, query: bytes, strip: bool,
                                                      base: str, prefix: str | None,
                                                      rewrite: bool) -> None:
    raw = b"/api" + raw
    try:
        out = target(raw, query, strip_path=strip, base_path=base, strip_prefix=prefix,
                     rewrite=compile_rewrite("/v1/{path}", API) if rewrite else None)
    except UnsafePathError:
        assert _dot_segments(raw) or b"%5c" in raw.lower() or b"\\" in raw
        return
    path, _, q = out.partition(b"?")
    assert out.startswith(b"/") and not out.startswith(b"//")
    assert not _dot_segments(path)
    assert not re.search(rb"[\x00-\x20\x7f]", out)
    assert q == query
    if base:
        assert path.startswith(base.rstrip("/").encode() + b"/")
    # Encoded bytes survive untouched: every %XX of the raw tail is in the output.
    for escape in re.findall(rb"%[0-9A-Fa-f]{2}", raw[4:]):
        assert escape in out


@settings(deadline=None, max_examples=200)
@given(tail=st.lists(st.sampled_from(["a", "%2F", "%20", "b%2Fc", "x y".replace(" ", "%20")]),
                     min_size=1, max_size=5))
def test_encoded_slashes_and_spaces_round_trip(tail: list[str]) -> None:
    raw = ("/api/" + "/".join(tail)).encode()
    assert API.match(raw) == {"path": "/".join(tail)}
    assert target(raw, strip_path=True, base_path="/svc") == ("/svc/" + "/".join(tail)).encode()
    assert target(raw) == raw
