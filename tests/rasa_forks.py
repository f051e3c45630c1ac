"""Commands of the Rasa environment (``python -m bot.corrections …``, ``python -c …``) run from
one process that has imported Rasa already: each run is a fork of it, so it starts as a fresh
process would — its own working folder, environment, arguments, stdout and stderr, exit code —
without the five seconds Rasa's imports take (most of a corrections writer's run in the tests).

The same file is both sides: the tests (Python 3.11) use ``RasaForks``; it starts this file under
the Rasa environment's Python 3.10 as the server, which answers one request at a time on
stdin/stdout (a JSON line each way). The CLI's own start (argument parsing, logging set-up, the
``__main__`` module) still runs in every fork; only the imports are shared.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Sequence

# What a corrections writer's run imports, loaded once by the server before any fork.
PRELOAD = ("bot.corrections.writer", "bot.corrections.gate", "rasa.validator",
           "rasa.core.policies.rule_policy", "rasa.engine.graph",
           "rasa.engine.storage.local_model_storage", "rasa.shared.core.generator",
           "rasa.model_training")


class RasaForks:
    """A fork server in the Rasa environment; ``run`` is ``subprocess.run`` for its commands."""

    def __init__(self, python: Path, env: Dict[str, str], cwd: Path) -> None:
        self._lock = threading.Lock()
        self._server = subprocess.Popen(
            [str(python), __file__, *PRELOAD], cwd=cwd, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, bufsize=1)
        self._lines: queue.Queue[str] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        ready = self._read(timeout=300)
        if ready.get("ready") is not True:
            raise RuntimeError(f"the Rasa fork server did not start: {ready}")

    def _pump(self) -> None:
        assert self._server.stdout is not None
        for line in self._server.stdout:
            self._lines.put(line)
        self._lines.put("")  # the server ended

    def _read(self, timeout: float) -> Dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise subprocess.TimeoutExpired("rasa fork server", timeout) from None
        if not line:
            raise RuntimeError(f"the Rasa fork server ended (exit {self._server.poll()})")
        value: Dict[str, Any] = json.loads(line)
        return value

    def run(self, args: Sequence[str], *, cwd: Path, env: Dict[str, str],
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``args`` as after ``python``: ``["-m", module, ...]`` or ``["-c", code]``."""
        with self._lock, tempfile.TemporaryDirectory(prefix="rasa-fork-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            request = {"args": list(args), "cwd": str(cwd), "env": env, "stdout": str(out),
                       "stderr": str(err)}
            assert self._server.stdin is not None
            self._server.stdin.write(json.dumps(request) + "\n")
            self._server.stdin.flush()
            pid = int(self._read(timeout=30)["pid"])
            try:
                returncode = int(self._read(timeout=timeout)["returncode"])
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._read(timeout=30)
                raise
            return subprocess.CompletedProcess(["python", *args], returncode,
                                               out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))

    def close(self) -> None:
        if self._server.poll() is None:
            assert self._server.stdin is not None
            self._server.stdin.close()
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        self._pump_thread.join(timeout=30)
        assert self._server.stdout is not None
        self._server.stdout.close()


_SHARED: list[RasaForks] = []


def shared(python: Path, env: Dict[str, str], cwd: Path) -> RasaForks:
    """The test session's one fork server, started at its first use (``close_shared`` at the
    session's end)."""
    if not _SHARED:
        _SHARED.append(RasaForks(python, env, cwd))
    return _SHARED[0]


def close_shared() -> None:
    while _SHARED:
        _SHARED.pop().close()


# --- the server (the Rasa environment's Python) ----------------------------------------------

def _child(request: Dict[str, Any]) -> int:
    """In the fork: become the command's process, run it, return its exit code."""
    import runpy
    import traceback

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    flag, target_name, *rest = request["args"]
    try:
        if flag == "-m":
            sys.argv = [target_name, *rest]
            sys.path.insert(0, os.getcwd())  # as `python -m` puts the working folder first
            runpy.run_module(target_name, run_name="__main__", alter_sys=True)
        elif flag == "-c":
            sys.argv = ["-c", *rest]
            sys.path.insert(0, "")
            exec(compile(target_name, "<string>", "exec"), {"__name__": "__main__"})
        else:
            print(f"rasa_forks: only -m and -c are served, not {flag}", file=sys.stderr)
            return 2
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001  (the process's own last words, as Python prints them)
        traceback.print_exc()
        return 1
    return 0


def _serve(preload: Sequence[str]) -> None:
    import importlib

    for name in preload:
        importlib.import_module(name)
    answer = sys.stdout
    print(json.dumps({"ready": True}), file=answer, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        answer.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        print(json.dumps({"pid": pid}), file=answer, flush=True)
        _, status = os.waitpid(pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        print(json.dumps({"returncode": returncode}), file=answer, flush=True)


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # the forks see the path `python -m` or `-c` would give them
    _serve(sys.argv[1:])
