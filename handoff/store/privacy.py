"""Customers' data in the store: a customer's conversations exported (PII masked), erased, and
every stored transcript's PII masked once it is older than the retention period
(docs/security.md, "Customers' data"). Part of :class:`~handoff.store.Store`.

The masking is the training data's (:mod:`contracts.masking`): each e-mail, phone, card or
order number becomes one of its own shape, the same value the same replacement within one
conversation, so a masked transcript still reads as it did.

* :meth:`PrivacyStore.export_conversations` — the conversations, their messages, notes,
  corrections, mode changes and the contact address a waiting customer left, masked, as
  JSON-ready dicts.
* :meth:`PrivacyStore.erase_conversations` — in one transaction with its audit entry: the
  messages, notes, held replies and contact address deleted, the corrections masked (their
  training value kept), the conversation closed and stamped ``erased_at`` (the row stays: corrections and the
  metrics' mode changes refer to it), its closing recorded as a mode change (cause
  ``customer_erased``, no actor: the audit entry names who erased it).
* :meth:`PrivacyStore.mask_expired` — one batch of the retention job: messages and notes
  created before a time and not yet masked are masked and stamped ``masked_at``; contact
  addresses left before it are deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.masking import KINDS, Masker
from handoff.errors import BadRequest, NotFound
from handoff.store.conversations import record_change
from handoff.store.database import Database, now, record
from handoff.store.records import (
    Conversation,
    Correction,
    Message,
    Note,
    to_json,
)
from handoff.store.schema import (
    audit_log,
    conversation_contacts,
    conversation_events,
    conversations,
    corrections,
    customer_sessions,
    messages,
    notes,
    pending_replies,
)

__all__ = ["ERASED_CAUSE", "MAX_CUSTOMERS", "PrivacyStore", "check_ids", "mask_json", "mask_message_values",
           "masked_events", "masker"]

MAX_CUSTOMERS = 100  # conversations one export or erasure may name
ERASED_CAUSE = "customer_erased"  # the conversation_events cause of an erasure's close
# a conversation's columns an export leaves out: the router's and triage's internal state
_INTERNAL = ("state", "triage", "version", "last_seq", "metrics_rev", "node_id")


def masker(kinds: Sequence[str] = KINDS) -> Masker:
    """A masker of ``kinds`` (see :data:`contracts.masking.KINDS`) with the default
    replacement pools; ``BadRequest`` for an unknown kind."""
    try:
        return Masker(kinds=kinds)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def mask_json(m: Masker, value: Any) -> Any:
    """``value`` (JSON: dicts, lists, strings, numbers) with every string masked; keys kept."""
    if isinstance(value, str):
        return m.mask(value)
    if isinstance(value, Mapping):
        return {k: mask_json(m, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_json(m, v) for v in value]
    return value


def mask_message_values(m: Masker, msg: Message) -> dict[str, Any]:
    """The columns of ``msg`` that may hold customer text, masked (entities moved with the
    text, so their offsets stay right)."""
    text, entities = msg.text, msg.entities
    if text is not None and entities:
        text, entities = m.mask_with_entities(text, entities)
    elif text is not None:
        text = m.mask(text)
    return {"text": text, "entities": entities, "payload": mask_json(m, msg.payload),
            "metadata": mask_json(m, msg.metadata), "triage": mask_json(m, msg.triage),
            "actions": mask_json(m, msg.actions)}


def masked_events(events: Sequence[Any], m: Masker | None = None) -> list[Any]:
    """Rasa tracker events with every customer text, entity and slot value masked
    (:meth:`contracts.masking.Masker.mask_event`, then any string left)."""
    m = m or masker()
    return [mask_json(m, m.mask_event(e) if isinstance(e, Mapping) else e) for e in events]


def _masked_correction(m: Masker, c: Correction) -> dict[str, Any]:
    return {"before": mask_json(m, c.before), "after": mask_json(m, c.after),
            "tracker_events": masked_events(c.tracker_events or [], m), "note": mask_json(m, c.note),
            "tracker_error": mask_json(m, c.tracker_error)}


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no database would take it
        return False
    return True


def check_ids(conversation_ids: Sequence[str]) -> list[str]:
    """The distinct ids, in order; ``BadRequest`` for none, too many or a non-string."""
    if isinstance(conversation_ids, str) or not isinstance(conversation_ids, Sequence):
        raise BadRequest("give a list of customer (conversation) ids")
    ids = list(dict.fromkeys(conversation_ids))
    if not ids or len(ids) > MAX_CUSTOMERS or not all(
            isinstance(i, str) and 0 < len(i) <= 200 and _utf8(i) for i in ids):
        raise BadRequest(f"give 1 to {MAX_CUSTOMERS} customer ids, each a string of 1 to 200 "
                         "characters")
    return ids


class PrivacyStore(Database):
    """Exports, erasures and the retention job's masking."""

    async def _require_all(self, conn: AsyncConnection, ids: Sequence[str]) -> None:
        found = set((await conn.execute(
            sa.select(conversations.c.id).where(conversations.c.id.in_(ids)))).scalars())
        unknown = [i for i in ids if i not in found]
        if unknown:
            raise NotFound(f"no customer conversation {', '.join(map(repr, unknown))}",
                           unknown=unknown)

    async def export_conversations(
        self, conversation_ids: Sequence[str], *, kinds: Sequence[str] = KINDS
    ) -> list[dict[str, Any]]:
        """Each conversation with its ``messages``, ``notes``, ``corrections`` and ``events``
        (mode changes), PII of ``kinds`` masked. ``NotFound`` (naming every unknown id) and
        nothing exported if one is unknown."""
        ids = check_ids(conversation_ids)
        masker(kinds)  # an unknown kind is a BadRequest before any read
        out: list[dict[str, Any]] = []
        async with self._tx(write=False) as conn:
            await self._require_all(conn, ids)
            for cid in ids:
                m = masker(kinds)  # one per conversation: a value keeps its replacement
                conv = record(Conversation, (await conn.execute(
                    sa.select(conversations).where(conversations.c.id == cid))).one())
                item = {k: v for k, v in to_json(conv).items() if k not in _INTERNAL}
                msgs = [record(Message, row) for row in await conn.execute(
                    sa.select(messages).where(messages.c.conversation_id == cid)
                    .order_by(messages.c.seq))]
                # rows the retention job masked already are exported as they are: masking
                # a masked text again would change it
                item["messages"] = [{**to_json(msg), **(
                    {} if msg.masked_at else mask_message_values(m, msg))} for msg in msgs]
                item["notes"] = [{**to_json(n), **(
                    {} if n.masked_at else {"text": m.mask(n.text)})} for n in (
                    record(Note, row) for row in await conn.execute(
                        sa.select(notes).where(notes.c.conversation_id == cid)
                        .order_by(notes.c.id)))]
                item["corrections"] = [{**to_json(c), **_masked_correction(m, c)} for c in (
                    record(Correction, row) for row in await conn.execute(
                        sa.select(corrections).where(corrections.c.conversation_id == cid)
                        .order_by(corrections.c.id)))]
                item["events"] = [
                    {k: (v.isoformat() if isinstance(v, datetime) else v)
                     for k, v in row._asdict().items() if k != "conversation_id"}
                    for row in await conn.execute(
                        sa.select(conversation_events)
                        .where(conversation_events.c.conversation_id == cid)
                        .order_by(conversation_events.c.id))]
                contact = (await conn.execute(sa.select(conversation_contacts).where(
                    conversation_contacts.c.conversation_id == cid))).first()
                item["contact"] = None if contact is None else {
                    "contact": m.mask(contact.contact), "left_at": contact.left_at.isoformat()}
                out.append(item)
        return out

    async def erase_conversations(
        self,
        conversation_ids: Sequence[str],
        *,
        closed_state: Callable[[str], dict[str, Any]],
        actor: str,
        reason: str,
        kinds: Sequence[str] = KINDS,
    ) -> list[dict[str, Any]]:
        """Erase the conversations in one transaction, with one audit entry each (``actor``,
        ``reason``, what was removed): messages, notes and held replies deleted, corrections
        masked, the conversation closed (its router state ``closed_state(id)``), its triage
        and queue cleared, ``erased_at`` set and its version bumped. ``NotFound`` naming every
        unknown id, and nothing erased, if one is unknown. Returns what was removed, per id.
        Erasing an erased conversation again is allowed (it removes what came since)."""
        ids = check_ids(conversation_ids)
        masker(kinds)
        done: list[dict[str, Any]] = []
        async with self._tx(write=True) as conn:
            await self._require_all(conn, ids)
            for cid in ids:
                done.append(await self._erase(conn, cid, closed_state(cid), actor=actor,
                                              reason=reason, m=masker(kinds)))
        return done

    async def _erase(self, conn: AsyncConnection, cid: str, state: dict[str, Any], *,
                     actor: str, reason: str, m: Masker) -> dict[str, Any]:
        at = now()
        conv = record(Conversation, (await conn.execute(
            sa.select(conversations).where(conversations.c.id == cid)
            .with_for_update(key_share=True))).one())
        # the corrections stay, masked, without their links to the rows that go
        found = [record(Correction, row) for row in await conn.execute(
            sa.select(corrections).where(corrections.c.conversation_id == cid))]
        for c in found:
            await conn.execute(sa.update(corrections).where(corrections.c.id == c.id).values(
                message_id=None, pending_reply_id=None, **_masked_correction(m, c)))
        removed = {}
        for name, table in (("pending_replies", pending_replies), ("notes", notes),
                            ("messages", messages), ("contacts", conversation_contacts)):
            result = await conn.execute(sa.delete(table).where(table.c.conversation_id == cid))
            removed[name] = int(result.rowcount or 0)
        # the session's secret goes too: a widget still holding it starts a new conversation
        result = await conn.execute(sa.delete(customer_sessions).where(
            customer_sessions.c.session_id == cid))
        removed["session"] = int(result.rowcount or 0)
        await conn.execute(sa.update(conversations).where(conversations.c.id == cid).values(
            mode="closed", owner=None, queued=False, queue_reason=None, queued_at=None,
            state=state, triage=None, closed_at=conv.closed_at or at, updated_at=at,
            erased_at=at, version=conversations.c.version + 1))
        # no actor: the erasure ends the conversation, no agent resolved it (the metrics)
        await record_change(conn, conv, at, mode="closed", owner=None, queued=False,
                            queue_reason=None, cause=ERASED_CAUSE, actor=None)
        summary = {"conversation_id": cid, **removed, "corrections_masked": len(found)}
        await conn.execute(sa.insert(audit_log).values(
            created_at=at, actor=actor, action="customer_erased", target=f"conversation:{cid}",
            details={"reason": reason, **summary}))
        return summary

    async def mask_expired(self, before: datetime, *, kinds: Sequence[str] = KINDS,
                           limit: int = 500) -> int:
        """Mask the PII of up to ``limit`` messages and ``limit`` notes created before
        ``before`` and not masked yet, oldest first (the order of the ``(masked_at,
        created_at)`` indexes), and stamp them ``masked_at``; how many rows were masked (the
        retention job repeats while a batch is full). A value's replacement depends on the
        value only, so rows of one conversation masked in different batches still agree."""
        masker(kinds)
        at = now()
        count = 0
        async with self._tx(write=True) as conn:
            msgs = [record(Message, row) for row in await conn.execute(
                sa.select(messages).where(messages.c.masked_at.is_(None))
                .where(messages.c.created_at < before)
                .order_by(messages.c.created_at, messages.c.id).limit(limit))]
            maskers: dict[str, Masker] = {}
            for msg in msgs:
                m = maskers.setdefault(msg.conversation_id, masker(kinds))
                await conn.execute(sa.update(messages).where(messages.c.id == msg.id).values(
                    masked_at=at, **mask_message_values(m, msg)))
            count += len(msgs)
            found = [record(Note, row) for row in await conn.execute(
                sa.select(notes).where(notes.c.masked_at.is_(None))
                .where(notes.c.created_at < before)
                .order_by(notes.c.created_at, notes.c.id).limit(limit))]
            for n in found:
                m = maskers.setdefault(n.conversation_id, masker(kinds))
                await conn.execute(sa.update(notes).where(notes.c.id == n.id).values(
                    masked_at=at, text=m.mask(n.text)))
            count += len(found)
            # a contact address left that long ago has served: deleted, not masked
            gone = await conn.execute(sa.delete(conversation_contacts).where(
                conversation_contacts.c.left_at < before))
            count += int(gone.rowcount or 0)
        return count

    async def trackers_to_mask(self, before: datetime, *,
                               limit: int = 500) -> list[tuple[str, datetime | None]]:
        """Conversations (not erased) with messages created before ``before`` whose Rasa
        tracker is not masked that far yet: ``(id, masked up to)`` (None: never), oldest
        first. Their tracker's events from "masked up to" until ``before`` are due."""
        c, m = conversations, messages
        due = sa.exists().where(m.c.conversation_id == c.c.id, m.c.created_at < before,
                                sa.or_(c.c.tracker_masked_before.is_(None),
                                       m.c.created_at >= c.c.tracker_masked_before))
        query = (sa.select(c.c.id, c.c.tracker_masked_before)
                 .where(c.c.erased_at.is_(None), due)
                 .order_by(c.c.created_at, c.c.id).limit(limit))
        async with self._tx(write=False) as conn:
            return [(row.id, row.tracker_masked_before) for row in await conn.execute(query)]

    async def tracker_masked(self, conversation_id: str, before: datetime) -> None:
        """The conversation's Rasa tracker is masked up to ``before``."""
        async with self._tx(write=True) as conn:
            await conn.execute(sa.update(conversations)
                               .where(conversations.c.id == conversation_id)
                               .values(tracker_masked_before=before))
