"""Prove a retrained model: before/after on the corrections' test stories and the test suite.

``python -m bot.prove --old models/A.tar.gz --new models/B.tar.gz [--project .]`` runs Rasa's
own end-to-end story test (``rasa test core --e2e``) with each model on
``tests/corrections/`` (one test story per accepted correction, written by
``bot.corrections``) and on ``tests/stories/`` (the hand-written suite), and prints a JSON
report:

    {"corrections": {"before": 2, "after": 23, "total": 25,    # test stories passing
                     "failing": ["correction 7: ...", ...]},   # failing with the new model
     "suite": {"before": 42, "after": 42, "total": 42},
     "regressions": ["story name", ...],   # passed with the old model, fail with the new
     "fixed": [...], "deploy": true}

``deploy`` is true when nothing regressed; the exit code is 0 then, 1 otherwise (a trainer may
still deploy, and that override is logged where the deploy happens). Rasa's output goes to
stderr; stdout carries only the report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_SOURCE = re.compile(r" \([^()]*\.ya?ml\)$")
RASA = Path(sys.executable).with_name("rasa")
SUITES = {"corrections": "tests/corrections", "suite": "tests/stories"}


def story_names(folder: Path) -> List[str]:
    """The test stories' names in a folder of Rasa test-story YAML files."""
    names: List[str] = []
    for path in sorted(folder.glob("*.yml")):
        data = yaml.safe_load(path.read_text()) or {}
        names += [s["story"] for s in data.get("stories") or () if isinstance(s, dict)
                  and isinstance(s.get("story"), str)]
    return names


def failed_stories(project: Path, model: Path, stories: Path) -> Set[str]:
    """The names of the test stories ``model`` gets wrong (Rasa's own e2e story test)."""
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(
            [str(RASA), "test", "core", "--stories", str(stories), "--model", str(model),
             "--e2e", "--out", out, "--no-plot"],
            cwd=project, stdout=sys.stderr, stderr=sys.stderr, check=False,
            env={**os.environ, "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
                 "TF_CPP_MIN_LOG_LEVEL": "2"})
        if result.returncode != 0:
            raise RuntimeError(f"rasa test core failed ({result.returncode}) on {stories}")
        failed = Path(out) / "failed_test_stories.yml"
        if not failed.exists():
            return set()
        data = yaml.safe_load(failed.read_text()) or {}
        # Rasa names a failed story "<name> (<file it came from>)"
        return {_SOURCE.sub("", s["story"]) for s in data.get("stories") or ()
                if isinstance(s, dict) and isinstance(s.get("story"), str)}


def prove(project: Path, old: Path, new: Path) -> Dict[str, object]:
    """Each model runs Rasa's story test once, on the suites together (loading a model costs
    more than the stories), and the failures are told apart by story name."""
    report: Dict[str, object] = {"old_model": old.name, "new_model": new.name}
    names = {key: story_names(project / folder) if (project / folder).is_dir() else []
             for key, folder in SUITES.items()}
    regressions: List[str] = []
    fixed: List[str] = []
    with tempfile.TemporaryDirectory(prefix="prove-") as tmp:
        stories = Path(tmp)
        for key, folder in SUITES.items():
            if names[key]:
                shutil.copytree(project / folder, stories / key)
        if any(names.values()):
            before, after = (failed_stories(project, model, stories) for model in (old, new))
        else:
            before = after = set()
    for key in SUITES:
        mine = set(names[key])
        failed_before, failed_after = before & mine, after & mine
        report[key] = {"before": len(mine) - len(failed_before),
                       "after": len(mine) - len(failed_after), "total": len(mine),
                       "failing": sorted(failed_after)}
        regressions += sorted(failed_after - failed_before)
        fixed += sorted(failed_before - failed_after)
    report["regressions"] = regressions
    report["fixed"] = fixed
    report["deploy"] = not regressions
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.prove", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, type=Path, help="the model in service")
    parser.add_argument("--new", required=True, type=Path, help="the retrained model")
    parser.add_argument("--project", default=PROJECT_ROOT, type=Path)
    args = parser.parse_args(argv)
    for model in (args.old, args.new):
        if not model.is_file():
            print(json.dumps({"error": f"no model file {model}"}))
            return 2
    report = prove(args.project.resolve(), args.old.resolve(), args.new.resolve())
    print(json.dumps(report, indent=2))
    return 0 if report["deploy"] else 1


if __name__ == "__main__":
    sys.exit(main())
