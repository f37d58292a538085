"""Operator log lines as ``key=value`` pairs (the "logfmt" convention).

Every line an operator is expected to grep or parse — the access log, the
balancer's state-change events, the one-line summary of a request's failed
tries — is a sequence of ``key=value`` pairs separated by single spaces, in a
fixed order. A value is written bare when it is made only of
printable ASCII other than space, ``"``, ``'``, ``\\`` and ``=``; any other value
(a path with a space or a query, a probe's error text, anything a client
chose) is written as a JSON string: in double quotes, with ``"``, ``\\``, control
and non-ASCII characters escaped as JSON escapes them (``\\"``, ``\\n``,
``\\u00e9``). So a line never spans two lines, a client cannot forge a field,
and both logfmt parsers and ``shlex.split`` read it::

    import shlex
    fields = dict(pair.split("=", 1) for pair in shlex.split(line))

(``json.loads`` of a quoted value gives back the exact original text.) Absent
fields are left out rather than written as ``-``.
"""

from __future__ import annotations

import json
import re

__all__ = ["logfmt", "logfmt_value"]

_BARE = re.compile(r"[!#-&(-<>-\[\]-~]+")  # printable ASCII minus space " ' = \


def logfmt_value(value: object) -> str:
    """``value`` as it appears after ``key=``: bare when safe, else a JSON string."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, float):
        return f"{value:.3f}"
    elif isinstance(value, int):
        return str(value)
    else:
        text = str(value)
    if _BARE.fullmatch(text):
        return text
    return json.dumps(text)


def logfmt(**fields: object) -> str:
    """One line of ``key=value`` pairs in argument order; ``None`` values are left out.

    Floats are written with three decimals (milliseconds read as ``12.345``).
    """
    return " ".join(f"{key}={logfmt_value(value)}" for key, value in fields.items()
                    if value is not None)
