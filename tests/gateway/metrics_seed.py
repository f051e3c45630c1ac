"""A seeded history for the metrics tests: nine conversations over two days that cover every
case docs/metrics.md defines (bot-resolved, agent-resolved after a queue wait, abandoned in the
queue, ended after a handoff, still open, reopened, a silent session, one outside the period),
held replies of every fate, corrections (a whisper among them), agents' actions with and
without suggestions, ratings, two model versions and their deploys.

The rows are written with the store's own table definitions at fixed times (what the gateway
would have written live, minus the clock), so every expected figure in
``tests/gateway/test_metrics.py`` can be worked out by hand from the timeline below.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from handoff.store import Store
from handoff.store.schema import (
    audit_log,
    conversation_events,
    conversations,
    corrections,
    messages,
    model_versions,
    pending_replies,
    suggestion_ratings,
)

D1 = datetime(2026, 11, 2, tzinfo=timezone.utc)
D2 = D1 + timedelta(days=1)
D3 = D1 + timedelta(days=3)  # outside the period the tests ask for
PERIOD = (D1, D1 + timedelta(days=2))


def at(day: datetime, hms: str) -> datetime:
    h, m, s = (int(x) for x in hms.split(":"))
    return day + timedelta(hours=h, minutes=m, seconds=s)


class _Seeder:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.seq: dict[str, int] = {}

    async def conversation(self, cid: str, created: datetime, mode: str, *,
                           effort: int | None = None, closed_at: datetime | None = None,
                           queued: bool = False, owner: str | None = None) -> None:
        await self.conn.execute(sa.insert(conversations).values(
            id=cid, created_at=created, updated_at=created, mode=mode, owner=owner,
            queued=queued, effort_score=effort, closed_at=closed_at, version=1, last_seq=0))
        self.seq[cid] = 0

    async def message(self, cid: str, when: datetime, sender: str, *, intent: str | None = None,
                      model: str | None = None, sentiment: float | None = None,
                      decision: str | None = None, decided_by: str | None = None) -> int:
        self.seq[cid] += 1
        row = (await self.conn.execute(sa.insert(messages).values(
            conversation_id=cid, seq=self.seq[cid], sender=sender, text=f"{sender} text",
            created_at=when, intent=intent, model_version=model, sentiment=sentiment,
            decision=decision, decided_by=decided_by).returning(messages.c.id))).one()
        await self.conn.execute(sa.update(conversations).where(conversations.c.id == cid)
                                .values(last_seq=self.seq[cid]))
        return int(row[0])

    async def event(self, cid: str, when: datetime, cause: str, mode_from: str, mode: str, *,
                    actor: str | None = None, owner: str | None = None,
                    queued: bool = False, reason: str | None = None) -> None:
        await self.conn.execute(sa.insert(conversation_events).values(
            conversation_id=cid, created_at=when, cause=cause, actor=actor, mode_from=mode_from,
            mode=mode, owner=owner, queued=queued, queue_reason=reason))

    async def held(self, cid: str, when: datetime, action: str, model: str, trigger: int,
                   status: str, *, decision: str | None = None, by: str | None = None,
                   decided: datetime | None = None) -> int:
        row = (await self.conn.execute(sa.insert(pending_replies).values(
            conversation_id=cid, created_at=when, trigger_message_id=trigger, action=action,
            messages=[{"text": "held"}], model_version=model, status=status,
            decision=decision, decided_by=by, decided_at=decided,
        ).returning(pending_replies.c.id))).one()
        return int(row[0])

    async def correction(self, cid: str, when: datetime, kind: str, agent: str, model: str,
                         reply: int | None, fixed_by: str | None = None) -> int:
        row = (await self.conn.execute(sa.insert(corrections).values(
            conversation_id=cid, pending_reply_id=reply, type=kind, tracker_events=[],
            agent=agent, created_at=when, model_version=model, fixed_by_model=fixed_by,
            tracker_status="fetched").returning(corrections.c.id))).one()
        return int(row[0])

    async def audit(self, when: datetime, actor: str, action: str, target: str,
                    details: dict[str, Any] | None = None) -> None:
        await self.conn.execute(sa.insert(audit_log).values(
            created_at=when, actor=actor, action=action, target=target, details=details))

    async def rating(self, cid: str, when: datetime, agent: str, rating: int) -> None:
        await self.conn.execute(sa.insert(suggestion_ratings).values(
            conversation_id=cid, created_at=when, agent=agent, suggestion="response:utter_x",
            rating=rating))


async def seed(store: Store) -> None:
    """Write the timeline (times are UTC; ``m1`` live from D1, ``m2`` from D2)."""
    async with store._tx(write=True) as conn:
        s = _Seeder(conn)
        # c1 — bot resolved: two turns, the customer ends it; effort 7; sentiment -0.2 → 0.6
        await s.conversation("c1", at(D1, "10:00:00"), "closed", effort=7,
                             closed_at=at(D1, "10:02:00"))
        await s.message("c1", at(D1, "10:00:00"), "customer", intent="track_order", model="m1",
                        sentiment=-0.2)
        await s.message("c1", at(D1, "10:00:05"), "bot", model="m1")
        await s.message("c1", at(D1, "10:01:00"), "customer", intent="thank", model="m1",
                        sentiment=0.6)
        await s.message("c1", at(D1, "10:01:02"), "bot", model="m1")
        await s.event("c1", at(D1, "10:02:00"), "Close", "bot", "closed")
        # c2 — asks for a person, waits 180 s, alice takes over and closes it after 420 s
        await s.conversation("c2", at(D1, "11:00:00"), "closed", effort=5,
                             closed_at=at(D1, "11:10:01"))
        await s.message("c2", at(D1, "11:00:00"), "customer", intent="human_handoff",
                        model="m1", sentiment=-0.5)
        await s.message("c2", at(D1, "11:00:01"), "system")
        await s.event("c2", at(D1, "11:00:01"), "RasaAnswer", "bot", "bot", queued=True,
                      reason="customer_request")
        await s.event("c2", at(D1, "11:03:01"), "TakeOver", "bot", "human", actor="alice",
                      owner="alice")
        await s.message("c2", at(D1, "11:04:00"), "agent")
        await s.audit(at(D1, "11:04:00"), "alice", "message", "conversation:c2",
                      {"suggestion": "response:utter_sorry"})
        await s.rating("c2", at(D1, "11:04:00"), "alice", 1)
        await s.message("c2", at(D1, "11:05:00"), "customer", intent="thank", sentiment=0.5)
        await s.event("c2", at(D1, "11:10:01"), "Close", "human", "closed", actor="alice")
        # c3 — queued by triage, the customer leaves after 300 s in the queue: abandoned
        await s.conversation("c3", at(D1, "12:00:00"), "closed", closed_at=at(D1, "12:05:02"))
        await s.message("c3", at(D1, "12:00:00"), "customer", intent="cancel_order",
                        model="m1", sentiment=-0.8)
        await s.event("c3", at(D1, "12:00:02"), "TriageFlag", "bot", "bot", queued=True,
                      reason="high_risk")
        await s.event("c3", at(D1, "12:05:02"), "Close", "bot", "closed")
        # c4 — bob reviews: approves one reply (10 s), edits one (30 s), hands back after
        # 119 s; the customer ends it after the bot's last reply: ended after a handoff
        await s.conversation("c4", at(D1, "13:00:00"), "closed", effort=4,
                             closed_at=at(D1, "13:03:00"))
        m = await s.message("c4", at(D1, "13:00:00"), "customer", intent="track_order",
                            model="m1", sentiment=0.1)
        await s.event("c4", at(D1, "13:00:01"), "SetReview", "bot", "review", actor="bob",
                      owner="bob")
        r1 = await s.held("c4", at(D1, "13:00:02"), "utter_order_status", "m1", m, "decided",
                          decision="approved", by="bob", decided=at(D1, "13:00:12"))
        await s.message("c4", at(D1, "13:00:12"), "bot", model="m1", decision="approved",
                        decided_by="bob")
        await s.audit(at(D1, "13:00:12"), "bob", "decision", "conversation:c4")
        await s.correction("c4", at(D1, "13:00:12"), "approved", "bob", "m1", r1)
        m = await s.message("c4", at(D1, "13:01:00"), "customer", intent="cancel_order",
                            sentiment=-0.3)
        r2 = await s.held("c4", at(D1, "13:01:01"), "utter_cancel", "m1", m, "decided",
                          decision="edited", by="bob", decided=at(D1, "13:01:31"))
        await s.message("c4", at(D1, "13:01:31"), "bot", model="m1", decision="edited",
                        decided_by="bob")
        await s.audit(at(D1, "13:01:31"), "bob", "decision", "conversation:c4",
                      {"suggestion": "response:utter_cancel"})
        await s.rating("c4", at(D1, "13:01:31"), "bob", -1)
        edited = await s.correction("c4", at(D1, "13:01:31"), "edited", "bob", "m1", r2,
                                    fixed_by="m2")
        await s.audit(at(D1, "13:01:45"), "bob", "whisper_slot", "conversation:c4",
                      {"slot": "order_id"})  # a whisper: not a message nor a decision
        await s.correction("c4", at(D1, "13:01:45"), "slot_set", "bob", "m1", None)
        await s.event("c4", at(D1, "13:02:00"), "HandBack", "review", "bot", actor="bob")
        await s.event("c4", at(D1, "13:03:00"), "Close", "bot", "closed")
        # c5 — still open: an unowned triage review (queued); carol relabels the first held
        # reply after 20 s, the second one is still pending
        await s.conversation("c5", at(D2, "09:00:00"), "review", queued=True)
        m = await s.message("c5", at(D2, "09:00:00"), "customer", intent="refund", model="m2",
                            sentiment=0.0)
        await s.event("c5", at(D2, "09:00:01"), "TriageFlag", "bot", "review", queued=True,
                      reason="triage")
        r3 = await s.held("c5", at(D2, "09:00:01"), "utter_refund", "m2", m, "discarded",
                          by="carol", decided=at(D2, "09:00:21"))
        await s.audit(at(D2, "09:00:21"), "carol", "decision", "conversation:c5")
        await s.rating("c5", at(D2, "09:00:21"), "carol", 1)
        await s.correction("c5", at(D2, "09:00:21"), "relabelled", "carol", "m2", r3)
        await s.message("c5", at(D2, "09:00:30"), "bot", model="m2")
        await s.held("c5", at(D2, "09:01:00"), "utter_refund", "m2", m, "pending")
        # c6 — closed, reopened, closed again: reopened (not resolved); effort 2
        await s.conversation("c6", at(D2, "10:00:00"), "closed", effort=2,
                             closed_at=at(D2, "10:03:00"))
        await s.message("c6", at(D2, "10:00:00"), "customer", intent="track_order", model="m2",
                        sentiment=0.3)
        await s.message("c6", at(D2, "10:00:03"), "bot", model="m2")
        await s.event("c6", at(D2, "10:01:00"), "Close", "bot", "closed")
        await s.event("c6", at(D2, "10:02:00"), "Reopen", "closed", "bot")
        await s.event("c6", at(D2, "10:03:00"), "Close", "bot", "closed")
        # c7 — bot resolved in 60 s, no survey answer; sentiment 0.2 → 0.4
        await s.conversation("c7", at(D2, "11:00:00"), "closed", closed_at=at(D2, "11:01:00"))
        await s.message("c7", at(D2, "11:00:00"), "customer", intent="track_order", model="m2",
                        sentiment=0.2)
        await s.message("c7", at(D2, "11:00:02"), "bot", model="m2")
        await s.message("c7", at(D2, "11:00:30"), "customer", intent="thank", sentiment=0.4)
        await s.message("c7", at(D2, "11:00:31"), "bot", model="m2")
        await s.event("c7", at(D2, "11:01:00"), "Close", "bot", "closed")
        # c8 — a session opened and never used: in no figure
        await s.conversation("c8", at(D2, "12:00:00"), "closed", closed_at=at(D2, "12:30:00"))
        # c9 — outside the period
        await s.conversation("c9", at(D3, "09:00:00"), "closed", effort=1,
                             closed_at=at(D3, "09:01:00"))
        await s.message("c9", at(D3, "09:00:00"), "customer", intent="track_order", model="m2",
                        sentiment=-0.9)
        await s.message("c9", at(D3, "09:00:10"), "agent")
        await s.audit(at(D3, "09:00:10"), "alice", "message", "conversation:c9",
                      {"suggestion": "response:utter_x"})
        # the models: m1 live from D1 00:00, m2 (trained on c4's edit, which it fixes) from D2
        await conn.execute(sa.insert(model_versions).values(
            model_id="m1", file="m1.tar.gz", status="retired", created_at=D1 - timedelta(days=1),
            deployed_at=D1, deployed_by="system", corrections=None))
        await conn.execute(sa.insert(model_versions).values(
            model_id="m2", file="m2.tar.gz", status="live", created_at=at(D1, "20:00:00"),
            deployed_at=D2, deployed_by="tina", corrections=[edited]))
        await s.audit(D1, "system", "model_deployed", "model:m1")
        await s.audit(D2, "tina", "model_deployed", "model:m2")
