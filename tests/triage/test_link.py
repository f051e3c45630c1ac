"""handoff.conversation.triage_link: the gateway's use of triage, with the real engine (no Rasa needed)."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pytest

from handoff.conversation import router as r
from handoff.store import Store
from handoff.triage import Triage, TriageConfig
from handoff.conversation.triage_link import TriageLink

pytestmark = pytest.mark.asyncio


def _link(triage: Triage) -> TriageLink:
    return TriageLink(TriageConfig(), load=lambda config: triage)


async def test_rules_flag_before_rasa_with_human_winning(triage: Triage) -> None:
    link = _link(triage)
    assert link.rules_flag("where is my order?") is None
    flag = link.rules_flag("please delete my account")
    assert flag is not None and flag.action is r.TriageAction.REVIEW
    assert "delete my account" in flag.detail
    flag = link.rules_flag("delete my account or I will file a chargeback")
    assert flag is not None and flag.action is r.TriageAction.HUMAN


async def test_a_new_model_rebuilds_the_index_and_suggestions_go_on(triage: Triage) -> None:
    link = _link(triage)
    await link.start()
    assert await link.wait_ready()
    try:
        assert not link.model_changed(None) and not link.model_changed("model-a")
        assert not link.model_changed("model-a")
        before = triage.index
        assert link.model_changed("model-b")
        await link.rebuild()
        assert triage.index is not before  # swapped in, built from the same project data
        found = await link.suggestions(["what is your return policy?"])
        assert "response:utter_refund_policy" in [s.source for s in found]
    finally:
        await link.close()


async def test_a_repeated_text_is_judged_with_its_cached_embedding_until_a_rebuild(
    triage: Triage, tmp_path: Path
) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'link.db'}")
    await store.migrate()
    link = TriageLink(TriageConfig(), load=lambda config: triage, embedding_cache=2)
    await link.start()
    assert await link.wait_ready()
    parse = r.NluParse(intent="check_refund_policy", confidence=0.93)

    async def judged(cid: str, text: str) -> dict[str, Any]:
        await store.upsert_conversation(cid)
        message = r.CustomerMessage(message_id=uuid.uuid4().hex, text=text)
        judging = link.begin(store, cid, message)
        assert judging is not None
        judgement = await link.judge(judging, message, parse)
        link.abandon(cid, judgement.done)
        return judgement.assessment.to_json()

    try:
        first = await judged("c1", "What is your return policy?")
        assert link.prepared_hits == 0
        assert await judged("c2", "What is your return policy?") == first
        assert link.prepared_hits == 1
        await judged("c3", "hello")
        await judged("c4", "thanks")  # the cache holds two: the return policy one is dropped
        assert await judged("c5", "What is your return policy?") == first
        assert link.prepared_hits == 1
        await link.rebuild()  # a new index: measured again
        await judged("c6", "What is your return policy?")
        assert link.prepared_hits == 1
        await judged("c7", "What is your return policy?")
        assert link.prepared_hits == 2
    finally:
        await link.close()
        await store.close()


async def test_a_turns_history_comes_from_the_kept_row_and_is_stored_once(
    triage: Triage, tmp_path: Path
) -> None:
    """The next message's history is read from the row the shell kept (the store is not
    read); ``record`` pushes what the turn's step stored, and stores it itself only when no
    step did (a Rasa answer the router ignored)."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'link.db'}")
    await store.migrate()
    link = _link(triage)
    await link.start()
    assert await link.wait_ready()
    pushed: list[tuple[str, Any]] = []

    async def push(event: str, payload: Any, agent_ids: Any = None) -> None:
        pushed.append((event, payload))

    try:
        await store.upsert_conversation("c1")
        kept = await store.upsert_conversation("c2")  # a row saying c1's history is "x"
        kept = dataclasses.replace(kept, id="c1", triage={"history": {
            "intents": ["x"], "sentiments": [0.0], "fallbacks": [False]}})
        message = r.CustomerMessage(message_id="m1", text="this is useless")
        await store.append_message("c1", "customer", message.text, client_message_id="m1")
        judging = link.begin(store, "c1", message, kept=lambda: kept)
        assert judging is not None
        judgement = await link.judge(judging, message, r.NluParse(intent="complain",
                                                                  confidence=0.9))
        assert judgement.history.intents[:1] == ("x",)  # from the kept row, not the store
        assert await link.record(store, push, "c1", message, judgement, stored=True) is None
        assert (await store.get_conversation("c1")).triage is None  # the step's to write
        row = await link.record(store, push, "c1", message, judgement)  # no step stored it
        assert row is not None and row.triage == link.stored(message, judgement)["triage"]
        [stored] = await store.list_messages("c1")
        assert stored.triage == judgement.assessment.to_json()
        assert [e for e, _ in pushed] == ["risk", "risk"]
        assert pushed[0][1]["message_id"] == "m1"
    finally:
        await link.close()
        await store.close()
