"""Chooses the FallbackClassifier threshold: ``python -m bot.tune_fallback [--model M]``.

Parses every held-out NLU example (``tests/nlu_holdout/``) and a set of messages no shop
customer means as a request (gibberish, stray words) with the trained model, reads the
classifier's own confidence (the ranking without ``nlu_fallback``), and prints for each
threshold how many held-out messages would still be answered correctly, how many
misclassified ones would be caught, and how many of the meaningless messages would reach the
fallback. The ambiguity threshold (top two intents closer than it) is applied as configured.
Run it in the Rasa environment (``.venv/rasa/bin/python -m bot.tune_fallback``).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Messages that are no request at all: the fallback should catch them.
MEANINGLESS = [
    "zorp glib frum", "qwerty uiop", "xkcd lorem ipsum dolor", "purple elephant dancing",
    "asdf jkl", "hmm", "??", "blorf wizzle quantum", "the cat sat on the mat", "banana",
    "lkjsdf oiwer", "mmmmm", "ha", "idk", "...", "a b c d",
]
THRESHOLDS = [0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6]


def holdout_examples(folder: Path) -> List[Tuple[str, str]]:
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(folder))
    return [(m.get("text"), m.get("intent")) for m in data.intent_examples]


def classifier_view(parse: Dict[str, Any]) -> Tuple[str, float, float]:
    """Top intent, its confidence and the margin to the second, ignoring nlu_fallback.

    A message the UnknownWordsFallback rejected (no known word) counts as caught at every
    threshold: it reports nlu_fallback with confidence 1.0.
    """
    intent = parse.get("intent") or {}
    if intent.get("name") == "nlu_fallback" and intent.get("confidence") == 1.0:
        return "nlu_fallback", 0.0, 0.0
    ranking = [r for r in parse.get("intent_ranking", []) if r["name"] != "nlu_fallback"]
    top = ranking[0] if ranking else {"name": None, "confidence": 0.0}
    second = ranking[1]["confidence"] if len(ranking) > 1 else 0.0
    return top["name"], float(top["confidence"]), float(top["confidence"]) - float(second)


async def parse_all(model: Path, texts: Sequence[str]) -> List[Dict[str, Any]]:
    import logging

    from rasa.core.agent import Agent
    from rasa.utils.log_utils import configure_structlog

    configure_structlog(logging.WARNING)  # no debug line per parsed message

    agent = Agent.load(str(model))
    return [await agent.parse_message(t) for t in texts]


def latest_model() -> Path:
    return max((PROJECT_ROOT / "models").glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bot.tune_fallback", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--ambiguity", type=float, default=0.1)
    args = parser.parse_args(argv)
    model = args.model or latest_model()

    examples = holdout_examples(PROJECT_ROOT / "tests" / "nlu_holdout")
    parses = asyncio.run(parse_all(model, [t for t, _ in examples] + MEANINGLESS))
    held = [(classifier_view(p), gold) for p, (_, gold) in zip(parses, examples)]
    junk = [classifier_view(p) for p in parses[len(examples):]]

    def falls_back(conf: float, margin: float, threshold: float) -> bool:
        return conf < threshold or margin < args.ambiguity

    wrong = sum(1 for (name, _, _), gold in held if name != gold)
    print(f"model {model.name}: {len(held)} held-out messages, wrong or not understood: "
          f"{wrong} ({1 - wrong / len(held):.3f} accuracy without the FallbackClassifier); "
          f"ambiguity threshold {args.ambiguity}\n")
    print("| threshold | answered correctly | errors caught | correct ones lost "
          "| meaningless caught |")
    print("|---|---|---|---|---|")
    for t in THRESHOLDS:
        correct = sum(1 for (n, c, m), g in held if n == g and not falls_back(c, m, t))
        caught = sum(1 for (n, c, m), g in held if n != g and falls_back(c, m, t))
        lost = sum(1 for (n, c, m), g in held if n == g and falls_back(c, m, t))
        junk_caught = sum(1 for (_, c, m) in junk if falls_back(c, m, t))
        print(f"| {t:.2f} | {correct / len(held):.3f} | {caught}/{wrong} | {lost} "
              f"| {junk_caught}/{len(junk)} |")


if __name__ == "__main__":
    main()
