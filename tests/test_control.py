"""The supervisor's control API pieces that need no Rasa: passing on a retraining's output, and
reading a model archive's id (bot/control.py). The API itself runs in tests/gateway/test_deploys.py."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from bot.control import _pass_on, model_metadata


def test_output_is_passed_on_line_by_line_with_progress_bars_thinned() -> None:
    bars = "".join(f"Epochs:  {n}%|##   | {n}/100 [00:01<00:02]\r" for n in range(1, 100))
    raw = ("writing 1 correction(s)\n" + bars + "Epochs: 100%|#####| 100/100 [00:03<00:00]\n"
           "proving x against y\nno newline at the end").encode()
    items: list[dict[str, Any]] = []
    _pass_on(io.BufferedReader(io.BytesIO(raw)), items.append)  # type: ignore[arg-type]
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
