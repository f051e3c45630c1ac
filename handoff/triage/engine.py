"""The triage engine: encoder + index + rules + sentiment + scoring, synchronous.

:class:`Triage` does the work; it blocks (the encoder runs the network), so the gateway calls
it through :class:`handoff.triage.worker.TriageWorker`, never on the event loop. Its methods
take whole batches so that the worker can encode messages that arrived together in one call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from threadpoolctl import threadpool_limits

from handoff.triage.calibration import Calibration, Shares, fit
from handoff.triage.clustering import Cluster, cluster_messages
from handoff.triage.corpus import read_corpus
from handoff.triage.encoder import (
    DEFAULT_CACHE_DIR,
    DEFAULT_MODEL,
    Encoder,
    Vectors,
    load_encoder,
)
from handoff.triage.index import EmbeddingIndex, Suggestion, situation
from handoff.triage.rules import DEFAULT_RULES, Rule, RuleHit, check_rules, load_rules
from handoff.triage.scoring import (
    FALLBACK_INTENT,
    Assessment,
    History,
    Signals,
    Thresholds,
    Weights,
    assess,
)
from handoff.triage.sentiment import Sentiment

PROJECT_ROOT: Final = Path(__file__).resolve().parents[2]
CONTEXT_MESSAGES: Final = 4  # suggestions look at this many last messages


@dataclass(frozen=True)
class TriageConfig:
    """Where the model, data and rules are, and the thresholds (from ``HANDOFF_TRIAGE_*``)."""

    model: str = DEFAULT_MODEL
    backend: str = "openvino"
    cache_dir: Path = DEFAULT_CACHE_DIR
    data: Path = PROJECT_ROOT / "data"
    domain: Path = PROJECT_ROOT / "domain.yml"
    rules: Path = DEFAULT_RULES
    thresholds: Thresholds = Thresholds()
    weights: Weights = Weights()
    max_batch: int = 32
    threads: int = 0  # the encoder's CPU threads per inference (0: the backend's choice)
    # Thresholds that follow a target share (calibration.py): "fixed" keeps ``thresholds``;
    # "fitted" raises them, after each model change, to meet ``shares`` on a calibration set.
    mode: str = "fixed"
    shares: Shares = Shares()
    calibration_messages: int = 300  # most messages scored per fit
    calibration_min: int = 100  # fewer: the fixed thresholds are kept

    @classmethod
    def from_settings(cls, settings: Any) -> TriageConfig:
        """From :class:`handoff.settings.Settings` (its ``triage_*`` fields); relative paths
        are taken from the project folder."""
        def path(value: str) -> Path:
            p = Path(os.path.expanduser(value))
            return p if p.is_absolute() else PROJECT_ROOT / p

        return cls(model=settings.triage_model, backend=settings.triage_backend.lower(),
                   cache_dir=path(settings.triage_cache_dir), data=path(settings.triage_data),
                   domain=path(settings.triage_domain), rules=path(settings.triage_rules),
                   thresholds=Thresholds(review=settings.triage_review_threshold,
                                         human=settings.triage_human_threshold),
                   max_batch=settings.triage_max_batch, threads=settings.triage_threads,
                   mode=settings.triage_thresholds.lower(),
                   shares=Shares(review=settings.triage_review_share,
                                 human=settings.triage_human_share),
                   calibration_messages=settings.triage_calibration_messages,
                   calibration_min=settings.triage_calibration_min)


@dataclass(frozen=True)
class Message:
    """A customer message with what Rasa's NLU made of it (all optional but the text)."""

    text: str
    intent: str | None = None
    confidence: float | None = None
    ranking: Sequence[tuple[str, float]] = field(default_factory=tuple)  # intent_ranking

    @classmethod
    def from_parse(cls, text: str, parse: dict[str, Any] | None) -> Message:
        """From Rasa's parse result (``{"intent": {"name", "confidence"},
        "intent_ranking": [{"name", "confidence"}, ...]}``)."""
        parse = parse or {}
        intent = parse.get("intent") or {}
        ranking = tuple((str(r["name"]), float(r.get("confidence") or 0.0))
                        for r in parse.get("intent_ranking") or () if r.get("name"))
        confidence = intent.get("confidence")
        return cls(text, intent.get("name"),
                   float(confidence) if confidence is not None else None, ranking)

    def understood(self) -> tuple[str | None, float | None]:
        """The best real intent (skipping ``nlu_fallback``) and the top-1 minus top-2 margin."""
        ranked = sorted((r for r in self.ranking if r[0] != FALLBACK_INTENT),
                        key=lambda r: -r[1])
        best = ranked[0][0] if ranked else (
            self.intent if self.intent != FALLBACK_INTENT else None)
        if len(ranked) >= 2:
            return best, ranked[0][1] - ranked[1][1]
        return best, None


@dataclass(frozen=True)
class Prepared:
    """One message measured before its NLU result: see :meth:`Triage.prepare`. Keeps the
    index it was embedded for, so an index swapped in meanwhile does not mix two models."""

    text: str
    vector: Vectors  # one row
    index: EmbeddingIndex
    sentiment: float
    rule_hits: tuple[RuleHit, ...]


class Triage:
    """Measures and scores customer messages and suggests replies. Thread-safe for concurrent
    calls; :attr:`index` may be replaced at any time (a new object, never changed in place).
    Creating one limits BLAS (numpy's matrix products) to one thread in this process."""

    def __init__(self, index: EmbeddingIndex, rules: Sequence[Rule], *,
                 thresholds: Thresholds = Thresholds(), weights: Weights = Weights(),
                 sentiment: Sentiment | None = None) -> None:
        # The matrix products here are tiny; BLAS's own threads only spin on the cores the
        # encoder needs (whole triage p50 2.5 ms with one BLAS thread, 16 ms without).
        threadpool_limits(limits=1, user_api="blas")
        self.index = index
        self.rules = tuple(rules)
        self.thresholds = thresholds
        self.weights = weights
        self.sentiment = sentiment or Sentiment()

    @classmethod
    def load(cls, config: TriageConfig = TriageConfig(),
             encoder: Encoder | None = None) -> Triage:
        """Loads the rules (first: a bad file fails fast), the model and the data, and builds
        the index (a few seconds)."""
        rules = load_rules(config.rules)
        encoder = encoder or load_encoder(config.model, config.backend, config.cache_dir,
                                          threads=config.threads)
        index = EmbeddingIndex(read_corpus(config.data, config.domain), encoder)
        return cls(index, rules, thresholds=config.thresholds, weights=config.weights)

    @property
    def encoder(self) -> Encoder:
        return self.index.encoder

    def prepare(self, texts: Sequence[str]) -> list[Prepared]:
        """What can be measured of each message before the NLU has read it (the embedding,
        the sentiment, the rules): the slow part, one encoder call for the whole batch. The
        gateway runs it while Rasa works on the same message."""
        index = self.index
        vectors = index.encoder.encode(list(texts))
        return [Prepared(text, vectors[i:i + 1], index, self.sentiment.score(text),
                         tuple(check_rules(self.rules, text)))
                for i, text in enumerate(texts)]

    def finish(self, prepared: Prepared, message: Message,
               history: History) -> tuple[Assessment, History]:
        """The assessment once the NLU result is known: a nearest-neighbour search on the
        prepared embedding and the pure score (tens of µs; safe on the event loop)."""
        understood, margin = message.understood()
        novelty = prepared.index.novelty(prepared.vector, [understood])[0]
        signals = Signals(text=prepared.text, intent=message.intent,
                          confidence=message.confidence, margin=margin, novelty=novelty,
                          sentiment=prepared.sentiment, rule_hits=prepared.rule_hits)
        return assess(signals, history, self.thresholds, self.weights)

    def measure(self, messages: Sequence[Message]) -> list[Signals]:
        """The signals of each message: one encoder call for the whole batch."""
        index = self.index
        vectors = index.encoder.encode([m.text for m in messages])
        understood = [m.understood() for m in messages]
        novelties = index.novelty(vectors, [u[0] for u in understood])
        return [
            Signals(text=m.text, intent=m.intent, confidence=m.confidence, margin=margin,
                    novelty=novelty, sentiment=self.sentiment.score(m.text),
                    rule_hits=tuple(check_rules(self.rules, m.text)))
            for m, (_, margin), novelty in zip(messages, understood, novelties)
        ]

    def assess_batch(self, items: Sequence[tuple[Message, History]]
                     ) -> list[tuple[Assessment, History]]:
        """:func:`~handoff.triage.scoring.assess` for each (message, history)."""
        signals = self.measure([message for message, _ in items])
        return [assess(s, history, self.thresholds, self.weights)
                for s, (_, history) in zip(signals, items)]

    def calibrate(self, messages: Sequence[Message], floors: Thresholds, shares: Shares,
                  min_messages: int, batch: int = 32) -> Calibration:
        """Scores ``messages`` (each alone, as a conversation's first message) at ``floors``
        and fits the thresholds that meet ``shares`` (:func:`~.calibration.fit`); does not
        change :attr:`thresholds` (the caller swaps them in). Blocks: seconds for hundreds."""
        assessments = []
        for start in range(0, len(messages), batch):
            for signals in self.measure(messages[start:start + batch]):
                assessments.append(assess(signals, History(), floors, self.weights)[0])
        return fit(assessments, floors, shares, min_messages)

    def suggest(self, context: Sequence[str], k: int = 3) -> list[Suggestion]:
        """The ``k`` best replies for a conversation whose last messages are ``context``
        (oldest first, the last one the customer's; only the last
        :data:`CONTEXT_MESSAGES` count)."""
        texts = [t for t in context if t.strip()][-CONTEXT_MESSAGES:]
        if not texts:
            return []
        index = self.index
        return index.suggest(situation(index.encoder.encode(texts)), k)

    def emerging_needs(self, texts: Sequence[str], *, max_distance: float = 0.6,
                       min_size: int = 2) -> list[Cluster]:
        """Clusters of ``texts`` (recent messages the assistant handled badly)."""
        index = self.index
        return cluster_messages(list(texts), index.encoder.encode(list(texts)), index,
                                max_distance=max_distance, min_size=min_size)
