"""Routing: templates, converters, 404/405, the live ``app.routes`` list, the route protocol."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velithon import BaseRoute, Match, Request, Route, Velithon, compile_path

from support.asgi_client import ASGIClient


def test_compile_path_returns_regex_format_and_converters() -> None:
    regex, fmt, convertors = compile_path("/users/{id:int}/files/{rest:path}")
    assert fmt == "/users/{id}/files/{rest}"
    assert set(convertors) == {"id", "rest"}
    m = regex.match("/users/42/files/a/b/c.txt")
    assert m is not None
    assert convertors["id"].convert(m["id"]) == 42
    assert m["rest"] == "a/b/c.txt"
    assert regex.match("/users/42/files/a/b/c.txt/extra?") is not None  # path takes everything
    assert regex.match("/users/x/files/a") is None
    assert regex.match("/prefix/users/42/files/a") is None  # anchored
    assert regex.match("/users/42/files/a\n")["rest"] == "a\n"  # %0A decodes to a newline
    assert compile_path("/x")[0].match("/x\n") is None


@pytest.mark.parametrize("template, message", [
    ("users", "starting with '/'"),
    ("/a/{x:nope}", "unknown path converter 'nope'"),
    ("/a/{x}/{x}", "duplicate path parameter 'x'"),
    ("/a/{1x}", "invalid path parameter name"),
    ("/a/{x", "malformed"),
    ("/a/x}", "malformed"),
])
def test_compile_path_rejects_bad_templates_clearly(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_path(template)


def test_static_parts_are_literal_not_regex() -> None:
    regex, _, _ = compile_path("/v1.0/a+b")
    assert regex.match("/v1.0/a+b")
    assert not regex.match("/v1x0/aab")


_segment = st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)),
                   min_size=1, max_size=12)


@settings(deadline=None, max_examples=60)
@given(name=_segment, number=st.integers(0, 10**12), ratio=st.floats(0, 1e6),
       ident=st.uuids(), rest=st.lists(_segment, max_size=4).map("/".join))
def test_url_path_and_match_round_trip(name: str, number: int, ratio: float,
                                       ident: uuid.UUID, rest: str) -> None:
    route = Route("/a/{name}/{number:int}/{ratio:float}/{ident:uuid}/{rest:path}",
                  lambda: None)
    path = route.url_path(name=name, number=number, ratio=ratio, ident=ident, rest=rest)
    match, child = route.matches({"type": "http", "method": "GET", "path": path})
    assert match is Match.FULL
    assert child["path_params"] == {"name": name, "number": number, "ratio": ratio,
                                    "ident": ident, "rest": rest}


async def test_path_params_are_converted_and_injected_by_name() -> None:
    app = Velithon()
    seen: dict[str, Any] = {}

    @app.get("/items/{item_id:int}/{price:float}/{key:uuid}/{name}")
    async def item(item_id: int, price: float, key: uuid.UUID, name: str) -> dict[str, Any]:
        seen.update(item_id=item_id, price=price, key=key, name=name)
        return {"ok": True}

    key = uuid.uuid4()
    response = await ASGIClient(app).get(f"/items/7/2.5/{key}/bob")
    assert response.status == 200
    assert seen == {"item_id": 7, "price": 2.5, "key": key, "name": "bob"}


async def test_path_converter_crosses_slashes_and_str_does_not() -> None:
    app = Velithon()

    @app.get("/files/{path:path}")
    async def files(path: str) -> str:
        return path

    @app.get("/one/{name}")
    async def one(name: str) -> str:
        return name

    client = ASGIClient(app)
    assert (await client.get("/files/a/b/c")).text == "a/b/c"
    assert (await client.get("/files/")).text == ""
    assert (await client.get("/one/a")).text == "a"
    assert (await client.get("/one/a/b")).status == 404


async def test_matching_uses_the_decoded_path() -> None:
    app = Velithon()

    @app.get("/hello world/{name}")
    async def hello(name: str, request: Request) -> dict[str, Any]:
        return {"name": name, "raw": request.raw_path.decode()}

    client = ASGIClient(app)
    response = await client.get("/hello%20world/b%C3%B6b")
    assert response.json() == {"name": "böb", "raw": "/hello%20world/b%C3%B6b"}
    # %2F decodes to "/" before matching, so it cannot hide inside a {name} segment.
    assert (await client.get("/hello%20world/a%2Fb")).status == 404


async def test_unknown_path_is_404_json() -> None:
    response = await ASGIClient(Velithon()).get("/nowhere")
    assert response.status == 404
    assert response.json() == {"error": "Not Found", "status": 404,
                               "detail": "No route matches the requested path"}
    assert response.headers["content-type"] == "application/json"


async def test_wrong_method_is_405_with_sorted_allow_union() -> None:
    app = Velithon()
    app.add_route("/thing", lambda: "get", methods=["GET"])
    app.add_route("/thing", lambda: "put", methods=["put", "DELETE"])
    client = ASGIClient(app)
    response = await client.post("/thing")
    assert response.status == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD, PUT"
    assert response.json() == {"error": "Method Not Allowed", "status": 405,
                               "detail": "The method is not allowed for this path"}
    assert (await client.put("/thing")).text == "put"
    assert (await client.head("/thing")).status == 200


async def test_first_full_match_wins_over_earlier_partial() -> None:
    app = Velithon()
    app.add_route("/x", lambda: "first", methods=["POST"])
    app.add_route("/x", lambda: "second", methods=["GET"])
    app.add_route("/x", lambda: "third", methods=["GET"])
    assert (await ASGIClient(app).get("/x")).text == "second"


async def test_decorators_register_their_methods() -> None:
    app = Velithon()
    for verb in ("get", "post", "put", "patch", "delete", "options"):
        getattr(app, verb)(f"/{verb}")(lambda verb=verb: verb)

    @app.route("/multi", methods=["GET", "POST"])
    async def multi(request: Request) -> str:
        return request.method

    @app.head("/only-head")
    async def only_head() -> None:
        return None

    client = ASGIClient(app)
    for verb in ("get", "post", "put", "patch", "delete", "options"):
        assert (await client.request(verb.upper(), f"/{verb}")).text == verb
        assert (await client.request("TRACE", f"/{verb}")).status == 405
    assert (await client.post("/multi")).text == "POST"
    assert (await client.head("/only-head")).status == 204
    assert (await client.get("/only-head")).status == 405


async def test_routes_list_is_read_live() -> None:
    app = Velithon()
    client = ASGIClient(app)
    assert (await client.get("/late")).status == 404
    app.routes.append(Route("/late", lambda: "here"))
    assert (await client.get("/late")).text == "here"
    app.routes.extend([Route("/a", lambda: "a"), Route("/b", lambda: "b")])
    assert (await client.get("/b")).text == "b"
    app.routes.clear()
    assert (await client.get("/a")).status == 404
    app.router.routes.append(Route("/via-router", lambda: "ok"))  # upstream spelling
    assert (await client.get("/via-router")).text == "ok"


class PrefixRoute(BaseRoute):
    """A third-party route written against the protocol: serves any path under a prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.handled: list[dict[str, Any]] = []

    def matches(self, scope: dict[str, Any]) -> tuple[Match, dict[str, Any]]:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return Match.NONE, {}
        rest = scope["path"][len(self.prefix):]
        child = {"path_params": {"rest": rest}}
        return (Match.FULL if scope["method"] == "GET" else Match.PARTIAL), child

    def allowed_methods(self, scope: dict[str, Any]) -> set[str]:
        return {"GET"}

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.handled.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path_params"]["rest"].encode()})


async def test_protocol_route_gets_child_scope_merged_and_405_allow() -> None:
    route = PrefixRoute("/api/")
    app = Velithon(routes=[route])
    client = ASGIClient(app)
    response = await client.get("/api/x/y")
    assert response.body == b"x/y"
    assert route.handled[0]["path_params"] == {"rest": "x/y"}
    response = await client.delete("/api/x")
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_route_definition_errors_are_clear() -> None:
    app = Velithon()
    with pytest.raises(TypeError, match="'user_id' is neither a path parameter"):
        app.add_route("/users/{id}", lambda user_id: None)
    with pytest.raises(TypeError, match="methods must be a list"):
        app.add_route("/x", lambda: None, methods="GET")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="endpoint must be callable"):
        app.add_route("/x", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="starting with '/'"):
        app.get("x")(lambda: None)
    assert app.routes == []


def test_route_repr_is_readable() -> None:
    async def users() -> None: ...
    route = Route("/users", users, methods=["GET", "POST"])
    assert repr(route) == "Route(path='/users', name='users', methods=['GET', 'HEAD', 'POST'])"
