"""The project's NLU pipeline against variants of it, on the project's own data.

    .venv/rasa/bin/python bench/nlu_pipelines.py [--variants today,new] [--rounds 3]

Each variant is ``config.yml`` changed in one way (``VARIANTS``): ``today`` is the pipeline
without the sentence embedding and the out-of-scope detector (and with Rasa's logistic
regression), ``new`` is ``config.yml`` as it is, ``lr-K`` has Rasa's
``LogisticRegressionClassifier`` instead of ``BlockwiseIntentClassifier`` and the embedding
weighed K (``lr-8``: the pipeline before that classifier), ``blockwise`` has
``BlockwiseIntentClassifier`` as measured in docs/assistant.md, ``scale-N`` weighs the embedding N to 1 against the n-gram counts, ``no-detector`` leaves
the detector out. Each is trained (``rasa train nlu``) on ``data/`` in a temporary copy of the
project and measured on:

- the held-out NLU examples (``tests/nlu_holdout/``): intent accuracy of the classifier (its
  top intent before any fallback) and as deployed (a fallback counts as wrong);
- the questions from outside the shop (``tests/out_of_scope/``): the share declined
  (``out_of_scope`` or ``nlu_fallback``);
- the parse time of one message, the variants' parses interleaved in one process so that the
  machine's load falls on all alike (median and 90th percentile over ``--rounds`` rounds);
- the training time.

Nothing in the repository is written.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from bot.tune_fallback import classifier_view, holdout_examples  # noqa: E402

FEATURIZER = "bot.sentence_featurizer.SentenceEmbeddingFeaturizer"
DETECTOR = "bot.sentence_featurizer.FarFromEverything"
CLASSIFIER = "bot.intent_classifier.BlockwiseIntentClassifier"
RASA_LR = {"name": "LogisticRegressionClassifier", "max_iter": 200, "random_state": 42}
BLOCKWISE = {"name": CLASSIFIER, "C": 10, "dense_weight": 3, "sparse_weight": 1,
             "temperature": 0.5, "max_iter": 300}
DECLINED = ("out_of_scope", "nlu_fallback")
PARSED = ["I'm waiting for a rebate of $299", "where is my order 100002", "hi",
          "can I change the address for my parcel please", "what's the weather like",
          "my package never arrived and I want my money back now"]

Pipeline = List[Dict[str, Any]]


def _without(*names: str) -> Callable[[Pipeline], Pipeline]:
    return lambda pipeline: [c for c in pipeline if c["name"] not in names]


def _scaled(scale: float) -> Callable[[Pipeline], Pipeline]:
    def change(pipeline: Pipeline) -> Pipeline:
        return [{**c, "scale": scale} if c["name"] == FEATURIZER else c for c in pipeline]
    return change


def _rasa_lr(scale: float) -> Callable[[Pipeline], Pipeline]:
    """Rasa's LogisticRegressionClassifier instead of BlockwiseIntentClassifier, the embedding
    weighed ``scale`` (``lr-8``: the pipeline before BlockwiseIntentClassifier)."""
    def change(pipeline: Pipeline) -> Pipeline:
        return _scaled(scale)([dict(RASA_LR) if c["name"] == CLASSIFIER else c
                               for c in pipeline])
    return change


VARIANTS: Dict[str, Callable[[Pipeline], Pipeline]] = {
    "today": lambda p: _without(FEATURIZER, DETECTOR)(_rasa_lr(1)(p)),
    "lr-8": _rasa_lr(8), "lr-16": _rasa_lr(16),
    "blockwise": lambda p: [dict(BLOCKWISE) if c["name"] in (CLASSIFIER, RASA_LR["name"]) else c
                            for c in p],
    "new": lambda pipeline: pipeline,
    "no-detector": _without(DETECTOR),
    "scale-1": _scaled(1), "scale-4": _scaled(4), "scale-16": _scaled(16),
}


def env() -> Dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1"}


def train(work: Path, name: str) -> Tuple[Path, float]:
    config = yaml.safe_load((PROJECT_ROOT / "config.yml").read_text())
    config["pipeline"] = VARIANTS[name](copy.deepcopy(config["pipeline"]))
    (work / f"config-{name}.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "rasa", "train", "nlu", "--config",
                    str(work / f"config-{name}.yml"), "--nlu", str(PROJECT_ROOT / "data"),
                    "--out", str(work / "models"), "--fixed-model-name", name],
                   cwd=work, env=env(), check=True, capture_output=True, timeout=3600)
    return work / "models" / f"{name}.tar.gz", time.monotonic() - start


async def measure(models: Dict[str, Path], rounds: int) -> Dict[str, Dict[str, Any]]:
    from rasa.core.agent import Agent
    from rasa.shared.nlu.training_data.loading import load_data
    from rasa.utils.log_utils import configure_structlog

    configure_structlog(logging.WARNING)
    held_out = holdout_examples(PROJECT_ROOT / "tests" / "nlu_holdout")
    questions = [m.get("text") for m in load_data(
        str(PROJECT_ROOT / "tests" / "out_of_scope")).intent_examples]
    agents = {name: Agent.load(str(path)) for name, path in models.items()}
    out: Dict[str, Dict[str, Any]] = {}
    for name, agent in agents.items():
        parses = [await agent.parse_message(text) for text, _ in held_out]
        declined = [await agent.parse_message(text) for text in questions]
        out[name] = {
            "classifier": sum(classifier_view(p)[0] == i for p, (_, i) in zip(parses, held_out))
            / len(held_out),
            "deployed": sum(p["intent"]["name"] == i for p, (_, i) in zip(parses, held_out))
            / len(held_out),
            "declined": sum(p["intent"]["name"] in DECLINED for p in declined) / len(declined),
            "times": [],
        }
    for _ in range(rounds):  # interleaved: the same load on every variant
        for text in PARSED * 10:
            for name, agent in agents.items():
                start = time.perf_counter()
                await agent.parse_message(text)
                out[name]["times"].append(time.perf_counter() - start)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="today,new",
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s): {unknown}")
    report_fd = os.dup(1)  # Rasa logs to stdout; the table alone goes there
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with tempfile.TemporaryDirectory(prefix="bench-nlu-") as tmp:
        work = Path(tmp)
        shutil.copy2(PROJECT_ROOT / "domain.yml", work / "domain.yml")
        trained = {name: train(work, name) for name in names}
        results = asyncio.run(measure({n: m for n, (m, _) in trained.items()}, args.rounds))
    lines = ["| pipeline | held-out: classifier | held-out: as deployed | outside questions "
             "declined | parse p50 (ms) | parse p90 (ms) | training (s) |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        r = results[name]
        times = sorted(r["times"])
        lines.append(f"| {name} | {r['classifier']:.1%} | {r['deployed']:.1%} | "
                     f"{r['declined']:.1%} | {statistics.median(times) * 1000:.1f} | "
                     f"{times[int(len(times) * 0.9)] * 1000:.1f} | {trained[name][1]:.0f} |")
    with os.fdopen(report_fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
