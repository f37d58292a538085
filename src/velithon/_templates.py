"""Path templates such as ``/users/{id:int}/{rest:path}``: one grammar, one converter table.

The app's router matches *decoded* paths and converts parameters to Python values; the
gateway matches *raw* paths and forwards the raw captures. Both read templates with
:func:`parse_template` and take each converter's pattern from :data:`CONVERTER_PATTERNS`,
so a template means the same thing, and fails with the same message, wherever it is used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from ._exceptions import ConfigError

__all__ = ["CONVERTER_PATTERNS", "Param", "Template", "parse_template"]

#: What each converter matches; ``str`` is the default, ``path`` crosses slashes.
CONVERTER_PATTERNS: Final[Mapping[str, str]] = MappingProxyType({
    "str": r"[^/]+",
    "path": r".*",
    "int": r"[0-9]+",
    "float": r"[0-9]+(?:\.[0-9]+)?",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
})

_PARAM = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen
class Param:
    """One ``{name:converter}`` placeholder."""

    name: str
    converter: str


@attrs.frozen
class Template:
    """A parsed template: literal text and parameters, in order.

    ``pieces`` alternates literal strings (possibly empty) and :class:`Param` entries,
    starting and ending with a literal.
    """

    text: str
    pieces: tuple[str | Param, ...]

    @property
    def params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.pieces if isinstance(p, Param))


def _error(template: str, why: str) -> ConfigError:
    return ConfigError(f"Invalid route path {template!r}: {why}")


def _literal(template: str, text: str) -> str:
    if "{" in text or "}" in text:
        raise _error(template, "malformed path parameter (unbalanced '{' or '}')")
    return text


def parse_template(template: str) -> Template:
    """Read a route template.

    Raises:
        ConfigError: no leading ``/``, a malformed, badly named or duplicate parameter,
            or an unknown converter; the message names the template and the problem.
    """
    if not isinstance(template, str) or not template.startswith("/"):
        raise _error(template, "a route path must be a string starting with '/'")
    pieces: list[str | Param] = []
    seen: set[str] = set()
    pos = 0
    for m in _PARAM.finditer(template):
        pieces.append(_literal(template, template[pos:m.start()]))
        name, _, converter = m.group(1).partition(":")
        converter = converter or "str"
        if not _NAME.fullmatch(name):
            raise _error(template, f"invalid path parameter name {name!r}")
        if name in seen:
            raise _error(template, f"duplicate path parameter {name!r}")
        if converter not in CONVERTER_PATTERNS:
            raise _error(template, f"unknown path converter {converter!r} "
                                   f"(use one of {', '.join(CONVERTER_PATTERNS)})")
        seen.add(name)
        pieces.append(Param(name, converter))
        pos = m.end()
    pieces.append(_literal(template, template[pos:]))
    return Template(template, tuple(pieces))
