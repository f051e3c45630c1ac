"""The gateway's Rasa channel (bot/gateway_channel.py) inside a real Rasa server: whole turns,
held actions and the decisions that resolve them, as the tracker then records them."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest
import requests

from bot.serve import Stack
from tests.conftest import RASA_VENV
from tests.test_assistant import say


class Channel:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.base = f"{stack.rasa_url}/webhooks/gateway"
        self.sender = f"gw-{uuid.uuid4().hex[:12]}"
        self.headers = {"Authorization": f"Bearer {stack.token}"}

    def post(self, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        resp = requests.post(f"{self.base}/{path}", json={"sender": self.sender, **body},
                             headers=self.headers, timeout=60)
        assert resp.status_code == 200, resp.text
        data: Dict[str, Any] = resp.json()
        return data

    def bot_texts(self) -> List[str]:
        """What the tracker says the bot said, in order."""
        resp = requests.get(
            f"{self.stack.rasa_url}/conversations/{self.sender}/tracker",
            params={"token": self.stack.token}, timeout=30,
        )
        resp.raise_for_status()
        return [e.get("text") for e in resp.json()["events"] if e["event"] == "bot"]

    def events(self) -> List[Dict[str, Any]]:
        """The tracker's applied events."""
        resp = requests.get(
            f"{self.stack.rasa_url}/conversations/{self.sender}/tracker",
            params={"token": self.stack.token, "include_events": "APPLIED"}, timeout=30,
        )
        resp.raise_for_status()
        events: List[Dict[str, Any]] = resp.json()["events"]
        return events


@pytest.fixture
def channel(rasa_stack: Stack) -> Channel:
    return Channel(rasa_stack)


def test_a_whole_turn_returns_parse_actions_and_messages(channel: Channel) -> None:
    result = channel.post("turn", {"text": "what is your return policy?"})
    assert result["parse"]["intent"]["name"] == "check_refund_policy"
    assert result["held"] is None
    assert [a["name"] for a in result["actions"]] == ["utter_refund_policy"]
    action = result["actions"][0]
    assert action["policy"].endswith("RulePolicy") and action["confidence"] == 1.0
    assert [m["text"] for m in action["messages"]] == [say("utter_refund_policy")]
    assert result["model_id"]
    assert channel.bot_texts() == [say("utter_refund_policy")]


def test_hold_then_approve(channel: Channel) -> None:
    held = channel.post("turn", {"text": "which payment methods do you accept", "hold": True})
    assert held["actions"] == []
    assert held["held"]["name"] == "utter_payment_methods"
    assert [m["text"] for m in held["held"]["preview"]] == [say("utter_payment_methods")]
    assert len(held["held"]["alternatives"]) == 5
    assert channel.bot_texts() == []  # nothing was said yet
    done = channel.post("continue", {"decision": {"type": "approve"}})
    assert [a["name"] for a in done["actions"]] == ["utter_payment_methods"]
    assert done["held"] is None
    assert channel.bot_texts() == [say("utter_payment_methods")]


def test_hold_then_edit_records_what_the_customer_saw(channel: Channel) -> None:
    channel.post("turn", {"text": "what is your return policy?", "hold": True})
    edited = "You can return most items within 60 days of delivery."
    done = channel.post("continue", {"decision": {
        "type": "say", "action": "utter_refund_policy", "messages": [{"text": edited}],
        "metadata": {"edited_by": "agent-1"}}})
    assert [a["name"] for a in done["actions"]] == ["utter_refund_policy"]
    assert channel.bot_texts() == [edited]
    # the conversation goes on as usual
    nxt = channel.post("turn", {"text": "thanks!"})
    assert [a["name"] for a in nxt["actions"]] == ["utter_thank"]


def test_hold_then_replace(channel: Channel) -> None:
    channel.post("turn", {"text": "what is your return policy?", "hold": True})
    done = channel.post("continue", {"decision": {"type": "replace", "action": "utter_get_refund"}})
    assert [a["name"] for a in done["actions"]] == ["utter_get_refund"]
    assert channel.bot_texts() == [say("utter_get_refund")]


def test_a_preview_renders_a_response_with_the_slots_and_changes_nothing(
    channel: Channel
) -> None:
    channel.post("turn", {"text": "hello"})
    requests.post(f"{channel.stack.rasa_url}/conversations/{channel.sender}/tracker/events",
                  params={"token": channel.stack.token}, timeout=30,
                  json=[{"event": "slot", "name": "order_id", "value": "104233"}]
                  ).raise_for_status()
    before = channel.events()
    shown = channel.post("preview", {"action": "utter_order_not_found"})
    assert [m["text"] for m in shown["preview"]] == [
        say("utter_order_not_found", order_id="104233")]
    # a custom action's messages exist only once it ran
    assert channel.post("preview", {"action": "action_track_order"}) == {"preview": []}
    bad = requests.post(f"{channel.base}/preview", headers=channel.headers, timeout=30,
                        json={"sender": channel.sender, "action": "utter_nonsense"})
    assert (bad.status_code, bad.json()) == (400, {"error": "unknown action 'utter_nonsense'"})
    assert channel.events() == before


def test_relabelled_intent_is_used_instead_of_nlu(channel: Channel) -> None:
    parse_data = {"intent": {"name": "delivery_options", "confidence": 1.0}, "entities": []}
    result = channel.post("turn", {"text": "how do I get it", "parse_data": parse_data})
    assert result["parse"]["intent"]["name"] == "delivery_options"
    assert [a["name"] for a in result["actions"]] == ["utter_delivery_options"]


def test_relabel_with_rewind_replaces_the_held_turns_message(channel: Channel) -> None:
    held = channel.post("turn", {"text": "what is your return policy?", "hold": True})
    assert held["held"]["name"] == "utter_refund_policy"
    parse_data = {"text": "what is your return policy?", "entities": [],
                  "intent": {"name": "delivery_options", "confidence": 1.0}}
    again = channel.post("turn", {"text": "what is your return policy?", "hold": True,
                                  "parse_data": parse_data, "rewind": True})
    assert again["parse"]["intent"]["name"] == "delivery_options"
    assert again["held"]["name"] == "utter_delivery_options", [
        (e["event"], e.get("name"), e.get("text"), e.get("value")) for e in channel.events()]
    users = [e for e in channel.events() if e["event"] == "user"]
    assert [u["parse_data"]["intent"]["name"] for u in users] == ["delivery_options"]


def test_a_turn_that_ends_after_its_deadline_is_not_saved(channel: Channel) -> None:
    """The gateway stopped waiting: the reply it never got must not enter the tracker, for
    /turn and for /continue alike; the conversation then goes on as if it never happened."""
    channel.post("turn", {"text": "hello"})
    before = channel.events()
    late = requests.post(f"{channel.base}/turn", headers=channel.headers, timeout=60, json={
        "sender": channel.sender, "text": "what is your return policy?",
        "deadline": time.time() - 0.01})
    assert late.status_code == 504, late.text
    assert "nothing was saved" in late.json()["error"]
    assert channel.events() == before
    channel.post("turn", {"text": "which payment methods do you accept", "hold": True})
    held = channel.events()
    late = requests.post(f"{channel.base}/continue", headers=channel.headers, timeout=60, json={
        "sender": channel.sender, "decision": {"type": "approve"},
        "deadline": time.time() - 0.01})
    assert late.status_code == 504, late.text
    assert channel.events() == held
    bad = requests.post(f"{channel.base}/turn", headers=channel.headers, timeout=60, json={
        "sender": channel.sender, "text": "hi", "deadline": "soon"})
    assert (bad.status_code, bad.json()) == (400, {"error": "'deadline' must be a number "
                                                             "(Unix time)"})
    assert channel.events() == held
    done = channel.post("continue", {"decision": {"type": "approve"},
                                     "deadline": time.time() + 30})
    assert [a["name"] for a in done["actions"]] == ["utter_payment_methods"]
    assert channel.bot_texts()[-1] == say("utter_payment_methods")


def test_requests_without_the_token_or_with_bad_bodies_are_refused(rasa_stack: Stack) -> None:
    url = f"{rasa_stack.rasa_url}/webhooks/gateway/turn"
    assert requests.post(url, json={"sender": "x", "text": "hi"}, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert requests.post(url, json={"sender": "x", "text": "hi"}, headers=wrong,
                         timeout=30).status_code == 401
    auth = {"Authorization": f"Bearer {rasa_stack.token}"}
    bad = requests.post(url, json={"text": "hi"}, headers=auth, timeout=30)
    assert (bad.status_code, bad.json()) == (400, {"error": "'sender' must be a non-empty string"})
    bad = requests.post(f"{rasa_stack.rasa_url}/webhooks/gateway/continue",
                        json={"sender": "x", "decision": {"type": "shout"}}, headers=auth,
                        timeout=30)
    assert bad.status_code == 400
    erase = f"{rasa_stack.rasa_url}/webhooks/gateway/erase"
    assert requests.post(erase, json={"sender": "x"}, timeout=30).status_code == 401
    bad = requests.post(erase, json={"sender": ""}, headers=auth, timeout=30)
    assert (bad.status_code, bad.json()) == (400, {"error": "'sender' must be a non-empty string"})
    none = requests.post(erase, json={"sender": "never-seen"}, headers=auth, timeout=30)
    assert (none.status_code, none.json()) == (200, {"sender": "never-seen", "erased": False})
    mask = f"{rasa_stack.rasa_url}/webhooks/gateway/mask"
    assert requests.post(mask, json={"sender": "x"}, timeout=30).status_code == 401
    bad = requests.post(mask, json={"sender": "x", "kinds": ["email", "names"]}, headers=auth,
                        timeout=30)
    assert (bad.status_code, bad.json()) == (
        400, {"error": "'kinds' must be a list of email, phone, card, order"})
    none = requests.post(mask, json={"sender": "never-seen"}, headers=auth, timeout=30)
    assert (none.status_code, none.json()) == (200, {"sender": "never-seen", "masked": 0})


def _in_rasa(script: str, tmp_path: Path) -> None:
    """Run ``script`` in Rasa's environment with an SQL tracker store file as its argument;
    it prints "ok" when its assertions held."""
    done = subprocess.run(
        [str(RASA_VENV / "bin" / "python"), "-c", script, str(tmp_path / "tracker.db")],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
        env={**os.environ, "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


ERASE_SQL = """
import asyncio, sys
from bot.tracker_store import SQLTrackerStore  # what endpoints.yml ships: Rasa's, a subclass
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from bot.gateway_channel import erase_tracker

async def main() -> None:
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=sys.argv[1])
    for sender in ("mine", "theirs"):
        tracker = DialogueStateTracker(sender, [])
        tracker.update(UserUttered(f"{sender}: jane@mail.test"))
        await store.save(tracker)
    assert erase_tracker(store, "mine") is True
    assert erase_tracker(store, "mine") is False
    assert await store.retrieve_full_tracker("mine") is None
    theirs = await store.retrieve_full_tracker("theirs")
    assert theirs is not None and theirs.latest_message.text == "theirs: jane@mail.test"
    print("ok")

asyncio.run(main())
"""


@pytest.mark.long
def test_erase_deletes_one_senders_events_from_an_sql_tracker_store(tmp_path: Path) -> None:
    """The endpoints.yml default (bot.tracker_store, Rasa's SQL store); the test session's
    Rasa uses the in-memory store, which tests/gateway/test_privacy.py erases through the
    running server."""
    _in_rasa(ERASE_SQL, tmp_path)


MASK_SQL = """
import asyncio, sys, time
from bot.tracker_store import SQLTrackerStore  # what endpoints.yml ships: Rasa's, a subclass
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import BotUttered, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from bot.gateway_channel import mask_tracker

CARD = "my card is 4111 1111 1111 1111, jane@mail.test"

async def main() -> None:
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=sys.argv[1])
    old = time.time() - 100
    for sender in ("mine", "theirs"):
        tracker = DialogueStateTracker(sender, [])
        tracker.update(UserUttered(CARD, timestamp=old))
        tracker.update(SlotSet("email", "jane@mail.test", timestamp=old))
        tracker.update(BotUttered("I will write to jane@mail.test", timestamp=old))
        tracker.update(UserUttered("later: " + CARD, timestamp=old + 90))
        await store.save(tracker)
    assert mask_tracker(store, "mine", before=old + 50) == 3  # the old events only
    first = (await store.retrieve_full_tracker("mine")).events[0].text
    assert (await store.retrieve_full_tracker("mine")).latest_message.text == "later: " + CARD
    assert mask_tracker(store, "mine", after=old + 50, before=old + 95) == 1  # the later one
    assert mask_tracker(store, "mine", after=old + 95, before=old + 200) == 0
    assert mask_tracker(store, "nobody") == 0
    mine = await store.retrieve_full_tracker("mine")
    assert mine.events[0].text == first  # each event masked once
    text = str([e.as_dict() for e in mine.events])
    assert "4111 1111 1111 1111" not in text and "jane@mail.test" not in text, text
    assert first.startswith("my card is ") and mine.latest_message.text.startswith("later: ")
    theirs = await store.retrieve_full_tracker("theirs")
    assert theirs.latest_message.text == "later: " + CARD
    print("ok")

asyncio.run(main())
"""


@pytest.mark.long
def test_mask_masks_one_senders_events_in_an_sql_tracker_store(tmp_path: Path) -> None:
    """The endpoints.yml default (bot.tracker_store, Rasa's SQL store); the test session's
    Rasa uses the in-memory store, which tests/gateway/test_privacy.py masks through the
    running server."""
    _in_rasa(MASK_SQL, tmp_path)
