"""The examples in docs/testing.md run as written, the gateway section included."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import types
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import velithon

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


def test_the_documented_pytest_setting_runs_the_guides_tests(tmp_path: Path) -> None:
    """A fresh project with only the guide's ``trio_mode`` setting runs its first test."""
    [toml] = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    (tmp_path / "pyproject.toml").write_text(toml)
    (tmp_path / "myservice.py").write_text(SERVICE)
    (tmp_path / "test_myservice.py").write_text(TEST_BLOCKS[0])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(velithon.__file__).parents[1]), str(tmp_path)])}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b[1-9]\d* passed", result.stdout), result.stdout


BLOCK_TEST_TOOLS = """
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"pytest", "_pytest", "pytest_trio", "hypothesis", "psutil",
                                  "trustme", "hypercorn", "aiohttp"}:
            raise ImportError(f"{name} is not installed")
        return None

sys.meta_path.insert(0, Blocker())
import velithon.testing
print("imported")
"""


def test_the_harness_imports_without_the_test_tools() -> None:
    """``velithon.testing`` needs only velithon's dependencies (the extra adds pytest)."""
    result = subprocess.run([sys.executable, "-c", BLOCK_TEST_TOOLS], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.stdout.strip() == "imported", result.stderr
    extras = tomllib.loads((DOC.parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["testing"]
    assert {re.split(r"[<>=\[ ]", req)[0] for req in extras} == {"pytest", "pytest-trio"}
