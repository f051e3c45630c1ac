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

from bot.control import ControlError, Retrainer, _pass_on, model_metadata


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
