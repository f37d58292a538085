"""Leak checks: open file descriptors and sockets stuck in ``CLOSE_WAIT``.

A proxy that forgets to close a connection after its peer left keeps the socket in
``CLOSE_WAIT`` forever, and its file descriptor with it. Compare these counts before and
after a test. psutil is used when installed; otherwise ``/proc`` is read directly (Linux),
so the harness imports without it.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["close_wait_count", "open_fd_count"]

_TCP_CLOSE_WAIT = "08"  # state column of /proc/net/tcp


def _psutil() -> ModuleType | None:
    try:
        return importlib.import_module("psutil")
    except ImportError:
        return None


def open_fd_count(pid: int | None = None, *, use_psutil: bool = True) -> int:
    """How many file descriptors process ``pid`` (default: this one) has open."""
    psutil = _psutil() if use_psutil else None
    if psutil is not None:
        return int(psutil.Process(pid).num_fds())
    return len(os.listdir(f"/proc/{pid or 'self'}/fd"))


def _socket_inodes(pid: int | None) -> set[str]:
    inodes = set()
    fd_dir = f"/proc/{pid or 'self'}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:  # closed while we were listing
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _proc_close_wait(pid: int | None) -> int:
    inodes = _socket_inodes(pid)
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines, None)  # header
                for line in lines:
                    fields = line.split()
                    if fields[3] == _TCP_CLOSE_WAIT and fields[9] in inodes:
                        count += 1
        except FileNotFoundError:
            continue
    return count


def close_wait_count(pid: int | None = None, *, use_psutil: bool = True) -> int:
    """How many TCP sockets of process ``pid`` (default: this one) are in ``CLOSE_WAIT``."""
    psutil = _psutil() if use_psutil else None
    if psutil is None:
        return _proc_close_wait(pid)
    connections = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for conn in connections if conn.status == psutil.CONN_CLOSE_WAIT)
