"""docs/config.md says what the code does: its key tables are generated from the section
classes (a missing or stale row fails here, printing the table to paste), and every TOML
example in it loads."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import attrs
import pytest

from velithon import OutlierConfig
from velithon.config import (
    AdminSection,
    ConfigFileError,
    LoggingSection,
    ProxySection,
    RouteSection,
    ServerSection,
    load_config,
)
from velithon.config._schema import field_doc

DOC = Path(__file__).parents[2] / "docs" / "config.md"
TEXT = DOC.read_text()
_WORDS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _type(next(a for a in typing.get_args(tp) if a is not type(None)))
    if origin is tuple:
        return f"list of {_type(typing.get_args(tp)[0])}s"
    if origin is dict:
        return f"table of {_type(typing.get_args(tp)[1])}s"
    if attrs.has(tp):
        return "table"
    return _WORDS[tp]


def _default(value: object) -> str:
    if value is attrs.NOTHING:
        return "required"
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    return f"`{value}`"


def table(cls: type) -> str:
    hints = typing.get_type_hints(cls)
    rows = ["| key | type | default | |", "|---|---|---|---|"]
    for field in attrs.fields(cls):
        rows.append(f"| `{field.name}` | {_type(hints[field.name])} | {_default(field.default)} "
                    f"| {field_doc(cls, field.name)} |")
    return "\n".join(rows)


@pytest.mark.parametrize("cls", [ServerSection, AdminSection, LoggingSection, RouteSection,
                                 ProxySection, OutlierConfig], ids=lambda c: c.__name__)
def test_the_doc_has_the_key_table_of_every_section(cls: type) -> None:
    assert table(cls) in TEXT, f"docs/config.md lacks or has a stale table:\n\n{table(cls)}\n"


EXAMPLES = re.findall(r"```toml\n(.*?)```", TEXT, re.DOTALL)


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.splitlines()[0][:40])
def test_every_toml_example_in_the_doc_loads(example: str) -> None:
    if example.startswith("# invalid"):
        with pytest.raises(ConfigFileError) as caught:
            load_config(example)
        shown = re.search(r"```\n(velithon: error: .*?)```",
                          TEXT[TEXT.index(example):], re.DOTALL)
        assert shown is not None
        assert [f"velithon: error: gw.toml: {issue}" for issue in caught.value.issues] == \
            shown.group(1).splitlines()
    elif "[[routes]]" in example or "[[proxies]]" in example:
        load_config(example)
    else:  # a fragment (one section): it loads as part of a file that serves something
        load_config(example + '\n[[routes]]\npath = "/"\ntargets = ["http://127.0.0.1:9001"]\n')


def test_a_file_that_serves_nothing_is_refused() -> None:
    """An editor that truncates the file mid-save must not make a reload drop every route."""
    for text in ("", "[server]\nport = 8000\n"):
        with pytest.raises(ConfigFileError, match="nothing to serve"):
            load_config(text)


def test_a_syntax_error_at_the_end_of_the_file_says_where() -> None:
    with pytest.raises(ConfigFileError) as caught:
        load_config('[[routes]]\npath = "/"\ntargets = [\n')
    assert str(caught.value.issues[0]).startswith("line 4, column 1 (end of file): invalid TOML")
