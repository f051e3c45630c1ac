"""An agent's decision and its correction commit together; Rasa's tracker follows, retried.

The shell (:class:`handoff.conversation.shell.Conversations`) runs in this process over a real
SQLite file, in front of the real Rasa server (``rasa_stack``). A customer's message is held for
review, the agent approves it, and the decision, the resolved pending reply, the message sent
and the correction are stored in one transaction. Rasa's tracker events are fetched afterwards:
here that fetch first fails, and the correction is kept, flagged ``failed`` with its error, until
``recover()`` (what the gateway runs at start-up) fetches them.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
import requests

from bot.serve import Stack
from handoff.conversation import router as r
from handoff.conversation.rasa_client import RasaClient
from handoff.conversation.shell import Conversations
from handoff.conversation.step_records import events_until
from handoff.learning.corrections import export_records
from handoff.store import Store
from tests.conftest import free_port
from tests.gateway.clients import WAIT
from tests.gateway.conftest import stored_correction, stored_pending_replies

pytestmark = pytest.mark.asyncio

REFUND_POLICY = "what is your return policy?"


class TrackerOffline(RasaClient):
    """The real client, except that while ``offline`` its tracker fetch goes to a closed port.

    A stand-in is needed because the failure must hit only the tracker fetch: Rasa's channel
    (the customer's turn, the agent's decision) and its tracker endpoint are one server, which
    cannot be made to refuse one and answer the other. The request still goes over the
    network, through the client's own error handling, and fails as a refused connection."""

    offline = True
    closed = f"http://127.0.0.1:{free_port()}"

    async def tracker_events(self, sender: str) -> list[dict[str, Any]]:
        if self.offline:
            await self._get(f"/conversations/{quote(sender, safe='')}/tracker",
                            params={"include_events": "ALL"}, base_url=self.closed)
        return await super().tracker_events(sender)


class Pushes:
    """The notifier seam: what the sockets would have been sent (not asserted on here)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def to_customer(self, conversation_id: str, event: str, payload: Any) -> None:
        self.sent.append((event, payload))

    async def to_agents(self, event: str, payload: Any,
                        agent_ids: Sequence[str] | None = None) -> None:
        self.sent.append((event, payload))

    def pushes(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


@pytest_asyncio.fixture
async def shell(rasa_stack: Stack, tmp_path: Path) -> AsyncIterator[Conversations]:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")
    await store.migrate()
    rasa = TrackerOffline(rasa_stack.rasa_url, rasa_stack.token, timeout=WAIT)
    conversations = Conversations(store, rasa, Pushes(), tracker_retry_delays=(0.05, 0.1))
    try:
        yield conversations
    finally:
        await conversations.close()
        await rasa.close()
        await store.close()


def _all_events(stack: Stack, conversation_id: str) -> list[dict[str, Any]]:
    resp = requests.get(f"{stack.rasa_url}/conversations/{conversation_id}/tracker",
                        params={"token": stack.token, "include_events": "ALL"}, timeout=WAIT)
    resp.raise_for_status()
    events: list[dict[str, Any]] = resp.json()["events"]
    return events


async def test_a_decision_is_stored_at_once_and_its_tracker_fetched_until_it_is_in(
    shell: Conversations, rasa_stack: Stack
) -> None:
    store, rasa = shell.store, shell.rasa
    assert isinstance(rasa, TrackerOffline)
    cid = f"decision-{uuid.uuid4().hex[:12]}"
    await shell.open(cid)
    await shell.apply(cid, r.SetReview(agent_id="ann", on=True))
    await shell.customer_message(cid, REFUND_POLICY, {})
    await shell.idle()
    pending = (await shell.state(cid)).pending
    assert pending is not None and pending.action.name == "utter_refund_policy"
    [held] = await stored_pending_replies(store, cid)
    assert (held.status, held.action) == ("pending", "utter_refund_policy")

    await shell.apply(cid, r.Approve(agent_id="ann", reply_id=pending.reply_id))
    await shell.idle()  # the approved reply ran in Rasa; the tracker fetch gave up

    # Committed with the decision: the resolved reply, the message sent, the correction.
    [decided] = await stored_pending_replies(store, cid)
    assert (decided.id, decided.status, decided.decision, decided.decided_by) == (
        held.id, "decided", "approved", "ann")
    messages = await store.list_messages(cid)
    assert [(m.sender, m.action, m.decision, m.decided_by) for m in messages] == [
        ("customer", None, None, None), ("bot", "utter_refund_policy", "approved", "ann")]
    [correction] = await store.list_corrections(conversation_id=cid)
    assert (correction.type, correction.agent, correction.pending_reply_id,
            correction.message_id, correction.model_version) == (
        "approved", "ann", held.id, messages[0].id, pending.model_id)
    # ... kept without its tracker, flagged, with the error of the last of its three tries
    assert (correction.tracker_status, correction.tracker_events, correction.tracker_attempts) == (
        "failed", [], 3)
    assert correction.tracker_error is not None
    assert correction.tracker_error.startswith("cannot connect to Rasa")
    await store.review_correction(correction.id, review_status="accepted", reviewed_by="tina")
    export = export_records(await store.list_corrections(conversation_id=cid))
    assert export.records == [] and "tracker events from Rasa failed after 3 tries" in (
        export.refused[correction.id])

    # Rasa's tracker is reachable again: the start-up recovery fetches what is missing.
    rasa.offline = False
    await shell.recover()
    await shell.idle()
    fetched = await stored_correction(store, correction.id)
    assert (fetched.tracker_status, fetched.tracker_error, fetched.tracker_attempts) == (
        "fetched", None, 4)
    # The tracker as it was when ann decided: the customer's message, not yet the reply that
    # Rasa has logged since.
    kinds = [e["event"] for e in fetched.tracker_events]
    assert kinds.count("user") == 1 and "bot" not in kinds
    assert fetched.tracker_events[kinds.index("user")]["text"] == REFUND_POLICY
    now = _all_events(rasa_stack, cid)
    assert now[:len(fetched.tracker_events)] == fetched.tracker_events
    assert [e.get("text") for e in now if e["event"] == "bot"] == [messages[1].text]
    export = export_records([fetched])
    assert (export.ids, export.refused) == ([correction.id], {})


async def test_the_tracker_is_cut_at_the_time_of_the_decision() -> None:
    events: list[dict[str, Any]] = [{"event": "action", "timestamp": 1.0}, {"event": "slot"},
              {"event": "user", "timestamp": 2.0}, {"event": "bot", "timestamp": 2.5},
              {"event": "action", "timestamp": 2.1}]
    at = datetime.fromtimestamp(2.0, timezone.utc)
    assert events_until(events, at) == events[:3]  # in order: nothing after the first later one
    assert events_until(events, datetime.fromtimestamp(0.5, timezone.utc)) == []
    assert events_until([], at) == []
