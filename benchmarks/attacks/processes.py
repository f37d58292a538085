"""Subprocesses the runner owns, started so that none can outlive it.

Every child is started so that it cannot outlive the runner:

* in its own session, so a Ctrl-C in the terminal reaches only the runner, which then
  stops the children in order instead of racing them;
* with ``PR_SET_PDEATHSIG`` (Linux), so the kernel sends it SIGTERM if the runner dies
  without cleaning up (SIGKILL, an OOM kill). The signal follows the *thread* that
  forked, so children are started from the trio thread with a plain ``Popen`` (a few
  milliseconds of blocking), not from trio's worker threads, which come and go;
* registered in a :class:`ChildGroup`, whose exit terminates every child still
  running, shielded from cancellation and bounded in time.

Children write stdout and stderr to a log file; the runner waits for lines there (a
readiness line, acknowledgements), which also leaves a log to read when a run fails.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import trio

__all__ = ["Child", "ChildGroup"]

_PR_SET_PDEATHSIG = 1
_POLL = 0.02


def _die_with_parent() -> None:
    """Runs in the child before exec: ask for SIGTERM when the parent thread dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the explicit cleanup still applies
        pass


class Child:
    """One owned subprocess, logging to ``log_path``, optionally steered over stdin."""

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None,
                 control: bool = False) -> None:
        self.name = name
        self.cwd = cwd
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.control = control
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdin: trio.lowlevel.FdStream | None = None
        self._offset = 0
        self._pending = b""

    @property
    def pid(self) -> int:
        assert self._proc is not None, f"{self.name} was never started"
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Spawn the process (from the calling thread; see the module docstring)."""
        assert not self.running, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            self._offset = log.tell()
            read_end, write_end = os.pipe() if self.control else (None, None)
            try:
                self._proc = subprocess.Popen(
                    self.argv, stdin=read_end if read_end is not None else subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                    # preexec_fn is unsafe only if another thread holds a lock at fork
                    # time; the runner spawns from its trio thread with no other
                    # threads at work (trio's idle worker cache holds no locks).
                    start_new_session=True, preexec_fn=_die_with_parent,
                )
            finally:
                if read_end is not None:
                    os.close(read_end)
        self._pending = b""
        if write_end is not None:
            self._stdin = trio.lowlevel.FdStream(write_end)

    async def wait_for_line(self, prefix: str, timeout: float) -> str:
        """The first new log line starting with ``prefix``.

        Raises:
            RuntimeError: the process exited first, or ``timeout`` passed.
        """
        with trio.move_on_after(timeout):
            while True:  # bounded by the timeout
                line = self._next_line(prefix)
                if line is not None:
                    return line
                if not self.running:
                    raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
                await trio.sleep(_POLL)
        raise RuntimeError(f"{self.name}: no {prefix!r} line in {timeout} s:\n{self.log_tail()}")

    def _next_line(self, prefix: str) -> str | None:
        with self.log_path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        self._offset += len(data)
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        found = None
        for raw in lines:
            text = raw.decode("utf-8", "replace").rstrip("\r")
            if found is None and text.startswith(prefix):
                found = text
        return found

    async def send_line(self, line: str) -> None:
        """Write one control line to the child's stdin."""
        assert self._stdin is not None, f"{self.name} takes no commands"
        await self._stdin.send_all(line.encode() + b"\n")

    def log_tail(self, lines: int = 20) -> str:
        """The end of the child's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would; the process is reaped."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close_stdin()

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if the process is still there after ``timeout``."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            with trio.move_on_after(timeout):
                while self._proc.poll() is None:  # bounded by the timeout
                    await trio.sleep(_POLL)
        self.kill()

    def _close_stdin(self) -> None:
        if self._stdin is not None:
            stdin, self._stdin = self._stdin, None
            stdin.close()


class ChildGroup:
    """Children stopped together at exit, whatever ends the block."""

    def __init__(self, log_dir: Path, cwd: Path) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        self.children: list[Child] = []

    def add(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
            control: bool = False) -> Child:
        """Create (not start) a child whose log goes to ``<log_dir>/<name>.log``."""
        child = Child(name, argv, log_path=self.log_dir / f"{name}.log", env=env,
                      cwd=self.cwd, control=control)
        self.children.append(child)
        return child

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        with trio.CancelScope(shield=True):
            for child in reversed(self.children):  # the gateway before its backends
                await child.stop(timeout=5.0)
