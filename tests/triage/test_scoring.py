"""The pure risk score: each signal on crafted measurements, history, thresholds, actions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handoff.triage.index import Novelty
from handoff.triage.rules import RuleHit
from handoff.triage.scoring import Assessment, History, Signals, Thresholds, assess
from handoff.triage.scoring import Weights



def clear(text: str, **extra: Any) -> Signals:
    """Signals of a message NLU understood well (track_order at 0.97)."""
    return Signals(text, intent="track_order", confidence=0.97, margin=0.9, **extra)


def codes(assessment: Assessment) -> dict[str, float]:
    return {r.code: r.contribution for r in assessment.reasons}


def novelty(intent_distance: float, overall: float) -> Novelty:
    return Novelty("track_order", intent_distance, overall, "track_order", "where is my order")


def test_a_clear_calm_message_is_no_risk() -> None:
    assessment, history = assess(clear("where is my order", novelty=novelty(0.1, 0.1)))
    assert (assessment.risk, assessment.action, assessment.reasons) == (0.0, "none", ())
    assert history == History(("track_order",), (0.0,), (False,))


def test_low_confidence_and_a_small_margin() -> None:
    assessment, _ = assess(Signals("hmm", intent="track_order", confidence=0.575, margin=0.15))
    assert codes(assessment) == {"low_confidence": 0.225, "ambiguous": 0.125}
    assert assessment.risk == 0.35 and assessment.action == "none"
    assert "track_order at confidence 0.57" in assessment.reasons[0].text
    fallback, _ = assess(Signals("hmm", intent="nlu_fallback", confidence=0.3, margin=0.0))
    assert codes(fallback) == {"low_confidence": 0.45, "ambiguous": 0.25}
    assert fallback.action == "review" and fallback.risk == 0.7


def test_novelty_against_the_intent_and_everything() -> None:
    assessment, _ = assess(clear("qwxz", novelty=novelty(0.75, 0.55)))
    assert codes(assessment) == {"novel_for_intent": 0.3, "novel": 0.15}
    assert "unlike the training examples of track_order (distance 0.75)" in \
        assessment.reasons[0].text


def second_opinion(vote_intent: str, vote_share: float, other_distance: float,
                   intent_distance: float = 0.3) -> Novelty:
    """The embeddings' view of a message NLU read as track_order."""
    return Novelty("track_order", intent_distance, min(intent_distance, other_distance),
                   vote_intent, "a training example", vote_intent=vote_intent,
                   vote_share=vote_share, other_intent="track_refund",
                   other_distance=other_distance)


def test_the_embeddings_disagreeing_with_the_nlu() -> None:
    agree, _ = assess(clear("where is my order",
                            novelty=second_opinion("track_order", 1.0, other_distance=0.4)))
    assert agree.reasons == ()  # all neighbours agree, the other intent is 0.1 further away
    # a fifth of the neighbours' votes for track_order; track_refund 0.05 closer than it
    disagree, _ = assess(clear("I want my money for the order back",
                               novelty=second_opinion("track_refund", 0.2, 0.25)))
    assert codes(disagree) == {"closer_to_other": 0.3, "neighbours_disagree": 0.225}
    assert (disagree.risk, disagree.action) == (0.525, "review")
    assert [r.text for r in disagree.reasons] == [
        "The message is closer to the examples of track_refund (distance 0.25) than to those "
        "of track_order (0.30).",
        "The most similar training examples point to track_refund, not track_order "
        "(20% of their votes for track_order)."]
    assert (disagree.measures["vote_intent"], disagree.measures["vote_share"],
            disagree.measures["other_intent"], disagree.measures["other_distance"]) == (
        "track_refund", 0.2, "track_refund", 0.25)
    split, _ = assess(clear("hmm", novelty=second_opinion("track_order", 0.4, 0.32)))
    assert codes(split) == {"closer_to_other": 0.16, "neighbours_disagree": 0.15}
    assert "are split, not clearly track_order" in split.reasons[1].text
    assert "nearly as close to the examples of track_refund" in split.reasons[0].text
    off, _ = assess(clear("hmm", novelty=second_opinion("track_refund", 0.0, 0.1)),
                    weights=Weights(neighbours_disagree=0.0, closer_to_other=0.0))
    assert off.reasons == ()  # weights of 0: the signal is off


def test_sentiment_and_its_trend() -> None:
    angry, _ = assess(clear("worst shop ever", sentiment=-0.75))
    assert codes(angry) == {"negative_sentiment": 0.25}
    history = History(("track_order",) * 3, (0.6, 0.5, 0.4), (False,) * 3)
    falling, _ = assess(clear("hmm, still nothing", sentiment=-0.15), history)
    # -0.15 against the mean 0.5 of the previous three: a change of -0.65
    assert codes(falling)["sentiment_falling"] == pytest.approx(0.15 * 0.35 / 0.7, abs=1e-4)
    assert "negative_sentiment" not in codes(falling)


def test_repeated_fallbacks_and_going_in_circles() -> None:
    history = History()
    for text in ("asdf", "what?"):
        assessment, history = assess(Signals(text, intent="nlu_fallback", confidence=0.3),
                                     history)
    assert codes(assessment)["repeated_fallback"] == 0.25
    assert assess(Signals("??", intent="nlu_fallback", confidence=0.3), history)[0] \
        .reasons[0].code == "repeated_fallback"
    circles = History(("track_order", "inform", "track_order"), (0, 0, 0), (False,) * 3)
    assessment, _ = assess(clear("where is my order!"), circles)
    assert codes(assessment) == {"going_in_circles": 0.4}
    assert "asked for track_order 3 times in the last 4 messages" in assessment.reasons[0].text
    routine = History(("affirm", "affirm"), (0, 0), (False, False))
    assert assess(Signals("yes", intent="affirm", confidence=0.99, margin=0.9), routine)[0] \
        .reasons == ()


def test_rules_and_a_request_for_a_person_force_their_action() -> None:
    legal = RuleHit("legal_threat", "human", "The customer mentions a lawyer.", "lawyer")
    assessment, _ = assess(clear("my lawyer will call", rule_hits=(legal,)))
    assert (assessment.action, assessment.risk) == ("human", 1.0)
    assert assessment.reasons[0].to_json() == {
        "code": "rule:legal_threat", "contribution": 1.0,
        "text": "The customer mentions a lawyer. (\u201clawyer\u201d)"}
    deletion = RuleHit("account_deletion", "review", "Wants the account deleted.", "close my account")
    assessment, _ = assess(clear("close my account", rule_hits=(deletion,)),
                           thresholds=Thresholds(review=0.6))
    assert (assessment.action, assessment.risk) == ("review", 0.6)
    human, _ = assess(Signals("agent please", intent="contact_human_agent", confidence=0.9,
                              margin=0.8))
    assert (human.action, [r.code for r in human.reasons]) == ("human", ["human_request"])


def test_thresholds_decide_the_action() -> None:
    signals = Signals("hmm", intent="nlu_fallback", confidence=0.3, margin=0.0)  # risk 0.7
    assert assess(signals, thresholds=Thresholds(review=0.8, human=0.9))[0].action == "none"
    assert assess(signals, thresholds=Thresholds(review=0.5, human=0.9))[0].action == "review"
    # low confidence alone never reaches a person, however high the risk: review at most
    assert assess(signals, thresholds=Thresholds(review=0.5, human=0.7))[0].action == "review"
    failing = History(("nlu_fallback",), (0.0,), (True,))  # repeated failure: a person
    assert assess(signals, failing, Thresholds(review=0.5, human=0.7))[0].action == "human"


def test_out_of_scope_gets_the_bots_refusal_unless_the_customer_insists() -> None:
    novel = Novelty(intent="out_of_scope", intent_distance=0.8, overall_distance=0.8,
                    nearest_intent="out_of_scope", nearest_example="what's the weather")
    asked = Signals("who painted the mona lisa", intent="out_of_scope", confidence=0.4,
                    margin=0.05, novelty=novel)
    first, history = assess(asked)
    assert first.risk >= 0.9 and first.action == "none"  # scored and shown, not held
    again, _ = assess(asked, history)
    assert again.action == "human" and again.reasons[0].code == "out_of_scope_insists"
    upset = Signals("who painted it, you useless thing", intent="out_of_scope",
                    confidence=0.9, margin=0.8, sentiment=-0.8)
    assert assess(upset, thresholds=Thresholds(review=0.2))[0].action == "review"


def test_history_is_plain_json_and_bounded() -> None:
    history = History()
    for n in range(15):
        _, history = assess(Signals(f"m{n}", intent=f"i{n}", confidence=0.2,
                                    sentiment=-0.123456), history)
    assert len(history.intents) == 10 and history.intents[-1] == "i14"
    assert history.sentiments[-1] == -0.1235 and all(history.fallbacks)
    stored = json.loads(json.dumps(history.to_json()))
    assert History.from_json(stored) == history and History.from_json(None) == History()
