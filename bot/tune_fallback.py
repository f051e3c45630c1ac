"""Chooses the FallbackClassifier threshold: ``python -m bot.tune_fallback [--model M]``.

Parses every held-out NLU example (``tests/nlu_holdout/``) and a set of messages no shop
customer means as a request (gibberish, stray words) with the trained model, reads the
classifier's own confidence (the ranking without ``nlu_fallback``), and prints for each
threshold how many held-out messages would still be answered correctly, how many
misclassified ones would be caught, and how many of the meaningless messages would reach the
fallback. The ambiguity threshold (top two intents closer than it) is applied as configured.
Run it in the Rasa environment (``.venv/rasa/bin/python -m bot.tune_fallback``).

:func:`retune` does the same for ``bot.retrain``, for every retrained model: it scores each
threshold and ambiguity threshold of a grid (:func:`utility`) and writes the best into the
candidate's ``config.yml`` when it beats the configured pair by at least one message.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from pathlib import Path
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    from bot.model_runs import Runner

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Messages that are no request at all: the fallback should catch them.
MEANINGLESS = [
    "zorp glib frum", "qwerty uiop", "xkcd lorem ipsum dolor", "purple elephant dancing",
    "asdf jkl", "hmm", "??", "blorf wizzle quantum", "the cat sat on the mat", "banana",
    "lkjsdf oiwer", "mmmmm", "ha", "idk", "...", "a b c d",
]
THRESHOLDS = [0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6]
MARGINS = [0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2]
# A request to rephrase is worth half a right answer to the customer, and more than a wrong
# one; a meaningless message caught is worth a right answer.
FALLBACK_WORTH = 0.5
# The configured pair is kept unless another one scores at least this much better (one
# message) and by at least ``MIN_Z`` standard errors of the per-message differences: noise
# between two trainings, or a small held-out split, must not move the fallback back and forth.
# On banking77 (231 held-out messages, bench/learning_curve.py) the best pair beat the
# configured one by 1.5 messages and raised the threshold to 0.45, which refused 10% of the
# test messages, 4% of them read right (docs/assistant.md).
MIN_GAIN = 1.0
MIN_Z = 2.0
FALLBACK_INTENT = "nlu_fallback"

View = Tuple[Optional[str], float, float]  # classifier_view: top intent, confidence, margin


def holdout_examples(folder: Path) -> List[Tuple[str, str]]:
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(folder))
    return [(m.get("text"), m.get("intent")) for m in data.intent_examples]


def classifier_view(parse: Dict[str, Any]) -> View:
    """Top intent, its confidence and the margin to the second, ignoring nlu_fallback.

    A message the UnknownWordsFallback rejected (no known word) counts as caught at every
    threshold: it reports nlu_fallback with confidence 1.0.
    """
    intent = parse.get("intent") or {}
    if intent.get("name") == "nlu_fallback" and intent.get("confidence") == 1.0:
        return "nlu_fallback", 0.0, 0.0
    ranking = [r for r in parse.get("intent_ranking", []) if r["name"] != "nlu_fallback"]
    if not ranking:
        return None, 0.0, 0.0
    top = float(ranking[0]["confidence"])
    second = float(ranking[1]["confidence"]) if len(ranking) > 1 else 0.0
    return ranking[0]["name"], top, top - second


def falls_back(view: View, threshold: float, ambiguity: float) -> bool:
    """Whether the fallback catches a message: below ``threshold``, the top two closer than
    ``ambiguity``, or already rejected for having no known word."""
    name, confidence, margin = view
    return name == FALLBACK_INTENT or confidence < threshold or margin < ambiguity


@dataclass(frozen=True)
class Setting:
    """A threshold and ambiguity threshold, and what they do on the held-out split."""

    threshold: float
    ambiguity_threshold: float
    correct: int      # held-out messages answered with the right intent
    caught: int       # misclassified held-out messages the fallback catches
    lost: int         # rightly classified held-out messages the fallback catches
    junk_caught: int  # meaningless messages caught
    utility: float


def scores(held: Sequence[Tuple[View, str]], junk: Sequence[View], threshold: float,
           ambiguity: float) -> List[float]:
    """Each message's score under a pair, the held-out ones then the meaningless ones (see
    :func:`utility`)."""
    return ([FALLBACK_WORTH if falls_back(view, threshold, ambiguity) else float(view[0] == gold)
             for view, gold in held]
            + [float(falls_back(view, threshold, ambiguity)) for view in junk])


def significant(gain: List[float]) -> bool:
    """Whether per-message differences in score add up to at least ``MIN_GAIN`` and to
    ``MIN_Z`` standard errors of their sum (a paired comparison on the same messages)."""
    total = sum(gain)
    if total < MIN_GAIN:
        return False
    mean = total / len(gain)
    spread = sum((g - mean) ** 2 for g in gain) / max(len(gain) - 1, 1)
    return total >= MIN_Z * math.sqrt(len(gain) * spread)


def utility(held: Sequence[Tuple[View, str]], junk: Sequence[View], threshold: float,
            ambiguity: float) -> Setting:
    """Scores a pair: a right answer 1, a fallback ``FALLBACK_WORTH``, a wrong answer 0, a
    meaningless message caught 1."""
    correct = caught = lost = 0
    for view, gold in held:
        if falls_back(view, threshold, ambiguity):
            caught += view[0] != gold
            lost += view[0] == gold
        else:
            correct += view[0] == gold
    junk_caught = sum(1 for view in junk if falls_back(view, threshold, ambiguity))
    return Setting(threshold, ambiguity, correct, caught, lost, junk_caught,
                   correct + FALLBACK_WORTH * (caught + lost) + junk_caught)


def choose(held: Sequence[Tuple[View, str]], junk: Sequence[View],
           current: Tuple[float, float]) -> Tuple[Setting, Setting]:
    """The best pair of the grid (``THRESHOLDS`` x ``MARGINS``) and the ``current`` one,
    scored; the current one is chosen unless the best beats it significantly
    (:func:`significant`). Among equal scores the pair nearest the current one wins."""
    now = utility(held, junk, *current)
    grid = [utility(held, junk, t, m) for t in THRESHOLDS for m in MARGINS]
    best = max(grid, key=lambda s: (s.utility, -abs(s.threshold - current[0])
                                    - abs(s.ambiguity_threshold - current[1])))
    gain = [b - a for a, b in zip(scores(held, junk, *current),
                                  scores(held, junk, best.threshold, best.ambiguity_threshold))]
    return (best if significant(gain) else now), now


# config.yml: the FallbackClassifier's block, "  - name: FallbackClassifier" and its keys
_FALLBACK_BLOCK = re.compile(r"^(?P<indent> *)- name: FallbackClassifier *\n"
                             r"(?P<body>(?:(?P=indent)  +\S.*\n|\s*#.*\n)*)", re.MULTILINE)


def read_settings(config_text: str) -> Tuple[float, float]:
    """The FallbackClassifier's threshold and ambiguity threshold in ``config.yml``'s text
    (Rasa's defaults, 0.3 and 0.1, where a key is missing)."""
    block = _FALLBACK_BLOCK.search(config_text)
    if block is None:
        raise ValueError("config.yml has no FallbackClassifier")
    values = {"threshold": 0.3, "ambiguity_threshold": 0.1}
    for key in values:
        found = re.search(rf"^ +{key}: *([0-9.]+) *$", block.group("body"), re.MULTILINE)
        if found:
            values[key] = float(found.group(1))
    return values["threshold"], values["ambiguity_threshold"]


def write_settings(config_text: str, threshold: float, ambiguity: float) -> str:
    """``config.yml``'s text with the FallbackClassifier's two values replaced (added when
    missing); every other byte kept."""
    block = _FALLBACK_BLOCK.search(config_text)
    if block is None:
        raise ValueError("config.yml has no FallbackClassifier")
    body = block.group("body")
    indent = block.group("indent") + "  "
    for key, value in (("threshold", threshold), ("ambiguity_threshold", ambiguity)):
        line = re.compile(rf"^( +){key}: *[0-9.]+ *$", re.MULTILINE)
        if line.search(body):
            body = line.sub(lambda m: f"{m.group(1)}{key}: {value:g}", body, count=1)
        else:
            body = f"{indent}{key}: {value:g}\n" + body
    return config_text[:block.start("body")] + body + config_text[block.end("body"):]


def retune(model: Union[Path, "Runner"], holdout: Path, config: Path) -> Dict[str, Any]:
    """Re-tune the fallback for ``model`` (an archive, loaded here, or a model loaded in a
    Rasa server: :mod:`bot.model_runs`) on the held-out split in ``holdout`` and, when the
    best pair beats the configured one, write it into ``config`` (the model must be trained
    again for it to take effect). Returns ``{"changed", "before", "after", "held_out"}``."""
    from bot.model_runs import InProcess

    examples = holdout_examples(holdout)
    loaded = InProcess(model) if isinstance(model, Path) else model
    parses = loaded.parses([t for t, _ in examples] + MEANINGLESS)
    held = [(classifier_view(p), gold) for p, (_, gold) in zip(parses, examples)]
    junk = [classifier_view(p) for p in parses[len(examples):]]
    text = config.read_text("utf-8")
    chosen, now = choose(held, junk, read_settings(text))
    changed = (chosen.threshold, chosen.ambiguity_threshold) != (
        now.threshold, now.ambiguity_threshold)
    if changed:
        config.write_text(write_settings(text, chosen.threshold, chosen.ambiguity_threshold),
                          "utf-8")
    return {"changed": changed, "before": asdict(now), "after": asdict(chosen),
            "held_out": len(held), "meaningless": len(junk)}


async def parse_all(model: Path, texts: Sequence[str]) -> List[Dict[str, Any]]:
    """``model``'s parse of each text, the model loaded in this process (once), the texts
    parsed together (:func:`bot.model_runs.parse_many`)."""
    import logging

    from rasa.utils.log_utils import configure_structlog

    from bot import loaded_models
    from bot.model_runs import parse_many

    configure_structlog(logging.WARNING)  # no debug line per parsed message
    return await parse_many(loaded_models.agent(model), texts)


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

    wrong = sum(1 for (name, _, _), gold in held if name != gold)
    print(f"model {model.name}: {len(held)} held-out messages, wrong or not understood: "
          f"{wrong} ({1 - wrong / len(held):.3f} accuracy without the FallbackClassifier); "
          f"ambiguity threshold {args.ambiguity}\n")
    print("| threshold | answered correctly | errors caught | correct ones lost "
          "| meaningless caught |")
    print("|---|---|---|---|---|")
    for t in THRESHOLDS:
        row = utility(held, junk, t, args.ambiguity)
        print(f"| {t:.2f} | {row.correct / len(held):.3f} | {row.caught}/{wrong} | {row.lost} "
              f"| {row.junk_caught}/{len(junk)} |")
    chosen, now = choose(held, junk, read_settings(
        (PROJECT_ROOT / "config.yml").read_text("utf-8")))
    print(f"\nconfigured: threshold {now.threshold}, ambiguity {now.ambiguity_threshold} "
          f"(score {now.utility:.1f}); bot.retrain would ship threshold {chosen.threshold}, "
          f"ambiguity {chosen.ambiguity_threshold} (score {chosen.utility:.1f}, "
          f"{chosen.correct}/{len(held)} answered correctly, {chosen.caught} errors caught, "
          f"{chosen.lost} lost, {chosen.junk_caught}/{len(junk)} meaningless caught)")


if __name__ == "__main__":
    main()
