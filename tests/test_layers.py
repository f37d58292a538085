"""The package layout is the architecture: lower layers never import higher ones.

Each private package may import only the packages listed for it (and itself). The
public modules at the top (``velithon``, ``velithon.gateway``, ``velithon._cli``, ...)
assemble the layers and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "velithon"

#: what each layer may import, besides itself
ALLOWED: dict[str, set[str]] = {
    "_types": set(),
    "_exceptions": set(),
    "_exports": set(),
    "_http11": {"_types", "_exceptions"},
    "_templates": {"_exceptions"},
    "_structured": set(),
    "_sockio": set(),
    "_logfmt": set(),
    "_access": {"_logfmt"},
    "_lb": {"_types", "_exceptions", "_structured", "_logfmt"},
    "_discovery": {"_lb", "_types", "_exceptions", "_structured", "_logfmt"},
    "_proxy": {"_lb", "_http11", "_templates", "_types", "_exceptions", "_structured",
               "_sockio", "_logfmt", "_access"},
    "server": {"_http11", "_types", "_exceptions", "_exports", "_structured", "_sockio",
               "_logfmt", "_access"},
    "_app": {"_http11", "_templates", "_types", "_exceptions", "_structured"},
    "_facades": {"_lb", "_proxy", "_app", "_http11", "_templates", "_types", "_exceptions",
                 "_structured", "_discovery"},
    "testing": {"_types", "_exports", "_structured"},
    "admin": {"_facades", "_app", "_lb", "_types", "_exceptions", "_exports", "_structured"},
    # `velithon demo`: backends, a gateway app and a traffic client built from the above
    "_demo": {"admin", "_app", "_facades", "server", "_types", "_exceptions", "_structured"},
    "config": {"_facades", "_app", "_lb", "_http11", "server", "_exceptions", "_exports",
               "_types", "_structured", "_discovery"},
}


def _layer(path: Path) -> str | None:
    parts = path.relative_to(SRC).with_suffix("").parts
    top = parts[0]
    return top if top in ALLOWED else None


def _imports(path: Path) -> set[str]:
    """The top-level velithon packages or modules that ``path`` imports."""
    tree = ast.parse(path.read_text(), str(path))
    package = path.relative_to(SRC).parent.parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = (*base, *(node.module.split(".") if node.module else ()))
                if not target:  # "from . import x" at the top: x is the module
                    target = tuple(alias.name for alias in node.names[:1])
            elif node.module and node.module.startswith("velithon."):
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            if target:
                found.add(target[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("velithon."):
                    found.add(alias.name.split(".")[1])
    return found


MODULES = sorted(p for p in SRC.rglob("*.py") if _layer(p) is not None)


def test_every_private_package_has_a_layer() -> None:
    tops = {p.name for p in SRC.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert tops - set(ALLOWED) <= {"middleware"}  # the public middleware package


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_imports_only_lower_layers(path: Path) -> None:
    layer = _layer(path)
    assert layer is not None
    wrong = _imports(path) - ALLOWED[layer] - {layer}
    assert not wrong, f"{path.relative_to(SRC)} ({layer}) must not import {sorted(wrong)}"


def test_the_contract_catches_a_violation(tmp_path: Path) -> None:
    """The checker itself works: an upward import is found."""
    probe = SRC / "_lb" / "strategies.py"
    assert "_proxy" not in _imports(probe)
    fake = tmp_path / "m.py"
    fake.write_text("from ..._proxy.pool import UpstreamPool\n")
    tree_imports = {node.module for node in ast.walk(ast.parse(fake.read_text()))
                    if isinstance(node, ast.ImportFrom)}
    assert tree_imports == {"_proxy.pool"}
