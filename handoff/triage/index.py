"""The embedding index: training examples, domain responses and agents' replies, with numpy
nearest-neighbour search (a matrix product over a few thousand unit vectors: tens of µs).

An :class:`EmbeddingIndex` is built once from a :class:`~handoff.triage.corpus.Corpus` and an
:class:`~handoff.triage.encoder.Encoder` and is then read-only, except for the replies agents
add (:meth:`EmbeddingIndex.add_reply`, under a lock). A new model or new training data means a
new index, built beside the old one and swapped in (:class:`handoff.triage.worker.TriageWorker`
does that in the background); :meth:`EmbeddingIndex.rebuilt` carries the agents' replies over.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from handoff.triage.corpus import Corpus
from handoff.triage.encoder import Encoder, Vectors

NEIGHBOURS = 3  # novelty is the mean distance to this many nearest examples
VOTERS = 7  # the nearest examples that vote for an intent
# Each voter's vote is exp((its similarity - the nearest's) / VOTE_SHARPNESS): an example 0.05
# less similar than the nearest counts 1/e as much. Plain similarities (0.75 against 1.0) let
# four loosely related examples outvote an exact match.
VOTE_SHARPNESS = 0.05


@dataclass(frozen=True)
class Novelty:
    """Cosine distances (1 - similarity, 0 = same meaning) of one message to the training data,
    and what its nearest examples say about its intent: the embeddings' second opinion on the
    NLU's."""

    intent: str | None  # the intent measured against (None: not in the training data)
    intent_distance: float  # to the nearest examples of ``intent`` (overall_distance if None)
    overall_distance: float  # to the nearest examples of any intent
    nearest_intent: str  # intent of the single nearest example
    nearest_example: str
    # The VOTERS nearest examples vote for their intents, the nearer the more (VOTE_SHARPNESS):
    # the winner, and the share of the votes that went to ``intent`` (0..1).
    vote_intent: str | None = None
    vote_share: float | None = None
    # The nearest intent other than ``intent`` (that of the nearest example not of ``intent``)
    # and the distance to its NEIGHBOURS nearest examples.
    other_intent: str | None = None
    other_distance: float | None = None


@dataclass(frozen=True)
class Suggestion:
    """A reply an agent could send, with where it came from and how well it fits (cosine)."""

    text: str
    source: str  # "response:utter_x" or "agent:<who>"
    score: float


@dataclass(frozen=True)
class AgentReply:
    text: str
    source: str  # "agent:<who>"
    context: str | None  # the customer message it answered, if known


def _top_mean(similarities: npt.NDArray[np.float32], k: int = NEIGHBOURS) -> float:
    if similarities.size <= k:
        return float(similarities.mean())
    return float(np.partition(similarities, -k)[-k:].mean())


def _unit(vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


class EmbeddingIndex:
    """Embeddings of a corpus, searchable by cosine similarity."""

    def __init__(self, corpus: Corpus, encoder: Encoder,
                 replies: Sequence[AgentReply] = ()) -> None:
        self.corpus = corpus
        self.encoder = encoder
        texts = [e.text for e in corpus.examples]
        self.examples: Vectors = encoder.encode(texts)
        self.example_intents: list[str] = [e.intent for e in corpus.examples]
        self.intents: tuple[str, ...] = corpus.intents
        rows: dict[str, list[int]] = {}
        for row, intent in enumerate(self.example_intents):
            rows.setdefault(intent, []).append(row)
        self._rows = {intent: np.array(r, dtype=np.intp) for intent, r in rows.items()}
        self.centroids: Vectors = np.stack(
            [_unit(self.examples[self._rows[i]].mean(axis=0)) for i in self.intents])
        self.responses: Vectors = encoder.encode([r.text for r in corpus.responses])
        self._answered_by: dict[str, list[str]] = {}
        for intent, names in corpus.answers.items():
            for name in names:
                self._answered_by.setdefault(name, []).append(intent)
        self._lock = threading.Lock()
        self._replies: list[AgentReply] = []
        self._reply_vectors: list[npt.NDArray[np.float32]] = []
        if replies:
            self._add_replies(list(replies))

    @property
    def model_name(self) -> str:
        return self.encoder.name

    @property
    def replies(self) -> tuple[AgentReply, ...]:
        with self._lock:
            return tuple(self._replies)

    def rebuilt(self, corpus: Corpus | None = None,
                encoder: Encoder | None = None) -> EmbeddingIndex:
        """A new index on new data and/or a new model, keeping the agents' replies (re-embedded).
        This index is unchanged and usable meanwhile."""
        return EmbeddingIndex(corpus or self.corpus, encoder or self.encoder, self.replies)

    # --- agents' replies ------------------------------------------------------------------

    def add_reply(self, text: str, source: str, context: str | None = None) -> None:
        """Remembers a reply an agent wrote (``source`` ``agent:<who>``), optionally with the
        customer message it answered, so later suggestions can offer it. Encodes: call it off
        the event loop (:meth:`TriageWorker.add_reply` does)."""
        self._add_replies([AgentReply(text.strip(), source, context)])

    def _add_replies(self, replies: list[AgentReply]) -> None:
        replies = [r for r in replies if r.text]
        if not replies:
            return
        texts = [r.text for r in replies]
        contexts = [r.context or r.text for r in replies]
        vectors = self.encoder.encode(texts + contexts)
        with self._lock:
            for n, reply in enumerate(replies):
                self._replies.append(reply)
                self._reply_vectors.append(np.stack([vectors[n], vectors[len(replies) + n]]))

    # --- search ---------------------------------------------------------------------------

    def novelty(self, vectors: Vectors, intents: Sequence[str | None]) -> list[Novelty]:
        """For each message vector, its distance to the training examples of its intent (an
        intent that has no examples counts as none) and to all examples, and the embeddings'
        own view of its intent: the vote of the :data:`VOTERS` nearest examples and the nearest
        other intent with its distance (both left out when the intent has no examples)."""
        similarities = vectors @ self.examples.T
        found: list[Novelty] = []
        for row, intent in zip(similarities, intents):
            voters = min(VOTERS, row.size)
            top = np.argpartition(row, -voters)[-voters:]
            top = top[np.argsort(-row[top])]  # nearest first
            overall = 1.0 - float(row[top[:NEIGHBOURS]].mean())
            nearest = int(top[0])
            own = self._rows.get(intent) if intent is not None else None
            if intent is None or own is None:
                found.append(Novelty(None, overall, overall, self.example_intents[nearest],
                                     self.corpus.examples[nearest].text))
                continue
            votes: dict[str, float] = {}
            for i, vote in zip(top, np.exp((row[top] - row[nearest]) / VOTE_SHARPNESS)):
                name = self.example_intents[i]
                votes[name] = votes.get(name, 0.0) + float(vote)
            total = sum(votes.values())
            other = next((self.example_intents[i] for i in top
                          if self.example_intents[i] != intent), None)
            if other is None:  # all voters agree: the nearest other intent by one search
                masked = row.copy()
                masked[own] = -np.inf
                other = self.example_intents[int(np.argmax(masked))] \
                    if len(own) < row.size else None
            found.append(Novelty(
                intent=intent,
                intent_distance=1.0 - _top_mean(row[own]),
                overall_distance=overall,
                nearest_intent=self.example_intents[nearest],
                nearest_example=self.corpus.examples[nearest].text,
                vote_intent=max(votes, key=votes.__getitem__),
                vote_share=votes.get(intent, 0.0) / total if total > 0 else 0.0,
                other_intent=other,
                other_distance=1.0 - _top_mean(row[self._rows[other]]) if other else None,
            ))
        return found

    def nearest_intents(self, vector: npt.NDArray[np.float32]) -> list[tuple[str, float]]:
        """Intents by cosine similarity of their centroid to ``vector``, best first."""
        similarities = self.centroids @ vector
        order = np.argsort(-similarities)
        return [(self.intents[i], float(similarities[i])) for i in order]

    def suggest(self, query: npt.NDArray[np.float32], k: int = 3) -> list[Suggestion]:
        """The ``k`` replies that fit the situation ``query`` best (a unit vector, see
        :func:`situation`): each domain response, scored by the better of its own text's
        similarity and the similarity to the examples of the intents it answers; each agent
        reply by the better of its text's and its customer message's similarity. One
        suggestion per text, best first."""
        scored: dict[str, Suggestion] = {}

        def offer(text: str, source: str, score: float) -> None:
            if text not in scored or scored[text].score < score:
                scored[text] = Suggestion(text, source, round(score, 4))

        by_text = self.responses @ query if len(self.responses) else np.zeros(0, np.float32)
        example_similarities = self.examples @ query
        by_intent = {intent: _top_mean(example_similarities[rows])
                     for intent, rows in self._rows.items()}
        best_variant: dict[str, tuple[float, str]] = {}
        for response, similarity in zip(self.corpus.responses, by_text):
            score = max([float(similarity)] + [by_intent[i] for i in
                                               self._answered_by.get(response.name, ())
                                               if i in by_intent])
            if response.name not in best_variant or best_variant[response.name][0] < score:
                best_variant[response.name] = (score, response.text)
        for name, (score, text) in best_variant.items():
            offer(text, f"response:{name}", score)
        with self._lock:
            replies = list(zip(self._replies, self._reply_vectors))
        for reply, vectors in replies:
            offer(reply.text, reply.source, float((vectors @ query).max()))
        return sorted(scored.values(), key=lambda s: -s.score)[:k]


def situation(vectors: Vectors, weights: Sequence[float] | None = None) -> npt.NDArray[np.float32]:
    """One unit vector for a conversation's situation from the vectors of its last messages,
    oldest first: the last customer message weighs most (default: the last 0.7, the earlier
    ones share 0.3, nearer ones more)."""
    count = len(vectors)
    if count == 0:
        raise ValueError("a situation needs at least one message")
    if weights is None:
        if count == 1:
            weights = [1.0]
        else:
            ramp = np.arange(1, count, dtype=np.float32)
            weights = list(0.3 * ramp / ramp.sum()) + [0.7]
    combined = (np.asarray(weights, dtype=np.float32)[:, None] * vectors).sum(axis=0)
    return _unit(combined.astype(np.float32))
