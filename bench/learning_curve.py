"""How fast the bot learns from corrections, on data nobody here wrote (banking77).

    .venv/rasa/bin/python bench/learning_curve.py [--data ../shared/datasets/banking77]
        [--shots 10] [--corrections 0,100,300,1000] [--test-per-intent 0] [--seed 7]

For each pipeline — ``today``: this project's ``config.yml`` without the sentence-embedding
featurizer and with Rasa's ``LogisticRegressionClassifier``; ``new``: ``config.yml`` as it is;
``scale-K``: the new one with the embedding weighed K; ``lr-K``: ``config.yml`` with Rasa's
``LogisticRegressionClassifier`` instead of ``bot.intent_classifier.BlockwiseIntentClassifier``
and the embedding weighed K (``lr-8`` is the pipeline before that classifier); ``blockwise``:
``config.yml`` with ``BlockwiseIntentClassifier`` as measured in docs/assistant.md — on a Rasa
project built in a temporary folder from banking77 (77 intents of a bank's customers):

1. train the NLU on ``--shots`` examples per intent of banking77's training file (the same
   seeded sample for both pipelines);
2. for each N of ``--corrections``, take the first N of the rest of the training file (one
   seeded order for both pipelines, cumulative), make each a relabel correction exactly as the
   gateway exports it (tracker events with the message and what the N = 0 model of that
   pipeline read it as), write them with ``python -m bot.corrections write --skip-training``
   (the writer masks, de-duplicates and refuses what would contradict the data), retrain the
   NLU, and parse banking77's test file (``--test-per-intent``: only that many per intent).

After every training the fallback is re-tuned for the new model as ``bot.retrain`` does it
(``bot.tune_fallback.retune``), on a held-out split of banking77's training file that no
correction comes from (``--holdout-per-intent`` per intent), and the NLU trained again when the
threshold or margin changed (Rasa's cache keeps everything before the fallback).

Prints, per pipeline and N, the intent accuracy as deployed (a fallback counts as wrong) and of
the classifier alone (its best intent, whatever the fallbacks then did), the share of test
messages refused (``nlu_fallback`` or ``out_of_scope``), how many corrections the writer took,
and the median parse time. Nothing in the repository is written.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "datasets" / "banking77"
FEATURIZER = "bot.sentence_featurizer.SentenceEmbeddingFeaturizer"
CLASSIFIER = "bot.intent_classifier.BlockwiseIntentClassifier"
# The classifier before BlockwiseIntentClassifier (``today`` and ``lr-K`` put it back).
RASA_LR = {"name": "LogisticRegressionClassifier", "max_iter": 200, "random_state": 42}
# ``blockwise``: config.yml with the classifier measured for issue 13 (docs/assistant.md)
BLOCKWISE = {"name": CLASSIFIER, "C": 10, "dense_weight": 3, "sparse_weight": 1,
             "temperature": 0.5, "max_iter": 300}
REFUSED = ("nlu_fallback", "out_of_scope")
PIPELINES = ("today", "new")

Example = Tuple[str, str]  # (text, intent)


@dataclass
class Row:
    pipeline: str
    n: int
    accuracy: float = 0.0
    classifier: float = 0.0
    refused: float = 0.0
    written: int = 0
    parse_ms: float = 0.0
    fallback: Tuple[float, float] = (0.0, 0.0)  # threshold, ambiguity threshold as deployed
    seconds: Dict[str, float] = field(default_factory=dict)


def env() -> Dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1"}


def read_csv(path: Path) -> List[Example]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(" ".join(r["text"].split()), r["category"]) for r in csv.DictReader(f)]


def split(train: List[Example], shots: int, held: int,
          seed: int) -> Tuple[List[Example], List[Example], List[Example]]:
    """``shots`` examples per intent, ``held`` per intent held out for tuning the fallback, and
    the rest in one seeded order."""
    rng = random.Random(seed)
    by_intent: Dict[str, List[Example]] = defaultdict(list)
    for example in train:
        by_intent[example[1]].append(example)
    base: List[Example] = []
    holdout: List[Example] = []
    rest: List[Example] = []
    for intent in sorted(by_intent):
        examples = by_intent[intent][:]
        rng.shuffle(examples)
        base += examples[:shots]
        holdout += examples[shots:shots + held]
        rest += examples[shots + held:]
    rng.shuffle(rest)
    return base, holdout, rest


def sample_test(test: List[Example], per_intent: int, seed: int) -> List[Example]:
    if per_intent <= 0:
        return test
    rng = random.Random(seed)
    by_intent: Dict[str, List[Example]] = defaultdict(list)
    for example in test:
        by_intent[example[1]].append(example)
    return [e for i in sorted(by_intent) for e in rng.sample(by_intent[i],
                                                             min(per_intent, len(by_intent[i])))]


def pipeline_config(name: str) -> Dict[str, Any]:
    config = yaml.safe_load((PROJECT_ROOT / "config.yml").read_text())
    if name == "blockwise":
        config["pipeline"] = [dict(BLOCKWISE) if c["name"] in (CLASSIFIER, RASA_LR["name"])
                              else c for c in config["pipeline"]]
    if name == "today" or name.startswith("lr-"):  # Rasa's logistic regression, as before
        config["pipeline"] = [dict(RASA_LR) if c["name"] == CLASSIFIER else c
                              for c in config["pipeline"]]
    if name == "today":
        config["pipeline"] = [c for c in config["pipeline"] if c["name"] != FEATURIZER]
    elif name.startswith("lr-"):  # the pipeline of Rasa's regression, embedding weighed K
        for component in config["pipeline"]:
            if component["name"] == FEATURIZER:
                component["scale"] = float(name[len("lr-"):])
    elif not any(c["name"] == FEATURIZER for c in config["pipeline"]):
        raise SystemExit(f"config.yml has no {FEATURIZER}: nothing new to compare")
    elif name.startswith("scale-"):  # the new pipeline with another weight for the embedding
        for component in config["pipeline"]:
            if component["name"] == FEATURIZER:
                component["scale"] = float(name[len("scale-"):])
    config["assistant_id"] = f"banking77-{name}"
    return config


def nlu_yaml(examples: Sequence[Example]) -> str:
    by_intent: Dict[str, List[str]] = defaultdict(list)
    for text, intent in examples:
        by_intent[intent].append(text)
    lines = ['version: "3.1"', "nlu:"]
    for intent in sorted(by_intent):
        lines += [f"- intent: {intent}", "  examples: |"]
        lines += [f"    - {text}" for text in by_intent[intent]]
    return "\n".join(lines) + "\n"


def build_project(root: Path, pipeline: str, base: List[Example],
                  holdout: Sequence[Example]) -> None:
    (root / "data").mkdir(parents=True)
    (root / "holdout").mkdir()
    (root / "holdout" / "nlu.yml").write_text(nlu_yaml(holdout))
    intents = sorted({intent for _, intent in base})
    (root / "config.yml").write_text(yaml.safe_dump(pipeline_config(pipeline), sort_keys=False))
    (root / "domain.yml").write_text(yaml.safe_dump(
        {"version": "3.1", "intents": intents,
         "responses": {f"utter_{i}": [{"text": f"About {i.replace('_', ' ')}."}]
                       for i in intents}}, sort_keys=False))
    (root / "data" / "nlu.yml").write_text(nlu_yaml(base))
    (root / "data" / "rules.yml").write_text(yaml.safe_dump({"version": "3.1", "rules": [
        {"rule": f"answer {i}", "steps": [{"intent": i}, {"action": f"utter_{i}"}]}
        for i in intents]}, sort_keys=False))


def train(root: Path) -> Path:
    out = root / "models"
    subprocess.run([sys.executable, "-m", "rasa", "train", "nlu", "--out", str(out),
                    "--fixed-model-name", "nlu"], cwd=root, env=env(), check=True,
                   capture_output=True, timeout=1800)
    return out / "nlu.tar.gz"


def retune(root: Path, model: Path) -> Tuple[Path, Dict[str, Any]]:
    """The fallback re-tuned for ``model`` as ``bot.retrain`` does, and the model trained
    again when it changed."""
    from bot.tune_fallback import retune as tune

    tuned = tune(model, root / "holdout", root / "config.yml")
    return (train(root) if tuned["changed"] else model), tuned


async def _parse(model: Path, texts: Sequence[str]) -> Tuple[List[Dict[str, Any]], List[float]]:
    import logging

    from rasa.core.agent import Agent
    from rasa.utils.log_utils import configure_structlog

    configure_structlog(logging.WARNING)
    agent = Agent.load(str(model))
    await agent.parse_message("warm up")
    parses, times = [], []
    for text in texts:
        start = time.perf_counter()
        parses.append(await agent.parse_message(text))
        times.append(time.perf_counter() - start)
    return parses, times


def parse(model: Path, texts: Sequence[str]) -> Tuple[List[Dict[str, Any]], List[float]]:
    return asyncio.run(_parse(model, texts))


def classifier_intent(parse: Dict[str, Any]) -> Optional[str]:
    """The classifier's own best intent: the ranking without what the fallbacks put on top."""
    ranking = [r for r in parse.get("intent_ranking") or [] if r.get("name") not in REFUSED]
    return ranking[0]["name"] if ranking else None


def relabels(pool: Sequence[Example], parses: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Relabel corrections as the gateway exports them (docs/corrections.md)."""
    records = []
    for cid, ((text, intent), parsed) in enumerate(zip(pool, parses), start=1):
        now = time.time()
        events = [{"event": "action", "timestamp": now, "name": "action_session_start"},
                  {"event": "session_started", "timestamp": now},
                  {"event": "action", "timestamp": now, "name": "action_listen"},
                  {"event": "user", "timestamp": now, "text": text, "parse_data": parsed,
                   "input_channel": "gateway"}]
        records.append({
            "id": cid, "type": "relabelled", "conversation_id": f"banking-{cid}",
            "agent": "bench", "review_status": "accepted", "tracker_events": events,
            "before": {"action_name": None, "intent": (parsed.get("intent") or {}).get("name")},
            "after": {"action_name": None, "intent": intent}, "text": text})
    return records


def write(root: Path, records: List[Dict[str, Any]]) -> int:
    source = root.parent / f"{root.name}-corrections.json"
    source.write_text(json.dumps(records))
    done = subprocess.run([sys.executable, "-m", "bot.corrections", "write", "--input",
                           str(source), "--project", str(root), "--skip-training"],
                          cwd=root, env=env(), capture_output=True, text=True, timeout=1800,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"the writer refused the corrections:\n{done.stdout}\n"
                         f"{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    return sum(1 for c in report["corrections"] if c.get("nlu_examples"))


def run_pipeline(work: Path, pipeline: str, base: List[Example], holdout: List[Example],
                 pool: List[Example], test: List[Example], steps: Sequence[int]) -> List[Row]:
    rows: List[Row] = []
    pool_parses: List[Dict[str, Any]] = []
    for n in steps:
        row = Row(pipeline, n)
        root = work / f"{pipeline}-{n}"
        build_project(root, pipeline, base, holdout)
        if n:
            start = time.monotonic()
            row.written = write(root, relabels(pool[:n], pool_parses[:n]))
            row.seconds["write"] = time.monotonic() - start
        start = time.monotonic()
        model = train(root)
        row.seconds["train"] = time.monotonic() - start
        if holdout:
            start = time.monotonic()
            model, tuned = retune(root, model)
            row.seconds["retune"] = time.monotonic() - start
            row.fallback = (tuned["after"]["threshold"], tuned["after"]["ambiguity_threshold"])
        start = time.monotonic()
        parses, times = parse(model, [text for text, _ in test])
        row.seconds["parse"] = time.monotonic() - start
        names = [(p.get("intent") or {}).get("name") for p in parses]
        row.accuracy = sum(n_ == i for n_, (_, i) in zip(names, test)) / len(test)
        row.classifier = sum(classifier_intent(p) == i for p, (_, i) in zip(parses, test)) \
            / len(test)
        row.refused = sum(n_ in REFUSED for n_ in names) / len(test)
        row.parse_ms = statistics.median(times) * 1000
        if n == 0 and max(steps):  # what this pipeline's first model reads the pool as
            pool_parses, _ = parse(model, [text for text, _ in pool[:max(steps)]])
        rows.append(row)
        print(f"{pipeline} N={n}: accuracy {row.accuracy:.3f}, classifier {row.classifier:.3f}, "
              f"refused {row.refused:.3f}, "
              f"{row.seconds}", file=sys.stderr, flush=True)
    return rows


def table(rows: Sequence[Row]) -> str:
    steps = sorted({r.n for r in rows})
    by = {(r.pipeline, r.n): r for r in rows}
    pipelines = list(dict.fromkeys(r.pipeline for r in rows))
    head = "| corrections | " + " | ".join(
        f"{p}: as deployed | {p}: classifier | {p}: refused | {p}: fallback"
        for p in pipelines) + " | taken by the writer |"
    lines = [head, "|" + "---|" * (2 + 4 * len(pipelines))]
    for n in steps:
        cells = []
        for p in pipelines:
            r = by.get((p, n))
            cells += ([f"{r.accuracy:.1%}", f"{r.classifier:.1%}", f"{r.refused:.1%}",
                       "{:g} / {:g}".format(*r.fallback)] if r else ["", "", "", ""])
        written = "/".join(str(by[(p, n)].written) for p in pipelines if (p, n) in by)
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {written} |")
    lines.append("")
    lines.append("median parse (ms): " + ", ".join(
        f"{p} {statistics.median(r.parse_ms for r in rows if r.pipeline == p):.1f}"
        for p in pipelines))
    lines.append("median training (s): " + ", ".join(
        f"{p} {statistics.median(r.seconds['train'] for r in rows if r.pipeline == p):.0f}"
        for p in pipelines))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--corrections", default="0,100,300,1000")
    parser.add_argument("--test-per-intent", type=int, default=0,
                        help="parse only this many test messages per intent (0: all)")
    parser.add_argument("--holdout-per-intent", type=int, default=3,
                        help="training examples per intent kept out for re-tuning the fallback "
                             "(0: keep config.yml's fallback)")
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    steps = sorted({int(n) for n in args.corrections.split(",")} | {0})
    base, holdout, pool = split(read_csv(args.data / "train.csv"), args.shots,
                                args.holdout_per_intent, args.seed)
    test = sample_test(read_csv(args.data / "test.csv"), args.test_per_intent, args.seed)
    if max(steps) > len(pool):
        raise SystemExit(f"only {len(pool)} training examples are left for corrections")
    report_fd = os.dup(1)  # Rasa logs to stdout; the table alone goes there
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    rows: List[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        for pipeline in args.pipelines.split(","):
            rows += run_pipeline(Path(tmp), pipeline, base, holdout, pool, test, steps)
    with os.fdopen(report_fd, "w") as out:
        out.write(f"banking77: {args.shots} examples per intent, {len(test)} test messages, "
                  f"{len(holdout)} held out for the fallback, seed {args.seed}\n\n"
                  f"{table(rows)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
