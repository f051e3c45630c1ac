"""``python -m bot.retrain`` proves before it writes: a refused candidate leaves the project's
data byte-for-byte as it was and says where it is and why; a re-run with corrections already
in the data says "nothing new". Run as the supervisor runs it: in the Rasa environment, in a
subprocess, on a copy of the project (the repository's own data is never touched)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from tests.test_corrections_writer import (
    RASA_PY,
    env,
    in_service,
    project_copy,
    relabel,
    tree_hashes,
    write,
)

DEBUG_LINE = re.compile(r"\bdebug\b", re.IGNORECASE)
# The first message of a hand-written test story, answered by utter_greet: taught as goodbye
# (four spellings, so that the classifier surely learns it), the story must fail.
GREET = "hey, good afternoon!"
GREET_STORY = "greet, track a shipped order given up front, thank, goodbye"
SPELLINGS = [GREET, "hey good afternoon!", "hey, good afternoon", "hey good afternoon"]
REBATE = "where is my rebate for order 104233"


def retrain(project: Path, records: List[Dict[str, Any]], *args: str
            ) -> Tuple[int, Dict[str, Any], str]:
    source = project.parent / "corrections.json"
    source.write_text(json.dumps(records))
    result = subprocess.run(
        [str(RASA_PY), "-m", "bot.retrain", "--corrections", str(source), "--project",
         str(project), *args], cwd=project, env=env(), capture_output=True, text=True,
        timeout=900, check=False)
    assert result.stdout.strip(), result.stderr[-3000:]
    report: Dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report, result.stderr


def debug_lines(stderr: str) -> List[str]:
    return [line for line in stderr.splitlines() if DEBUG_LINE.search(line)]


# One training and one proof, in the retraining's own process (about a minute).
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_refused_candidate_leaves_the_data_unchanged_and_says_where_and_why(
        tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    before = tree_hashes(project)
    records = [relabel(30 + i, text, "greet", "goodbye") for i, text in enumerate(SPELLINGS)]
    code, report, stderr = retrain(project, records, "--in-service", str(in_service()),
                                   "--models", str(models))
    assert code == 1, report
    assert report["outcome"] == "refused", report
    # data/, domain.yml and tests/ byte for byte as they were; no model in models/
    assert tree_hashes(project) == before
    assert list(models.iterdir()) == []
    # the gateway's view: not written, with the reason (handoff/learning/deploys.py _record)
    write_ = report["write"]
    assert write_["ok"] is False and write_["stage"] == "proof" and write_["model"] is None
    assert set(write_["files"]) - {"config.yml"} == {  # config.yml if the fallback moved
        "data/corrections/nlu.yml", "tests/corrections/test_corrections.yml"}
    # the proof names the regression and why it fails, with the scores
    proof = report["proof"]
    assert proof["deploy"] is False and GREET_STORY in proof["regressions"], proof
    why = proof["suite"]["why"][GREET_STORY]
    assert (why["text"], why["expected"]) == (GREET, "greet"), why
    assert why["reason"] in ("wrong_intent", "ambiguous", "below_threshold"), why
    assert why["scores"][0]["intent"] in ("goodbye", "greet"), why
    # the fallback was re-tuned for the candidate's model, and the proof used what it chose
    fallback = report["fallback"]
    assert fallback["before"]["threshold"] == 0.3 and fallback["held_out"] == 534, fallback
    assert proof["fallback"] == {k: fallback["after"][k]
                                 for k in ("threshold", "ambiguity_threshold")}
    assert ("config.yml" in write_["files"]) == fallback["changed"]
    # the candidate is kept, marked, with its data and model and the same reason
    candidate = project / report["candidate"]["path"]
    assert candidate.parent == project / "var" / "candidates"
    marker = json.loads((candidate / "CANDIDATE.json").read_text())
    assert marker["state"] == "refused" and marker["reason"] == report["candidate"]["reason"]
    assert f"'{GREET_STORY}' ({why['explanation']})" in marker["reason"]
    assert marker["reason"] in report["message"] and marker["reason"] in write_["errors"][-1]
    assert (project / report["candidate"]["model"]).is_file()
    assert GREET in (candidate / "data" / "corrections" / "nlu.yml").read_text()
    assert debug_lines(stderr) == []


def test_a_rerun_with_the_corrections_already_in_the_data_says_nothing_new(
        tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    records = [relabel(40, REBATE, "review", "track_refund")]
    first = write(project, records, "--skip-training")
    assert first["ok"] and first["files"], first
    before = tree_hashes(project)
    code, report, stderr = retrain(project, records, "--in-service", str(in_service()))
    assert code == 0, report
    assert report["outcome"] == "nothing_new"
    assert report["message"] == (
        "nothing new: the 1 correction(s) add nothing the training data does not already "
        "have (1 skipped, each with its reason in write.corrections), so nothing was trained "
        "and no file changed")
    assert report["write"]["ok"] and report["write"]["files"] == []
    assert report["write"]["corrections"][0]["skipped"][0] == (
        f"'{REBATE}' is already an example of track_refund")
    assert (report["write"]["model"], report["proof"], report["candidate"]) == (
        None, None, None)
    assert tree_hashes(project) == before
    assert list((project / "var" / "candidates").iterdir()) == []
    assert debug_lines(stderr) == []


def test_unreadable_corrections_exit_2_with_the_reason(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    (tmp_path / "corrections.json").write_text("[{")
    result = subprocess.run(
        [str(RASA_PY), "-m", "bot.retrain", "--corrections", str(tmp_path / "corrections.json"),
         "--project", str(project)], cwd=project, env=env(), capture_output=True, text=True,
        timeout=300, check=False)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["outcome"] == "refused" and report["write"]["ok"] is False
    assert report["message"].startswith("the corrections could not be read: JSONDecodeError")


def test_the_writer_logs_no_debug_lines_unless_asked(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    source = tmp_path / "one.json"
    source.write_text(json.dumps([relabel(41, REBATE, "review", "track_refund")]))
    command = [str(RASA_PY), "-m", "bot.corrections", "write", "--input", str(source),
               "--project", str(project), "--skip-training", "--dry-run"]
    quiet = subprocess.run(command, cwd=project, env=env(), capture_output=True, text=True,
                           timeout=300, check=False)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert debug_lines(quiet.stderr) == []
    # the in-process rule check's own debug events, when asked for
    loud = subprocess.run(command + ["-vv"], cwd=project, env=env(), capture_output=True,
                          text=True, timeout=300, check=False)
    assert loud.returncode == 0
    assert any("rule_policy" in line for line in debug_lines(loud.stderr))
