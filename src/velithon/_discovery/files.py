"""Targets from a watched file in Prometheus ``file_sd`` format (JSON).

::

    [
      {"targets": ["10.0.0.1:8080", "10.0.0.2:8080"], "labels": {"weight": "3"}},
      {"targets": ["10.0.0.3:8443"], "labels": {"scheme": "https"}}
    ]

Each group's ``targets`` are ``host:port`` (``[v6]:port``; the port defaults to 80,
or 443 for https). Labels, all optional: ``weight`` (an integer >= 1, as a string
like Prometheus labels or as a number) and ``scheme`` (``http`` or ``https``;
Prometheus's own ``__scheme__`` works too). Other labels are ignored, so a file
shared with Prometheus works as it is.

The file is polled every ``file_refresh`` seconds: its size, modification time and
inode are compared with the last poll, and its content is re-read when they
changed (and every :data:`FULL_READ_EVERY` polls regardless, for edits that keep
both size and timestamp). A new content is applied; the same content changes
nothing. A missing, unreadable, oversized or invalid file is a failed lookup: the
last good set stays. Write the file atomically (write a temporary file, then
rename it over the old one) so a half-written file is never seen.
"""

from __future__ import annotations

import json
import re
import stat
from typing import Any

import attrs
import trio

from .._lb.discovery import Discovered, DiscoveryError, Lookup

__all__ = ["FULL_READ_EVERY", "MAX_FILE_SIZE", "FileSource", "parse_file_sd"]

#: a file larger than this is refused (a target list, not a data set)
MAX_FILE_SIZE = 1 << 20
#: polls between unconditional re-reads
FULL_READ_EVERY = 10

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")


@attrs.frozen
class FileSource:
    """A ``file://`` target source (built by ``specs.parse_source``)."""

    name: str
    path: str  # absolute
    weight: int | None = None  # every target's weight, instead of the labels
    refresh: float = 1.0

    kind = "file"

    @property
    def timeout(self) -> float:
        return 5.0  # a local file read; only a stuck filesystem takes this long

    def refresh_after(self, ttl: float | None) -> float:
        return self.refresh

    def retry_after(self, failures: int) -> float:
        return self.refresh

    def open(self) -> Lookup:
        return _FileLookup(self)


class _FileLookup:
    """Polls one file; remembers what it read last so unchanged polls cost a stat."""

    def __init__(self, source: FileSource) -> None:
        self.source = source
        self._stamp: tuple[int, int, int] | None = None
        self._content: bytes | None = None
        self._result: Discovered | None = None
        self._polls = 0

    async def __call__(self) -> Discovered:
        path = trio.Path(self.source.path)
        try:
            st = await path.stat()
        except OSError as exc:
            raise DiscoveryError(f"{self.source.path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode):
            # a device (/dev/zero) or a FIFO has no size to check and may never end or
            # block the read forever: only regular files are target lists
            raise DiscoveryError(f"{self.source.path}: not a regular file")
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        self._polls += 1
        if (self._result is not None and stamp == self._stamp
                and self._polls % FULL_READ_EVERY):
            return self._result
        if st.st_size > MAX_FILE_SIZE:
            raise DiscoveryError(f"{self.source.path}: {st.st_size} bytes is over the "
                                 f"{MAX_FILE_SIZE}-byte limit")
        try:
            content = await path.read_bytes()
        except OSError as exc:
            raise DiscoveryError(f"{self.source.path}: {exc.strerror or exc}") from None
        if self._result is not None and content == self._content:
            self._stamp = stamp
            return self._result
        # parsed before the stamp is kept: a broken file stays a failure on every poll
        # until it changes, rather than passing for the last good one on the next
        result = Discovered(parse_file_sd(content, self.source.path, self.source.weight))
        self._stamp, self._content, self._result = stamp, content, result
        return result


def parse_file_sd(content: bytes, where: str = "file_sd",
                  weight: int | None = None) -> tuple[tuple[str, int], ...]:
    """``file_sd`` JSON -> ``(url, weight)`` pairs; :class:`DiscoveryError` says what is wrong.

    ``weight``, when given, replaces every ``weight`` label.
    """
    try:
        groups = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DiscoveryError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(groups, list):
        raise DiscoveryError(f"{where}: expected a JSON list of target groups, "
                             f"got {type(groups).__name__}")
    targets: list[tuple[str, int]] = []
    for i, group in enumerate(groups):
        place = f"{where}: [{i}]"
        if not isinstance(group, dict):
            raise DiscoveryError(f"{place}: expected an object with 'targets', "
                                 f"got {type(group).__name__}")
        hosts = group.get("targets")
        labels = group.get("labels", {})
        if not isinstance(hosts, list):
            raise DiscoveryError(f"{place}.targets: expected a list of 'host:port' strings")
        if not isinstance(labels, dict):
            raise DiscoveryError(f"{place}.labels: expected an object")
        scheme = _scheme(labels, place)
        group_weight = weight if weight is not None else _weight(labels, place)
        for j, host in enumerate(hosts):
            targets.append((_url(host, scheme, f"{place}.targets[{j}]"), group_weight))
    return tuple(targets)


def _scheme(labels: dict[str, Any], place: str) -> str:
    scheme = labels.get("scheme", labels.get("__scheme__", "http"))
    if scheme not in _DEFAULT_PORTS:
        raise DiscoveryError(f"{place}.labels.scheme: expected 'http' or 'https', got {scheme!r}")
    return str(scheme)


def _weight(labels: dict[str, Any], place: str) -> int:
    raw = labels.get("weight", 1)
    if isinstance(raw, str) and raw.strip().isdigit():
        value: object = int(raw)
    else:
        value = raw
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DiscoveryError(f"{place}.labels.weight: expected an integer >= 1, got {raw!r}")
    return value


def _url(host: object, scheme: str, place: str) -> str:
    match = _HOST_PORT.fullmatch(host) if isinstance(host, str) else None
    if match is None:
        raise DiscoveryError(f"{place}: expected 'host:port' (or '[v6]:port'), got {host!r}")
    port = int(match["port"]) if match["port"] else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise DiscoveryError(f"{place}: invalid port {port} (expected 1-65535)")
    name = match["host"].lower()
    authority = name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"
    return f"{scheme}://{authority}"
