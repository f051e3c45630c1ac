"""The sentence embeddings of training examples, kept between trainings.

Every ``rasa train`` runs :class:`bot.sentence_featurizer.SentenceEmbeddingFeaturizer` over the
whole training data again (Rasa's cache keeps trained components, not the featurized data):
about 2,400 examples, 7 s of a retraining that adds ten. Ten relabels leave all other texts
as they were, so their embeddings are kept here, keyed by the text and by the encoder's
identity (:func:`encoder_identity`: the model's files, OpenVINO's version and the inference
precision it runs at), and only new texts are encoded.

One SQLite file (WAL: readers never wait for a writer, two trainings may share it) in
``sentence-embeddings/`` under Rasa's cache folder (``RASA_CACHE_DIRECTORY``, as Rasa reads it),
or where ``BOT_EMBEDDING_CACHE`` says; ``BOT_EMBEDDING_CACHE=off`` turns it off. At most
``MAX_ROWS`` embeddings are kept: the least recently used go first. Rows of another encoder
are never read, and age out the same way. Any error of the cache (a locked or broken file)
falls back to encoding: the cache can make a training faster, never fail it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

ENV = "BOT_EMBEDDING_CACHE"
FILE_NAME = "embeddings.sqlite3"
MAX_ROWS = 50_000  # 384 float32 each: about 80 MB at most
# The files of a sentence-transformers folder that decide its embeddings.
MODEL_FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
               "sentence_bert_config.json", "modules.json")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    encoder TEXT NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL,
    used REAL NOT NULL,
    PRIMARY KEY (encoder, text)
);
CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (used);
"""


def default_location() -> Optional[Path]:
    """The cache file: ``BOT_EMBEDDING_CACHE`` (a folder; ``off`` for none), else
    ``sentence-embeddings/`` in Rasa's training cache folder."""
    configured = os.environ.get(ENV, "").strip()
    if configured.lower() in ("off", "0", "false", "no"):
        return None
    if configured:
        return Path(configured) / FILE_NAME
    rasa_cache = Path(os.environ.get("RASA_CACHE_DIRECTORY", Path(".rasa", "cache")))
    return rasa_cache / "sentence-embeddings" / FILE_NAME


def encoder_identity(folder: Path, *extra: str) -> str:
    """A hash of what decides the encoder's output: its model files' bytes and ``extra``
    (OpenVINO's version, the inference precision)."""
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    for value in extra:
        digest.update(b"\0" + value.encode())
    return digest.hexdigest()[:32]


class EmbeddingCache:
    """Embeddings by (encoder, text) in one SQLite file; see the module docstring."""

    def __init__(self, path: Path, encoder: str, dimension: int,
                 max_rows: int = MAX_ROWS) -> None:
        self.path = path
        self.encoder = encoder
        self.dimension = dimension
        self.max_rows = max_rows
        self.hits = 0
        self.misses = 0

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(_SCHEMA)
        return connection

    def get(self, texts: Sequence[str]) -> Dict[str, np.ndarray]:
        """The kept embeddings of those of ``texts`` that have one."""
        wanted = list(dict.fromkeys(texts))
        found: Dict[str, np.ndarray] = {}
        connection = self._connect()
        try:
            for start in range(0, len(wanted), 500):  # SQLite's limit on parameters
                chunk = wanted[start:start + 500]
                rows = connection.execute(
                    "SELECT text, vector FROM embeddings WHERE encoder = ? AND text IN "
                    f"({','.join('?' * len(chunk))})", [self.encoder, *chunk]).fetchall()
                for text, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (self.dimension,):
                        found[text] = vector
        finally:
            connection.close()
        return found

    def put(self, vectors: Dict[str, np.ndarray], used: Sequence[str] = ()) -> None:
        """Keep ``vectors`` and mark ``used`` (texts read from the cache) as just used; then
        drop the least recently used rows beyond ``max_rows``."""
        now = time.time()
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT OR REPLACE INTO embeddings (encoder, text, vector, used) "
                "VALUES (?, ?, ?, ?)",
                [(self.encoder, text, np.asarray(v, dtype=np.float32).tobytes(), now)
                 for text, v in vectors.items()])
            connection.executemany(
                "UPDATE embeddings SET used = ? WHERE encoder = ? AND text = ?",
                [(now, self.encoder, text) for text in used])
            (count,) = connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()
            if count > self.max_rows:
                connection.execute(
                    "DELETE FROM embeddings WHERE rowid IN (SELECT rowid FROM embeddings "
                    "ORDER BY used LIMIT ?)", (count - self.max_rows,))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

    def encode(self, texts: Sequence[str],
               encode: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
        """``encode(texts)``, with the kept embeddings read instead of computed: only the
        texts the cache does not have are passed to ``encode`` (in their order, each once),
        and kept for next time."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        try:
            found = self.get(texts)
        except sqlite3.Error as exc:
            logger.warning("the sentence embedding cache %s cannot be read (%s): encoding "
                           "every text", self.path, exc)
            return encode(texts)
        missing: List[str] = [t for t in dict.fromkeys(texts) if t not in found]
        fresh: Dict[str, np.ndarray] = {}
        if missing:
            fresh = dict(zip(missing, encode(missing)))
        self.hits += sum(1 for t in texts if t in found)
        self.misses += len(missing)
        for row, text in enumerate(texts):
            out[row] = found[text] if text in found else fresh[text]
        try:
            self.put(fresh, list(found))
        except sqlite3.Error as exc:
            logger.warning("the sentence embedding cache %s cannot be written (%s)",
                           self.path, exc)
        return out
