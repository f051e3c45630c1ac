"""The training embeddings kept between trainings (``bot/embedding_cache.py``): a cached
embedding is the one a fresh encode gives, only new texts are encoded, the cache is bounded,
keyed by the encoder, and never fails a training."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, List, Sequence

import numpy as np
import pytest

from bot.embedding_cache import EmbeddingCache, encoder_identity
from tests.test_sentence_features import rasa_json

DIM = 4


class Counting:
    """A stand-in encoder (the real one runs in the Rasa environment: the test at the end):
    a fixed vector per text, and the texts it was asked for."""

    def __init__(self) -> None:
        self.asked: List[List[str]] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.asked.append(list(texts))
        return np.array([[len(t), sum(map(ord, t)) % 97, t.count("e"), 1.5] for t in texts],
                        dtype=np.float32)


def test_only_new_texts_are_encoded_and_the_kept_ones_come_back_unchanged(
        tmp_path: Path) -> None:
    encode = Counting()
    cache = EmbeddingCache(tmp_path / "e.sqlite3", "enc-a", DIM)
    first = cache.encode(["where is my parcel", "hi", "hi", "refund"], encode)
    assert encode.asked == [["where is my parcel", "hi", "refund"]]
    np.testing.assert_array_equal(first, encode(["where is my parcel", "hi", "hi", "refund"]))
    assert (cache.hits, cache.misses) == (0, 3)  # hits: rows read from the cache

    again = EmbeddingCache(tmp_path / "e.sqlite3", "enc-a", DIM)
    encode.asked.clear()
    second = again.encode(["refund", "a new one", "hi"], encode)
    assert encode.asked == [["a new one"]]
    assert (again.hits, again.misses) == (2, 1)
    np.testing.assert_array_equal(second, encode(["refund", "a new one", "hi"]))


def test_another_encoder_reads_nothing_of_the_first(tmp_path: Path) -> None:
    encode = Counting()
    EmbeddingCache(tmp_path / "e.sqlite3", "enc-a", DIM).encode(["hi", "refund"], encode)
    other = EmbeddingCache(tmp_path / "e.sqlite3", "enc-b", DIM)
    encode.asked.clear()
    other.encode(["hi", "refund"], encode)
    assert encode.asked == [["hi", "refund"]]
    assert other.hits == 0


def test_the_least_recently_used_go_first_beyond_the_bound(tmp_path: Path) -> None:
    encode = Counting()
    path = tmp_path / "e.sqlite3"
    EmbeddingCache(path, "e", DIM, max_rows=3).encode(["one", "two", "three"], encode)
    EmbeddingCache(path, "e", DIM, max_rows=3).encode(["two", "three"], encode)  # used again
    EmbeddingCache(path, "e", DIM, max_rows=3).encode(["four"], encode)
    with sqlite3.connect(path) as db:
        kept = sorted(t for (t,) in db.execute("SELECT text FROM embeddings"))
    assert kept == ["four", "three", "two"]


def test_a_broken_cache_file_falls_back_to_encoding(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite3"
    path.write_bytes(b"not a database" * 100)
    encode = Counting()
    out = EmbeddingCache(path, "e", DIM).encode(["hi", "refund"], encode)
    np.testing.assert_array_equal(out, encode(["hi", "refund"]))


def test_concurrent_trainings_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite3"
    texts = [f"text {i}" for i in range(300)]
    results: List[np.ndarray] = []
    errors: List[BaseException] = []

    def run(offset: int) -> None:
        try:
            mine = texts[offset:] + texts[:offset]
            for _ in range(3):
                results.append(EmbeddingCache(path, "e", DIM).encode(mine, Counting())[
                    np.argsort([int(t.split()[1]) for t in mine])])
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k * 100,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(results) == 9
    for r in results:
        np.testing.assert_array_equal(r, Counting()(texts))


def test_the_encoder_identity_follows_its_files_and_settings(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    base = encoder_identity(tmp_path, "openvino 1", "precision f32")
    assert base == encoder_identity(tmp_path, "openvino 1", "precision f32")
    assert base != encoder_identity(tmp_path, "openvino 1", "precision bf16")
    (tmp_path / "model.safetensors").write_bytes(b"weights, retrained")
    assert base != encoder_identity(tmp_path, "openvino 1", "precision f32")


@pytest.fixture(scope="module")
def featurized(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("embeddings")
    return rasa_json(f"""
        import json, os
        import numpy as np
        from rasa.shared.nlu.training_data.message import Message
        from rasa.shared.nlu.training_data.training_data import TrainingData
        from bot.embedding_cache import EmbeddingCache, default_location
        from bot.sentence_featurizer import SentenceEmbeddingFeaturizer

        texts = ["where is my parcel", "I'm waiting for a rebate of $299", "hi",
                 "cancel order 100234 please", "my card was charged twice"]

        def train(some):
            featurizer = SentenceEmbeddingFeaturizer(
                {{**SentenceEmbeddingFeaturizer.get_default_config(), "scale": 8}}, "f")
            data = TrainingData([Message(data={{"text": t, "intent": "x"}}) for t in some])
            featurizer.process_training_data(data)
            return [m.get_dense_features("text")[1].features.reshape(-1).tolist()
                    for m in data.training_examples], featurizer

        os.environ["BOT_EMBEDDING_CACHE"] = "off"
        fresh, featurizer = train(texts)
        os.environ["BOT_EMBEDDING_CACHE"] = {str(folder)!r}
        first, _ = train(texts[:3])   # fills the cache with three of them
        mixed, _ = train(texts)       # three from the cache, two encoded
        again, _ = train(texts)       # all five from the cache
        encoder = featurizer._encoder
        cache = EmbeddingCache(default_location(), encoder.identity(), encoder.dimension)
        kept = cache.get(texts)
        print(json.dumps({{"fresh": fresh, "first": first, "mixed": mixed, "again": again,
                          "kept": sorted(kept), "identity": encoder.identity(),
                          "identity_again": type(encoder).load().identity()}}))
        """)


def test_the_featurizer_gives_the_fresh_embeddings_from_the_cache(featurized: Any) -> None:
    fresh, mixed, again = (np.array(featurized[k]) for k in ("fresh", "mixed", "again"))
    assert sorted(featurized["kept"]) == sorted(["where is my parcel", "hi",
                                                 "I'm waiting for a rebate of $299",
                                                 "cancel order 100234 please",
                                                 "my card was charged twice"])
    # Deterministic: what the cache gave once it gives again, bit for bit.
    np.testing.assert_array_equal(again, mixed)
    # Equal to a fresh encode: the first three were encoded in another batch, so up to the
    # encoder's float noise between batch shapes (cosine 1 to 1e-5, as in
    # test_sentence_features' batch against one-by-one).
    np.testing.assert_array_equal(np.array(featurized["first"]), mixed[:3])
    cosine = (fresh * mixed).sum(1) / np.linalg.norm(fresh, axis=1) / np.linalg.norm(mixed, axis=1)
    assert cosine.min() > 1 - 1e-5
    np.testing.assert_allclose(np.linalg.norm(mixed, axis=1), 8.0, rtol=1e-5)
    assert featurized["identity"] == featurized["identity_again"]
