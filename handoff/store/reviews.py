"""The review side of a conversation: bot replies held for an agent (``pending_replies``) and
the corrections agents' decisions become (``corrections``), with the trainers' verdicts on them
(``docs/store.md``). Part of :class:`~handoff.store.Store`.

A reply is held, decided or discarded, and a decision's correction stored, only by
:meth:`~handoff.store.steps.StepStore.save_step`, in the transaction of the router step that
did it. Rasa's tracker events of a correction are fetched after that commit and stored with
:meth:`ReviewStore.set_correction_tracker`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from handoff.errors import BadRequest, NotFound
from handoff.store.conversations import ConversationStore
from handoff.store.database import Conn, check_limit, now, one_of, record, values_of
from handoff.store.records import (
    CORRECTION_TYPES,
    AuditDraft,
    REPLY_DECISIONS,
    REVIEW_STATUSES,
    TRACKER_STATUSES,
    Correction,
    CorrectionDraft,
    CorrectionType,
    PendingReply,
    PendingReplyDraft,
    PendingResolution,
    ReviewStatus,
    TrackerStatus,
)
from handoff.store.privacy import masked_events
from handoff.store.schema import audit_log, conversations, corrections, pending_replies

__all__ = ["ReviewStore"]


class ReviewStore(ConversationStore):
    """Pending replies and corrections."""

    # ----------------------------------------------------------------- pending replies

    async def _hold(self, conn: Conn, conversation_id: str,
                    draft: PendingReplyDraft) -> PendingReply:
        trigger = await self._message_id(conn, conversation_id,
                                         draft.get("trigger_client_message_id"))
        row = (await conn.execute(
            sa.insert(pending_replies).values(
                conversation_id=conversation_id, created_at=now(), trigger_message_id=trigger,
                action=draft["action"], messages=draft["messages"],
                confidence=draft.get("confidence"), alternatives=draft.get("alternatives"),
                model_version=draft.get("model_version"), status="pending",
            ).returning(*pending_replies.c)
        )).one()
        return record(PendingReply, row)

    async def _resolve_pending(self, conn: Conn, conversation_id: str,
                               resolution: PendingResolution) -> list[PendingReply]:
        """Decide or discard every still-pending reply of the conversation (one, normally)."""
        rows = await conn.execute(
            sa.update(pending_replies)
            .where(pending_replies.c.conversation_id == conversation_id)
            .where(pending_replies.c.status == "pending")
            .values(status=resolution["status"], decided_at=now(),
                    decided_by=resolution.get("decided_by"), decision=resolution.get("decision"))
            .returning(*pending_replies.c)
        )
        return sorted((record(PendingReply, row) for row in rows), key=lambda p: p.id)

    @staticmethod
    def _check_resolution(resolution: PendingResolution) -> None:
        one_of("pending reply status", resolution.get("status"), ("decided", "discarded"))
        decision = resolution.get("decision")
        if resolution["status"] == "decided":
            one_of("decision", decision, REPLY_DECISIONS)
        elif decision is not None:
            raise BadRequest("a discarded reply has no decision")

    # ----------------------------------------------------------------- corrections

    async def add_correction(
        self,
        conversation_id: str,
        *,
        type: CorrectionType,
        agent: str,
        before: Any = None,
        after: Any = None,
        tracker_events: list[dict[str, Any]] | None = None,
        message_id: int | None = None,
        model_version: str | None = None,
        audit: AuditDraft | None = None,
    ) -> Correction:
        """Store a correction that is not an agent's decision on a turn (a trainer labelling a
        customer message as an intent's example, a slot an agent whispered): it carries what
        it needs, so its tracker is ``fetched`` with ``tracker_events`` as given. It starts
        with ``review_status="new"``. ``audit``: its audit-log entry, written in the same
        transaction (:meth:`_audit_correction`). ``NotFound`` if the conversation, or the
        message in it, does not exist."""
        one_of("type", type, CORRECTION_TYPES)
        async with self._tx(write=True) as conn:
            await self._require_conversation(conn, conversation_id)
            if message_id is not None:
                await self._require_message(conn, conversation_id, message_id)
            correction = await self._insert_correction(
                conn, conversation_id=conversation_id, type=type, agent=agent, before=before,
                after=after, tracker_events=tracker_events or [], message_id=message_id,
                pending_reply_id=None, model_version=model_version, tracker_status="fetched",
            )
            if audit is not None:
                await self._audit_correction(conn, audit, correction)
            return correction

    @staticmethod
    async def _audit_correction(conn: Conn, audit: AuditDraft,
                                correction: Correction | None) -> None:
        """Write ``audit`` in the transaction on ``conn``; the correction written with it, if
        any, is named in its details (``correction``: its id)."""
        details = dict(audit["details"] or {})
        if correction is not None:
            details["correction"] = correction.id
        await conn.execute(sa.insert(audit_log).values(
            created_at=now(), actor=audit["actor"], action=audit["action"],
            target=audit["target"], details=details or None))

    async def _record_correction(
        self, conn: Conn, conversation_id: str, draft: CorrectionDraft,
        pending_reply_id: int | None,
    ) -> Correction:
        message_id = await self._message_id(conn, conversation_id,
                                            draft.get("client_message_id"))
        return await self._insert_correction(
            conn, conversation_id=conversation_id, type=draft["type"], agent=draft["agent"],
            before=draft.get("before"), after=draft.get("after"), tracker_events=[],
            message_id=message_id, pending_reply_id=pending_reply_id,
            model_version=draft.get("model_version"), tracker_status="pending")

    async def _insert_correction(self, conn: Conn, **values: Any) -> Correction:
        row = (await conn.execute(
            sa.insert(corrections)
            .values(created_at=now(), review_status="new", tracker_attempts=0, **values)
            .returning(*corrections.c)
        )).one()
        return record(Correction, row)

    async def set_correction_tracker(
        self,
        correction_id: int,
        *,
        events: list[dict[str, Any]] | None = None,
        error: str | None = None,
        attempts: int = 1,
    ) -> Correction:
        """The outcome of fetching a correction's tracker events from Rasa, after ``attempts``
        tries (added to ``tracker_attempts``): the ``events`` (status ``fetched``, the error
        cleared) or the ``error`` of the last try (status ``failed``; the correction is kept
        and retried at the gateway's next start). Exactly one of the two. ``NotFound`` for an
        unknown correction."""
        if (events is None) == (error is None):
            raise BadRequest("give either the tracker events or the error")
        values: dict[str, Any] = (
            {"tracker_events": events, "tracker_status": "fetched", "tracker_error": None}
            if events is not None else {"tracker_status": "failed", "tracker_error": error})
        async with self._tx(write=True) as conn:
            if events is not None and (await conn.execute(
                    sa.select(conversations.c.erased_at).where(
                        conversations.c.id == sa.select(corrections.c.conversation_id).where(
                            corrections.c.id == correction_id).scalar_subquery()))).scalar():
                # fetched while an admin erased the conversation: kept masked, as the others
                values["tracker_events"] = masked_events(events)
            row = (await conn.execute(
                sa.update(corrections).where(corrections.c.id == correction_id)
                .values(tracker_attempts=corrections.c.tracker_attempts + attempts, **values)
                .returning(*corrections.c)
            )).first()
        if row is None:
            raise NotFound(f"no correction {correction_id}", correction_id=correction_id)
        return record(Correction, row)

    async def list_corrections(
        self,
        *,
        type: CorrectionType | Sequence[CorrectionType] | None = None,
        review_status: ReviewStatus | Sequence[ReviewStatus] | None = None,
        tracker_status: TrackerStatus | Sequence[TrackerStatus] | None = None,
        conversation_id: str | None = None,
        agent: str | None = None,
        intent: str | None = None,
        model_version: str | None = None,
        exported: bool | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[Correction]:
        """Corrections in id (= creation) order. ``intent``: the one the correction is about
        (``after.intent``, else ``before.intent``); ``model_version``: the model that made the
        corrected turn; ``exported``: only those that were (True) or were not (False) marked
        exported; ``after_id`` + ``limit`` page through them."""
        check_limit(limit)
        c = corrections.c
        query = sa.select(corrections)
        if type is not None:
            query = query.where(c.type.in_(values_of("type", type, CORRECTION_TYPES)))
        if review_status is not None:
            query = query.where(
                c.review_status.in_(values_of("review status", review_status, REVIEW_STATUSES))
            )
        if tracker_status is not None:
            query = query.where(c.tracker_status.in_(
                values_of("tracker status", tracker_status, TRACKER_STATUSES)))
        if conversation_id is not None:
            query = query.where(c.conversation_id == conversation_id)
        if agent is not None:
            query = query.where(c.agent == agent)
        if intent is not None:
            query = query.where(sa.func.coalesce(c.after["intent"].as_string(),
                                                 c.before["intent"].as_string()) == intent)
        if model_version is not None:
            query = query.where(c.model_version == model_version)
        if exported is not None:
            query = query.where(c.exported_at.is_not(None) if exported else c.exported_at.is_(None))
        if after_id is not None:
            query = query.where(c.id > after_id)
        async with self._tx(write=False) as conn:
            rows = await conn.execute(query.order_by(c.id).limit(limit))
            return [record(Correction, row) for row in rows]

    async def review_correction(
        self,
        correction_id: int,
        *,
        review_status: ReviewStatus,
        reviewed_by: str,
        note: str | None = None,
        after: Any = None,
    ) -> Correction:
        """A trainer's verdict; ``note`` replaces the stored note when given, and ``after``
        the agent's version of the correction (the trainer edited it before accepting)."""
        [correction] = await self.review_corrections(
            [correction_id], review_status=review_status, reviewed_by=reviewed_by, note=note,
            after=after, audit=False)
        return correction

    async def review_corrections(
        self,
        correction_ids: Sequence[int],
        *,
        review_status: ReviewStatus,
        reviewed_by: str,
        note: str | None = None,
        after: Any = None,
        audit: bool = True,
        details: dict[str, Any] | None = None,
    ) -> list[Correction]:
        """:meth:`review_correction` for each id, in one transaction: all exist (else
        ``NotFound`` and nothing changes). With ``audit`` each gets an audit entry
        ``correction_<status>`` by ``reviewed_by`` on ``correction:<id>`` with ``details``."""
        one_of("review status", review_status, REVIEW_STATUSES)
        at = now()
        values: dict[str, Any] = dict(
            review_status=review_status, reviewed_by=reviewed_by, reviewed_at=at
        )
        if note is not None:
            values["note"] = note
        if after is not None:
            values["after"] = after
        done: list[Correction] = []
        async with self._tx(write=True) as conn:
            for correction_id in dict.fromkeys(correction_ids):
                row = (await conn.execute(
                    sa.update(corrections).where(corrections.c.id == correction_id)
                    .values(**values).returning(*corrections.c)
                )).first()
                if row is None:
                    raise NotFound(f"no correction {correction_id}", correction_id=correction_id)
                done.append(record(Correction, row))
                if audit:
                    await conn.execute(sa.insert(audit_log).values(
                        created_at=at, actor=reviewed_by, action=f"correction_{review_status}",
                        target=f"correction:{correction_id}", details=details))
        return done

    async def mark_corrections_exported(
        self, correction_ids: Iterable[int], *, export_id: str
    ) -> int:
        """Record that these corrections went into the training-data export ``export_id``;
        returns how many rows were marked."""
        return await self._mark_corrections(correction_ids, export_id=export_id,
                                            exported_at=now())

    async def mark_corrections_fixed(self, correction_ids: Iterable[int], model_id: str) -> int:
        """Record that ``model_id`` was trained on these corrections and gets them right."""
        return await self._mark_corrections(correction_ids, fixed_by_model=model_id)

    async def _mark_corrections(self, correction_ids: Iterable[int], **values: Any) -> int:
        ids = list(correction_ids)
        if not ids:
            return 0
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                sa.update(corrections).where(corrections.c.id.in_(ids)).values(**values))
            return result.rowcount
