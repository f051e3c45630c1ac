"""Whispering to the bot end to end, on a real gateway in front of the real Rasa: a slot set by
an agent changes the bot's next reply; a chosen action runs and its reply reaches the customer;
unknown slots and actions are refused with nothing changed; both are recorded as corrections
the writer's contract accepts, with their audit entries; a slot whose record cannot be stored is
set back in Rasa. (Every tier has ``whisper``: no 403 case.)"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.serve import Stack
from contracts.correction_record import parse_record
from handoff.conversation.rasa_client import RasaClient
from handoff.conversation.shell import Conversations
from handoff.conversation.whisper import Whisper, WhisperNotRecorded
from handoff.errors import ServiceUnavailable
from handoff.store import Store, to_json
from tests.gateway.clients import WAIT, Widget, agent_console, agent_login
from tests.gateway.clients import api, gateway_store, widget  # noqa: F401 (fixtures)
from tests.gateway.conftest import Gateway
from tests.gateway.test_decisions import Pushes

pytestmark = pytest.mark.asyncio

ORDER = "100002"  # shipped, in the demo shop's data (actions/shop_db.py)


async def test_a_whispered_slot_changes_the_bots_next_reply(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    wendy = await agent_login(store, api, "wendy")
    session_id = await widget.started()
    url = f"/api/conversations/{session_id}/whisper"

    # refused with a clear reason, nothing recorded
    for body, reason in (({"slot": "colour", "value": "red"}, "unknown slot 'colour'"),
                         ({"action": "utter_nonsense"}, "unknown action 'utter_nonsense'"),
                         ({"slot": "order_id"}, "'value' is required"),
                         ({"slot": "order_id", "value": "1", "action": "utter_greet"},
                          "either")):
        resp = await api.post(url, headers=wendy, json=body)
        assert resp.status_code == 400, resp.text
        assert reason in resp.json()["message"], resp.text
    assert await store.list_corrections(conversation_id=session_id) == []
    resp = await api.post("/api/conversations/nope/whisper", headers=wendy,
                          json={"slot": "order_id", "value": ORDER})
    assert resp.status_code == 404, resp.text

    resp = await api.post(url, headers=wendy, json={"slot": "order_id", "value": ORDER})
    assert resp.status_code == 200, resp.text
    assert resp.json()["whisper"] == {"slot": "order_id", "value": ORDER}
    await widget.nothing()  # a slot says nothing to the customer

    # the bot does not ask for the order number any more: it names the whispered order
    await widget.say(session_id, "where is my order?")
    kind, data = await widget.next()
    assert kind == "bot_uttered", data
    assert ORDER in data["text"], data

    [correction] = await store.list_corrections(conversation_id=session_id)
    assert (correction.type, correction.agent) == ("slot_set", "wendy")
    assert correction.after == {"slot": "order_id", "value": ORDER}
    assert correction.tracker_status == "fetched"
    assert any(e.get("event") == "user" for e in correction.tracker_events)
    parsed = parse_record({**to_json(correction), "review_status": "accepted"})
    assert parsed.after is not None and (parsed.after.slot, parsed.after.value) == (
        "order_id", ORDER)
    [entry] = await store.list_audit(actor="wendy", action="whisper_slot")
    assert entry.target == f"conversation:{session_id}"
    assert entry.details == {"slot": "order_id", "correction": correction.id}


async def test_a_chosen_action_runs_and_its_reply_reaches_the_customer(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    walt = await agent_login(store, api, "walt")
    console, messages = await agent_console(gateway, walt, "message")
    try:
        session_id = await widget.started()
        answer = await console.call("whisper", {"conversation_id": session_id,
                                                "action": "utter_ask_order_id"},
                                    namespace="/agent", timeout=WAIT)
        assert answer["whisper"] == {"action": "utter_ask_order_id"}, answer
        kind, data = await widget.next()
        assert kind == "bot_uttered" and "order number" in data["text"].lower(), data
        while True:  # the agents see it as the bot's message, chosen by walt
            shown = await asyncio.wait_for(messages.get(), WAIT)
            if shown["conversation_id"] == session_id and shown["sender"] == "bot" and (
                    shown["action"] == "utter_ask_order_id"):
                break
        assert shown["decided_by"] == "walt"

        # the bot listens again after the chosen action: the customer's answer is answered
        await widget.say(session_id, ORDER)
        kind, data = await widget.next()
        assert kind == "bot_uttered" and data["text"], data

        refused = await console.call("whisper", {"conversation_id": session_id,
                                                 "action": "action_nope"},
                                     namespace="/agent", timeout=WAIT)
        assert refused["status"] == 400, refused
        [correction] = await store.list_corrections(conversation_id=session_id)
        assert (correction.type, correction.agent) == ("action_chosen", "walt")
        assert correction.after is not None
        assert correction.after["action_name"] == "utter_ask_order_id"
        # stored with the step; the tracker as it was before the chosen action, fetched after
        deadline = asyncio.get_running_loop().time() + WAIT
        while correction.tracker_status != "fetched":
            assert asyncio.get_running_loop().time() < deadline, correction.tracker_status
            await asyncio.sleep(0.05)
            [correction] = await store.list_corrections(conversation_id=session_id)
        assert correction.tracker_events and not any(
            e.get("event") == "action" and e.get("name") == "utter_ask_order_id"
            for e in correction.tracker_events), correction.tracker_events
        parsed = parse_record({**to_json(correction), "review_status": "accepted"})
        assert parsed.after is not None and parsed.after.action_name == "utter_ask_order_id"
        assert [e.action for e in await store.list_audit(actor="walt")
                if e.action.startswith("whisper")] == ["whisper_action"]
    finally:
        await console.disconnect()


async def test_in_review_a_chosen_action_is_held_for_a_decision_first(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    vera = await agent_login(store, api, "vera")
    console, pending = await agent_console(gateway, vera, "pending_reply")
    try:
        session_id = await widget.started()
        resp = await api.post(f"/api/conversations/{session_id}/review", headers=vera,
                              json={"on": True})
        assert resp.status_code == 200, resp.text
        resp = await api.post(f"/api/conversations/{session_id}/whisper", headers=vera,
                              json={"action": "utter_ask_order_id"})
        assert resp.status_code == 200, resp.text
        reply = (await asyncio.wait_for(pending.get(), WAIT))["reply"]
        assert reply["action"]["name"] == "utter_ask_order_id"
        # the reviewer sees what it would say (Rasa's rendering of the response)
        [shown] = reply["action"]["messages"]
        assert "order number" in shown["text"].lower(), reply
        await widget.nothing()  # held: nothing reached the customer yet
        # a second whisper while the first waits for its decision is refused
        again = await api.post(f"/api/conversations/{session_id}/whisper", headers=vera,
                               json={"action": "utter_greet"})
        assert again.status_code == 409, again.text

        resp = await api.post(
            f"/api/conversations/{session_id}/replies/{reply['reply_id']}/decision",
            headers=vera, json={"type": "approve"})
        assert resp.status_code == 200, resp.text
        kind, data = await widget.next()
        assert (kind, data["text"]) == ("bot_uttered", shown["text"]), data  # what was shown
    finally:
        await console.disconnect()


async def test_a_slot_whose_record_cannot_be_stored_is_set_back_in_rasa(
    rasa_stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shell runs in this process, over a real SQLite file, in front of the real Rasa."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")
    await store.migrate()
    rasa = RasaClient(rasa_stack.rasa_url, rasa_stack.token, timeout=WAIT)
    conversations = Conversations(store, rasa, Pushes())
    whisper = Whisper(conversations)
    try:
        cid = f"whisper-{uuid.uuid4().hex[:12]}"
        await conversations.open(cid)
        kept = await whisper.set_slot(cid, "wendy", "order_id", ORDER)

        # The database fails after the correction is written, at its audit entry, in the one
        # transaction. A stand-in: a real database cannot be made to fail at that statement.
        async def broken(*args: Any) -> None:
            raise ServiceUnavailable("the database does not answer")

        monkeypatch.setattr(store, "_audit_correction", broken)
        with pytest.raises(WhisperNotRecorded) as refused:
            await whisper.set_slot(cid, "wendy", "order_id", "100005")
        assert refused.value.status == 503
        assert refused.value.details == {"slot_restored": True}
        assert refused.value.message == (
            "the slot could not be recorded (ServiceUnavailable: the database does not "
            "answer): it was set back to its previous value in Rasa; nothing changed, try again")
        monkeypatch.undo()

        assert (await rasa.tracker(cid))["slots"]["order_id"] == ORDER  # set back
        # neither the correction nor its audit entry was stored
        assert [c.id for c in await store.list_corrections(conversation_id=cid)] == [kept.id]
        assert [e.details for e in await store.list_audit(action="whisper_slot")] == [
            {"slot": "order_id", "correction": kept.id}]
    finally:
        await conversations.close()
        await rasa.close()
        await store.close()
