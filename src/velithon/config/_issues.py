"""Configuration errors as a user reads them: the place, the key, what is wrong.

cattrs reports structuring failures as a tree of exception groups whose notes say
which attribute or index failed. :func:`issues_from` walks that tree and turns every
leaf into a :class:`ConfigIssue` whose ``place`` is written the way the file is
(``routes[0].weights``), with a message that names the expected type in words
(``expected a list of integers, got 'a'``) and, for an unknown key, the closest known
one. An error inside a list of plain values is reported on the list itself: the user
fixes the list, and its index adds nothing.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterator
from typing import Any

import attrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

from .._exceptions import ConfigError

__all__ = ["ConfigFileError", "ConfigIssue", "WrongType", "describe_type", "issues_from", "shown",
           "unknown_key", "validator_issue"]


@attrs.frozen
class ConfigIssue:
    """One problem in a configuration: where (``routes[1].weights``) and what."""

    place: str
    message: str

    def __str__(self) -> str:
        return f"{self.place}: {self.message}" if self.place else self.message


class ConfigFileError(ConfigError):
    """A configuration file that cannot be used; ``issues`` lists every problem found.

    ``str()`` is one issue per line, each prefixed with the file's name when known.
    """

    def __init__(self, issues: typing.Sequence[ConfigIssue], *, source: str = "") -> None:
        self.issues = tuple(issues)
        self.source = source
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per issue: ``FILE: place: message``."""
        prefix = f"{self.source}: " if self.source else ""
        return [f"{prefix}{issue}" for issue in self.issues]


class WrongType(TypeError):
    """A value of the wrong type; ``expected`` is in words ("an integer")."""

    def __init__(self, expected: str, value: object) -> None:
        self.expected = expected
        self.value = value
        super().__init__(f"expected {expected}, got {shown(value)}")


def shown(value: object) -> str:
    """A value as TOML would write it, shortened."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = "an array"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_PLURALS = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}


def describe_type(tp: Any) -> str:
    """``list[int]`` → "a list of integers", ``X | None`` → what ``X`` is, a class → "a table"."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(describe_type(m) for m in members)
    if origin in (tuple, list):
        item = typing.get_args(tp)[0]
        if attrs.has(item):
            return "an array of tables"
        return f"a list of {_PLURALS.get(item, 'values')}"
    if origin is dict:
        return f"a table of {_PLURALS.get(typing.get_args(tp)[1], 'values')}"
    if attrs.has(tp):
        return "a table"
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def unknown_key(place: str, key: str, known: typing.Iterable[str]) -> ConfigIssue:
    """``routes[0].wieghts: unknown key (did you mean 'weights'?)``."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigIssue(_join(place, key), f"unknown key{hint}")


def _join(place: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{place}[{key}]"
    return f"{place}.{key}" if place else key


def issues_from(exc: BaseException, place: str, cls: Any) -> Iterator[ConfigIssue]:
    """Every leaf of a cattrs structuring failure for ``cls`` at ``place``."""
    if isinstance(exc, ClassValidationError):
        with_notes, others = exc.group_exceptions()
        for sub, note in with_notes:
            yield from _attribute_issue(sub, note, place)
        for sub in others:
            yield from issues_from(sub, place, exc.cl)
    elif isinstance(exc, IterableValidationError):
        items, others = exc.group_exceptions()
        item = _item_type(cls)
        for sub, item_note in items:
            if attrs.has(item):
                yield from issues_from(sub, _join(place, item_note.index), item)
            else:  # a plain value in a list or table: the list is what to fix
                value = sub.value if isinstance(sub, WrongType) else None
                yield ConfigIssue(place, f"expected {describe_type(cls)}, got {shown(value)}")
                return
        for sub in others:
            yield from issues_from(sub, place, cls)
    elif isinstance(exc, ForbiddenExtraKeysError):
        known = [f.name for f in attrs.fields(exc.cl)]
        for key in sorted(exc.extra_fields):
            yield unknown_key(place, key, known)
    elif isinstance(exc, KeyError):
        yield ConfigIssue(place, "required key missing")
    elif isinstance(exc, WrongType):
        yield ConfigIssue(place, str(exc))
    else:  # a validator of the class itself (OutlierConfig's ranges, ...)
        yield validator_issue(str(exc), place, cls)


def _attribute_issue(sub: BaseException, note: AttributeValidationNote,
                     place: str) -> Iterator[ConfigIssue]:
    inner = _join(place, note.name)
    if isinstance(sub, KeyError):
        yield ConfigIssue(inner, "required key missing")
    else:
        yield from issues_from(sub, inner, note.type)


def _item_type(declared: Any) -> Any:
    """The element type of the list (or table) ``declared`` (``X | None`` unwrapped)."""
    origin = typing.get_origin(declared)
    if origin in (typing.Union, types.UnionType):
        declared = next(a for a in typing.get_args(declared) if a is not type(None))
        origin = typing.get_origin(declared)
    args = typing.get_args(declared)
    if origin is dict:
        return args[1]
    return args[0] if args else object


def validator_issue(message: str, place: str, cls: Any) -> ConfigIssue:
    """Attach a validator's message to the key it names (``interval must be ...``)."""
    if attrs.has(cls):
        names = "|".join(re.escape(f.name) for f in attrs.fields(cls))
        match = re.match(rf"(?:\w+\.)?({names}):?\s+(.*)", message, re.DOTALL)
        if match:
            return ConfigIssue(_join(place, match.group(1)), match.group(2))
    return ConfigIssue(place, message)
