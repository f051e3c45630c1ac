"""The proof names why each failing story fails (``bot.prove``): the reasons are told apart from
the model's parse of the story's message and Rasa's failed_test_stories.yml, both plain data,
so these run here without a model."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from bot.prove import explain_turn, wrong_predictions

THRESHOLD, MARGIN = 0.3, 0.1


def parse(text: str, intent: str, confidence: float, ranking: Sequence[Tuple[str, float]],
          entities: Sequence[Tuple[str, str]] = ()) -> Dict[str, Any]:
    """A parse as Rasa's pipeline returns it (the FallbackClassifier puts nlu_fallback first
    in the ranking with the threshold as its confidence)."""
    ranked: List[Dict[str, Any]] = [{"name": n, "confidence": c} for n, c in ranking]
    if intent == "nlu_fallback":
        ranked.insert(0, {"name": "nlu_fallback", "confidence": confidence})
    return {"text": text, "intent": {"name": intent, "confidence": confidence},
            "intent_ranking": ranked,
            "entities": [{"entity": e, "value": v} for e, v in entities]}


WAITING = "I'm still waiting for order 100008"


def test_a_fallback_by_ambiguity_names_both_intents_and_the_margin() -> None:
    found = explain_turn(parse(WAITING, "nlu_fallback", 0.3, [
        ("track_order", 0.412), ("track_refund", 0.356), ("complaint", 0.1),
        ("cancel_order", 0.05)], [("order_id", "100008")]),
        "track_order", [("order_id", "100008")], THRESHOLD, MARGIN)
    assert found == {
        "text": WAITING, "expected": "track_order", "predicted": "nlu_fallback",
        "reason": "ambiguous",
        "scores": [{"intent": "track_order", "confidence": 0.412},
                   {"intent": "track_refund", "confidence": 0.356},
                   {"intent": "complaint", "confidence": 0.1}],
        "explanation": "fallback by ambiguity: track_order 0.41 and track_refund 0.36 are "
                       "within the margin 0.1 (the expected intent came first)"}


def test_a_fallback_below_the_threshold_shows_the_expected_intents_score() -> None:
    found = explain_turn(parse("where does the refund stand", "nlu_fallback", 0.3, [
        ("review", 0.25), ("track_refund", 0.11), ("complaint", 0.1), ("greet", 0.09),
        ("check_refund_policy", 0.08)]), "check_refund_policy", [], THRESHOLD, MARGIN)
    assert found is not None and found["reason"] == "below_threshold"
    assert found["explanation"] == (
        "fallback below the threshold: the best, review 0.25, is under 0.3 "
        "(expected check_refund_policy 0.08)")
    # the expected intent is listed with the top three even when it ranks lower
    assert [s["intent"] for s in found["scores"]] == [
        "review", "track_refund", "complaint", "check_refund_policy"]


def test_below_the_threshold_and_ambiguous_says_both() -> None:
    found = explain_turn(parse("hm refund", "nlu_fallback", 0.3, [
        ("track_refund", 0.28), ("check_refund_policy", 0.25)]), "track_refund", [],
        THRESHOLD, MARGIN)
    assert found is not None and found["reason"] == "below_threshold"
    assert found["explanation"] == (
        "fallback below the threshold: the best, track_refund 0.28, is under 0.3; "
        "check_refund_policy 0.25 is also within the margin 0.1 (the expected intent came "
        "first)")


def test_a_wrong_intent_gives_both_scores() -> None:
    found = explain_turn(parse("I'm waiting for a rebate of $299", "review", 0.49, [
        ("review", 0.49), ("track_refund", 0.31)]), "track_refund", [], THRESHOLD, MARGIN)
    assert found is not None and (found["reason"], found["explanation"]) == (
        "wrong_intent", "wrong intent: review 0.49, expected track_refund 0.31")


def test_unknown_words_wrong_entities_and_a_right_turn() -> None:
    unknown = explain_turn(parse("zorp glib", "nlu_fallback", 1.0, [("greet", 0.6)]),
                           "greet", [], THRESHOLD, MARGIN)
    assert unknown is not None and unknown["reason"] == "unknown_words"
    entities = explain_turn(parse("order 100008", "track_order", 0.9, [("track_order", 0.9)]),
                            "track_order", [("order_id", "100008")], THRESHOLD, MARGIN)
    assert entities is not None and entities["explanation"] == (
        "wrong entities: found none, the story has [('order_id', '100008')]")
    assert explain_turn(parse("order 100008", "track_order", 0.9, [("track_order", 0.9)],
                              [("order_id", "100008")]),
                        "track_order", [("order_id", "100008")], THRESHOLD, MARGIN) is None


FAILED = """version: "3.1"
stories:
- story: wrong action (/tmp/stories/suite/test_stories.yml)
  steps:
  - intent: greet
  - slot_was_set:
    - fallback_count: 0
  - action: utter_goodbye  # predicted: utter_greet
  - action: action_listen  # predicted: action_default_fallback
- story: 'correction 7: relabelled track_refund (/tmp/stories/corrections/test_corrections.yml)'
  steps:
  - intent: track_refund  # predicted: nlu_fallback: where is my rebate
  - action: utter_track_refund  # predicted: action_default_fallback
"""


def test_wrong_predictions_are_read_from_rasas_failed_stories_in_order() -> None:
    assert wrong_predictions(FAILED) == {
        "wrong action": [("action", "utter_goodbye", "utter_greet"),
                         ("action", "action_listen", "action_default_fallback")],
        "correction 7: relabelled track_refund": [
            ("intent", "track_refund", "nlu_fallback"),
            ("action", "utter_track_refund", "action_default_fallback")]}
