"""Customers' data in the store, on SQLite and PostgreSQL: exports masked, erasures that remove
the customer's text and keep their corrections masked, and the retention job's masking
(handoff/store/privacy.py, handoff/conversation/privacy.py; docs/security.md)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from unittest.mock import ANY

import pytest
import sqlalchemy as sa

from contracts.masking import luhn_valid
from handoff.conversation.privacy import RetentionJob, closed_state
from handoff.errors import BadRequest, NotFound
from handoff.settings import SettingsError, load_settings
from handoff.store import Store
from handoff.store.schema import conversation_contacts, conversations, messages, notes

pytestmark = pytest.mark.asyncio

SAID = "I'm jane.doe@mail.test, card 4111 1111 1111 1111, call +44 20 7946 0958 about order 100234"
PII = ("jane.doe@mail.test", "4111 1111 1111 1111", "7946 0958", "100234")


async def _customer(store: Store, cid: str, text: str = SAID) -> None:
    await store.upsert_conversation(cid)
    said = await store.append_message(cid, "customer", text, client_message_id=f"{cid}-1",
                                      metadata={"customData": {"email": "jane.doe@mail.test"}},
                                      entities=[{"entity": "order_id", "value": "100234",
                                                 "start": text.find("100234"),
                                                 "end": text.find("100234") + 6}])
    await store.append_message(cid, "bot", "Order 100234 is on its way.", action="utter_x")
    await store.add_note(cid, author="alice", text="she said jane.doe@mail.test")
    await store.set_contact(cid, "jane.doe@mail.test")  # left while waiting for a person
    await store.add_correction(cid, type="relabelled", agent="alice", message_id=said.id,
                               before={"text": text, "intent": "greet"},
                               after={"text": text, "intent": "track_order"},
                               tracker_events=[{"event": "user", "text": text,
                                                "parse_data": {"text": text, "entities": []}}])


def _has_pii(value: object) -> list[str]:
    text = repr(value)
    return [p for p in PII if p in text]


async def test_export_masks_every_kind_and_keeps_the_shape(store: Store) -> None:
    await _customer(store, "c1")
    [conv] = await store.export_conversations(["c1"])
    assert conv["id"] == "c1" and "state" not in conv and "triage" not in conv
    assert [m["sender"] for m in conv["messages"]] == ["customer", "bot"]
    text = conv["messages"][0]["text"]
    assert _has_pii(conv) == []
    assert re.fullmatch(r"I'm customer@example\.com, card (\d{4} ){3}\d{4}, call \+44 \d\d \d{4} "
                        r"\d{4} about order \d{6}", text), text
    card = re.search(r"card ([\d ]+),", text)
    assert card and not luhn_valid(card.group(1).replace(" ", ""))
    entity = conv["messages"][0]["entities"][0]
    assert text[entity["start"]:entity["end"]] == entity["value"] != "100234"
    assert conv["notes"][0]["text"] == "she said customer@example.com"
    assert conv["contact"]["contact"] == "customer@example.com"
    assert conv["corrections"][0]["before"]["text"] == text  # one value, one replacement
    # only the configured kinds
    [conv] = await store.export_conversations(["c1"], kinds=("email",))
    assert _has_pii(conv["messages"][0]["text"]) == ["4111 1111 1111 1111", "7946 0958",
                                                     "100234"]
    # the stored rows are untouched by an export
    assert (await store.list_messages("c1"))[0].text == SAID


async def test_unknown_or_bad_ids_are_refused_whole(store: Store) -> None:
    await _customer(store, "c1")
    with pytest.raises(NotFound) as err:
        await store.export_conversations(["c1", "nobody", "ghost"])
    assert err.value.details == {"unknown": ["nobody", "ghost"]}
    with pytest.raises(NotFound):
        await store.erase_conversations(["c1", "nobody"], closed_state=lambda c: {},
                                        actor="root", reason="test")
    assert (await store.list_messages("c1"))[0].text == SAID  # nothing erased
    for bad in ([], "c1", [1], ["x" * 201], ["\ud800"]):
        with pytest.raises(BadRequest):
            await store.export_conversations(bad)  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        await store.export_conversations(["c1"], kinds=("passport",))


async def test_erase_removes_the_text_and_keeps_corrections_masked(store: Store) -> None:
    await _customer(store, "c1")
    await _customer(store, "c2", "other customer: bob@mail.test")
    for cid in ("c1", "c2"):  # each widget's session secret, kept hashed
        assert await store.claim_customer_session(cid, f"hash-of-{cid}")
    stored = (await store.get_conversation("c1")).state
    [done] = await store.erase_conversations(
        ["c1"], closed_state=lambda cid: closed_state(cid, stored), actor="root",
        reason="GDPR request 7")
    assert done == {"conversation_id": "c1", "pending_replies": 0, "notes": 1, "messages": 2,
                    "contacts": 1, "session": 1, "corrections_masked": 1}
    assert await store.customer_session_hash("c1") is None  # a widget with it starts anew
    assert await store.customer_session_hash("c2") == "hash-of-c2"
    assert await store.get_contact("c1") is None
    assert await store.get_contact("c2") == {"conversation_id": "c2", "contact": ANY,
                                             "left_at": ANY}
    conv = await store.get_conversation("c1")
    assert conv.mode == "closed" and conv.erased_at is not None and conv.triage is None
    assert conv.state is not None and conv.state["mode"] == "closed"
    assert await store.list_messages("c1") == [] and await store.list_notes("c1") == []
    [correction] = await store.list_corrections(conversation_id="c1")
    assert correction.message_id is None and _has_pii(correction) == []
    assert correction.after["intent"] == "track_order"  # still training data
    [entry] = await store.list_audit(action="customer_erased")
    assert (entry.actor, entry.target) == ("root", "conversation:c1")
    assert entry.details == {"reason": "GDPR request 7", **done}
    # every table its text was in
    async with store._tx(write=False) as conn:
        for table, key in ((conversations, conversations.c.id),
                           (messages, messages.c.conversation_id),
                           (notes, notes.c.conversation_id)):
            rows = (await conn.execute(sa.select(table).where(key == "c1"))).all()
            assert _has_pii(rows) == [], table.name
    # the other customer is untouched
    assert [m.text for m in await store.list_messages("c2")][0] == "other customer: bob@mail.test"
    assert (await store.get_conversation("c2")).erased_at is None


async def test_an_erasure_records_its_close_as_a_change_with_no_agent(store: Store) -> None:
    """A customer waiting in the queue is erased: the wait ends with the close (cause
    ``customer_erased``, no actor: no agent resolved it); erasing again records nothing."""
    await _customer(store, "c1")
    conv = await store.get_conversation("c1")
    await store.save_step("c1", expected_version=conv.version, mode="bot", owner=None,
                          queued=True, queue_reason="bot_handoff_marker", state=None,
                          cause="RasaResult")
    for _ in range(2):
        stored = (await store.get_conversation("c1")).state
        await store.erase_conversations(["c1"], closed_state=lambda cid: closed_state(cid, stored),
                                        actor="root", reason="GDPR request 8")
        changes = [(e.cause, e.actor, e.mode_from, e.mode, e.owner, e.queued)
                   for e in await store.metric_events(["c1"])]
        assert changes == [("RasaResult", None, "bot", "bot", None, True),
                           ("customer_erased", None, "bot", "closed", None, False)]


async def test_retention_masks_old_messages_and_notes_once(store: Store) -> None:
    await _customer(store, "old")
    await _customer(store, "new")
    long_ago = datetime.now(timezone.utc) - timedelta(days=100)
    async with store._tx(write=True) as conn:
        for table in (messages, notes):
            await conn.execute(sa.update(table).where(table.c.conversation_id == "old")
                               .values(created_at=long_ago))
        await conn.execute(sa.update(conversation_contacts).where(
            conversation_contacts.c.conversation_id == "old").values(left_at=long_ago))
    job = RetentionJob(store, retention_days=90, interval=3600,
                       kinds=("email", "phone", "card", "order"))
    assert await job.run_once() == 4  # two messages and a note masked, a contact deleted
    assert await store.get_contact("old") is None
    assert await store.get_contact("new") is not None
    old = await store.list_messages("old")
    assert _has_pii(old) == [] and all(m.masked_at is not None for m in old)
    assert old[0].text.startswith("I'm customer@example.com, card ")
    assert old[1].text.startswith("Order ") and old[1].text.endswith(" is on its way.")
    assert _has_pii(await store.list_notes("old")) == []
    new = await store.list_messages("new")
    assert new[0].text == SAID and new[0].masked_at is None  # younger than the retention
    assert await job.run_once() == 0  # masked once
    # the same value, the same replacement in every pass and in an export
    [exported] = await store.export_conversations(["old"])
    assert exported["messages"][0]["text"] == old[0].text
    assert await job.run_once(at=datetime.now(timezone.utc) + timedelta(days=91)) == 4
    assert _has_pii(await store.list_messages("new")) == []


async def test_the_job_runs_a_pass_at_start_and_stops_on_close(store: Store) -> None:
    await _customer(store, "old")
    job = RetentionJob(store, retention_days=1, interval=3600, kinds=("email",))
    # a retention period that every row is past: seen from two days later
    job.retention = timedelta(days=-2)
    job.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while (await store.list_messages("old"))[0].masked_at is None:
            assert asyncio.get_running_loop().time() < deadline, "no pass ran"
            await asyncio.sleep(0.02)
    finally:
        await job.close()
    assert job._task is None
    text = (await store.list_messages("old"))[0].text
    assert text is not None and "customer@example.com" in text and "100234" in text  # email only


async def test_an_unknown_pii_kind_stops_the_gateway_at_start_up() -> None:
    env = {"HANDOFF_PII_KINDS": "email,passport", "HANDOFF_RASA_TOKEN": "t",
           "HANDOFF_JWT_SECRET": "s" * 40}
    with pytest.raises(SettingsError, match="HANDOFF_PII_KINDS: each must be one of email, "
                                            "phone, card, order; got email, passport"):
        load_settings(env, env_file=None)
    assert load_settings({**env, "HANDOFF_PII_KINDS": " Email, card "},
                         env_file=None).pii_kind_list == ("email", "card")


async def test_tracker_events_fetched_after_the_erasure_are_stored_masked(store: Store) -> None:
    await _customer(store, "c1")
    [correction] = await store.list_corrections(conversation_id="c1")
    await store.erase_conversations(["c1"], closed_state=lambda cid: closed_state(cid, None),
                                    actor="root", reason="request")
    late = [{"event": "user", "text": SAID, "parse_data": {"text": SAID, "entities": []},
             "metadata": {"email": "jane.doe@mail.test"}},
            {"event": "slot", "name": "email", "value": "jane.doe@mail.test"}]
    stored = await store.set_correction_tracker(correction.id, events=late)
    assert stored.tracker_status == "fetched" and _has_pii(stored.tracker_events) == []
    assert stored.tracker_events[1] == {"event": "slot", "name": "email",
                                        "value": "customer@example.com"}
    # a conversation that was not erased keeps its events as fetched (training masks them)
    await _customer(store, "c2")
    [other] = await store.list_corrections(conversation_id="c2")
    kept = await store.set_correction_tracker(other.id, events=late)
    assert kept.tracker_events == late
