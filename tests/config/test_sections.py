"""The file's sections mirror the classes they configure, key for key and default for
default: a keyword added to a facade (or a field to ServerConfig) fails here until the
configuration offers it too."""

from __future__ import annotations

import inspect

import attrs
import pytest

from velithon.config import ProxySection, RouteSection, ServerSection
from velithon.config._sections import NOT_IN_FILES
from velithon.gateway import GatewayRoute
from velithon.middleware.proxy import ProxyMiddleware
from velithon.server import ServerConfig


def _normal(value: object) -> object:
    """Defaults compared as values: a facade's ``()`` and a section's tuple are alike."""
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return value


@pytest.mark.parametrize(("section", "facade", "kind"), [
    (RouteSection, GatewayRoute, "route"),
    (ProxySection, ProxyMiddleware, "proxy"),
])
def test_a_section_has_exactly_the_facades_keywords_with_their_defaults(
        section: type, facade: type, kind: str) -> None:
    parameters = {name: p for name, p in inspect.signature(facade).parameters.items()
                  if name not in NOT_IN_FILES[kind]}
    fields = {f.name: f for f in attrs.fields(section)}
    assert list(fields) == list(parameters)  # same names, same order
    for name, parameter in parameters.items():
        default = fields[name].default
        if parameter.default is inspect.Parameter.empty or (
                name == "targets" and kind == "proxy"):  # optional there, required here
            assert default is attrs.NOTHING, name
        else:
            assert _normal(default) == _normal(parameter.default), name


def test_not_in_files_lists_only_real_keywords() -> None:
    assert NOT_IN_FILES["route"] <= set(inspect.signature(GatewayRoute).parameters)
    assert NOT_IN_FILES["proxy"] <= set(inspect.signature(ProxyMiddleware).parameters)


def test_the_server_section_has_server_configs_fields_and_defaults() -> None:
    server = {f.name: f.default for f in attrs.fields(ServerConfig)}
    section = {f.name: f.default for f in attrs.fields(ServerSection)}
    assert section.pop("workers") == 1
    assert server.pop("access_log") is False  # lives in [logging]
    assert section == server
