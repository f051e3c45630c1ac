"""The assistant's quality gates, measured with Rasa's own tools on the trained model:
the data validates without conflicts, the held-out NLU split reaches the accuracy goal, and
every test story passes."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, RASA_BIN

pytestmark = pytest.mark.slow

INTENT_ACCURACY_GOAL = 0.94
MIN_TRAINING_EXAMPLES = 40
MIN_TEST_STORIES = 30


def rasa(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [str(RASA_BIN), *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


def examples_per_intent(folder: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in sorted(folder.glob("*.yml")):
        for block in yaml.safe_load(path.read_text()).get("nlu", []):
            if "intent" in block:
                lines = [ln for ln in block["examples"].splitlines() if ln.strip().startswith("- ")]
                counts[block["intent"]] += len(lines)
    return counts


def domain_intents() -> List[str]:
    intents: List[str] = yaml.safe_load((PROJECT_ROOT / "domain.yml").read_text())["intents"]
    return intents


def test_every_intent_has_enough_training_and_held_out_examples() -> None:
    training = examples_per_intent(PROJECT_ROOT / "data" / "nlu")
    held_out = examples_per_intent(PROJECT_ROOT / "tests" / "nlu_holdout")
    assert {i: n for i, n in training.items() if n < MIN_TRAINING_EXAMPLES} == {}
    assert sorted(training) == sorted(domain_intents())
    assert sorted(held_out) == sorted(domain_intents())


def test_held_out_examples_are_not_in_the_training_data() -> None:
    def texts(folder: Path) -> set[str]:
        out = set()
        for path in folder.glob("*.yml"):
            for block in yaml.safe_load(path.read_text()).get("nlu", []):
                for line in block.get("examples", "").splitlines():
                    if line.strip().startswith("- "):
                        out.add(line.strip()[2:].lower())
        return out

    assert texts(PROJECT_ROOT / "tests" / "nlu_holdout") & texts(PROJECT_ROOT / "data" / "nlu") == set()


def test_data_validates_without_conflicts() -> None:
    result = rasa("data", "validate")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "No story structure conflicts found" in output
    warnings = re.findall(r"UserWarning: (.*)", output)
    # Rasa's validator cannot see responses that custom actions send or forms ask with; every
    # other warning (conflicts, duplicate examples, unknown intents...) fails the test.
    unused = [m.group(1) for w in warnings
              if (m := re.fullmatch(r"The utterance '(\w+)' is not used in any story or rule\.", w))]
    # A response the corrections pipeline extended (data/corrections/responses.yml holds it
    # in full, docs/corrections.md) is "duplicated across domain files" on purpose.
    extended_file = PROJECT_ROOT / "data" / "corrections" / "responses.yml"
    extended = set((yaml.safe_load(extended_file.read_text()) or {}).get("responses") or {}) if (
        extended_file.exists()) else set()

    def expected(warning: str) -> bool:
        named = set(re.findall(r"utter_\w+", warning))
        return "is not used in any story or rule" in warning or (
            "duplicate" in warning.lower() and bool(named) and named <= extended)

    assert [w for w in warnings if not expected(w)] == []
    actions_code = (PROJECT_ROOT / "actions" / "actions.py").read_text()
    slots = yaml.safe_load((PROJECT_ROOT / "domain.yml").read_text())["slots"]
    used_elsewhere = {f"utter_ask_{slot}" for slot in slots} | {"utter_default"}
    assert [u for u in unused
            if f'"{u}"' not in actions_code
            and not (u.startswith("utter_refund_status_") and "utter_refund_status_{" in actions_code)
            and u not in used_elsewhere] == []


def test_intent_accuracy_on_the_held_out_split(model_path: Path, tmp_path: Path) -> None:
    result = rasa("test", "nlu", "--nlu", "tests/nlu_holdout", "--model", str(model_path),
                  "--out", str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report: Dict[str, object] = json.loads((tmp_path / "intent_report.json").read_text())
    # One label per message: micro-averaged F1 equals accuracy. Rasa's evaluation undoes the
    # FallbackClassifier's nlu_fallback (the classifier is judged); the accuracy as deployed,
    # with the fallback, is in docs/assistant.md (python -m bot.tune_fallback).
    accuracy = report["accuracy"]
    assert isinstance(accuracy, float)
    assert accuracy >= INTENT_ACCURACY_GOAL, f"intent accuracy {accuracy:.3f}"


def test_every_test_story_passes(model_path: Path, tmp_path: Path) -> None:
    stories_dir = PROJECT_ROOT / "tests" / "stories"
    stories = [
        s for path in stories_dir.glob("*.yml")
        for s in yaml.safe_load(path.read_text()).get("stories", [])
    ]
    assert len(stories) >= MIN_TEST_STORIES
    result = rasa("test", "core", "--stories", str(stories_dir), "--model", str(model_path),
                  "--out", str(tmp_path), "--e2e", "--fail-on-prediction-errors")
    failed = tmp_path / "failed_test_stories.yml"
    details = failed.read_text() if failed.exists() else (result.stdout + result.stderr)[-3000:]
    assert result.returncode == 0, details
