"""``velithon status URL``: a running gateway's routes and targets as a table.

It reads ``{admin}/status`` with httpx. ``URL`` may be the gateway's base URL
(``http://host:8000``: the admin surface is looked for at ``/_velithon``), an admin
mount point (``http://host:8000/ops``) or the status URL itself (ending in
``/status``). A URL without a scheme gets ``http://``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

DEFAULT_PATH = "/_velithon"


class StatusUsageError(ValueError):
    """The URL given on the command line cannot be a gateway's URL."""


class StatusFetchError(Exception):
    """The gateway could not be reached, or did not answer with a status document."""


def status_url(given: str) -> str:
    """The status URL for what the user typed (see the module docstring)."""
    text = given.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise StatusUsageError(f"unsupported URL scheme {parts.scheme!r} in {given!r}: "
                               "use http:// or https://")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise StatusUsageError(f"invalid port in {given!r}") from None
    if not parts.hostname:
        raise StatusUsageError(f"no host in {given!r}: expected e.g. http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    if not path.endswith("/status"):
        path = (path or DEFAULT_PATH) + "/status"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def fetch_status(url: str, *, timeout: float) -> dict[str, Any]:
    """GET the status document; every failure is one readable line."""
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=False)
    except httpx.TimeoutException:
        raise StatusFetchError(f"{url} did not answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise StatusFetchError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    if response.status_code != 200:
        hint = (" (is the admin surface mounted there? mount_admin(app))"
                if response.status_code == 404 else "")
        raise StatusFetchError(f"{url} answered {response.status_code}{hint}")
    try:
        doc = response.json()
    except ValueError:
        raise StatusFetchError(f"{url} did not answer with JSON") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("routes"), list)
            and isinstance(doc.get("proxies"), list)):
        raise StatusFetchError(f"{url} did not answer with a velithon status document")
    return doc


_COLUMNS = ("TARGET", "HEALTH", "BREAKER", "IN-FLIGHT", "REQUESTS", "FAILURES", "LATENCY",
            "WEIGHT", "NOTE")
_RIGHT = {"IN-FLIGHT", "REQUESTS", "FAILURES", "LATENCY", "WEIGHT"}


def _row(target: dict[str, Any]) -> list[str]:
    notes = [name for name in ("draining", "ejected") if target.get(name)]
    latency = target.get("latency_ms")
    return [
        str(target.get("url", "?")),
        "healthy" if target.get("healthy") else "UNHEALTHY",
        str(target.get("breaker_state", "?")).replace("_", "-"),
        str(target.get("in_flight", 0)),
        str(target.get("requests", 0)),
        str(target.get("failures", 0)),
        f"{latency:.1f} ms" if isinstance(latency, (int, float)) else "-",
        str(target.get("weight", "")),
        ", ".join(notes),
    ]


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in (_COLUMNS, *rows)) for i in range(len(_COLUMNS))]
    lines = []
    for row in (_COLUMNS, *rows):
        cells = [cell.rjust(w) if name in _RIGHT else cell.ljust(w)
                 for name, cell, w in zip(_COLUMNS, row, widths, strict=True)]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def render_table(doc: dict[str, Any]) -> str:
    """The status document as text: a heading per route or proxy, a row per target."""
    blocks = []
    for kind, entries in (("route", doc["routes"]), ("proxy", doc["proxies"])):
        for entry in entries:
            targets = entry.get("targets") or []
            healthy = sum(1 for t in targets if t.get("healthy"))
            heading = (f"{entry.get('route', '?')}  {kind} · {entry.get('strategy', '?')} · "
                       f"{healthy}/{len(targets)} healthy · {entry.get('retries', 0)} retries")
            if entry.get("panicking"):
                heading += " · PANIC MODE"
            blocks.append("\n".join([heading, *_table([_row(t) for t in targets])]))
    if not blocks:
        return "no load-balanced routes or proxies"
    return "\n\n".join(blocks)
