"""The risk score: plain functions over plain data (no model, no I/O).

:func:`assess` takes what was measured about one customer message (:class:`Signals`) and the
conversation's :class:`History` (a few numbers per earlier message, kept by the gateway with the
conversation: :meth:`History.to_json` / :meth:`History.from_json`) and returns the
:class:`Assessment` and the new history. Each signal adds a contribution between 0 and its
weight; ``risk`` is their sum, capped at 1. ``action`` is ``human`` when a rule or an explicit
request for a person says so, or risk reaches ``thresholds.human`` with repeated failure or an
upset customer among the reasons (:data:`PERSON_REASONS`); ``review`` when a rule says so or
risk reaches ``thresholds.review`` (not for a question read as out of scope: the bot declines
it, unless the customer insists); else ``none``. Every non-zero contribution is a
:class:`Reason` the agent sees. ``docs/triage.md`` explains each one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from handoff.triage.index import Novelty
from handoff.triage.rules import RuleHit
from handoff.triage.sentiment import trend

HISTORY_TURNS: Final = 10  # earlier messages remembered per conversation
FALLBACK_INTENT: Final = "nlu_fallback"
FALLBACK_CONFIDENCE: Final = 0.3  # below this the bot's FallbackClassifier answers
HUMAN_INTENTS: Final = frozenset({"contact_human_agent"})
# Intents customers repeat in a normal conversation: not "going in circles".
ROUTINE_INTENTS: Final = frozenset(
    {"affirm", "deny", "inform", "greet", "goodbye", "thank", FALLBACK_INTENT})
OUT_OF_SCOPE_INTENT: Final = "out_of_scope"
# What may send a conversation to a person by score: repeated failure and a customer getting
# upset. Novelty, low confidence and the embeddings' disagreement only ever lead to review (a
# held reply decided in seconds): a team cannot staff a person for every unusual phrasing.
PERSON_REASONS: Final = frozenset(
    {"repeated_fallback", "going_in_circles", "negative_sentiment", "sentiment_falling",
     "out_of_scope_insists"})


def _ramp(value: float, start: float, full: float) -> float:
    """0 at ``start``, 1 at ``full`` (either direction), linear between, clamped."""
    if full == start:
        return 1.0 if value >= full else 0.0
    return min(1.0, max(0.0, (value - start) / (full - start)))


@dataclass(frozen=True)
class Weights:
    """The most each signal adds to risk, and where its ramp starts and becomes full."""

    low_confidence: float = 0.45
    confidence_ok: float = 0.85  # no contribution at or above
    confidence_bad: float = 0.3  # full contribution at or below
    ambiguous: float = 0.25
    margin_ok: float = 0.3  # top-1 minus top-2 confidence
    novel_for_intent: float = 0.3
    intent_distance_ok: float = 0.45  # cosine distance to the intent's nearest examples
    intent_distance_bad: float = 0.75
    novel_overall: float = 0.3
    overall_distance_ok: float = 0.4
    overall_distance_bad: float = 0.7
    # The embeddings' second opinion on the NLU's intent (weights and ramps tuned on banking77's
    # training file: bench/triage.py --tune; together at most 0.6, review but not a person):
    neighbours_disagree: float = 0.3
    vote_share_ok: float = 0.8  # share of the nearest examples' votes for the NLU's intent
    vote_share_bad: float = 0.0
    closer_to_other: float = 0.3
    distance_gap_ok: float = -0.1  # distance to the NLU intent minus to the nearest other
    distance_gap_bad: float = 0.05
    negative_sentiment: float = 0.25
    sentiment_ok: float = -0.25  # VADER compound
    sentiment_bad: float = -0.75
    sentiment_falling: float = 0.15
    trend_ok: float = -0.3  # change from the previous messages' mean
    trend_bad: float = -1.0
    repeated_fallback: float = 0.5  # half at 2 fallbacks in the last 4 messages, full at 3
    going_in_circles: float = 0.4  # the same intent 3 times in the last 4 messages
    out_of_scope_insists: float = 0.5  # out of scope twice in a row: reaches review


@dataclass(frozen=True)
class Thresholds:
    review: float = 0.5
    human: float = 0.9


@dataclass(frozen=True)
class Signals:
    """What was measured about one customer message."""

    text: str
    intent: str | None = None  # NLU's top intent
    confidence: float | None = None  # its confidence (None: no NLU result)
    margin: float | None = None  # top-1 minus top-2 confidence
    novelty: Novelty | None = None
    sentiment: float = 0.0  # VADER compound
    rule_hits: tuple[RuleHit, ...] = ()


@dataclass(frozen=True)
class History:
    """What triage remembers of a conversation's earlier customer messages, oldest first."""

    intents: tuple[str | None, ...] = ()
    sentiments: tuple[float, ...] = ()
    fallbacks: tuple[bool, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"intents": list(self.intents), "sentiments": list(self.sentiments),
                "fallbacks": list(self.fallbacks)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> History:
        if not data:
            return cls()
        return cls(tuple(data.get("intents", ())), tuple(float(s) for s in
                                                          data.get("sentiments", ())),
                   tuple(bool(f) for f in data.get("fallbacks", ())))

    def add(self, intent: str | None, sentiment: float, fallback: bool) -> History:
        keep = HISTORY_TURNS
        return History((self.intents + (intent,))[-keep:],
                       (self.sentiments + (round(sentiment, 4),))[-keep:],
                       (self.fallbacks + (fallback,))[-keep:])


@dataclass(frozen=True)
class Reason:
    code: str
    text: str  # for the agent
    contribution: float  # what it added to risk

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "text": self.text, "contribution": self.contribution}


@dataclass(frozen=True)
class Assessment:
    risk: float  # 0..1
    action: str  # "none" | "review" | "human"
    reasons: tuple[Reason, ...] = ()
    measures: Mapping[str, float | str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"risk": self.risk, "action": self.action,
                "reasons": [r.to_json() for r in self.reasons], "measures": dict(self.measures)}


ACTIONS: Final = ("none", "review", "human")


def is_fallback(signals: Signals) -> bool:
    return signals.intent == FALLBACK_INTENT or (
        signals.confidence is not None and signals.confidence < FALLBACK_CONFIDENCE)


def _signal_reasons(s: Signals, history: History, w: Weights) -> list[Reason]:
    reasons: list[Reason] = []

    def add(code: str, weight: float, strength: float, text: str) -> None:
        if strength > 0 and weight > 0:  # a weight of 0 turns a signal off
            reasons.append(Reason(code, text, round(weight * strength, 4)))

    if s.confidence is not None:
        add("low_confidence", w.low_confidence,
            _ramp(s.confidence, w.confidence_ok, w.confidence_bad),
            f"The assistant is unsure what the customer means: {s.intent or 'no intent'} "
            f"at confidence {s.confidence:.2f}.")
    if s.margin is not None and s.confidence is not None:
        add("ambiguous", w.ambiguous, _ramp(s.margin, w.margin_ok, 0.0),
            f"Two intents are nearly tied (the best leads by {s.margin:.2f}).")
    if s.novelty is not None:
        n = s.novelty
        if n.intent is not None:
            add("novel_for_intent", w.novel_for_intent,
                _ramp(n.intent_distance, w.intent_distance_ok, w.intent_distance_bad),
                f"The message is unlike the training examples of {n.intent} "
                f"(distance {n.intent_distance:.2f}).")
        if n.vote_share is not None and n.vote_intent is not None:
            pointing = (f"point to {n.vote_intent}, not {n.intent}"
                        if n.vote_intent != n.intent else f"are split, not clearly {n.intent}")
            add("neighbours_disagree", w.neighbours_disagree,
                _ramp(n.vote_share, w.vote_share_ok, w.vote_share_bad),
                f"The most similar training examples {pointing} "
                f"({n.vote_share:.0%} of their votes for {n.intent}).")
        if n.other_distance is not None and n.other_intent is not None:
            gap = n.intent_distance - n.other_distance
            add("closer_to_other", w.closer_to_other,
                _ramp(gap, w.distance_gap_ok, w.distance_gap_bad),
                f"The message is {'closer to' if gap > 0 else 'nearly as close to'} the "
                f"examples of {n.other_intent} (distance {n.other_distance:.2f}) "
                f"{'than to' if gap > 0 else 'as to'} those of {n.intent} "
                f"({n.intent_distance:.2f}).")
        add("novel", w.novel_overall,
            _ramp(n.overall_distance, w.overall_distance_ok, w.overall_distance_bad),
            f"The message is unlike anything the assistant was trained on "
            f"(distance {n.overall_distance:.2f}; nearest: \u201c{n.nearest_example}\u201d, "
            f"{n.nearest_intent}).")
    add("negative_sentiment", w.negative_sentiment,
        _ramp(s.sentiment, w.sentiment_ok, w.sentiment_bad),
        f"The customer sounds upset (sentiment {s.sentiment:+.2f}).")
    change = trend(history.sentiments, s.sentiment)
    add("sentiment_falling", w.sentiment_falling, _ramp(change, w.trend_ok, w.trend_bad),
        f"The customer's mood is getting worse ({change:+.2f} against the previous messages).")
    fallbacks = sum(history.fallbacks[-3:]) + is_fallback(s)
    if fallbacks >= 2:
        add("repeated_fallback", w.repeated_fallback, min(1.0, (fallbacks - 1) / 2),
            f"The assistant failed to understand {fallbacks} of the last "
            f"{min(4, len(history.fallbacks) + 1)} messages.")
    if s.intent == OUT_OF_SCOPE_INTENT and history.intents[-1:] == (OUT_OF_SCOPE_INTENT,):
        add("out_of_scope_insists", w.out_of_scope_insists, 1.0,
            "The customer asks again for something the assistant declined as outside the "
            "shop's scope.")
    if s.intent is not None and s.intent not in ROUTINE_INTENTS:
        repeats = sum(1 for i in history.intents[-3:] if i == s.intent) + 1
        if repeats >= 3:
            add("going_in_circles", w.going_in_circles, 1.0,
                f"The customer has asked for {s.intent} {repeats} times in the last "
                f"{min(4, len(history.intents) + 1)} messages.")
    return reasons


def _by_score(signals: Signals, reasons: list[Reason], risk: float,
              thresholds: Thresholds) -> str:
    """The action the risk alone leads to. A person only when a :data:`PERSON_REASONS` reason
    is among those that made the risk; otherwise review at most. A question the NLU read as
    out of scope gets the bot's polite refusal (nothing held: such questions are novel by
    nature), unless a person reason (the customer insists, is upset) says otherwise."""
    person = any(r.code in PERSON_REASONS for r in reasons)
    if signals.intent == OUT_OF_SCOPE_INTENT and not person:
        return "none"
    if risk >= thresholds.human and person:
        return "human"
    return "review" if risk >= thresholds.review else "none"


def assess(signals: Signals, history: History = History(),
           thresholds: Thresholds = Thresholds(),
           weights: Weights = Weights()) -> tuple[Assessment, History]:
    """The assessment of one customer message and the conversation's new history."""
    reasons = _signal_reasons(signals, history, weights)
    forced = "none"
    for hit in signals.rule_hits:
        reasons.append(Reason(f"rule:{hit.rule}", f"{hit.reason} (\u201c{hit.matched}\u201d)",
                              1.0 if hit.action == "human" else thresholds.review))
        forced = max(forced, hit.action, key=ACTIONS.index)
    if signals.intent in HUMAN_INTENTS and (signals.confidence or 0.0) >= 0.5 and \
            not any(h.action == "human" for h in signals.rule_hits):
        reasons.append(Reason("human_request", "The customer asks for a person.", 1.0))
        forced = "human"
    risk = round(min(1.0, sum(r.contribution for r in reasons)), 4)
    action = max(forced, _by_score(signals, reasons, risk, thresholds), key=ACTIONS.index)
    reasons.sort(key=lambda r: -r.contribution)
    n = signals.novelty
    measures: dict[str, float | str | None] = {
        "intent": signals.intent, "confidence": signals.confidence, "margin": signals.margin,
        "sentiment": signals.sentiment,
        "intent_distance": round(n.intent_distance, 4) if n else None,
        "overall_distance": round(n.overall_distance, 4) if n else None,
        "nearest_intent": n.nearest_intent if n else None,
        "vote_intent": n.vote_intent if n else None,
        "vote_share": round(n.vote_share, 4) if n and n.vote_share is not None else None,
        "other_intent": n.other_intent if n else None,
        "other_distance": round(n.other_distance, 4)
        if n and n.other_distance is not None else None,
    }
    new_history = history.add(signals.intent, signals.sentiment, is_fallback(signals))
    return Assessment(risk, action, tuple(reasons), measures), new_history

