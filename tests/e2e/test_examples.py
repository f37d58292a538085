"""The example apps in examples/ run as their docstrings say."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from support.gateway import backends, client, served_by, serving

sys.path.insert(0, str(Path(__file__).parents[2]))


async def test_hello_example_serves_its_routes() -> None:
    hello = importlib.import_module("examples.hello")
    async with serving(hello.app) as url, client(url) as c:
        assert (await c.get("/")).json() == {"message": "Hello, World!"}
        assert (await c.get("/users/42")).status_code == 200


async def test_gateway_example_balances_and_monitors(monkeypatch: pytest.MonkeyPatch) -> None:
    async with backends("one", "two") as (one, two):
        monkeypatch.setenv("BACKENDS", f"{one.url},{two.url}")
        sys.modules.pop("examples.gateway", None)
        example = importlib.import_module("examples.gateway")
        async with serving(example.app) as url, client(url) as c:
            assert await served_by(c, "/api/items", 4) == ["one", "two"] * 2
            health = (await c.get("/gateway/health")).json()
            assert health == {
                "status": "healthy",
                "backends": {"gateway_/api/{path:path}": [[one.url, True], [two.url, True]]},
            }
            targets = (await c.get("/gateway/targets")).json()
            assert [t["requests"] for t in targets] == [2, 2]
