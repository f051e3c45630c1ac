"""Prove a retrained model: before/after on the corrections' test stories and the test suite,
and why each story the new model gets wrong fails.

``python -m bot.prove --old models/A.tar.gz --new models/B.tar.gz [--project .]`` runs Rasa's
own end-to-end story test (what ``rasa test core --e2e`` runs, in this process, each model
loaded once: :mod:`bot.loaded_models`) with each model on
``tests/corrections/`` (one test story per accepted correction, written by
``bot.corrections``) and on ``tests/stories/`` (the hand-written suite), and prints a JSON
report. ``bot.retrain`` calls :func:`prove_with` instead, with the new model loaded where it
will serve (a standby Rasa server: :mod:`bot.model_runs`) and the old model's results kept
per model and story (:class:`StoryResults`): a model's result on a story never changes, so
the model in service runs only the stories it has not run before.


    {"corrections": {"before": 2, "after": 23, "total": 25,    # test stories passing
                     "failing": ["correction 7: ...", ...],    # failing with the new model
                     "why": {"correction 7: ...": {...}}},     # each failing story's reason
     "suite": {"before": 42, "after": 41, "total": 42, "failing": [...], "why": {...}},
     "regressions": ["story name", ...],   # passed with the old model, fail with the new
     "fixed": [...], "deploy": true,
     "fallback": {"threshold": 0.3, "ambiguity_threshold": 0.1}}   # the new model's

Each ``why`` entry names the first turn that goes wrong and the reason (:func:`explain_turn`):
``ambiguous`` (the FallbackClassifier's ambiguity: the top two intents within the margin),
``below_threshold``, ``unknown_words`` (no word the model knows), ``wrong_intent``,
``wrong_entities`` or ``wrong_action`` (every message understood, the story's next action
not predicted), with the classifier's scores for the top intents and the expected one, so a
trainer can decide between a better example, another margin, or an override:

    {"reason": "ambiguous", "text": "I'm still waiting for order 100008",
     "expected": "track_order", "predicted": "nlu_fallback",
     "scores": [{"intent": "track_order", "confidence": 0.41},
                {"intent": "track_refund", "confidence": 0.36}, ...],
     "explanation": "fallback by ambiguity: track_order 0.41 and track_refund 0.36 are
                     within the margin 0.1 (the expected track_order came first)"}

``deploy`` is true when nothing regressed; the exit code is 0 then, 1 otherwise (a trainer may
still deploy, and that override is logged where the deploy happens). Rasa's output and one
line per failing story go to stderr; stdout carries only the report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import yaml

from bot import log_level
from bot.model_runs import InProcess, Runner

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_SOURCE = re.compile(r" \([^()]*\.ya?ml\)$")
STORY_RESULTS = Path("var") / "story-results"  # in the project: StoryResults' folder
SUITES = {"corrections": "tests/corrections", "suite": "tests/stories"}


def story_names(folder: Path) -> List[str]:
    """The test stories' names in a folder of Rasa test-story YAML files."""
    names: List[str] = []
    for path in sorted(folder.glob("*.yml")):
        data = yaml.safe_load(path.read_text()) or {}
        names += [s["story"] for s in data.get("stories") or () if isinstance(s, dict)
                  and isinstance(s.get("story"), str)]
    return names


def run_story_test(model: Path, stories: Path) -> Tuple[Set[str], str]:
    """The names of the test stories ``model`` gets wrong (Rasa's own e2e story test, in this
    process) and Rasa's ``failed_test_stories.yml`` (its comments name each wrong
    prediction)."""
    return InProcess(model).stories(stories)


# --- why a story fails ---------------------------------------------------------------------

FALLBACK_INTENT = "nlu_fallback"
_STORY_LINE = re.compile(r"^- story: (.*)$")
# "- action: utter_x  # predicted: utter_y", "- intent: a  # predicted: b: the text"
_WRONG_LINE = re.compile(r"^\s*- (action|intent): (\S+)\s+# predicted: ([^\s:]+)")


def wrong_predictions(failed_text: str) -> Dict[str, List[Tuple[str, str, str]]]:
    """Story name → its wrong predictions ``(kind, expected, predicted)`` in order, read from
    the comments of Rasa's ``failed_test_stories.yml``."""
    found: Dict[str, List[Tuple[str, str, str]]] = {}
    story: Optional[str] = None
    for line in failed_text.splitlines():
        header = _STORY_LINE.match(line)
        if header:
            try:  # a name with ": " in it is quoted
                raw = yaml.safe_load(header.group(1))
            except yaml.YAMLError:
                raw = header.group(1)
            story = _SOURCE.sub("", str(raw).strip())
            found.setdefault(story, [])
            continue
        wrong = _WRONG_LINE.match(line)
        if wrong and story is not None:
            found[story].append((wrong.group(1), wrong.group(2), wrong.group(3)))
    return found


def classifier_ranking(parse: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The intents the classifier ranked, best first, without ``nlu_fallback``."""
    return [{"intent": r.get("name"), "confidence": round(float(r.get("confidence") or 0), 3)}
            for r in parse.get("intent_ranking") or [] if r.get("name") != FALLBACK_INTENT]


def explain_turn(parse: Mapping[str, Any], expected: Optional[str],
                 entities: Sequence[Tuple[str, str]], threshold: Optional[float],
                 ambiguity: Optional[float], top: int = 3) -> Optional[Dict[str, Any]]:
    """Why the model's ``parse`` of a story's message is not what the story expects (intent
    ``expected``, ``entities`` as (entity, value) pairs), or None when it is. ``threshold`` and
    ``ambiguity`` are the model's FallbackClassifier settings."""
    intent = parse.get("intent") or {}
    predicted = intent.get("name")
    ranking = classifier_ranking(parse)
    scores = ranking[:top] + [r for r in ranking[top:] if r["intent"] == expected]
    score = {r["intent"]: r["confidence"] for r in ranking}
    nothing: Dict[str, Any] = {"intent": None, "confidence": 0.0}
    first = ranking[0] if ranking else nothing
    second = ranking[1] if len(ranking) > 1 else nothing
    base = {"text": parse.get("text"), "expected": expected, "predicted": predicted,
            "scores": scores}
    exp = f"{expected} {score.get(str(expected), 0.0):.2f}"
    if expected is not None and predicted == FALLBACK_INTENT and expected != predicted:
        came_first = " (the expected intent came first)" if first["intent"] == expected else (
            f" (expected {exp})")
        if float(intent.get("confidence") or 0) >= 1.0 and (
                not ranking or first["confidence"] < 1.0):
            return {**base, "reason": "unknown_words", "explanation": (
                "not understood: none of its words occur in the training data "
                f"(UnknownWordsFallback); the classifier's best was {first['intent']} "
                f"{first['confidence']:.2f}, expected {exp}")}
        if threshold is not None and first["confidence"] < threshold:
            also = (f"; {second['intent']} {second['confidence']:.2f} is also within the "
                    f"margin {ambiguity}" if ambiguity is not None and first["confidence"]
                    - second["confidence"] < ambiguity else "")
            return {**base, "reason": "below_threshold", "explanation": (
                f"fallback below the threshold: the best, {first['intent']} "
                f"{first['confidence']:.2f}, is under {threshold}{also}{came_first}")}
        if ambiguity is not None and first["confidence"] - second["confidence"] < ambiguity:
            return {**base, "reason": "ambiguous", "explanation": (
                f"fallback by ambiguity: {first['intent']} {first['confidence']:.2f} and "
                f"{second['intent']} {second['confidence']:.2f} are within the margin "
                f"{ambiguity}{came_first}")}
        return {**base, "reason": "wrong_intent", "explanation": (
            f"fallback ({FALLBACK_INTENT}) where the story expects {exp}")}
    if expected is not None and predicted != expected:
        return {**base, "reason": "wrong_intent", "explanation": (
            f"wrong intent: {predicted} {score.get(str(predicted), 0.0):.2f}, expected {exp}")}
    found = sorted((str(e.get("entity")), str(e.get("value")))
                   for e in parse.get("entities") or [])
    if sorted(entities) != found:
        return {**base, "reason": "wrong_entities", "explanation": (
            f"wrong entities: found {found or 'none'}, the story has "
            f"{sorted(entities) or 'none'}")}
    return None


def story_turns(folder: Path) -> Dict[str, List[Tuple[str, Optional[str],
                                                   List[Tuple[str, str]]]]]:
    """Story name → its user turns ``(text, intent, [(entity, value)])`` in the test-story YAML
    files of ``folder`` (entity annotations taken out of the text, as Rasa's test does)."""
    from rasa.shared.nlu.training_data.entities_parser import (
        find_entities_in_training_example,
        replace_entities,
    )

    turns: Dict[str, List[Tuple[str, Optional[str], List[Tuple[str, str]]]]] = {}
    for path in sorted(folder.rglob("*.yml")):
        data = yaml.safe_load(path.read_text()) or {}
        for story in data.get("stories") or ():
            if not isinstance(story, dict) or not isinstance(story.get("story"), str):
                continue
            mine = turns.setdefault(story["story"], [])
            for step in story.get("steps") or ():
                if isinstance(step, dict) and isinstance(step.get("user"), str):
                    raw = step["user"].strip()
                    entities = [(str(e["entity"]), str(e["value"]))
                                for e in find_entities_in_training_example(raw)]
                    mine.append((replace_entities(raw), step.get("intent"), entities))
    return turns


Model = Union[Path, Runner]


def runner(model: Model) -> Runner:
    """A model archive (loaded in this process) or a model already loaded somewhere."""
    return InProcess(model) if isinstance(model, Path) else model


def story_key(story: Mapping[str, Any]) -> str:
    """A test story's identity for :class:`StoryResults`: its name and steps, canonical."""
    return hashlib.sha256(json.dumps(story, sort_keys=True, ensure_ascii=False,
                                     default=str).encode("utf-8")).hexdigest()[:32]


def test_stories(folder: Path) -> List[Dict[str, Any]]:
    """The test stories of the files in ``folder``, in file order, as Rasa reads them
    (YAML 1.2: a message "yes" stays a string)."""
    from rasa.shared.utils.io import read_yaml

    found: List[Dict[str, Any]] = []
    for path in sorted(folder.rglob("*.yml")):
        data = read_yaml(path.read_text("utf-8")) or {}
        found += [s for s in data.get("stories") or () if isinstance(s, dict)
                  and isinstance(s.get("story"), str)]
    return found


class StoryResults:
    """Which test stories each model passed, kept per model and story (a JSON file per
    ``model_id`` in ``folder``): Rasa's story test of one model on one story always gives
    the same result, so the model in service runs only the stories it has not met yet."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, model_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", model_id):
            raise ValueError(f"not a model id: {model_id!r}")
        return self.folder / f"{model_id}.json"

    def get(self, model_id: str) -> Dict[str, bool]:
        try:
            data = json.loads(self._path(model_id).read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): bool(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def put(self, model_id: str, passed: Mapping[str, bool]) -> None:
        """Add ``passed`` (story key → passed) to what is known of ``model_id``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        merged = {**self.get(model_id), **passed}
        path = self._path(model_id)
        scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        scratch.write_text(json.dumps(merged, sort_keys=True), "utf-8")
        os.replace(scratch, path)


def _write_stories(folder: Path, stories: Sequence[Mapping[str, Any]]) -> None:
    """``stories`` (as :func:`test_stories` read them) as a test stories file in ``folder``."""
    from rasa.shared.utils.io import write_yaml

    folder.mkdir(parents=True, exist_ok=True)
    write_yaml({"version": "3.1", "stories": list(stories)}, folder / "test_stories.yml")


def failing_stories(model: Runner, stories: Sequence[Mapping[str, Any]],
                    results: Optional[StoryResults]) -> Set[str]:
    """The names of ``stories`` that ``model`` fails: from ``results`` where they are known,
    by Rasa's story test of the others (added to ``results``)."""
    known = results.get(model.model_id) if results is not None else {}
    keyed = [(story_key(s), s) for s in stories]
    missing = {key: s for key, s in keyed if key not in known}
    if missing:
        with tempfile.TemporaryDirectory(prefix="prove-old-") as tmp:
            _write_stories(Path(tmp), list(missing.values()))
            failed, _ = model.stories(Path(tmp))
        found = {key: s["story"] not in failed for key, s in missing.items()}
        known = {**known, **found}
        if results is not None:
            results.put(model.model_id, found)
    return {s["story"] for key, s in keyed if not known[key]}


def diagnose(model: Model, stories: Path, failing: Set[str], failed_text: str
             ) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Optional[float]]]:
    """Why each of ``failing`` (story names in ``stories``) fails with ``model``: the first
    turn the model misreads, else the first wrong action; and the model's fallback
    settings."""
    model = runner(model)
    turns = story_turns(stories)
    settings = model.fallback()
    wrong = wrong_predictions(failed_text)

    texts = sorted({text for name in failing for text, _, _ in turns.get(name, [])})
    parses = dict(zip(texts, model.parses(texts)))
    why: Dict[str, Dict[str, Any]] = {}
    for name in sorted(failing):
        for text, intent, entities in turns.get(name, []):
            found = explain_turn(parses[text], intent, entities,
                                 settings["threshold"], settings["ambiguity_threshold"])
            if found is not None:
                why[name] = found
                break
        else:
            actions = [(e, p) for kind, e, p in wrong.get(name, []) if kind == "action"]
            if actions:
                expected, predicted = actions[0]
                why[name] = {"reason": "wrong_action", "expected": expected,
                             "predicted": predicted, "explanation": (
                                 f"wrong action: every message understood, but the model "
                                 f"predicts {predicted} where the story has {expected}")}
            else:
                why[name] = {"reason": "unknown", "explanation": (
                    "no wrong prediction found in Rasa's failed_test_stories.yml")}
    return why, settings


def prove(project: Path, old: Model, new: Model) -> Dict[str, object]:
    """:func:`prove_with` without kept results: the report alone."""
    return prove_with(project, old, new)[0]


def prove_with(project: Path, old: Model, new: Model,
               results: Optional[StoryResults] = None
               ) -> Tuple[Dict[str, object], Dict[str, bool]]:
    """The new model runs Rasa's story test once, on the suites together (loading a model
    costs more than the stories), and the failures are told apart by story name; the old
    model's results come from ``results`` where known, from its own story test of the rest
    otherwise. Then the new model says why each of its failures fails. The report, and the
    new model's result on each story (story key → passed), for ``results`` once it is kept."""
    old, new = runner(old), runner(new)
    report: Dict[str, object] = {"old_model": old.model.name, "new_model": new.model.name}
    names = {key: story_names(project / folder) if (project / folder).is_dir() else []
             for key, folder in SUITES.items()}
    regressions: List[str] = []
    fixed: List[str] = []
    why: Dict[str, Dict[str, Any]] = {}
    new_results: Dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="prove-") as tmp:
        stories = Path(tmp)
        for key, folder in SUITES.items():
            if names[key]:
                shutil.copytree(project / folder, stories / key)
        every = test_stories(stories)
        if every:
            after, failed_text = new.stories(stories)
            before = failing_stories(old, every, results)
        else:
            before = after = set()
            failed_text = ""
        new_results = {story_key(s): s["story"] not in after for s in every}
        if after:
            why, report["fallback"] = diagnose(new, stories, after, failed_text)
    for key in SUITES:
        mine = set(names[key])
        failed_before, failed_after = before & mine, after & mine
        report[key] = {"before": len(mine) - len(failed_before),
                       "after": len(mine) - len(failed_after), "total": len(mine),
                       "failing": sorted(failed_after),
                       "why": {n: why[n] for n in sorted(failed_after) if n in why}}
        regressions += sorted(failed_after - failed_before)
        fixed += sorted(failed_before - failed_after)
    for name in sorted(after):
        new_failure = "regression" if name in regressions else "failing before too"
        print(f"{name} ({new_failure}): {why.get(name, {}).get('explanation', '?')}",
              file=sys.stderr, flush=True)
    report["regressions"] = regressions
    report["fixed"] = fixed
    report["deploy"] = not regressions
    return report, new_results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.prove", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, type=Path, help="the model in service")
    parser.add_argument("--new", required=True, type=Path, help="the retrained model")
    parser.add_argument("--project", default=PROJECT_ROOT, type=Path)
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log at INFO (-vv: DEBUG) instead of LOG_LEVEL (default WARNING)")
    args = parser.parse_args(argv)
    log_level.configure(args.verbose)
    for model in (args.old, args.new):
        if not model.is_file():
            print(json.dumps({"error": f"no model file {model}"}))
            return 2
    report = prove(args.project.resolve(), args.old.resolve(), args.new.resolve())
    print(json.dumps(report, indent=2))
    return 0 if report["deploy"] else 1


if __name__ == "__main__":
    sys.exit(main())
