"""docs/discovery.md says what the code does: its examples run, its outputs are real."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest

from velithon import ProxyLoadBalancer
from velithon._discovery.files import parse_file_sd
from velithon._http11 import error_body
from velithon.gateway import GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware

DOC = (Path(__file__).parents[2] / "docs" / "discovery.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.S)


def test_the_configuration_examples_build() -> None:
    built = 0
    for block in blocks("python"):
        if "def test_" in block:
            continue
        namespace: dict[str, Any] = {}
        exec(compile(block, "docs/discovery.md", "exec"), namespace)
        built += 1
    assert built == 3


async def test_the_testing_example_runs() -> None:
    [block] = [b for b in blocks("python") if "def test_" in b]
    namespace: dict[str, Any] = {"__name__": "docs_discovery_example"}
    exec(compile(block, "docs/discovery.md#testing", "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_")]
    assert len(tests) == 1
    await tests[0]()


def test_the_json_examples() -> None:
    file_sd, error, consul = blocks("json")
    assert parse_file_sd(file_sd.encode()) == (
        ("http://10.0.0.1:8080", 3), ("http://10.0.0.2:8080", 3), ("https://10.0.0.3:8443", 1))
    assert json.loads(error) == json.loads(error_body(
        503, "No targets yet: none configured, or none discovered so far"))
    assert json.loads(consul)["service"]["name"] == "api"


def test_the_refusal_shown_is_the_real_message() -> None:
    [shown] = re.findall(r"^(velithon\.ConfigError: .*)$", DOC, re.M)
    kind, _, message = shown.partition(": ")
    with pytest.raises(Exception) as caught:
        GatewayRoute("/api/{path:path}", "https+dns://api.internal")
    assert f"{type(caught.value).__module__}.{type(caught.value).__name__}" == kind
    assert str(caught.value) == message


def test_the_kubernetes_manifests_parse() -> None:
    yaml = pytest.importorskip("yaml")
    [manifests] = blocks("yaml")
    kinds = [doc["kind"] for doc in yaml.safe_load_all(manifests)]
    assert kinds == ["Deployment", "Service", "Deployment", "Service"]


@pytest.mark.parametrize("facade", [GatewayRoute, ProxyMiddleware, ProxyLoadBalancer])
def test_the_options_table_shows_the_real_defaults(facade: type) -> None:
    parameters = inspect.signature(facade).parameters
    for keyword in ("dns_nameservers", "dns_refresh", "dns_timeout", "file_refresh"):
        row = re.search(rf"^\| `{keyword}` \| `([^`]*)` \|", DOC, re.M)
        assert row is not None, keyword
        assert row[1] == repr(parameters[keyword].default)
