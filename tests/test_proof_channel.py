"""The retraining's channel inside a real Rasa server (bot/proof_channel.py): many messages
parsed at once read exactly as ``/model/parse`` reads each, and Rasa's story test names the
stories the loaded model fails, with its wrong predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest
import requests

from bot.serve import Stack

TEXTS = ["hello there", "where is my order 100002?", "what is your return policy?",
         "I'm waiting for a rebate of $299", "zorp glib frum", "hey, good afternoon!",
         "i want to cancel order 100004 please", "ok", "thanks, bye"]
# A hand-written story's first turn, expected as another intent: the model must fail it.
WRONG_STORY = """version: "3.1"
stories:
- story: a greeting read as goodbye
  steps:
  - user: |
      hey, good afternoon!
    intent: goodbye
  - action: utter_goodbye
- story: a greeting
  steps:
  - user: |
      hey, good afternoon!
    intent: greet
  - action: utter_greet
"""


def post(stack: Stack, path: str, body: Any, token: str | None = None) -> requests.Response:
    return requests.post(f"{stack.rasa_url}/webhooks/proof/{path}", json=body, timeout=300,
                         headers={"Authorization": f"Bearer {token or stack.token}"})


def model_parse(stack: Stack, text: str) -> Dict[str, Any]:
    resp = requests.post(f"{stack.rasa_url}/model/parse", params={"token": stack.token},
                         json={"text": text}, timeout=60)
    resp.raise_for_status()
    data: Dict[str, Any] = resp.json()
    return data


def status(stack: Stack) -> Dict[str, Any]:
    resp = requests.get(f"{stack.rasa_url}/status", params={"token": stack.token}, timeout=30)
    resp.raise_for_status()
    data: Dict[str, Any] = resp.json()
    return data


def ranking(parse: Dict[str, Any]) -> List[tuple[str, float]]:
    return [(r["name"], round(r["confidence"], 4)) for r in parse.get("intent_ranking") or []]


def test_many_messages_parse_as_one_at_a_time(rasa_stack: Stack) -> None:
    resp = post(rasa_stack, "parse", {"texts": TEXTS})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["model_id"] == status(rasa_stack)["model_id"]
    assert len(answer["parses"]) == len(TEXTS)
    for text, batched in zip(TEXTS, answer["parses"]):
        single = model_parse(rasa_stack, text)
        assert batched["text"] == text
        assert batched["intent"]["name"] == single["intent"]["name"], text
        assert batched["intent"]["confidence"] == pytest.approx(
            single["intent"]["confidence"], abs=1e-4), text
        assert [n for n, _ in ranking(batched)] == [n for n, _ in ranking(single)], text
        assert [c for _, c in ranking(batched)] == pytest.approx(
            [c for _, c in ranking(single)], abs=1e-4), text
        assert [(e["entity"], e["value"]) for e in batched["entities"]] == [
            (e["entity"], e["value"]) for e in single["entities"]], text


def test_the_story_test_names_the_failing_story_and_its_wrong_prediction(
        rasa_stack: Stack) -> None:
    resp = post(rasa_stack, "stories", {"files": {"test_wrong.yml": WRONG_STORY}})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["failed"] == ["a greeting read as goodbye"]
    assert "# predicted: greet" in answer["failed_text"]
    assert answer["model_id"] == status(rasa_stack)["model_id"]


@pytest.mark.slow
def test_the_hand_written_suite_passes(rasa_stack: Stack) -> None:
    suite = Path(__file__).parent / "stories" / "test_stories.yml"
    resp = post(rasa_stack, "stories", {"files": {"test_stories.yml": suite.read_text()}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["failed"] == []


def test_bad_requests_are_refused_with_the_reason(rasa_stack: Stack) -> None:
    assert post(rasa_stack, "parse", {"texts": ["hi"]}, token="wrong").status_code == 401
    bad = post(rasa_stack, "parse", {"texts": "hi"})
    assert (bad.status_code, bad.json()["message"]) == (400, "'texts' must be a list of strings")
    for name in ("../test_x.yml", "/tmp/test_x.yml", "stories.yml", "test_x.txt"):
        bad = post(rasa_stack, "stories", {"files": {name: WRONG_STORY}})
        assert bad.status_code == 400 and "file name" in bad.json()["message"], name
    empty = post(rasa_stack, "stories", {"files": {}})
    assert empty.status_code == 400
