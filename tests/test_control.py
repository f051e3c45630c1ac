"""The supervisor's control API pieces that need no Rasa: passing on a retraining's output,
reading a model archive's id, and interrupting a retraining when the supervisor stops
(bot/control.py). The API itself runs in tests/gateway/test_deploys.py."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.control import ControlError, RasaPool, Retrainer, _pass_on, model_metadata
from bot.processes import Service, Stack, advertised_host


def test_output_is_passed_on_line_by_line_with_progress_bars_thinned() -> None:
    bars = "".join(f"Epochs:  {n}%|##   | {n}/100 [00:01<00:02]\r" for n in range(1, 100))
    raw = ("writing 1 correction(s)\n" + bars + "Epochs: 100%|#####| 100/100 [00:03<00:00]\n"
           "proving x against y\nno newline at the end").encode()
    items: list[dict[str, Any]] = []
    _pass_on(io.BufferedReader(io.BytesIO(raw)), items.append)
    lines = [item["log"] for item in items]
    assert lines[0] == "writing 1 correction(s)"
    assert lines[-2:] == ["proving x against y", "no newline at the end"]
    progress = [line for line in lines if "%|" in line]
    assert progress[0].startswith("Epochs:  1%") and progress[-1].startswith("Epochs: 100%")
    assert len(progress) == 2  # the 98 redraws in between came within a second: left out


def test_model_metadata_reads_the_archive_and_tolerates_a_bad_one(tmp_path: Path) -> None:
    archive = tmp_path / "m.tar.gz"
    data = json.dumps({"model_id": "abc123", "trained_at": "2026-11-28T20:06:14"}).encode()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("metadata.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert model_metadata(archive) == {"model_id": "abc123",
                                       "trained_at": "2026-11-28T20:06:14"}
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tar")
    assert model_metadata(broken) == {"model_id": None, "trained_at": None}


# Stands in for `python -m bot.retrain` (whose real runs are in test_deploys.py): it says it
# has started, then works until interrupted, and cleans up as the writer does on
# KeyboardInterrupt.
_LONG_JOB = """
import sys, time
from pathlib import Path
marker = Path(sys.argv[1])
marker.write_text("started")
print("working", file=sys.stderr, flush=True)
try:
    time.sleep(120)
except KeyboardInterrupt:
    marker.write_text("interrupted: files put back")
    raise SystemExit(130)
"""


def test_stopping_the_supervisor_interrupts_a_retraining_cleanly(tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    class Job(Retrainer):
        def command(self, records: Path, live_model: Path, finetune: bool) -> list[str]:
            assert json.loads(records.read_text()) == [{"id": 1}]
            return [sys.executable, "-c", _LONG_JOB, str(marker)]

    pool = SimpleNamespace(live=SimpleNamespace(model=tmp_path / "live.tar.gz"),
                           models_dir=tmp_path, candidate=None)
    retrainer = Job(pool, tmp_path)  # type: ignore[arg-type]
    assert retrainer.stop() is None  # nothing runs yet
    with pytest.raises(ControlError) as none_yet:
        retrainer.status()
    assert none_yet.value.status == 404
    items: list[dict[str, Any]] = []
    thread = threading.Thread(target=retrainer.run,
                              args=([{"id": 1}], False, items.append, "retrain-7"))
    thread.start()
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "started"
    while "working" not in retrainer.status()["log"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert retrainer.status()["job"] == "retrain-7"
    assert retrainer.status()["state"] == "running"
    assert retrainer.stop(timeout=10) == 130
    thread.join(10)
    assert marker.read_text() == "interrupted: files put back"
    assert items[0]["log"].startswith("retraining on 1 correction(s)")
    assert {"log": "working"} in items
    assert items[-1] == {"report": None, "exit": 130}  # the gateway records a failed job
    assert retrainer.stop() is None  # and a second stop finds nothing running
    # Its outcome is kept for a gateway that restarted meanwhile, across restarts of the
    # supervisor too.
    outcome = retrainer.status()
    assert (outcome["job"], outcome["state"], outcome["report"], outcome["exit"]) == (
        "retrain-7", "finished", None, 130)
    assert "working" in outcome["log"]
    assert Job(pool, tmp_path).status() == outcome  # type: ignore[arg-type]


# Stands in for a Rasa server in the pool's bookkeeping tests: answers /status with the model
# file it was started on (Service.is_ready needs ``model_file``).
_FAKE_RASA = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port, model = int(sys.argv[1]), sys.argv[2]
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"model_file": model}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _archive(path: Path, model_id: str) -> Path:
    data = json.dumps({"model_id": model_id, "trained_at": "2026-12-07T00:00:00"}).encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("metadata.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


class _FakeStack:
    def __init__(self, project: Path) -> None:
        self.project, self.token = project, "t"

    def url(self, port: int) -> str:
        return f"http://rasa.internal:{port}"

    def local_url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def rasa_service(self, port: int, model: Path, nice: int = 0) -> Service:
        return Service(name=f"fake :{port}",
                       argv=[sys.executable, "-c", _FAKE_RASA, str(port), "--model", str(model)],
                       ready_url=f"http://127.0.0.1:{port}/status",
                       log_path=self.project / f"fake-{port}.log", cwd=self.project)


def test_a_proven_standby_is_handed_to_the_deploy_of_its_model_and_gives_way_otherwise(
        tmp_path: Path) -> None:
    from tests.conftest import free_port

    models = tmp_path / "models"
    models.mkdir()
    live_model, new_model, other = (_archive(models / f"{n}.tar.gz", n)
                                    for n in ("live", "new", "other"))
    candidate = tmp_path / "var" / "candidates" / "c1" / "models"
    candidate.mkdir(parents=True)
    trained = _archive(candidate / "new.tar.gz", "new")
    stack = _FakeStack(tmp_path)
    pool = RasaPool(stack, (free_port(), free_port()), models, tmp_path / "live-model",
                    start_timeout=30)  # type: ignore[arg-type]
    live = stack.rasa_service(pool.ports[0], live_model)
    live.start()
    pool.adopt(live, pool.ports[0], live_model)
    try:
        assert pool.status()["live"]["url"] == f"http://rasa.internal:{pool.ports[0]}"
        standby = pool.start_standby("live.tar.gz")
        assert (standby["port"], standby["model_id"], standby["role"], standby["url"]) == (
            pool.ports[1], "live", "proof", f"http://rasa.internal:{pool.ports[1]}")
        # while the retraining proves on it, a deploy is refused and may not promote it
        with pytest.raises(ControlError) as busy:
            pool.start_candidate("other.tar.gz")
        assert busy.value.status == 409 and "retraining" in str(busy.value)
        with pytest.raises(ControlError):
            pool.promote(pool.ports[1])
        with pytest.raises(ControlError):
            pool.load(pool.ports[1], str(tmp_path / "elsewhere.tar.gz"))  # outside both
        assert pool.candidate is not None
        pool.candidate.model_id = "new"  # as if Rasa's PUT /model had loaded trained
        pool.candidate.moved(trained)
        # kept as the model in models/: a restart would load it from there
        new_model.unlink()
        trained.rename(new_model)
        kept = pool.keep(pool.ports[1], new_model)
        assert kept is not None and kept["role"] == "proven" and kept["model"] == "new.tar.gz"
        assert pool.candidate.service.argv[-1] == str(new_model)
        # the deploy of that model gets the same server, nothing started
        process = pool.candidate.service.process
        reused = pool.start_candidate("new.tar.gz")
        assert reused["reused"] is True and reused["port"] == pool.ports[1]
        assert pool.candidate.service.process is process
        pool.promote(pool.ports[1])
        assert pool.live is not None and pool.live.model == new_model
        assert (tmp_path / "live-model").read_text().strip() == "new.tar.gz"
        # a proven standby of another model gives way to a deploy
        pool.start_standby("new.tar.gz")
        assert pool.candidate is not None
        pool.candidate.role = "proven"
        stale = pool.candidate.service.process
        fresh = pool.start_candidate("other.tar.gz")
        assert fresh["reused"] is False and fresh["model_id"] == "other"
        assert stale is not None and stale.poll() is not None  # stopped
        # and a retraining that ends without a kept model has its standby stopped
        pool.discard(fresh["port"])
        pool.start_standby("new.tar.gz")
        assert pool.drop_standby() == pool.ports[0] and pool.candidate is None
    finally:
        pool.stop()


def test_the_rasa_servers_listen_where_told_and_are_named_by_the_advertised_host(
        tmp_path: Path) -> None:
    def stack(interface: str = "127.0.0.1", advertised: str = "") -> Stack:
        return Stack(rasa_bin=tmp_path / "rasa", model=tmp_path / "m.tar.gz", rasa_port=5005,
                     token="t", log_dir=tmp_path, interface=interface, advertised=advertised)

    default = stack()  # make run: the loopback, as before
    assert default.rasa_url == "http://127.0.0.1:5005"
    service = default.rasa_service(5006, tmp_path / "m.tar.gz")
    assert service.argv[service.argv.index("--interface") + 1] == "127.0.0.1"
    assert service.ready_url == "http://127.0.0.1:5006/status?token=t"

    private = stack(interface="10.0.0.5")  # the nodes call it by the address it listens on
    assert private.url(5006) == "http://10.0.0.5:5006"
    service = private.rasa_service(5006, tmp_path / "m.tar.gz")
    assert service.argv[service.argv.index("--interface") + 1] == "10.0.0.5"
    assert service.ready_url == "http://10.0.0.5:5006/status?token=t"

    every = stack(interface="0.0.0.0", advertised="rasa-1.internal")
    assert every.rasa_url == "http://rasa-1.internal:5005"
    assert every.local_url(5005) == "http://127.0.0.1:5005"  # its own readiness: the loopback
    assert every.rasa_service(5005, tmp_path / "m.tar.gz").ready_url.startswith(
        "http://127.0.0.1:5005/")
    assert stack(interface="::", advertised="fd00::5").url(5005) == "http://[fd00::5]:5005"
    with pytest.raises(ValueError, match="advertised-host"):
        stack(interface="0.0.0.0").url(5005)  # 0.0.0.0 names no machine to call
    assert advertised_host("127.0.0.2") == "127.0.0.2"


def test_serve_refuses_every_interface_without_an_advertised_host(
        capsys: pytest.CaptureFixture[str]) -> None:
    from bot.serve import main

    with pytest.raises(SystemExit) as refused:
        main(["--interface", "0.0.0.0"])
    assert refused.value.code == 2
    assert "--advertised-host" in capsys.readouterr().err
