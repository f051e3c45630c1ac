"""bot/keeper.py with real child processes: a crashed one is restarted with back-off while the
others keep running; each restart is logged and counted. (Rasa killed under ``bot.serve``:
tests/gateway/test_supervision.py, under the ``long`` marker.)"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from bot.keeper import Keeper
from bot.processes import Service
from tests.conftest import free_port

# A tiny server answering GET /health with {"status": "ok"}, as the action server does.
_SERVER = """
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _server(tmp_path: Path, name: str) -> Service:
    port = free_port()
    return Service(name=name, argv=[sys.executable, "-c", _SERVER, str(port)],
                   ready_url=f"http://127.0.0.1:{port}/health", log_path=tmp_path / f"{name}.log")


def _until(keeper: Keeper, done: Callable[[], bool], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not done():
        assert time.monotonic() < deadline, keeper.status()
        keeper.tick()
        time.sleep(0.02)


def test_a_killed_process_is_restarted_while_the_other_keeps_running(tmp_path: Path) -> None:
    crashing, steady = _server(tmp_path, "crashing"), _server(tmp_path, "steady")
    out = io.StringIO()
    keeper = Keeper(delay=0.05, max_delay=0.2, stable_after=60, out=out)
    try:
        for service in (crashing, steady):
            service.start()
            service.wait_until_ready(time.monotonic() + 20)
        kept = keeper.watch("crashing", lambda: crashing)
        keeper.watch("steady", lambda: steady)
        assert steady.process is not None and crashing.process is not None
        steady_pid, first_pid = steady.process.pid, crashing.process.pid

        for round_ in (1, 2, 3):
            assert crashing.process is not None
            os.killpg(crashing.process.pid, signal.SIGKILL)
            _until(keeper, lambda: kept.restarts == round_ and kept.answering)
            assert crashing.is_ready()

        assert crashing.process.pid != first_pid
        assert steady.process.pid == steady_pid and steady.process.poll() is None
        assert [h["delay"] for h in kept.history] == [0.05, 0.1, 0.2]  # doubled, then capped
        assert kept.last_exit == -signal.SIGKILL
        assert keeper.status() == [
            {"name": "crashing", "state": "running", "restarts": 3, "crashes": 3,
             "last_exit_code": -9, "next_delay": 0.2, "pid": crashing.process.pid},
            {"name": "steady", "state": "running", "restarts": 0, "crashes": 0,
             "last_exit_code": None, "next_delay": 0.05, "pid": steady_pid},
        ]
        lines = out.getvalue().splitlines()
        assert "crashing exited with code -9; its log ends with:" in lines
        assert [line for line in lines if line.startswith("restarting")] == [
            "restarting crashing (restart 1)", "restarting crashing (restart 2)",
            "restarting crashing (restart 3)"]
        assert "crashing is back (restart 3)" in lines
        assert not any("steady" in line for line in lines)
    finally:
        crashing.stop()
        steady.stop()


def test_a_process_that_stayed_up_starts_its_back_off_afresh(tmp_path: Path) -> None:
    now = [0.0]
    service = Service(name="short", argv=[sys.executable, "-c", "import sys; sys.exit(3)"],
                      ready_url="http://127.0.0.1:9/", log_path=tmp_path / "short.log")
    keeper = Keeper(delay=1, max_delay=8, stable_after=60, out=io.StringIO(),
                    clock=lambda: now[0])
    kept = keeper.watch("short", lambda: service)
    try:
        service.start()
        for expected in (1, 2, 4):  # exits at once each time: the wait doubles
            assert service.process is not None
            service.process.wait()
            keeper.tick()
            assert kept.restart_at == now[0] + expected
            now[0] = kept.restart_at
            keeper.tick()  # the keeper starts it again
            assert kept.restart_at is None
        now[0] += 100  # this run stayed up 100 s before it exited
        assert service.process is not None
        service.process.wait()
        keeper.tick()
        assert kept.restart_at == now[0] + 1 and kept.crashes == 4 and kept.restarts == 3
    finally:
        service.stop()


def test_bad_back_off_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Keeper(delay=0)
    with pytest.raises(ValueError):
        Keeper(delay=5, max_delay=1)
