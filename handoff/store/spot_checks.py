"""Spot-checks of conversations the bot handled alone: the sampling decided once when a
conversation ends (``spot_checks``) and a reviewer's verdict on each bot message of a sampled
one (``spot_check_marks``), a correction stored with the mark in the same transaction. Part of
:class:`~handoff.store.Store`; the sampling rule is :mod:`handoff.learning.spot_checks`, the API
:mod:`handoff.web.spot_checks` (docs/console.md, "Spot-checks")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from handoff.errors import BadRequest, Conflict, NotFound
from handoff.store.database import check_limit, now, one_of, record
from handoff.store.records import Correction, CorrectionType, Message
from handoff.store.reviews import ReviewStore
from handoff.store.schema import (
    audit_log,
    conversation_events,
    conversations,
    messages,
    pending_replies,
    spot_check_marks,
    spot_checks,
)

__all__ = ["SPOT_CHECK_STATUSES", "VERDICTS", "ConversationTraits", "SpotCheck",
           "SpotCheckMark", "SpotCheckStore", "SpotCheckStatus", "Verdict"]

SpotCheckStatus = Literal["skipped", "open", "done"]
Verdict = Literal["right", "edited", "relabelled"]
SPOT_CHECK_STATUSES: Final = ("skipped", "open", "done")
VERDICTS: Final = ("right", "edited", "relabelled")


@dataclass(frozen=True, slots=True)
class SpotCheck:
    id: int
    conversation_id: str
    created_at: datetime
    status: str
    draw: float
    probability: float
    reason: dict[str, Any] | None
    intent: str | None
    model_version: str | None
    effort_score: int | None
    opened_at: datetime | None
    finished_at: datetime | None
    finished_by: str | None


@dataclass(frozen=True, slots=True)
class SpotCheckMark:
    id: int
    spot_check_id: int
    message_id: int
    verdict: str
    correction_id: int | None
    reviewer: str
    created_at: datetime
    intent: str | None
    action: str | None
    model_version: str | None


@dataclass(frozen=True, slots=True)
class ConversationTraits:
    """What the sampling rule reads of a conversation."""

    closed: bool
    bot_only: bool  # never in review, in the human queue or with an agent; no agent message
    intents: tuple[str, ...]  # of its customer messages, first first, each once
    models: tuple[str, ...]  # of its bot messages, first first, each once
    effort_score: int | None
    bot_messages: int


class SpotCheckStore(ReviewStore):
    """Spot-checks and their marks."""

    async def conversation_traits(self, conversation_id: str) -> ConversationTraits:
        """The conversation as the sampling rule sees it; ``NotFound`` if unknown."""
        async with self._tx(write=False) as conn:
            conv = await self._conversation(conn, conversation_id)
            e = conversation_events.c
            touched = (await conn.execute(sa.select(sa.func.count()).where(
                e.conversation_id == conversation_id,
                sa.or_(e.mode.in_(("review", "human")), e.queued.is_(True),
                       e.owner.is_not(None))))).scalar_one()
            held = (await conn.execute(sa.select(sa.func.count()).where(
                pending_replies.c.conversation_id == conversation_id))).scalar_one()
            rows = (await conn.execute(
                sa.select(messages.c.sender, messages.c.intent, messages.c.model_version)
                .where(messages.c.conversation_id == conversation_id)
                .order_by(messages.c.seq))).all()
        intents = [r.intent for r in rows if r.sender == "customer" and r.intent]
        models = [r.model_version for r in rows if r.sender == "bot" and r.model_version]
        agent = any(r.sender == "agent" for r in rows)
        return ConversationTraits(
            closed=conv.mode == "closed", bot_only=not (touched or held or agent),
            intents=tuple(dict.fromkeys(intents)), models=tuple(dict.fromkeys(models)),
            effort_score=conv.effort_score,
            bot_messages=sum(1 for r in rows if r.sender == "bot"))

    async def spot_check_of(self, conversation_id: str) -> SpotCheck | None:
        """The conversation's sampling decision, if one was made."""
        async with self._tx(write=False) as conn:
            row = (await conn.execute(sa.select(spot_checks).where(
                spot_checks.c.conversation_id == conversation_id))).first()
        return None if row is None else record(SpotCheck, row)

    async def closed_without_spot_check(self, since: datetime, limit: int = 1000) -> list[str]:
        """The conversations closed at or after ``since`` that have no sampling decision,
        first closed first (those whose end a stopping gateway did not get to sample; the
        ones that were not bot-only are among them, and have none by design)."""
        check_limit(limit)
        async with self._tx(write=False) as conn:
            rows = await conn.execute(
                sa.select(conversations.c.id)
                .where(conversations.c.mode == "closed", conversations.c.closed_at >= since,
                       ~sa.exists().where(spot_checks.c.conversation_id == conversations.c.id))
                .order_by(conversations.c.closed_at, conversations.c.id).limit(limit))
        return [str(row.id) for row in rows]

    async def decide_spot_check(
        self, conversation_id: str, *, draw: float, probability: float,
        reason: dict[str, Any] | None, intent: str | None, model_version: str | None,
        effort_score: int | None,
    ) -> SpotCheck:
        """Store the conversation's sampling: ``open`` when ``draw < probability``, else
        ``skipped``. A decision exists once per conversation, its draw made once: a later call
        compares the *stored* draw with the new ``probability`` and can only turn a
        ``skipped`` decision ``open`` (the survey's low score raised it); otherwise it returns
        the stored one unchanged. Concurrent calls for one conversation are serialized on its
        row."""
        if not (0.0 <= draw < 1.0) or not (0.0 <= probability <= 1.0):
            raise BadRequest("draw must be in [0, 1) and probability in [0, 1]")
        at = now()
        async with self._tx(write=True) as conn:
            await self._conversation(conn, conversation_id, lock=True)
            row = (await conn.execute(sa.select(spot_checks).where(
                spot_checks.c.conversation_id == conversation_id))).first()
            used = draw if row is None else row.draw
            sampled = used < probability
            values: dict[str, Any] = dict(
                status="open" if sampled else "skipped", draw=used, probability=probability,
                reason=reason, intent=intent, model_version=model_version,
                effort_score=effort_score, opened_at=at if sampled else None)
            if row is None:
                row = (await conn.execute(sa.insert(spot_checks).values(
                    conversation_id=conversation_id, created_at=at, **values)
                    .returning(*spot_checks.c))).one()
            elif row.status == "skipped" and sampled:
                row = (await conn.execute(sa.update(spot_checks)
                       .where(spot_checks.c.id == row.id).values(**values)
                       .returning(*spot_checks.c))).one()
            return record(SpotCheck, row)

    async def get_spot_check(self, spot_check_id: int) -> SpotCheck:
        async with self._tx(write=False) as conn:
            return await self._spot_check(conn, spot_check_id)

    async def _spot_check(self, conn: AsyncConnection, spot_check_id: int) -> SpotCheck:
        row = (await conn.execute(sa.select(spot_checks).where(
            spot_checks.c.id == spot_check_id))).first()
        if row is None:
            raise NotFound(f"no spot-check {spot_check_id}", spot_check_id=spot_check_id)
        return record(SpotCheck, row)

    async def list_spot_checks(
        self, *, status: SpotCheckStatus | None = "open", after_id: int | None = None,
        limit: int | None = None,
    ) -> list[tuple[SpotCheck, int, int]]:
        """Spot-checks in id order (``status`` None: every sampled one, open or done), each
        with how many bot messages its conversation has and how many are marked."""
        check_limit(limit)
        s = spot_checks.c
        bots = (sa.select(sa.func.count()).where(
            messages.c.conversation_id == s.conversation_id, messages.c.sender == "bot")
            .scalar_subquery())
        marked = (sa.select(sa.func.count()).where(spot_check_marks.c.spot_check_id == s.id)
                  .scalar_subquery())
        query = sa.select(spot_checks, bots.label("bot_messages"), marked.label("marked"))
        if status is None:
            query = query.where(s.status.in_(("open", "done")))
        else:
            one_of("status", status, SPOT_CHECK_STATUSES)
            query = query.where(s.status == status)
        if after_id is not None:
            query = query.where(s.id > after_id)
        async with self._tx(write=False) as conn:
            rows = await conn.execute(query.order_by(s.id).limit(limit))
            out = []
            for row in rows:
                data = row._asdict()
                n_bots, n_marked = data.pop("bot_messages"), data.pop("marked")
                out.append((SpotCheck(**data), int(n_bots), int(n_marked)))
            return out

    async def spot_check_marks_of(self, spot_check_id: int) -> list[SpotCheckMark]:
        async with self._tx(write=False) as conn:
            await self._spot_check(conn, spot_check_id)
            rows = await conn.execute(sa.select(spot_check_marks).where(
                spot_check_marks.c.spot_check_id == spot_check_id)
                .order_by(spot_check_marks.c.id))
            return [record(SpotCheckMark, row) for row in rows]

    async def mark_spot_check(
        self, spot_check_id: int, message_id: int, *, verdict: Verdict, reviewer: str,
        intent: str | None, action: str | None, model_version: str | None,
        correction: dict[str, Any] | None = None,
    ) -> tuple[SpotCheckMark, Correction | None]:
        """A reviewer's verdict on one bot message of an open spot-check, and for ``edited``
        or ``relabelled`` the correction it becomes (``correction``: ``type``, ``before``,
        ``after``, ``tracker_events``, ``message_id``: the customer message the turn answers),
        stored with it in one transaction and audit-logged (``spot_check_<verdict>``).
        ``NotFound`` for an unknown spot-check or a message that is not one of its bot
        messages; ``Conflict`` when it is not open or the message is marked already."""
        one_of("verdict", verdict, VERDICTS)
        if (verdict == "right") != (correction is None):
            raise BadRequest("a correction goes with an 'edited' or 'relabelled' verdict only")
        async with self._tx(write=True) as conn:
            check = await self._spot_check(conn, spot_check_id)
            if check.status != "open":
                raise Conflict(f"spot-check {spot_check_id} is {check.status}, not open")
            found = (await conn.execute(sa.select(messages.c.id).where(
                messages.c.id == message_id, messages.c.conversation_id == check.conversation_id,
                messages.c.sender == "bot"))).first()
            if found is None:
                raise NotFound(f"message {message_id} is not a bot message of spot-check "
                               f"{spot_check_id}", message_id=message_id)
            again = (await conn.execute(sa.select(spot_check_marks.c.id).where(
                spot_check_marks.c.spot_check_id == spot_check_id,
                spot_check_marks.c.message_id == message_id))).first()
            if again is not None:
                raise Conflict(f"message {message_id} is marked already")
            stored: Correction | None = None
            if correction is not None:
                kind: CorrectionType = correction["type"]
                stored = await self._insert_correction(
                    conn, conversation_id=check.conversation_id, type=kind, agent=reviewer,
                    before=correction.get("before"), after=correction.get("after"),
                    tracker_events=correction.get("tracker_events") or [],
                    message_id=correction.get("message_id"), pending_reply_id=None,
                    model_version=model_version, tracker_status="fetched")
            at = now()
            row = (await conn.execute(sa.insert(spot_check_marks).values(
                spot_check_id=spot_check_id, message_id=message_id, verdict=verdict,
                correction_id=stored.id if stored else None, reviewer=reviewer, created_at=at,
                intent=intent, action=action, model_version=model_version,
            ).returning(*spot_check_marks.c))).one()
            await conn.execute(sa.insert(audit_log).values(
                created_at=at, actor=reviewer, action=f"spot_check_{verdict}",
                target=f"spot_check:{spot_check_id}",
                details={"message_id": message_id,
                         **({"correction_id": stored.id} if stored else {})}))
            return record(SpotCheckMark, row), stored

    async def finish_spot_check(self, spot_check_id: int, reviewer: str) -> SpotCheck:
        """Close an open spot-check once every bot message of it is marked (``Conflict``
        otherwise, naming how many are left)."""
        async with self._tx(write=True) as conn:
            check = await self._spot_check(conn, spot_check_id)
            if check.status != "open":
                raise Conflict(f"spot-check {spot_check_id} is {check.status}, not open")
            unmarked = (await conn.execute(sa.select(sa.func.count()).where(
                messages.c.conversation_id == check.conversation_id,
                messages.c.sender == "bot",
                messages.c.id.not_in(sa.select(spot_check_marks.c.message_id).where(
                    spot_check_marks.c.spot_check_id == spot_check_id))))).scalar_one()
            if unmarked:
                raise Conflict(f"{unmarked} bot message(s) of spot-check {spot_check_id} are "
                               "not marked yet", unmarked=unmarked)
            at = now()
            row = (await conn.execute(sa.update(spot_checks)
                   .where(spot_checks.c.id == spot_check_id)
                   .values(status="done", finished_at=at, finished_by=reviewer)
                   .returning(*spot_checks.c))).one()
            await conn.execute(sa.insert(audit_log).values(
                created_at=at, actor=reviewer, action="spot_check_finished",
                target=f"spot_check:{spot_check_id}", details=None))
            return record(SpotCheck, row)

    async def spot_check_messages(self, spot_check_id: int) -> tuple[SpotCheck, list[Message]]:
        """The spot-check and its conversation's messages in order."""
        async with self._tx(write=False) as conn:
            check = await self._spot_check(conn, spot_check_id)
            rows = await conn.execute(sa.select(messages).where(
                messages.c.conversation_id == check.conversation_id).order_by(messages.c.seq))
            return check, [record(Message, row) for row in rows]

