"""Middleware: classes, specs, bind() instances, ordering, no dedup, lazy rebuilds."""

from __future__ import annotations

from typing import Any

import pytest

from velithon import Middleware, Velithon

from support.asgi_client import ASGIClient


class AddHeader:
    """A plain 'wrap the next app' middleware class."""

    builds = 0

    def __init__(self, app: Any, name: str = "x-mw", value: str = "1",
                 log: list[str] | None = None) -> None:
        type(self).builds += 1
        self.app, self.name, self.value, self.log = app, name.encode(), value.encode(), log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.log is not None:
            self.log.append(self.value.decode())

        async def send_with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (self.name, self.value)]}
            await send(message)
        await self.app(scope, receive, send_with_header)


class Tagger:
    """A pre-built middleware instance: ``bind(next_app)`` returns the ASGI app."""

    def __init__(self, tag: str, log: list[str]) -> None:
        self.tag, self.log = tag, log

    def bind(self, app: Any) -> Any:
        return AddHeader(app, "x-tag", self.tag, self.log)


def hello_app(**kwargs: Any) -> Velithon:
    app = Velithon(**kwargs)
    app.add_route("/", lambda: {"hello": "world"})
    return app


async def test_class_with_kwargs_and_instance_with_bind() -> None:
    log: list[str] = []
    app = hello_app()
    app.add_middleware(AddHeader, name="x-class", value="c")
    app.add_middleware(Tagger("t", log))
    response = await ASGIClient(app).get("/")
    assert response.json() == {"hello": "world"}
    assert response.headers["x-class"] == "c"
    assert response.headers["x-tag"] == "t"
    assert log == ["t"]


async def test_constructor_list_first_is_outermost_and_add_middleware_goes_outside() -> None:
    log: list[str] = []
    app = hello_app(middleware=[
        Middleware(AddHeader, value="outer", log=log),
        Tagger("inner", log),
    ])
    app.add_middleware(AddHeader, value="added-last", log=log)
    await ASGIClient(app).get("/")
    assert log == ["added-last", "outer", "inner"]


async def test_several_instances_of_one_class_all_apply() -> None:
    log: list[str] = []
    app = hello_app(middleware=[Tagger("a", log), Tagger("b", log)])
    app.add_middleware(AddHeader, name="x-tag", value="c", log=log)
    app.add_middleware(AddHeader, name="x-tag", value="d", log=log)
    response = await ASGIClient(app).get("/")
    assert log == ["d", "c", "a", "b"]
    assert sorted(response.headers.getlist("x-tag")) == ["a", "b", "c", "d"]


async def test_stack_is_cached_and_rebuilt_only_when_the_list_changes() -> None:
    AddHeader.builds = 0
    app = hello_app()
    app.add_middleware(AddHeader)
    client = ASGIClient(app)
    for _ in range(3):
        await client.get("/")
    assert AddHeader.builds == 1
    app.add_middleware(AddHeader, name="x-second")
    assert "x-second" in (await client.get("/")).headers
    assert AddHeader.builds == 3  # both layers rebuilt once
    app.user_middleware.clear()  # direct list edits are noticed too
    assert "x-mw" not in (await client.get("/")).headers


def test_bad_middleware_entries_fail_at_registration() -> None:
    app = Velithon()
    with pytest.raises(TypeError, match="instance with a bind\\(app\\) method; got 42"):
        app.add_middleware(42)
    with pytest.raises(TypeError, match="keyword arguments only apply to middleware classes"):
        app.add_middleware(Tagger("t", []), value="x")
    with pytest.raises(TypeError, match="got <object"):
        Velithon(middleware=[object()])
    with pytest.raises(TypeError, match="needs a middleware class"):
        Middleware("AddHeader")  # type: ignore[arg-type]
    assert app.user_middleware == []


def test_middleware_spec_repr_and_unpacking() -> None:
    spec = Middleware(AddHeader, value="v")
    assert repr(spec) == "Middleware(AddHeader, value='v')"
    cls, args, kwargs = spec
    assert (cls, args, kwargs) == (AddHeader, (), {"value": "v"})
