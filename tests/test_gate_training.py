"""The gate's in-process training (``bot/corrections/gate.py``): one importer per staged
content shared by the validator, the rule check and the training, and a training that fails
in this process reports why instead of raising or exiting."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT
from tests.test_sentence_features import rasa_json


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Any:
    stage = tmp_path_factory.mktemp("stage")
    shutil.copytree(PROJECT_ROOT / "data", stage / "data",
                    ignore=shutil.ignore_patterns("corrections"))
    for name in ("domain.yml", "config.yml"):
        shutil.copy2(PROJECT_ROOT / name, stage / name)
    broken = stage.parent / f"{stage.name}-broken"
    shutil.copytree(stage, broken)
    config = (broken / "config.yml").read_text("utf-8")
    (broken / "config.yml").write_text(
        config.replace("pipeline:\n", "pipeline:\n  - name: NoSuchComponent\n", 1), "utf-8")
    return rasa_json(f"""
        import json, sys
        from pathlib import Path
        from bot.corrections import gate
        stage, broken = Path({str(stage)!r}), Path({str(broken)!r})
        first = gate.shared_importer(stage)
        same = gate.shared_importer(stage) is first
        handed = gate.shared_importer(stage, last_use=True) is first
        after_last_use = gate.shared_importer(stage) is first
        (stage / "data" / "nlu" / "extra.yml").write_text(
            'version: "3.1"\\nnlu:\\n- intent: greet\\n  examples: |\\n    - howdy partner\\n')
        changed = gate.shared_importer(stage) is first
        result = gate.train(broken, broken, broken / "models", validated=True)
        print(json.dumps({{"same": same, "handed": handed, "after_last_use": after_last_use,
                          "changed": changed, "result": result.as_dict(),
                          "model": gate.model_file(broken / "models") is not None}}))
        """)


def test_one_importer_per_content_until_the_training_takes_it(outcome: Any) -> None:
    assert outcome["same"] is True
    assert outcome["handed"] is True
    assert outcome["after_last_use"] is False  # the training may have changed its data
    assert outcome["changed"] is False  # a new file: read again


def test_a_failing_in_process_training_says_why(outcome: Any) -> None:
    result = outcome["result"]
    assert result["ok"] is False
    assert result["mode"] == "full"
    assert any("NoSuchComponent" in m for m in result["messages"]), result["messages"]
    assert outcome["model"] is False
