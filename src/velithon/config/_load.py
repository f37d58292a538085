"""Reading a configuration file: TOML in, a validated :class:`GatewayConfig` out.

Three passes, each reporting every problem it finds rather than the first:

1. ``tomllib`` parses the text (a syntax error is reported with its line and column,
   and stops here);
2. cattrs structures each section into its attrs class, with strict types: ``port =
   "80"`` is an error, not a conversion, and an unknown key is an error that names the
   closest known one;
3. every route and proxy is built as the facade it describes, so each check the
   facade makes at construction (strategy names, weights against targets, URLs, ...)
   is reported at the section's place (``routes[0]: ...``); the server settings are
   checked by building a ``ServerConfig``, and names that reload relies on must be
   unique.

Nothing is started: building a facade only creates its state.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn

from ._issues import (
    ConfigFileError,
    ConfigIssue,
    WrongType,
    describe_type,
    issues_from,
    shown,
    unknown_key,
    validator_issue,
)
from ._schema import LOG_LEVELS
from ._sections import (
    AdminSection,
    GatewayConfig,
    LoggingSection,
    ProxySection,
    RouteSection,
    ServerSection,
    TLSSection,
)

__all__ = ["load_config", "load_config_file"]

_T = TypeVar("_T")
_S = TypeVar("_S", RouteSection, ProxySection)
_SECTIONS: dict[str, type] = {"server": ServerSection, "admin": AdminSection,
                              "logging": LoggingSection}
_ARRAYS: dict[str, type] = {"routes": RouteSection, "proxies": ProxySection}
_TOP_KEYS = (*_SECTIONS, *_ARRAYS)
#: keys people look for in the wrong section
_MOVED = {
    f"server.{key}: unknown key": ConfigIssue(f"server.{key}", f"unknown key (it is {where})")
    for key, where in (("access_log", "[logging] access_log"),
                       ("log_level", "[logging] level"), ("level", "[logging] level"))
}


def _scalar(tp: type) -> Callable[[object, object], object]:
    accepted: tuple[type, ...] = (int, float) if tp is float else (tp,)
    expected = describe_type(tp)

    def structure(value: object, _: object) -> object:
        if type(value) not in accepted:  # type(): a bool is not an integer here
            raise WrongType(expected, value)
        return tp(value)

    return structure


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def _is_dict(tp: Any) -> bool:
    return typing.get_origin(tp) is dict


def _elements(converter: cattrs.Converter, tp: Any, items: Sequence[tuple[Any, object]],
              item_type: Any) -> list[object]:
    """Structure each item, collecting every failure with its index (as cattrs does)."""
    out: list[object] = []
    errors: list[Exception] = []
    for index, value in items:
        try:
            out.append(converter.structure(value, item_type))
        except Exception as exc:
            exc.add_note(IterableValidationNote(f"Structuring {tp} @ index {index!r}",
                                                index, item_type))
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
    return out


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    for tp in (str, int, float, bool):
        converter.register_structure_hook(tp, _scalar(tp))

    def tuple_hook(tp: Any) -> Callable[[object, object], object]:
        item_type = typing.get_args(tp)[0]

        def structure(value: object, _: object) -> object:
            if not isinstance(value, list):
                raise WrongType(describe_type(tp), value)
            return tuple(_elements(converter, tp, list(enumerate(value)), item_type))

        return structure

    def dict_hook(tp: Any) -> Callable[[object, object], object]:
        value_type = typing.get_args(tp)[1]

        def structure(value: object, _: object) -> object:
            if not isinstance(value, dict):
                raise WrongType(describe_type(tp), value)
            values = _elements(converter, tp, list(value.items()), value_type)
            return dict(zip(value, values, strict=True))

        return structure

    def class_hook(cls: Any) -> Callable[[object, object], object]:
        generated = make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True)

        def structure(value: object, _: object) -> object:
            if not isinstance(value, dict):
                raise WrongType("a table", value)
            return generated(value, cls)

        return structure

    converter.register_structure_hook_factory(_is_tuple, tuple_hook)
    converter.register_structure_hook_factory(_is_dict, dict_hook)
    converter.register_structure_hook_factory(attrs.has, class_hook)
    return converter


_CONVERTER = _make_converter()


def _structure(value: object, cls: type[_T], place: str, issues: list[ConfigIssue]) -> _T | None:
    try:
        return _CONVERTER.structure(value, cls)
    except Exception as exc:
        issues.extend(issues_from(exc, place, cls))
        return None


def _toml_issue(exc: tomllib.TOMLDecodeError, source_text: str) -> ConfigIssue:
    text = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    if match is None:
        end = re.search(r"\s*\(at end of document\)$", text)
        if end is None:
            return ConfigIssue("", f"invalid TOML: {text}")
        # the error is where the file ends: say which line and column that is
        lines = source_text.split("\n")
        reason = text[: end.start()]
        return ConfigIssue(f"line {len(lines)}, column {len(lines[-1]) + 1} (end of file)",
                           f"invalid TOML: {reason[:1].lower()}{reason[1:]}")
    reason = text[: match.start()]
    return ConfigIssue(f"line {match.group(1)}, column {match.group(2)}",
                       f"invalid TOML: {reason[:1].lower()}{reason[1:]}")


def load_config(text: str, *, source: str = "") -> GatewayConfig:
    """Parse and validate a configuration given as TOML text.

    ``source`` (a file name) prefixes each line of the error message.

    Raises:
        ConfigFileError: every problem found, each with its place.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError([_toml_issue(exc, text)], source=source) from None
    issues: list[ConfigIssue] = []
    for key in data:
        if key not in _TOP_KEYS:
            issues.append(unknown_key("", key, _TOP_KEYS))
    values: dict[str, Any] = {}
    for key, cls in _SECTIONS.items():
        if key in data:
            values[key] = _structure(data[key], cls, key, issues)
    for key, cls in _ARRAYS.items():
        values[key] = _array(data.get(key, []), key, cls, issues)
    _check_sections(values, issues)
    if not issues and not data.get("routes") and not data.get("proxies"):
        # an empty file is most often one an editor truncated mid-save: applied as a
        # reload, it would remove every route
        issues.append(ConfigIssue("", "nothing to serve: add at least one [[routes]] or "
                                      "[[proxies]] table"))
    if issues:
        issues = [_MOVED.get(str(issue), issue) for issue in issues]
        issues.sort(key=lambda issue: _file_order(data, issue.place))
        raise ConfigFileError(issues, source=source)
    return GatewayConfig(**{k: v for k, v in values.items() if v is not None})


_PLACE_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _file_order(data: object, place: str) -> tuple[int, ...]:
    """Where ``place`` is in the file, so issues are listed top to bottom (a key the
    file lacks, like a missing required one, sorts last in its table)."""
    order: list[int] = []
    for match in _PLACE_PART.finditer(place):
        key: str | int = match.group(1) if match.group(2) is None else int(match.group(2))
        if isinstance(data, dict) and key in data:
            order.append(list(data).index(key))
            data = data[key]
        elif isinstance(data, list) and isinstance(key, int) and key < len(data):
            order.append(key)
            data = data[key]
        else:
            order.append(1 << 30)
            break
    return tuple(order)


def load_config_file(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate the configuration file at ``path``.

    Raises:
        ConfigFileError: the file cannot be read, or every problem found in it.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise ConfigFileError([ConfigIssue("", f"cannot read the file: "
                                               f"{exc.strerror or exc}")],
                              source=source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError([ConfigIssue("", f"not UTF-8 text (byte {exc.start})")],
                              source=source) from None
    return load_config(text, source=source)


def _array(value: object, key: str, cls: type[_S], issues: list[ConfigIssue]
           ) -> tuple[_S, ...] | None:
    if not isinstance(value, list):
        issues.append(ConfigIssue(key, f"expected an array of tables ([[{key}]]), "
                                       f"got {shown(value)}"))
        return None
    sections: list[_S] = []
    for index, item in enumerate(value):
        place = f"{key}[{index}]"
        section = _structure(item, cls, place, issues)
        if section is None:
            continue
        try:
            section.build()
        except (ValueError, TypeError) as exc:
            issues.append(ConfigIssue(place, str(exc)))
            continue
        sections.append(section)
    return tuple(sections) if len(sections) == len(value) else None


def _each_server_error(server: ServerSection) -> list[str]:
    """What ``ServerConfig`` refuses in each ``[server]`` key alone, in key order.

    Its checks stop at the first bad value; a file's user wants every one at once. A
    refusal that only a combination of keys causes is found by none of these tries
    (the caller then reports the combined one).
    """
    messages = []
    for field in attrs.fields(ServerSection):
        if field.name == "workers" or getattr(server, field.name) == field.default:
            continue
        alone = ServerSection(**{field.name: getattr(server, field.name)})
        try:
            alone.server_config()
        except ValueError as exc:
            messages.append(str(exc))
    return messages


def _check_sections(values: dict[str, Any], issues: list[ConfigIssue]) -> None:
    server: ServerSection | None = values.get("server")
    if server is not None:
        if server.workers < 1:
            issues.append(ConfigIssue("server.workers", f"must be >= 1, got {server.workers}"))
        try:
            server.server_config()
        except ValueError as exc:  # ServerConfig names its tls settings "tls.<key>"
            for message in _each_server_error(server) or [str(exc)]:
                if message.startswith("tls."):
                    issues.append(validator_issue(message, "server.tls", TLSSection))
                else:
                    issues.append(validator_issue(message, "server", ServerSection))
    admin: AdminSection | None = values.get("admin")
    if admin is not None:  # the rules of mount_admin, checked before anything starts
        if not admin.path.startswith("/") or any(c in admin.path for c in "?#"):
            issues.append(ConfigIssue("admin.path", f"must be a path starting with '/', "
                                                    f"got {admin.path!r}"))
        elif not admin.path.rstrip("/"):
            issues.append(ConfigIssue("admin.path", "cannot be '/': it would hide every route"))
        if admin.token is not None and (not admin.token.strip()
                                        or admin.token != admin.token.strip()):
            issues.append(ConfigIssue("admin.token", "must be non-empty, without surrounding "
                                                     "spaces (leave it out for read-only)"))
    logging: LoggingSection | None = values.get("logging")
    if logging is not None and logging.level.lower() not in LOG_LEVELS:
        issues.append(ConfigIssue("logging.level", f"must be one of {', '.join(LOG_LEVELS)}, "
                                                   f"got {logging.level!r}"))
    routes: Sequence[RouteSection] = values.get("routes") or ()
    for index, first in _repeats([r.key for r in routes]):
        field = "name" if routes[index].name else "path"
        issues.append(ConfigIssue(
            f"routes[{index}].{field}",
            f"same route name as routes[{first}] ({routes[index].key!r}): reload tells "
            "routes apart by name, so give each a distinct name"))
    proxies: Sequence[ProxySection] = values.get("proxies") or ()
    for index, first in _repeats([p.key for p in proxies]):
        issues.append(ConfigIssue(
            f"proxies[{index}].path_prefix",
            f"same path_prefix as proxies[{first}] ({proxies[index].key!r}): the second "
            "would never see a request"))


def _repeats(keys: Sequence[str]) -> list[tuple[int, int]]:
    """``(index, index of the first with the same key)`` for every repeated key."""
    seen: dict[str, int] = {}
    repeats = []
    for index, key in enumerate(keys):
        first = seen.setdefault(key, index)
        if first != index:
            repeats.append((index, first))
    return repeats
