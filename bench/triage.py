"""How fast triage is and how much it catches: ``.venv/gateway/bin/python bench/triage.py``.

Speed (one run, every variant interleaved round by round so machine noise hits all alike;
each figure is the median of ``--rounds`` rounds):

- the sentence encoder: sentence-transformers on PyTorch fp32 (the baseline) against the
  OpenVINO export at the CPU's default precision (bf16 here; the gateway's default) and at
  fp32, and ONNX Runtime at fp32 and int8 when requirements/bench.txt is installed: p50/p99 ms for one 16-word message (batch 1, after warm-up), batch-32 sentences/s,
  and cosine similarity to the baseline's embeddings over 200 varied customer messages (the
  held-out NLU examples of tests/nlu_holdout plus very short ones);
- the whole triage of one message (embedding, nearest neighbours, sentiment, rules, score),
  and each part alone;
- the async worker under load: messages/s when 1,000 arrive at once, and the latency of each
  message when they arrive at 150 per second.

Quality (``--quality``, a minute per ``--shots`` count): banking77 (../shared/datasets, read in
place), a classifier trained on ``--shots`` examples per intent of its training file: a stand-in
for this project's Rasa NLU (config.yml: logistic regression on word 1-2-gram and char_wb
2-5-gram counts, in scikit-learn), and the triage's index built from the same examples; the
test file streamed through the triage. How many of the classifier's wrong answers are among
the 10/20/30% of messages with the highest risk, against the 10/20/30% with the lowest
confidence, and with the risk left without the embeddings' second opinion.

The same table for this project's own Rasa model (``--project``, also part of ``--quality``):
the model in service (``--model`` to choose) parses the held-out NLU examples of
tests/nlu_holdout in the Rasa environment (``bench/holdout_parses.py``), and the triage the
gateway builds from ``data/`` assesses them. Then the routing on mixed traffic: those examples
and the out-of-scope questions of tests/out_of_scope, each as a first message: the share sent
to review and to a person (against the targets review ≤ 15%, person ≤ 5%) beside the bot's
errors caught, at the configured thresholds and at the lowest ones that meet the targets.

``--tune`` searches the weights and ramps of that second opinion on the rest of banking77's
training file (never the test file) and prints the best; they are copied by hand into
``handoff.triage.scoring.Weights``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from handoff.triage import (  # noqa: E402
    History, Message, Triage, TriageConfig, TriageWorker,
)
from handoff.triage.calibration import Shares, fit  # noqa: E402
from handoff.triage.corpus import Corpus, Example, read_examples  # noqa: E402
from handoff.triage.encoder import (  # noqa: E402
    DEFAULT_MODEL, INPUTS, Encoder, OpenVINOEncoder, TorchEncoder, fingerprint, pooled_network,
    resolve_model,
)
from handoff.triage.index import EmbeddingIndex  # noqa: E402
from handoff.triage.rules import check_rules  # noqa: E402
from handoff.triage.scoring import (  # noqa: E402
    ACTIONS, FALLBACK_INTENT, OUT_OF_SCOPE_INTENT, PERSON_REASONS, Signals, Weights,
    assess,
)

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


class OnnxEncoder:
    """The same network as the gateway's encoder (``pooled_network``) exported to ONNX and run
    by onnxruntime on 2 threads, at fp32 or with int8 weights (dynamic quantization): the
    variants the gateway does not use, measured beside it. Needs ``requirements/bench.txt``
    (onnx, onnxscript, onnxruntime); the exports are cached beside the OpenVINO one."""

    def __init__(self, openvino: OpenVINOEncoder, int8: bool = False) -> None:
        import onnxruntime

        folder = resolve_model(DEFAULT_MODEL)
        export = openvino.export_dir.with_name(
            f"onnx-{fingerprint(folder)}-ort{onnxruntime.__version__}")
        fp32, quantized = export / "model.onnx", export / "model-int8.onnx"
        if not fp32.is_file():
            export.mkdir(parents=True, exist_ok=True)
            self._export(folder, fp32)
        if int8 and not quantized.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32), str(quantized), weight_type=QuantType.QInt8)
        self._inputs = openvino.inputs  # the same tokenisation
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        self._session = onnxruntime.InferenceSession(
            str(quantized if int8 else fp32), options, providers=["CPUExecutionProvider"])
        self.name = f"onnxruntime-{'int8' if int8 else 'f32'}:{DEFAULT_MODEL}"
        self.dimension = openvino.dimension

    @staticmethod
    def _export(folder: Path, target: Path) -> None:
        import torch

        network = pooled_network(folder)
        example = tuple(torch.ones((1, 8), dtype=torch.int64) for _ in INPUTS)
        scratch = target.with_name(f".{target.name}.tmp")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # TorchScript exporter: torch.export's (dynamo=True) writes the output's name
            # twice here, which onnxruntime refuses.
            torch.onnx.export(network, example, str(scratch), dynamo=False, opset_version=17,
                              input_names=list(INPUTS), output_names=["embedding"],
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in INPUTS})
        scratch.replace(target)

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        output = self._session.run(None, self._inputs(texts))[0]
        return np.asarray(output, dtype=np.float32)


def onnx_encoders(openvino: OpenVINOEncoder) -> dict[str, Encoder]:
    """ONNX fp32 and int8, or none (with why) when the bench's extras are not installed."""
    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401 - and this, since torch 2.9
    except ImportError as exc:
        print(f"\n(ONNX variants left out: {exc.name} is not installed; "
              f"pip install -r requirements/bench.txt)")
        return {}
    return {"onnx-f32": OnnxEncoder(openvino), "onnx-int8": OnnxEncoder(openvino, int8=True)}


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


def _split(shots: int, seed: int, tuning_per_intent: int = 40
           ) -> tuple[list[Example], list[Example], list[Example]]:
    """banking77's training file split into ``shots`` examples per intent (the classifier's
    and the index's training data) and ``tuning_per_intent`` others per intent (to tune the
    weights on), both seeded; and the test file, untouched."""
    rng = np.random.default_rng(seed)
    by_intent: dict[str, list[Example]] = {}
    for example in _banking77("train.csv"):
        by_intent.setdefault(example.intent, []).append(example)
    train: list[Example] = []
    tuning: list[Example] = []
    for intent in sorted(by_intent):
        chosen = rng.permutation(len(by_intent[intent]))
        train += [by_intent[intent][i] for i in chosen[:shots]]
        tuning += [by_intent[intent][i] for i in chosen[shots:shots + tuning_per_intent]]
    return train, tuning, _banking77("test.csv")


def rasa_like_classifier(train: Sequence[Example]) -> Any:
    """A stand-in for this project's Rasa NLU pipeline (config.yml), in scikit-learn: Rasa's
    LogisticRegressionClassifier (lbfgs, balanced class weights, max_iter 200, seed 42) on the
    counts of CountVectorsFeaturizer's word 1-2-grams (Rasa's token pattern, lower case) and
    char_wb 2-5-grams. Left out: the regex and lexical featurizers (no patterns fit banking77;
    the lexical features are per token, not the sentence features the classifier reads) and
    the FallbackClassifier (a step after the classifier; triage reads its confidences)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        CountVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b"),
        CountVectorizer(analyzer="char_wb", ngram_range=(2, 5)))
    classifier = LogisticRegression(solver="lbfgs", max_iter=200, class_weight="balanced",
                                    tol=1e-4, random_state=42)
    return make_pipeline(features, classifier).fit([e.text for e in train],
                                                  [e.intent for e in train])


def _nlu(classifier: Any, examples: Sequence[Example]
         ) -> tuple[list[Message], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """What the stand-in NLU says of each example, as Rasa reports it (top intent, confidence,
    a ranking of 10), the confidences, and whether the top intent is wrong."""
    probabilities = classifier.predict_proba([e.text for e in examples])
    labels = np.asarray(classifier.classes_)
    order = np.argsort(-probabilities, axis=1)[:, :10]
    messages = []
    for n, example in enumerate(examples):
        ranking = tuple((str(labels[i]), float(probabilities[n, i])) for i in order[n])
        messages.append(Message(example.text, ranking[0][0], ranking[0][1], ranking))
    confidences = np.asarray([m.confidence for m in messages], dtype=np.float64)
    wrong = np.asarray([m.intent != e.intent for m, e in zip(messages, examples)])
    return messages, confidences, wrong


def _signals(triage: Triage, messages: Sequence[Message]) -> list[Signals]:
    return [s for i in range(0, len(messages), 64) for s in triage.measure(messages[i:i + 64])]


def _risks(signals: Sequence[Signals], weights: Weights) -> npt.NDArray[np.float64]:
    return np.asarray([assess(s, weights=weights)[0].risk for s in signals])


def _flagged_first(risk: npt.NDArray[np.float64], confidence: npt.NDArray[np.float64]
                   ) -> npt.NDArray[np.intp]:
    return np.lexsort((confidence, -risk))  # highest risk first, ties: lower confidence


def _caught(order: npt.NDArray[np.intp], wrong: npt.NDArray[np.bool_], share: float) -> float:
    return float(wrong[order[:int(round(share * len(wrong)))]].sum() / wrong.sum())


def _share_for(order: npt.NDArray[np.intp], wrong: npt.NDArray[np.bool_],
               goal: float = 0.8) -> float:
    caught = np.cumsum(wrong[order]) / wrong.sum()
    return (int(np.argmax(caught >= goal)) + 1) / len(wrong)


# What --tune searches: the weights and ramps of the embeddings' second opinion. The NLU's own
# signals and novelty keep the values set on this project's data: banking77 has no
# out-of-domain messages, so it would only ever lower the novelty weights. The two weights
# together stay at most SECOND_OPINION_MOST: enough for review, never a person on their own.
SECOND_OPINION_MOST = 0.6
TUNED: dict[str, Sequence[float]] = {
    "neighbours_disagree": (0.1, 0.2, 0.3, 0.45, 0.6, 0.8),
    "vote_share_ok": (0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "closer_to_other": (0.1, 0.2, 0.3, 0.45, 0.6, 0.8),
    "distance_gap_ok": (-0.15, -0.1, -0.05, 0.0),
    "distance_gap_bad": (0.05, 0.1, 0.15, 0.2, 0.3),
}


def tune_weights(encoder: Encoder, shots: Sequence[int], seed: int,
                 share: float = 0.2) -> Weights:
    """Coordinate search over :data:`TUNED`, from today's weights, for the most errors caught
    at ``share`` flagged (the mean over classifiers trained on each of ``shots`` examples per
    intent), on banking77's training file only: the examples the classifier did not see."""
    runs = []
    for count in shots:
        train, tuning, _ = _split(count, seed)
        triage = Triage(EmbeddingIndex(Corpus(tuple(train), ()), encoder), [])
        messages, confidence, wrong = _nlu(rasa_like_classifier(train), tuning)
        runs.append((_signals(triage, messages), confidence, wrong))

    def score(weights: Weights) -> float:
        return float(np.mean([_caught(_flagged_first(_risks(s, weights), c), w, share)
                              for s, c, w in runs]))

    best, best_score = Weights(), score(Weights())
    print(f"\n### Tuning on banking77 training messages the classifier did not see "
          f"({', '.join(str(len(w)) for *_, w in runs)}; {shots} shots, seed {seed}): "
          f"{best_score:.1%} of errors caught at {share:.0%} with today's weights")
    for _ in range(3):
        improved = False
        for name, values in TUNED.items():
            for value in values:
                candidate = replace(best, **{name: value})
                if candidate.neighbours_disagree + candidate.closer_to_other > \
                        SECOND_OPINION_MOST + 1e-9:
                    continue
                found = score(candidate)
                if found > best_score + 1e-9:
                    best, best_score, improved = candidate, found, True
        print(f"pass: {best_score:.1%}")
        if not improved:
            break
    changed = {f.name: getattr(best, f.name) for f in fields(Weights)
               if getattr(best, f.name) != getattr(Weights(), f.name)}
    print(f"best: {best_score:.1%} with {changed or 'no change'}")
    return best


def report_quality(title: str, confidence: npt.NDArray[np.float64],
                   wrong: npt.NDArray[np.bool_], signals: Sequence[Signals]) -> None:
    """The table of errors caught: by lowest confidence, by highest risk without the second
    opinion, by highest risk; at 10/20/30% flagged, the share needed for 80%, and the review
    threshold."""
    weights = Weights()
    alone = replace(weights, neighbours_disagree=0.0, closer_to_other=0.0)
    orders = {"confidence": np.argsort(confidence, kind="stable"),
              "risk without": _flagged_first(_risks(signals, alone), confidence),
              "risk": _flagged_first(risk := _risks(signals, weights), confidence)}
    errors, count = int(wrong.sum()), len(wrong)
    rows: list[list[Any]] = []
    for share in (0.1, 0.2, 0.3):
        rows.append([f"{share:.0%} ({int(round(share * count))})"] +
                    [f"{_caught(o, wrong, share):.1%}" for o in orders.values()] +
                    [f"{min(1.0, share * count / errors):.1%}"])
    rows.append(["share flagged to catch 80% of errors"] +
                [f"{_share_for(o, wrong):.1%}" for o in orders.values()] +
                [f"{0.8 * errors / count:.1%}"])
    review = TriageConfig().thresholds.review
    at_threshold = risk >= review
    rows.append([f"risk \u2265 {review} (review threshold): {at_threshold.mean():.1%}",
                 f"{_caught(orders['confidence'], wrong, at_threshold.mean()):.1%}",
                 "", f"{wrong[at_threshold].sum() / errors:.1%}",
                 f"{min(1.0, at_threshold.sum() / errors):.1%}"])
    print(f"\n### {title}, accuracy {1 - errors / count:.1%} ({errors} wrong of {count})\n")
    print(table(["messages flagged", "errors caught: lowest confidence",
                 "highest risk without the second opinion", "**highest risk**",
                 "most possible"], rows))


def bench_quality(encoder: Encoder, shots: int, seed: int) -> None:
    train, _, test = _split(shots, seed)
    classifier = rasa_like_classifier(train)
    triage = Triage(EmbeddingIndex(Corpus(tuple(train), ()), encoder), [])
    messages, confidence, wrong = _nlu(classifier, test)
    report_quality(f"Quality: banking77, {shots} examples per intent (seed {seed}), test file, "
                   "classifier: word + char n-gram counts, logistic regression",
                   confidence, wrong, _signals(triage, messages))


def bench_project_quality(encoder: Encoder, rasa_python: Path, model: Path | None) -> None:
    """This project's own Rasa model on its held-out NLU examples (``bench/holdout_parses.py``
    in the Rasa environment), through the triage the gateway builds from ``data/``. An error
    is an example whose parse is not its intent (``nlu_fallback`` included: the bot would not
    act on it)."""
    command = [str(rasa_python), str(PROJECT_ROOT / "bench" / "holdout_parses.py"),
               "--out-of-scope"]
    if model is not None:
        command += ["--model", str(model)]
    env = {**os.environ, "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    mixed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    rows = [r for r in mixed if r["set"] == "nlu_holdout"]
    messages = [Message.from_parse(r["text"], r["parse"]) for r in rows]
    confidence = np.asarray([m.confidence or 0.0 for m in messages], dtype=np.float64)
    wrong = np.asarray([r["parse"]["intent"].get("name") != r["intent"] for r in rows])
    triage = Triage.load(TriageConfig(), encoder=encoder)
    report_quality("Quality: this project's Rasa model on its held-out NLU examples "
                   "(tests/nlu_holdout)", confidence, wrong, _signals(triage, messages))
    report_routing(mixed, triage)


SHARE_TARGETS = (0.15, 0.05)  # at most this share of messages to review, to a person


def report_routing(rows: Sequence[dict[str, Any]], triage: Triage) -> None:
    """Where triage sends mixed traffic (in-domain held-out examples and out-of-scope
    questions written for the project, each as a conversation's first message), at the
    configured thresholds and at those the gateway's fitted mode would use for
    :data:`SHARE_TARGETS` (:func:`handoff.triage.calibration.fit`), beside the bot's
    errors it catches (an in-domain message read as another intent, an out-of-scope question
    the bot did not decline)."""
    assessments = [triage.assess_batch([(Message.from_parse(r["text"], r["parse"]),
                                         History())])[0][0] for r in rows]
    scope = np.asarray([r["intent"] == OUT_OF_SCOPE_INTENT for r in rows])
    got = [r["parse"]["intent"].get("name") for r in rows]
    wrong = np.asarray([g not in (OUT_OF_SCOPE_INTENT, FALLBACK_INTENT) if oos else g != r["intent"]
                        for r, g, oos in zip(rows, got, scope)])
    risk = np.asarray([a.risk for a in assessments])
    codes = [{reason.code for reason in a.reasons} for a in assessments]
    personal = np.asarray([bool(c & PERSON_REASONS) for c in codes])
    reviewable = np.asarray([g != OUT_OF_SCOPE_INTENT or p for g, p in zip(got, personal)])
    forced = [a.action if any(x.startswith("rule:") or x == "human_request" for x in c)
              else "none" for a, c in zip(assessments, codes)]
    configured = triage.thresholds
    # the gateway's own fit (HANDOFF_TRIAGE_THRESHOLDS=fitted), on this mixed traffic
    fitted = fit(assessments, configured, Shares(*SHARE_TARGETS), min_messages=1).thresholds
    out: list[list[Any]] = []
    for label, t in (("configured", configured), ("fitted to the targets", fitted)):
        actions = np.asarray([
            max(f, "human" if (p and r >= t.human) else "review" if (v and r >= t.review)
                else "none", key=ACTIONS.index)
            for f, p, v, r in zip(forced, personal, reviewable, risk)])
        for part, mask in (("mixed", np.ones(len(rows), bool)), ("in-domain", ~scope),
                           ("out-of-scope", scope)):
            flagged = actions[mask] != "none"
            errors = wrong[mask]
            out.append([label if part == "mixed" else "", f"{t.review:.2f} / {t.human:.2f}",
                        f"{part} ({mask.sum()})", f"{(actions[mask] == 'review').mean():.1%}",
                        f"{(actions[mask] == 'human').mean():.1%}",
                        f"{errors.mean():.1%}",
                        f"{(flagged & errors).sum() / max(1, errors.sum()):.1%}"])
    print(f"\n### Routing on mixed traffic: shares against the targets review \u2264 "
          f"{SHARE_TARGETS[0]:.0%}, person \u2264 {SHARE_TARGETS[1]:.0%}\n")
    print(table(["thresholds", "review / human", "messages", "to review", "to a person",
                 "bot wrong", "errors caught"], out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=200, help="timings per round")
    parser.add_argument("--quality", action="store_true", help="also the banking77 benchmark")
    parser.add_argument("--only-quality", action="store_true")
    parser.add_argument("--shots", default="10,40",
                        help="training examples per intent; a comma list runs each")
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--project", action="store_true",
                        help="only the project's own Rasa model on its held-out examples (also "
                             "part of --quality and --only-quality)")
    parser.add_argument("--model", type=Path, default=None,
                        help="the Rasa model for --project (default: the one in service)")
    parser.add_argument("--rasa-python", type=Path,
                        default=PROJECT_ROOT / ".venv" / "rasa" / "bin" / "python")
    parser.add_argument("--tune", action="store_true",
                        help="search the scoring weights on banking77's training file only")
    args = parser.parse_args()
    cache = TriageConfig().cache_dir
    openvino = OpenVINOEncoder(cache_dir=cache)
    if not (args.only_quality or args.project):
        baseline = TorchEncoder()
        openvino_f32 = OpenVINOEncoder(cache_dir=cache, precision="f32")
        bench_encoders({"baseline": baseline, "openvino": openvino,
                        "openvino-f32": openvino_f32, **onnx_encoders(openvino)},
                       args.rounds, args.count)
        triage = Triage.load(TriageConfig(), encoder=openvino)
        torch_triage = Triage(triage.index.rebuilt(encoder=baseline), triage.rules)
        bench_triage({"openvino": triage, "torch (baseline)": torch_triage},
                     args.rounds, args.count)
        asyncio.run(bench_worker(triage, args.rounds))
    shots = [int(n) for n in args.shots.split(",")]
    if args.tune:
        tune_weights(openvino, shots, args.seed)
    if args.quality or args.only_quality or args.project:
        bench_project_quality(openvino, args.rasa_python, args.model)
    if args.quality or args.only_quality:
        for count in shots:
            bench_quality(openvino, count, args.seed)


if __name__ == "__main__":
    main()
