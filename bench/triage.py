"""How fast triage is and how much it catches: ``.venv/gateway/bin/python bench/triage.py``.

Speed (one run, every variant interleaved round by round so machine noise hits all alike;
each figure is the median of ``--rounds`` rounds):

- the sentence encoder: sentence-transformers on PyTorch fp32 (the baseline) against the
  OpenVINO export at the CPU's default precision (bf16 here; the gateway's default) and at
  fp32: p50/p99 ms for one 16-word message (batch 1, after warm-up), batch-32 sentences/s,
  and cosine similarity to the baseline's embeddings over 200 varied customer messages (the
  held-out NLU examples of tests/nlu_holdout plus very short ones);
- the whole triage of one message (embedding, nearest neighbours, sentiment, rules, score),
  and each part alone;
- the async worker under load: messages/s when 1,000 arrive at once, and the latency of each
  message when they arrive at 150 per second.

Quality (``--quality``, about a minute): banking77 (../shared/datasets, read in place), a
classifier trained on ``--shots`` examples per intent (logistic regression on the same
embeddings, standing in for Rasa's NLU), the test set streamed through the triage; how many of
the classifier's wrong answers are among the 10/20/30% of messages with the highest risk,
against the 10/20/30% with the lowest confidence.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from handoff.triage import (  # noqa: E402
    History, Message, Triage, TriageConfig, TriageWorker,
)
from handoff.triage.corpus import Corpus, Example, read_examples  # noqa: E402
from handoff.triage.encoder import Encoder, OpenVINOEncoder, TorchEncoder  # noqa: E402
from handoff.triage.index import EmbeddingIndex  # noqa: E402
from handoff.triage.rules import check_rules  # noqa: E402
from handoff.triage.scoring import assess  # noqa: E402

MESSAGE = "hi I ordered a blue rain jacket last week and it still has not arrived yet"  # 16 words
SHORT = ["thanks!", "ok", "no", "yes please", "hi", "?", "cancel", "help", "agent", "bye"]
DATASET = PROJECT_ROOT.parent / "shared" / "datasets" / "banking77"


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q * 100))


def timings(function: Callable[[], object], count: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        function()
    found = []
    for _ in range(count):
        started = time.perf_counter()
        function()
        found.append((time.perf_counter() - started) * 1000)
    return found


def varied_messages() -> list[str]:
    """200 customer-like messages: 190 held-out NLU examples (spread over the files) + 10
    very short ones."""
    held = [e.text for e in read_examples(PROJECT_ROOT / "tests" / "nlu_holdout")]
    step = len(held) / 190
    return [held[int(i * step)] for i in range(190)] + SHORT


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def bench_encoders(encoders: dict[str, Encoder], rounds: int, count: int) -> None:
    texts = varied_messages()
    reference = encoders["baseline"].encode(texts)
    batches = [texts[i:i + 32] for i in range(0, 192, 32)]
    results: dict[str, dict[str, list[float]]] = {
        name: {"p50": [], "p99": [], "rate": []} for name in encoders}
    for _ in range(rounds):
        for name, encoder in encoders.items():
            found = timings(lambda: encoder.encode([MESSAGE]), count)
            results[name]["p50"].append(percentile(found, 0.5))
            results[name]["p99"].append(percentile(found, 0.99))
            started = time.perf_counter()
            for batch in batches:
                encoder.encode(batch)
            results[name]["rate"].append(192 / (time.perf_counter() - started))
    rows = []
    for name, encoder in encoders.items():
        one_by_one = np.vstack([encoder.encode([t]) for t in texts])
        cosine = (one_by_one * reference).sum(axis=1)
        r = results[name]
        rows.append([f"{encoder.name}{' (baseline)' if name == 'baseline' else ''}",
                     f"{statistics.median(r['p50']):.2f}", f"{statistics.median(r['p99']):.2f}",
                     f"{statistics.median(r['rate']):.0f}",
                     f"{cosine.mean():.6f} / {cosine.min():.6f}"])
    print(f"\n### Sentence encoder: one {len(MESSAGE.split())}-word message, batch 1 "
          f"({count} per round), batch-32 rate, cosine to the baseline over {len(texts)} "
          f"messages; median of {rounds} rounds\n")
    print(table(["variant", "p50 ms", "p99 ms", "batch-32 sentences/s", "cosine mean / min"],
                rows))


def bench_triage(triages: dict[str, Triage], rounds: int, count: int) -> None:
    texts = varied_messages()[:150] + [MESSAGE] * 50
    messages = [Message(t, "track_order", 0.93, (("track_order", 0.93), ("track_refund", 0.04)))
                for t in texts]
    history = History(("greet", "track_order"), (0.2, 0.0), (False, False))
    parts: dict[str, dict[str, list[float]]] = {}

    def measure(label: str, function: Callable[[int], object]) -> None:
        position = [0]

        def step() -> None:
            function(position[0] % len(messages))
            position[0] += 1

        found = timings(step, count, warmup=len(messages))
        entry = parts.setdefault(label, {"p50": [], "p99": []})
        entry["p50"].append(percentile(found, 0.5))
        entry["p99"].append(percentile(found, 0.99))

    for _ in range(rounds):
        for name, triage in triages.items():
            measure(f"{name}: whole triage", lambda i, t=triage: t.assess_batch(
                [(messages[i], history)]))
        triage = triages["openvino"]
        vector = triage.encoder.encode([MESSAGE])
        signals = triage.measure([messages[0]])[0]
        measure("encode", lambda i: triage.encoder.encode([texts[i]]))
        measure("nearest neighbours (novelty)",
                lambda i: triage.index.novelty(vector, ["track_order"]))
        measure("sentiment (VADER)", lambda i: triage.sentiment.score(texts[i]))
        measure("rules", lambda i: check_rules(triage.rules, texts[i]))
        measure("score", lambda i: assess(signals, history))
    print(f"\n### Whole triage of one message and its parts ({len(triages['openvino'].index.examples)}"
          f" training examples in the index; median of {rounds} rounds of {count})\n")
    print(table(["step", "p50 ms", "p99 ms"],
                [[label, f"{statistics.median(v['p50']):.3f}", f"{statistics.median(v['p99']):.3f}"]
                 for label, v in parts.items()]))


async def _load(worker: TriageWorker, messages: list[Message], rate: float | None
                ) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def one(message: Message, delay: float) -> None:
        await asyncio.sleep(delay)
        started = time.perf_counter()
        await worker.assess(message)
        latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one(m, n / rate if rate else 0.0) for n, m in enumerate(messages)))
    return time.perf_counter() - started, latencies


async def bench_worker(triage: Triage, rounds: int) -> None:
    texts = varied_messages()
    burst = [Message(texts[n % len(texts)], "track_order", 0.9) for n in range(1000)]
    paced = burst[:600]
    rows: dict[str, list[float]] = {"rate": [], "batch": [], "p50": [], "p99": [],
                                    "paced_batch": []}
    async with TriageWorker(triage) as worker:
        await _load(worker, burst[:64], None)  # warm-up
        for _ in range(rounds):
            worker.batches = worker.batched_messages = 0
            elapsed, _ = await _load(worker, burst, None)
            rows["rate"].append(len(burst) / elapsed)
            rows["batch"].append(worker.batched_messages / max(1, worker.batches))
            worker.batches = worker.batched_messages = 0
            _, latencies = await _load(worker, paced, 150.0)
            rows["p50"].append(percentile(latencies, 0.5))
            rows["p99"].append(percentile(latencies, 0.99))
            rows["paced_batch"].append(worker.batched_messages / max(1, worker.batches))
    m = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\n### Async worker ({triage.encoder.name}), median of {rounds} rounds\n")
    print(table(["load", "messages/s", "mean batch", "latency p50 ms", "latency p99 ms"], [
        ["1,000 at once", f"{m['rate']:.0f}", f"{m['batch']:.1f}", "", ""],
        ["150/s for 4 s", "150", f"{m['paced_batch']:.1f}", f"{m['p50']:.2f}",
         f"{m['p99']:.2f}"]]))


def _banking77(name: str) -> list[Example]:
    with (DATASET / name).open(newline="", encoding="utf-8") as f:
        return [Example(row["text"], row["category"]) for row in csv.DictReader(f)]


def bench_quality(encoder: Encoder, shots: int, seed: int) -> None:
    from sklearn.linear_model import LogisticRegression

    train_all, test = _banking77("train.csv"), _banking77("test.csv")
    rng = np.random.default_rng(seed)
    by_intent: dict[str, list[Example]] = {}
    for example in train_all:
        by_intent.setdefault(example.intent, []).append(example)
    train = [e for intent in sorted(by_intent) for e in
             (by_intent[intent][i] for i in rng.choice(len(by_intent[intent]), shots,
                                                       replace=False))]
    corpus = Corpus(tuple(train), ())
    index = EmbeddingIndex(corpus, encoder)
    classifier = LogisticRegression(C=20.0, max_iter=2000).fit(
        index.examples, [e.intent for e in train])
    triage = Triage(index, [])
    vectors = encoder.encode([e.text for e in test])
    probabilities = classifier.predict_proba(vectors)
    labels = np.asarray(classifier.classes_)
    order = np.argsort(-probabilities, axis=1)
    risks, confidences, wrong = [], [], []
    for n, example in enumerate(test):
        top, second = order[n, 0], order[n, 1]
        message = Message(example.text, str(labels[top]), float(probabilities[n, top]),
                          ((str(labels[top]), float(probabilities[n, top])),
                           (str(labels[second]), float(probabilities[n, second]))))
        signals = triage.measure([message])[0]
        assessment, _ = assess(signals)
        risks.append(assessment.risk)
        confidences.append(message.confidence or 0.0)
        wrong.append(labels[top] != example.intent)
    risk_a, confidence_a, wrong_a = np.asarray(risks), np.asarray(confidences), np.asarray(wrong)
    errors = int(wrong_a.sum())
    rows: list[list[Any]] = []
    for share in (0.1, 0.2, 0.3):
        flagged = int(round(share * len(test)))
        by_confidence = np.argsort(confidence_a, kind="stable")[:flagged]
        by_risk = np.lexsort((confidence_a, -risk_a))[:flagged]  # risk, ties: lower confidence
        rows.append([f"{share:.0%} ({flagged})",
                     f"{wrong_a[by_confidence].sum() / errors:.1%}",
                     f"{wrong_a[by_risk].sum() / errors:.1%}",
                     f"{min(1.0, flagged / errors):.1%}"])
    def share_for(order: np.ndarray, goal: float = 0.8) -> str:
        caught = np.cumsum(wrong_a[order]) / errors
        return f"{(int(np.argmax(caught >= goal)) + 1) / len(test):.1%}"

    rows.append(["flagged to catch 80% of errors",
                 share_for(np.argsort(confidence_a, kind="stable")),
                 share_for(np.lexsort((confidence_a, -risk_a))),
                 f"{0.8 * errors / len(test):.1%}"])
    review = TriageConfig().thresholds.review
    at_threshold = risk_a >= review
    by_confidence = np.argsort(confidence_a, kind="stable")[:int(at_threshold.sum())]
    rows.append([f"risk \u2265 {review} (review threshold): {at_threshold.mean():.1%}",
                 f"{wrong_a[by_confidence].sum() / errors:.1%}",
                 f"{wrong_a[at_threshold].sum() / errors:.1%}",
                 f"{min(1.0, at_threshold.sum() / errors):.1%}"])
    print(f"\n### Quality: banking77, {shots} examples per intent (seed {seed}), "
          f"{len(test)} test messages, classifier accuracy {1 - errors / len(test):.1%} "
          f"({errors} wrong)\n")
    print(table(["messages flagged", "errors caught: lowest confidence",
                 "errors caught: highest risk", "most possible"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=200, help="timings per round")
    parser.add_argument("--quality", action="store_true", help="also the banking77 benchmark")
    parser.add_argument("--only-quality", action="store_true")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seed", type=int, default=77)
    args = parser.parse_args()
    cache = TriageConfig().cache_dir
    openvino = OpenVINOEncoder(cache_dir=cache)
    if not args.only_quality:
        baseline = TorchEncoder()
        openvino_f32 = OpenVINOEncoder(cache_dir=cache, precision="f32")
        bench_encoders({"baseline": baseline, "openvino": openvino,
                        "openvino-f32": openvino_f32}, args.rounds, args.count)
        triage = Triage.load(TriageConfig(), encoder=openvino)
        torch_triage = Triage(triage.index.rebuilt(encoder=baseline), triage.rules)
        bench_triage({"openvino": triage, "torch (baseline)": torch_triage},
                     args.rounds, args.count)
        asyncio.run(bench_worker(triage, args.rounds))
    if args.quality or args.only_quality:
        bench_quality(openvino, args.shots, args.seed)


if __name__ == "__main__":
    main()
