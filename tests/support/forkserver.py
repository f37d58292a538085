"""``velithon`` commands as child processes forked from one interpreter that has already
imported velithon.

A fresh ``python -m velithon ...`` spends about a second starting the interpreter,
importing velithon and building the argument parser before the command's own code runs;
the suite runs such commands (usage errors, ``config check``, start-ups that must fail,
servers stopped by a signal) well over a hundred times. Here one server process, started
once per test session, imports velithon and what a command has imported once its
argument parser exists, and forks a child per command. The child is what the user's
process would be from the moment its ``main`` starts: it runs the module exactly as
``python -m`` does (``runpy._run_module_as_main``, a new ``__main__`` module,
``sys.argv``, the command's folder first on ``sys.path``), in the command's folder and
environment, with stdin from ``/dev/null`` and stdout and stderr going to files, in a
session of its own if asked, and ends as the interpreter ends (``SystemExit`` codes, a
traceback and exit 1 for any other exception, non-daemon threads joined, ``atexit``
functions run, streams flushed). Its pid is real: the test signals it directly, and sees
its exit code as ``subprocess`` would (negative for a signal).

What the fork cannot show, it refuses rather than hides: the server checks that its own
imports printed nothing (a fresh process would print it on every command), the module
run must not be one the server imported (``python -m`` runs it fresh), and a command
whose ``PYTHON*`` environment differs from the server's (which shaped its start-up) is
an error. Tests of how an interpreter starts, of a custom environment, or that need the
child's output as a pipe, use real subprocesses.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

#: What the server imports before any fork: velithon, ``velithon._cli`` with what it
#: imports at its top, and ``velithon._gateway_cli``, which ``main`` imports to build the
#: argument parser before it looks at any argument: every command has imported all of
#: these by the time it does anything of its own.
PRELOAD = ("velithon._cli", "velithon._gateway_cli")
#: The modules the children run; ``python -m`` executes them afresh, so they are taken
#: out of the server's ``sys.modules`` once their imports are done.
RUNNABLE = ("velithon.__main__", "velithon._cli")


class ForkServer:
    """The test side: ``start`` is ``subprocess.Popen([python, "-m", module, *args])`` with
    stdout and stderr going to files; ``run`` runs a command to its end like
    ``subprocess.run`` with output captured as text."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="velithon-forkserver-")
        self._lock = threading.Lock()
        self._count = 0
        self._proc = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=Path(__file__).parents[2])
        ready = self._reply(60.0)
        if ready != {"ready": True}:
            raise RuntimeError(f"the fork server did not start: {ready}")

    def start(self, *args: str, module: str = "velithon", cwd: Path | None = None,
              stdout: Path, stderr: Path, new_session: bool = False) -> ForkedProcess:
        """Start ``python -m module *args`` in ``cwd`` (default: this process's folder),
        its output going to the files ``stdout`` and ``stderr``."""
        reply = self._ask({"op": "start", "module": module, "args": list(args),
                           "cwd": str(Path(cwd) if cwd is not None else Path.cwd()),
                           "env": dict(os.environ), "out": str(stdout), "err": str(stderr),
                           "new_session": new_session})
        if "pid" not in reply:
            raise RuntimeError(f"the fork server refused the command: {reply['error']}")
        return ForkedProcess(self, reply["pid"], [sys.executable, "-m", module, *args])

    def run(self, *args: str, module: str = "velithon", cwd: Path | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``python -m module *args`` in ``cwd`` to its end; kill it after ``timeout``."""
        with self._lock:
            self._count += 1
            out = Path(self._dir.name) / f"{self._count}.out"
            err = Path(self._dir.name) / f"{self._count}.err"
        proc = self.start(*args, module=module, cwd=cwd, stdout=out, stderr=err)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        result = subprocess.CompletedProcess(proc.args, code, out.read_text(), err.read_text())
        out.unlink()
        err.unlink()
        return result

    def returncode(self, pid: int) -> int | None:
        """The exit code of child ``pid`` once it has ended (it is then reaped), else None."""
        code: int | None = self._ask({"op": "poll", "pid": pid})["returncode"]
        return code

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.flush()
            return self._reply(30.0)

    def _reply(self, timeout: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"the fork server did not answer within {timeout} s")
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server exited: {self._stop()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _stop(self) -> str:
        assert self._proc.stdin is not None and self._proc.stderr is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        return self._proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        """Stop the server (it exits when its input closes) and remove the output folder."""
        self._stop()
        self._dir.cleanup()


class ForkedProcess:
    """The part of ``subprocess.Popen`` the tests use, for a child of the fork server.

    As with ``Popen``, the child is reaped only when ``poll`` or ``wait`` sees it has
    ended, and it is never signalled after that, so its pid cannot have been reused.
    """

    def __init__(self, server: ForkServer, pid: int, args: list[str]) -> None:
        self._server = server
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.returncode(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


# ---- the server process ------------------------------------------------------------------


def _preload() -> None:
    """Import what every command has imported once its argument parser is built; fail if
    that printed anything, since each real process would print it too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for name in PRELOAD:
            __import__(name)
    if out.getvalue() or err.getvalue():
        raise RuntimeError(f"importing {PRELOAD} printed:\n{out.getvalue()}{err.getvalue()}")
    for name in RUNNABLE:
        sys.modules.pop(name, None)
        package, _, attribute = name.rpartition(".")
        if package in sys.modules and hasattr(sys.modules[package], attribute):
            delattr(sys.modules[package], attribute)


def _exit_code(exc: SystemExit) -> int:
    """What the interpreter makes of ``SystemExit`` (``sys.exit(code)``)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _child(request: dict[str, Any], protocol: tuple[int, int], out: int, err: int) -> None:
    """Become the command's process, run it, and exit as the interpreter would."""
    for fd in protocol:
        os.close(fd)
    if request["new_session"]:
        os.setsid()
    stdin = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = os.getcwd()  # ``python -m``: the current folder comes first
    sys.argv = ["-m", *request["args"]]  # runpy puts the module's path in argv[0]
    sys.modules["__main__"] = types.ModuleType("__main__")
    code = 0
    try:
        runpy._run_module_as_main(request["module"])  # type: ignore[attr-defined]
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:  # the interpreter ends by the signal itself
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # the interpreter prints any other exception and exits 1
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except SystemExit as exc:
        code = _exit_code(exc)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = 120
    os._exit(code)


def _imported(module: str) -> bool:
    """Whether the code ``python -m module`` runs is already in ``sys.modules`` (for a
    package, its ``__main__``)."""
    loaded = sys.modules.get(module)
    if loaded is not None and hasattr(loaded, "__path__"):
        return f"{module}.__main__" in sys.modules
    return loaded is not None


def _start(request: dict[str, Any], protocol: tuple[int, int],
           own_env: dict[str, str]) -> dict[str, Any]:
    env = {k: v for k, v in request["env"].items() if k.startswith("PYTHON")}
    if env != own_env:
        return {"error": f"PYTHON* variables differ from the server's: {env} != {own_env}"}
    if _imported(request["module"]):
        return {"error": f"{request['module']} is already imported in the server"}
    if not os.path.isdir(request["cwd"]):
        return {"error": f"no such folder: {request['cwd']}"}
    # opened here, so that the files exist once the test hears the pid (as with Popen)
    out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    pid = os.fork()
    if pid == 0:
        try:
            _child(request, protocol, out, err)
        finally:
            os._exit(70)  # only if _child itself failed before running anything
    os.close(out)
    os.close(err)
    return {"pid": pid}


def _poll(pid: int) -> dict[str, Any]:
    done, status = os.waitpid(pid, os.WNOHANG)
    return {"returncode": os.waitstatus_to_exitcode(status) if done else None}


def _serve() -> None:
    """Answer requests (one JSON line each) until the input closes."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.dup(1)
    protocol = (requests.fileno(), replies)
    devnull = os.open(os.devnull, os.O_RDWR)  # the protocol pipes leave fds 0 and 1
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)

    def reply(message: dict[str, Any]) -> None:
        os.write(replies, json.dumps(message).encode() + b"\n")

    _preload()
    own_env = {k: v for k, v in os.environ.items() if k.startswith("PYTHON")}
    reply({"ready": True})
    for line in requests:
        request = json.loads(line)
        if request["op"] == "start":
            reply(_start(request, protocol, own_env))
        else:
            reply(_poll(request["pid"]))


if __name__ == "__main__":
    _serve()
