"""The whole engine on the real model and the project's real data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from handoff.settings import SettingsError, load_settings
from handoff.triage import History, Message, Triage, TriageConfig
from handoff.triage.scoring import Thresholds

WHERE = {"intent": {"name": "track_order", "confidence": 0.98},
         "intent_ranking": [{"name": "track_order", "confidence": 0.98},
                            {"name": "track_refund", "confidence": 0.01}]}


def parse(intent: str, confidence: float, second: str = "greet",
          second_confidence: float = 0.01) -> dict[str, Any]:
    return {"intent": {"name": intent, "confidence": confidence},
            "intent_ranking": [{"name": intent, "confidence": confidence},
                               {"name": second, "confidence": second_confidence}]}


def one(triage: Triage, text: str, nlu: dict[str, Any] | None,
        history: History = History()) -> Any:
    return triage.assess_batch([(Message.from_parse(text, nlu), history)])[0]


def test_a_lawyer_and_a_chargeback_go_to_a_human(triage: Triage) -> None:
    assessment, _ = one(triage, "I want to talk to a lawyer about a chargeback",
                        parse("check_refund_policy", 0.41, "get_refund", 0.33))
    assert assessment.action == "human" and assessment.risk == 1.0
    rules = [r for r in assessment.reasons if r.code.startswith("rule:")]
    assert [(r.code, r.contribution) for r in rules] == [
        ("rule:legal_threat", 1.0), ("rule:chargeback", 1.0)]
    assert rules[0].text == ("The customer mentions a lawyer or legal action. "
                             "(\u201clawyer\u201d)")
    calm, history = one(triage, "where is my order", WHERE)
    assert (calm.action, calm.risk, calm.reasons) == ("none", 0.0, ())
    assert history.intents == ("track_order",) and history.fallbacks == (False,)
    assert calm.measures["nearest_intent"] == "track_order"


def test_gibberish_and_out_of_domain_are_more_novel(triage: Triage) -> None:
    texts = ["where is my order", "asdkjh qwelkj zzxcv", "what is the capital of mongolia"]
    signals = triage.measure([Message(t, "track_order", 0.9) for t in texts])
    distances = [s.novelty.overall_distance for s in signals if s.novelty]
    assert distances[0] < 0.2 and distances[1] > 0.55 and distances[2] > 0.55
    assert [s.novelty.intent_distance for s in signals if s.novelty][0] < 0.2
    assessment, _ = one(triage, texts[2], parse("out_of_scope", 0.62, "greet", 0.2))
    assert {"novel", "low_confidence"} <= {r.code for r in assessment.reasons}


def test_an_angry_customer_going_in_circles_is_reviewed(triage: Triage) -> None:
    history = History()
    texts = ["where is my order?", "I asked where my order is",
             "WHERE IS MY ORDER, this is ridiculous, worst service ever!!!"]
    for text in texts:
        assessment, history = one(triage, text, WHERE, history)
    assert assessment.action == "review"
    assert {"going_in_circles", "negative_sentiment", "sentiment_falling"} <= \
        {r.code for r in assessment.reasons}
    assert assessment.measures["sentiment"] is not None and \
        float(assessment.measures["sentiment"]) < -0.75


def test_nlu_fallback_is_measured_against_the_best_real_intent(triage: Triage) -> None:
    fallback = {"intent": {"name": "nlu_fallback", "confidence": 0.3},
                "intent_ranking": [{"name": "nlu_fallback", "confidence": 0.3},
                                   {"name": "get_invoice", "confidence": 0.22},
                                   {"name": "check_invoice", "confidence": 0.2}]}
    message = Message.from_parse("i need the bill thing for my stuff", fallback)
    best, margin = message.understood()
    assert best == "get_invoice" and margin == pytest.approx(0.02)
    signals = triage.measure([message])[0]
    assert signals.novelty is not None and signals.novelty.intent == "get_invoice"


def test_the_embeddings_second_opinion_on_a_misread_intent(triage: Triage) -> None:
    """The NLU reads a refund question as track_order, confidently: the nearest training
    examples say check_refund_policy, and the message is closer to them than to track_order's."""
    misread, _ = one(triage, "what is your refund policy", parse("track_order", 0.9))
    reasons = {r.code: r for r in misread.reasons}
    assert {"neighbours_disagree", "closer_to_other"} <= set(reasons)
    assert "low_confidence" not in reasons and misread.action == "review"  # not "human"
    assert misread.measures["vote_intent"] == misread.measures["other_intent"] == \
        "check_refund_policy"
    assert float(misread.measures["vote_share"] or 0) == 0.0  # no neighbour says track_order
    # both at full weight: no neighbour says track_order, and the gap is past the full mark
    assert (reasons["neighbours_disagree"].contribution,
            reasons["closer_to_other"].contribution) == (0.3, 0.3)
    assert reasons["neighbours_disagree"].text.startswith(
        "The most similar training examples point to check_refund_policy, not track_order")
    # read right, the same message raises neither
    right, _ = one(triage, "what is your refund policy", parse("check_refund_policy", 0.9))
    assert not {"neighbours_disagree", "closer_to_other"} & {r.code for r in right.reasons}
    assert right.measures["vote_intent"] == "check_refund_policy"
    assert float(right.measures["vote_share"] or 0) > 0.9


def test_suggestions_for_a_refund_policy_question(triage: Triage) -> None:
    suggestions = triage.suggest(["Hi", "Hi, I'm the Northwind Goods assistant.",
                                  "what is your refund policy"])
    assert len(suggestions) == 3
    assert suggestions[0].source == "response:utter_refund_policy"
    assert suggestions[0].text.startswith("You can return most items within 30 days")
    assert suggestions[0].score > suggestions[1].score > suggestions[2].score > 0.3
    assert triage.suggest([]) == []


def test_an_agents_reply_is_suggested_again(triage: Triage) -> None:
    index = triage.index.rebuilt()  # a copy, so other tests keep the plain index
    reply = "Yes, we sell gift cards from $10 to $200; you find them under Gifts > Gift cards."
    index.add_reply(reply, "agent:alice", context="do you sell gift cards?")
    copy = Triage(index, triage.rules)
    best = copy.suggest(["can I buy a gift card"])[0]
    assert (best.text, best.source) == (reply, "agent:alice") and best.score > 0.75
    assert copy.suggest(["what is your refund policy"])[0].source == \
        "response:utter_refund_policy"


def test_clustering_groups_paraphrases(triage: Triage) -> None:
    messages = [
        "do you sell gift cards", "is the rain jacket waterproof", "can I pay with bitcoin",
        "can I buy a gift card", "where is my parcel", "gift vouchers available?",
        "do you accept crypto", "will this coat keep me dry in heavy rain",
        "my package hasn't arrived yet", "what's the weather in Paris",
        "I'd like to purchase a gift certificate for my mom", "track my delivery please",
        "is paying in ethereum or other cryptocurrency possible",
    ]
    clusters = triage.emerging_needs(messages)
    groups = [(c.size, c.proposed_intent, sorted(messages[i] for i in c.members))
              for c in clusters]
    assert groups == [
        (4, "new", ["I'd like to purchase a gift certificate for my mom",
                    "can I buy a gift card", "do you sell gift cards",
                    "gift vouchers available?"]),
        (3, "check_payment_methods", ["can I pay with bitcoin", "do you accept crypto",
                                      "is paying in ethereum or other cryptocurrency possible"]),
        (3, "track_order", ["my package hasn't arrived yet", "track my delivery please",
                            "where is my parcel"]),
        (2, "new", ["is the rain jacket waterproof",
                    "will this coat keep me dry in heavy rain"]),
    ]
    assert clusters[0].to_json()["examples"][0] in messages
    assert triage.emerging_needs(["just one"]) == []


def test_config_from_settings(tmp_path: Path) -> None:
    settings = load_settings({"HANDOFF_RASA_TOKEN": "t", "HANDOFF_JWT_SECRET": "s" * 32,
                              "HANDOFF_TRIAGE_BACKEND": "torch",
                              "HANDOFF_TRIAGE_REVIEW_THRESHOLD": "0.4",
                              "HANDOFF_TRIAGE_CACHE_DIR": str(tmp_path)},
                             env_file=None, var_dir=tmp_path)
    config = TriageConfig.from_settings(settings)
    assert (config.backend, config.cache_dir, config.thresholds) == (
        "torch", tmp_path, Thresholds(review=0.4, human=0.9))
    assert config.rules.is_file() and config.data.is_dir() and config.domain.is_file()
    with pytest.raises(SettingsError, match="HANDOFF_TRIAGE_BACKEND='onnx': must be one of "
                                            "OPENVINO, TORCH"):
        load_settings({"HANDOFF_RASA_TOKEN": "t", "HANDOFF_JWT_SECRET": "s" * 32,
                       "HANDOFF_TRIAGE_BACKEND": "onnx"}, env_file=None, var_dir=tmp_path)
