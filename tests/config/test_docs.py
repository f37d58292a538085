"""docs/config.md says what the code does: its key tables are generated from the section
classes (a missing or stale row fails here, printing the table to paste), every TOML
example in it loads, and its Python example serves a file as written."""

from __future__ import annotations

import os
import re
import signal
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
    TLSSection,
    load_config,
)
from velithon.config._schema import field_doc

from support.gateway import backends
from support.gateway_cli import GatewayProcess, client, config_for, served_by
from support.tls import make_certs, open_tls, serial_of

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


@pytest.mark.parametrize("cls", [ServerSection, TLSSection, AdminSection, LoggingSection,
                                 RouteSection, ProxySection, OutlierConfig],
                         ids=lambda c: c.__name__)
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


[PYTHON_EXAMPLE] = [b for b in re.findall(r"```python\n(.*?)```", TEXT, re.DOTALL)
                    if "serve(" in b]


async def test_the_python_example_serves_the_files_server_settings(tmp_path: Path) -> None:
    """Run as written next to a gateway.toml: it serves https on the file's [server] and
    [server.tls] (a relative certfile, from the current folder), and one SIGHUP reloads
    the certificate, then the file."""
    certs = make_certs(tmp_path)
    first_path, first = certs.issue("first")
    second_path, second = certs.issue("second")
    live = tmp_path / "live.pem"
    live.write_bytes(first_path.read_bytes())
    server = 'port = 0\n[server.tls]\ncertfile = "live.pem"\n'
    async with backends("a", "b") as (a, b):
        (tmp_path / "gateway.toml").write_text(config_for(a, server=server))
        gateway = GatewayProcess(tmp_path, tmp_path / "gateway.toml", (),
                                 script=PYTHON_EXAMPLE)
        try:
            url = await gateway.wait_for(r"velithon serving on (https://127\.0\.0\.1:\d+)\n")
            port = int(url.rsplit(":", 1)[1])
            context = certs.client_context()
            async with client(url, verify=context) as cl:
                assert await served_by(cl, 2) == {"a": 2}
                stream = await open_tls(port, context)
                assert stream.getpeercert()["serialNumber"] == serial_of(first)
                await stream.aclose()

                live.write_bytes(second_path.read_bytes())
                (tmp_path / "gateway.toml").write_text(config_for(b, server=server))
                os.kill(gateway.proc.pid, signal.SIGHUP)
                await gateway.wait_for("TLS certificate reloaded")
                await gateway.wait_for("INFO velithon.config: reloaded")
                assert await served_by(cl, 2) == {"b": 2}
                stream = await open_tls(port, context)
                assert stream.getpeercert()["serialNumber"] == serial_of(second)
                await stream.aclose()
            assert await gateway.stop() == 0
        finally:
            gateway.kill()
    assert "Traceback" not in gateway.err


def test_a_file_that_serves_nothing_is_refused() -> None:
    """An editor that truncates the file mid-save must not make a reload drop every route."""
    for text in ("", "[server]\nport = 8000\n"):
        with pytest.raises(ConfigFileError, match="nothing to serve"):
            load_config(text)


def test_a_syntax_error_at_the_end_of_the_file_says_where() -> None:
    with pytest.raises(ConfigFileError) as caught:
        load_config('[[routes]]\npath = "/"\ntargets = [\n')
    assert str(caught.value.issues[0]).startswith("line 4, column 1 (end of file): invalid TOML")
