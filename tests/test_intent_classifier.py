"""``bot.intent_classifier.BlockwiseIntentClassifier`` on its own (in the Rasa environment):
the shape of what it outputs, that a persisted model loads to the same answers, that training
is deterministic, that each featurizer's block counts by its weight and not by its norm, and
that a bad configuration is refused."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_sentence_features import rasa_json

# Three intents, sparse "count" features (two featurizers) and a dense "embedding" block whose
# norm is 8 (as the SentenceEmbeddingFeaturizer's scale makes it): the classifier must not care.
SCRIPT = r"""
import json, tempfile
from pathlib import Path
import numpy as np
import scipy.sparse
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.training_data.features import Features
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from bot.intent_classifier import BlockwiseIntentClassifier

rng = np.random.default_rng(3)
INTENTS = ["greet", "track_order", "get_refund"]
centres = {i: rng.normal(size=16) for i in INTENTS}

def message(intent, noise, count_scale=1.0, dense_scale=8.0, text="x"):
    vec = centres[intent] + noise * rng.normal(size=16)
    words = np.zeros(30); words[INTENTS.index(intent) * 10 + rng.integers(0, 10)] = 2
    chars = np.abs(rng.normal(size=50)); chars[INTENTS.index(intent)] += 3
    m = Message(data={"text": text, **({"intent": intent} if intent else {})})
    m.add_features(Features(scipy.sparse.coo_matrix(words * count_scale), "sentence", "text",
                            "run_CountVectorsFeaturizer3"))
    m.add_features(Features(scipy.sparse.coo_matrix(chars * count_scale), "sentence", "text",
                            "run_CountVectorsFeaturizer4"))
    m.add_features(Features((dense_scale * vec / np.linalg.norm(vec))[np.newaxis, :],
                            "sentence", "text", "run_bot.sentence_featurizer.Emb5"))
    return m

train = [message(i, 0.3) for i in INTENTS for _ in range(8)]
state = rng.bit_generator.state
queries = [message(i, 0.5) for i in INTENTS for _ in range(4)]
gold = [i for i in INTENTS for _ in range(4)]

def fit(folder, config):
    storage = LocalModelStorage(Path(folder))
    resource = Resource("classifier")
    context = ExecutionContext(GraphSchema({}), "m")
    c = BlockwiseIntentClassifier.create(
        {**BlockwiseIntentClassifier.get_default_config(), **config}, storage, resource, context)
    c.train(TrainingData(train))
    return c, storage, resource, context

def answer(c, msgs):
    out = c.process([Message(data=dict(m.data), features=list(m.features)) for m in msgs])
    return [{"intent": m.get("intent"), "ranking": m.get("intent_ranking")} for m in out]

result = {}
for name, config in {"plain": {}, "vote": {"vote_weight": 0.5, "temperature": 0.5}}.items():
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        c, storage, resource, context = fit(a, config)
        again, *_ = fit(b, config)
        loaded = BlockwiseIntentClassifier.load(
            {**BlockwiseIntentClassifier.get_default_config(), **config}, storage, resource,
            context)
        result[name] = {
            "answers": answer(c, queries), "loaded": answer(loaded, queries),
            "again": answer(again, queries), "files": sorted(p.name for p in Path(a).rglob("*") if p.is_file()),
            "probs": c.probabilities(queries).tolist(),
        }
# the same queries with every block scaled differently: unit blocks give the same answer
rng.bit_generator.state = state
scaled = [message(i, 0.5, count_scale=7.0, dense_scale=1.0) for i in INTENTS for _ in range(4)]
with tempfile.TemporaryDirectory() as a:
    c, *_ = fit(a, {})
    result["scaled"] = c.probabilities(scaled).tolist()
    result["unscaled"] = c.probabilities(queries).tolist()
    # a message without any feature of one block (an empty text): answered, not an error
    bare = Message(data={"text": "x"}, features=[f for f in queries[0].features
                                                 if "Emb" not in str(f.origin)])
    result["bare"] = answer(c, [bare])[0]["intent"]["name"] in INTENTS
    # a block weighed 0 in block_weights (by its featurizer's name or alias) counts for nothing:
    # the answers do not change when its features do
    c, *_ = fit(a, {"block_weights": {"CountVectorsFeaturizer4": 0}})
    noisy = [Message(data=dict(m.data), features=[
        f if "Featurizer4" not in str(f.origin) else Features(
            scipy.sparse.coo_matrix(np.abs(rng.normal(size=50)) * 5), "sentence", "text",
            f.origin) for f in m.features]) for m in queries]
    result["zero_block"] = [c.probabilities(queries).tolist(), c.probabilities(noisy).tolist()]
    c, *_ = fit(a, {})
    result["default_block"] = [c.probabilities(queries).tolist(), c.probabilities(noisy).tolist()]
    result["weights"] = [c.weight("CountVectorsFeaturizer4", False), c.weight("Emb5", True)]
    c, *_ = fit(a, {"block_weights": {"CountVectorsFeaturizer4": 0.5}, "sparse_weight": 2.0})
    result["own_weights"] = [c.weight("CountVectorsFeaturizer4", False),
                             c.weight("CountVectorsFeaturizer3", False), c.weight("Emb5", True)]
    errors = []
    for bad in ({"C": 0}, {"vote_weight": 1.5}, {"temperature": "warm"}, {"max_iter": -1},
                {"block_weights": {"chars": -1}}, {"block_weights": ["chars"]}):
        try:
            BlockwiseIntentClassifier.validate_config(
                {**BlockwiseIntentClassifier.get_default_config(), **bad})
        except Exception as exc:  # InvalidConfigException
            errors.append(type(exc).__name__)
    result["errors"] = errors
result["gold"] = gold
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    return rasa_json(SCRIPT)


@pytest.mark.parametrize("variant", ["plain", "vote"])
def test_answers_have_rasas_shape_and_are_right_on_easy_data(run: dict[str, Any],
                                                              variant: str) -> None:
    answers = run[variant]["answers"]
    assert len(answers) == len(run["gold"])
    for answer, probs in zip(answers, run[variant]["probs"]):
        ranking = answer["ranking"]
        assert [r["name"] for r in ranking] and len(ranking) == 3
        assert answer["intent"] == ranking[0]
        confidences = [r["confidence"] for r in ranking]
        assert confidences == sorted(confidences, reverse=True)
        assert abs(sum(probs) - 1.0) < 1e-9 and abs(sum(confidences) - 1.0) < 1e-9
    right = sum(a["intent"]["name"] == g for a, g in zip(answers, run["gold"]))
    assert right >= len(answers) - 1


@pytest.mark.parametrize("variant", ["plain", "vote"])
def test_a_persisted_model_loads_to_the_same_answers(run: dict[str, Any], variant: str) -> None:
    assert run[variant]["loaded"] == run[variant]["answers"]
    assert run[variant]["files"] == ["classifier.json", "classifier.npz"]


@pytest.mark.parametrize("variant", ["plain", "vote"])
def test_training_twice_gives_the_same_model(run: dict[str, Any], variant: str) -> None:
    assert run[variant]["again"] == run[variant]["answers"]


def test_each_block_counts_by_its_weight_not_its_norm(run: dict[str, Any]) -> None:
    for scaled, unscaled in zip(run["scaled"], run["unscaled"]):
        assert max(abs(a - b) for a, b in zip(scaled, unscaled)) < 1e-9
    assert run["bare"]


def test_a_block_weighs_what_block_weights_gives_it(run: dict[str, Any]) -> None:
    plain, noisy = run["zero_block"]
    assert max(abs(a - b) for p, n in zip(plain, noisy) for a, b in zip(p, n)) < 1e-9
    plain, noisy = run["default_block"]  # weighed 1 by default: the same noise moves it
    assert max(abs(a - b) for p, n in zip(plain, noisy) for a, b in zip(p, n)) > 1e-3
    assert run["weights"] == [1.0, 3.0]
    assert run["own_weights"] == [0.5, 2.0, 3.0]


def test_a_bad_configuration_is_refused(run: dict[str, Any]) -> None:
    assert run["errors"] == ["InvalidConfigException"] * 6
