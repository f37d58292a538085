"""The examples in docs/testing.md run as written, the gateway section included."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).parents[2] / "docs" / "testing.md"
HARNESS_PART = DOC.read_text().split("## Testing a gateway route")[0]
BLOCKS = re.findall(r"```python\n(.*?)```", HARNESS_PART, re.S)
SERVICE = next(block for block in BLOCKS if block.startswith("# myservice.py"))
TEST_BLOCKS = [block for block in BLOCKS if "def test_" in block]


def _calls(
    namespace: dict[str, Any],
) -> Iterator[tuple[str, Callable[..., Awaitable[None]], dict[str, Any]]]:
    """Every test function in an example, expanded over its ``parametrize`` marks."""
    for name, func in namespace.items():
        if not name.startswith("test_"):
            continue
        marks = [m for m in getattr(func, "pytestmark", []) if m.name == "parametrize"]
        if not marks:
            yield name, func, {}
            continue
        [mark] = marks
        argname, values = mark.args
        for value in values:
            yield name, func, {argname: value}


def test_the_guide_has_examples() -> None:
    assert len(TEST_BLOCKS) >= 5


@pytest.mark.parametrize("block", TEST_BLOCKS, ids=lambda b: re.findall(r"def (test_\w+)", b)[0])
async def test_example_runs(block: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service = types.ModuleType("myservice")
    exec(compile(SERVICE, "docs/testing.md:myservice", "exec"), service.__dict__)
    monkeypatch.setitem(sys.modules, "myservice", service)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(block, "docs/testing.md", "exec"), namespace)
    ran = 0
    for _, func, kwargs in _calls(namespace):
        await func(**kwargs)
        ran += 1
    assert ran >= 1


GATEWAY_PART = DOC.read_text().split("## Testing a gateway route")[1]
GATEWAY_BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", GATEWAY_PART, re.S)
                  if "def test_" in b]


@pytest.mark.parametrize("block", GATEWAY_BLOCKS,
                         ids=lambda b: re.findall(r"def (test_\w+)", b)[0])
async def test_gateway_example_runs(block: str) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_gateway_example"}
    exec(compile(block, "docs/testing.md#gateway", "exec"), namespace)
    ran = 0
    for _, func, kwargs in _calls(namespace):
        await func(**kwargs)
        ran += 1
    assert ran >= 1
