"""A named pipe that holds a process at a known point of its start-up: the process opens
it to read (an app module at import, a configuration file) and blocks until the test has
done what it must while the process waits there (send a signal), then writes the content.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

LIMIT = 30.0  # seconds: how long the process may take to reach the pipe


@contextmanager
def held_at(fifo: Path, proc: subprocess.Popen[bytes] | subprocess.Popen[str],
            content: str = "") -> Iterator[None]:
    """Wait until ``proc`` has ``fifo`` open for reading, and keep it waiting there for the
    body of the ``with``; then write ``content`` and close, so its read returns."""
    deadline = time.monotonic() + LIMIT
    while True:
        try:  # without a reader, a non-blocking open for writing fails with ENXIO
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the process never opened {fifo} (exit {proc.poll()})")
        time.sleep(0.01)
    try:
        yield
        os.set_blocking(fd, True)
        os.write(fd, content.encode())
    finally:
        os.close(fd)
