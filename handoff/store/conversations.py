"""Conversations and what is said in them: the ``conversations``, ``messages`` and ``notes``
tables (``docs/store.md``). Part of :class:`~handoff.store.Store`; the router's state is written
with its step's messages by :meth:`~handoff.store.steps.StepStore.save_step`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from handoff.errors import BadRequest, Conflict, NotFound
from handoff.store.database import Conn, Database, check_limit, now, one_of, record, values_of
from handoff.store.records import (
    MODES,
    REPLY_DECISIONS,
    SENDERS,
    Conversation,
    Keep,
    Message,
    MessageNlu,
    Mode,
    Note,
    ReplyDecision,
    Sender,
    StepMessage,
    TriageRecord,
)
from handoff.store.schema import (
    conversation_contacts, conversation_events, conversations, messages, notes,
)

__all__ = ["ConversationStore", "StaleVersion", "record_change"]

_MESSAGE_FIELDS = frozenset({
    "text", "payload", "metadata", "client_message_id", "intent", "confidence",
    "intent_ranking", "entities", "action", "decision", "decided_by", "model_version",
})


def _assessed(assessment: dict[str, Any] | None) -> dict[str, Any]:
    """A customer message's columns for triage's ``assessment`` of it."""
    return {"triage": assessment, "sentiment": _sentiment_of(assessment)}


def _sentiment_of(assessment: dict[str, Any] | None) -> float | None:
    """Triage's sentiment in an assessment (``measures.sentiment``), kept in its own column."""
    measures = assessment.get("measures") if isinstance(assessment, dict) else None
    value = measures.get("sentiment") if isinstance(measures, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class StaleVersion(Conflict):
    """``save_step`` was given a version that is no longer the current one."""

    code = "stale_version"


class AlreadyStored(Conflict):
    """``save_step`` was to store a customer message for the first time (``once``) and found
    it stored already under its ``client_message_id``: a client's resend. Nothing of the step
    was written; ``stored`` is the stored row (``replayed``)."""

    code = "already_stored"

    def __init__(self, message: Message) -> None:
        super().__init__(f"message {message.client_message_id!r} is stored already")
        self.stored = message


async def record_change(
    conn: Conn, before: Conversation, at: datetime, *, mode: Mode,
    owner: str | None, queued: bool, queue_reason: str | None, cause: str, actor: str | None,
) -> None:
    """Write the change of the conversation ``before`` to this mode, owner and queue to
    ``conversation_events`` (nothing when none of them changes)."""
    if (before.mode, before.owner, before.queued, before.queue_reason) != (
            mode, owner, queued, queue_reason):
        await conn.execute(sa.insert(conversation_events).values(
            conversation_id=before.id, created_at=at, cause=cause, actor=actor,
            mode_from=before.mode, mode=mode, owner=owner, queued=queued,
            queue_reason=queue_reason))


class ConversationStore(Database):
    """Conversations, their messages and the agents' notes on them."""

    # ----------------------------------------------------------------- conversations

    async def upsert_conversation(
        self, conversation_id: str, *, mode: Mode = "bot", state: dict[str, Any] | None = None
    ) -> Conversation:
        """Create the conversation if it does not exist (with ``mode`` and ``state``) and
        return it; an existing conversation is returned unchanged."""
        if not conversation_id:
            raise BadRequest("conversation id must not be empty")
        one_of("mode", mode, MODES)
        at = now()
        values: dict[str, Any] = dict(
            id=conversation_id, created_at=at, updated_at=at, mode=mode, queued=False,
            state=state, version=1, last_seq=0, closed_at=at if mode == "closed" else None,
        )
        stmt: sa.Executable
        if self.dialect == "postgresql":
            stmt = postgresql.insert(conversations).values(**values).on_conflict_do_nothing(
                index_elements=["id"]
            )
        else:
            stmt = sqlite_dialect.insert(conversations).values(**values).on_conflict_do_nothing(
                index_elements=["id"]
            )
        async with self._tx(write=True) as conn:
            await conn.execute(stmt)
            return await self._conversation(conn, conversation_id)

    async def get_conversation(self, conversation_id: str) -> Conversation:
        """The conversation, or ``NotFound``."""
        async def read(conn: Conn) -> Conversation:
            return await self._conversation(conn, conversation_id)
        return await self._run(read, write=False)

    async def list_conversations(
        self,
        *,
        mode: Mode | Sequence[Mode] | None = None,
        queued: bool | None = None,
        owner: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Conversation]:
        """Conversations, riskiest first (no risk last), then the longest waiting first
        (``queued_at``, else ``created_at``), then by id; ``offset`` skips that many."""
        check_limit(limit)
        query = sa.select(conversations)
        if mode is not None:
            query = query.where(conversations.c.mode.in_(values_of("mode", mode, MODES)))
        if queued is not None:
            query = query.where(conversations.c.queued == queued)
        if owner is not None:
            query = query.where(conversations.c.owner == owner)
        query = query.order_by(
            conversations.c.risk.desc().nulls_last(),
            sa.func.coalesce(conversations.c.queued_at, conversations.c.created_at).asc(),
            conversations.c.id.asc(),
        ).limit(limit).offset(offset or None)
        async with self._tx(write=False) as conn:
            return [record(Conversation, row) for row in await conn.execute(query)]

    async def nodes_at_work(self) -> dict[str, str]:
        """Conversation id -> the gateway node running its Rasa call or review timer."""
        query = sa.select(conversations.c.id, conversations.c.node_id).where(
            conversations.c.node_id.is_not(None))
        async with self._tx(write=False) as conn:
            return {row.id: row.node_id for row in await conn.execute(query)}

    async def move_node(self, conversation_id: str, *, from_node: str | None,
                        to_node: str) -> bool:
        """Take the conversation's work over from ``from_node`` (gone); False when it is not
        that node's any more (another node took it, or the work ended)."""
        where = (conversations.c.node_id.is_(None) if from_node is None
                 else conversations.c.node_id == from_node)
        async with self._tx(write=True) as conn:
            done = await conn.execute(sa.update(conversations).where(
                conversations.c.id == conversation_id).where(where).values(node_id=to_node))
            return bool(done.rowcount)

    async def set_effort_score(self, conversation_id: str, effort_score: int) -> Conversation:
        """Record the customer's answer to "How easy was it to get your issue resolved?",
        1 (very difficult) to 7 (very easy)."""
        if isinstance(effort_score, bool) or not isinstance(effort_score, int) or not (
            1 <= effort_score <= 7
        ):
            raise BadRequest(f"effort score must be an integer from 1 to 7; got {effort_score!r}")
        async with self._tx(write=True) as conn:
            row = (await conn.execute(
                sa.update(conversations).where(conversations.c.id == conversation_id)
                .values(effort_score=effort_score,
                        metrics_rev=conversations.c.metrics_rev + 1)
                .returning(*conversations.c)
            )).first()
        if row is None:
            raise NotFound(f"no conversation {conversation_id!r}", conversation_id=conversation_id)
        return record(Conversation, row)

    async def set_contact(self, conversation_id: str, contact: str, *,
                          reply: StepMessage | None = None) -> dict[str, Any]:
        """Keep the address a waiting customer left to be contacted at (replacing an earlier
        one), with ``reply``, the message that thanks them, appended in the same transaction:
        ``{conversation_id, contact, left_at, reply: Message | None}``. ``NotFound`` for no
        conversation."""
        values = None if reply is None else self._message_values(**reply)
        async with self._tx(write=True) as conn:
            await self._require_conversation(conn, conversation_id)
            await conn.execute(sa.delete(conversation_contacts).where(
                conversation_contacts.c.conversation_id == conversation_id))
            row = {"conversation_id": conversation_id, "contact": contact, "left_at": now()}
            await conn.execute(sa.insert(conversation_contacts).values(**row))
            stored = None if values is None else await self._append(conn, conversation_id,
                                                                    values)
        return {**row, "reply": stored}

    async def get_contact(self, conversation_id: str) -> dict[str, Any] | None:
        """The contact address a customer left, or None."""
        async with self._tx(write=False) as conn:
            row = (await conn.execute(sa.select(conversation_contacts).where(
                conversation_contacts.c.conversation_id == conversation_id))).first()
        return dict(row._mapping) if row is not None else None

    async def _set_state(
        self, conn: Conn, conversation_id: str, *, expected_version: int, mode: Mode,
        owner: str | None, queued: bool, queue_reason: str | None, state: dict[str, Any] | None,
        cause: str = "unknown", actor: str | None = None,
        node_id: str | None | Keep = Keep.NODE, triage: TriageRecord | None = None,
        before: Conversation | None = None,
    ) -> Conversation:
        """Replace the router's part of the conversation if it is still at
        ``expected_version`` (else ``StaleVersion``); the version goes up by one. A change of
        mode, owner or queue is also written to ``conversation_events`` with its ``cause`` (the
        router event) and ``actor`` (the agent; None for the customer or the system): the
        metrics' record of what happened (docs/metrics.md). ``triage``: the conversation's
        ``risk`` and ``triage`` too, in the same statement.

        ``before``: the conversation's row as it was at ``expected_version`` (the caller read
        or saved it), so that it is not read again: the update is then the transaction's first
        statement. Only a new version changes the mode, owner, queue or their times (every
        writer of them raises it), so the row the update finds at ``expected_version`` has
        ``before``'s."""
        if before is None or before.version != expected_version or before.id != conversation_id:
            current = await self._conversation(conn, conversation_id, lock=True)
            if current.version != expected_version:
                raise StaleVersion(
                    f"conversation {conversation_id!r} was changed meanwhile",
                    conversation_id=conversation_id,
                    expected_version=expected_version,
                    current_version=current.version,
                )
        else:
            current = before
        at = now()
        queued_at = (current.queued_at or at) if queued and current.queued else (
            at if queued else None
        )
        closed_at = (current.closed_at or at) if mode == "closed" else None
        row = (await conn.execute(
            sa.update(conversations)
            .where(conversations.c.id == conversation_id)
            .where(conversations.c.version == expected_version)
            .values(
                mode=mode, owner=owner, queued=queued, queue_reason=queue_reason,
                queued_at=queued_at, state=state, closed_at=closed_at, updated_at=at,
                version=conversations.c.version + 1,
                **({} if isinstance(node_id, Keep) else {"node_id": node_id}),
                **({} if triage is None else {"risk": triage["risk"],
                                              "triage": triage["triage"]}),
            )
            .returning(*conversations.c)
        )).first()
        if row is None:  # not at expected_version (only when ``before`` was trusted)
            found = await self._conversation(conn, conversation_id)  # NotFound if gone
            raise StaleVersion(
                f"conversation {conversation_id!r} was changed meanwhile",
                conversation_id=conversation_id, expected_version=expected_version,
                current_version=found.version)
        await record_change(conn, current, at, mode=mode, owner=owner, queued=queued,
                            queue_reason=queue_reason, cause=cause, actor=actor)
        return record(Conversation, row)

    async def set_triage(
        self, conversation_id: str, *, risk: float, triage: dict[str, Any],
        client_message_id: str | None = None, assessment: dict[str, Any] | None = None,
    ) -> Conversation:
        """Record triage's view in one transaction: the conversation's ``risk`` (the console's
        queue order) and ``triage`` (history and latest assessment), and the ``assessment`` of
        the customer message stored as ``client_message_id``."""
        async with self._tx(write=True) as conn:
            row = (await conn.execute(
                sa.update(conversations).where(conversations.c.id == conversation_id)
                .values(risk=risk, triage=triage,
                        metrics_rev=conversations.c.metrics_rev + 1)
                .returning(*conversations.c)
            )).first()
            if row is None:
                raise NotFound(f"no conversation {conversation_id!r}",
                               conversation_id=conversation_id)
            if client_message_id is not None:
                await conn.execute(
                    sa.update(messages).where(messages.c.conversation_id == conversation_id)
                    .where(messages.c.client_message_id == client_message_id)
                    .values(**_assessed(assessment)))
        return record(Conversation, row)

    async def _conversation(
        self, conn: Conn, conversation_id: str, *, lock: bool = False
    ) -> Conversation:
        query = sa.select(conversations).where(conversations.c.id == conversation_id)
        if lock:
            # FOR NO KEY UPDATE on PostgreSQL (ignored on SQLite, where BEGIN IMMEDIATE already
            # holds the write lock): serializes writers of this conversation without blocking
            # foreign-key checks from inserts into the child tables.
            query = query.with_for_update(key_share=True)
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"no conversation {conversation_id!r}", conversation_id=conversation_id)
        return record(Conversation, row)

    async def _require_conversation(self, conn: Conn, conversation_id: str) -> None:
        found = (await conn.execute(
            sa.select(conversations.c.id).where(conversations.c.id == conversation_id)
        )).first()
        if found is None:
            raise NotFound(f"no conversation {conversation_id!r}", conversation_id=conversation_id)

    # ----------------------------------------------------------------- messages

    async def append_message(
        self,
        conversation_id: str,
        sender: Sender,
        text: str | None = None,
        *,
        payload: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        client_message_id: str | None = None,
        intent: str | None = None,
        confidence: float | None = None,
        intent_ranking: list[dict[str, Any]] | None = None,
        entities: list[dict[str, Any]] | None = None,
        action: str | None = None,
        decision: ReplyDecision | None = None,
        decided_by: str | None = None,
        model_version: str | None = None,
    ) -> Message:
        """Append a message with the next ``seq`` of its conversation (1, 2, 3, ... with no
        gaps, also under concurrent appends). With a ``client_message_id`` already stored in
        this conversation nothing is written and the stored message is returned with
        ``replayed=True``. ``NotFound`` if the conversation does not exist."""
        values = self._message_values(
            sender=sender, text=text, payload=payload, metadata=metadata,
            client_message_id=client_message_id, intent=intent, confidence=confidence,
            intent_ranking=intent_ranking, entities=entities, action=action,
            decision=decision, decided_by=decided_by, model_version=model_version,
        )
        async with self._tx(write=True) as conn:
            return await self._append(conn, conversation_id, values)

    @staticmethod
    def _message_values(*, sender: Sender, **values: Any) -> dict[str, Any]:
        one_of("sender", sender, SENDERS)
        if values.get("decision") is not None:
            one_of("decision", values["decision"], REPLY_DECISIONS)
        unknown = set(values) - _MESSAGE_FIELDS
        if unknown:
            raise BadRequest(f"unknown message fields {sorted(unknown)}")
        return {**dict.fromkeys(_MESSAGE_FIELDS), **values, "sender": sender}

    async def _append(
        self, conn: Conn, conversation_id: str, values: dict[str, Any],
        last_seq: int | None = None,
    ) -> Message:
        # Lock the conversation row first: concurrent appends queue here, and whatever they
        # committed is visible to the statements below (new snapshot per statement in READ
        # COMMITTED; SQLite's BEGIN IMMEDIATE serializes writers outright). ``last_seq``: the
        # conversation's, known to this transaction, which already updated (so locked) the row.
        if last_seq is None:
            last_seq = (await self._conversation(conn, conversation_id, lock=True)).last_seq
        client_id = values.get("client_message_id")
        if client_id is not None:
            existing = await self._stored(conn, conversation_id, client_id)
            if existing is not None:
                return existing
        seq = last_seq + 1
        at = now()
        await conn.execute(
            sa.update(conversations).where(conversations.c.id == conversation_id)
            .values(last_seq=seq, updated_at=at)
        )
        row = (await conn.execute(
            sa.insert(messages)
            .values(conversation_id=conversation_id, seq=seq, created_at=at, **values)
            .returning(*messages.c)
        )).one()
        return record(Message, row)

    async def _record_turn(self, conn: Conn, conversation_id: str,
                           nlu: MessageNlu | None, triage: TriageRecord | None = None) -> None:
        """What a Rasa answer said about the customer message stored as
        ``nlu["client_message_id"]``: its parse, and the actions executed (appended); and
        triage's assessment of the message stored as ``triage["client_message_id"]`` (one
        statement when both name the same message, as in a turn)."""
        updates: dict[str, dict[str, Any]] = {}
        if triage is not None:
            updates[triage["client_message_id"]] = _assessed(triage["assessment"])
        if nlu is not None:
            values = updates.setdefault(nlu["client_message_id"], {})
            await self._nlu_values(conn, conversation_id, nlu, values)
        for client_message_id, values in updates.items():
            if values:
                await conn.execute(sa.update(messages).where(
                    messages.c.conversation_id == conversation_id,
                    messages.c.client_message_id == client_message_id).values(**values))

    async def _nlu_values(self, conn: Conn, conversation_id: str, nlu: MessageNlu,
                          values: dict[str, Any]) -> None:
        where = sa.and_(messages.c.conversation_id == conversation_id,
                        messages.c.client_message_id == nlu["client_message_id"])
        values.update({k: nlu[k] for k in (
            "intent", "confidence", "intent_ranking", "entities") if k in nlu})
        if nlu.get("actions"):
            before = (await conn.execute(sa.select(messages.c.actions).where(where))).scalar()
            values["actions"] = list(before or []) + list(nlu["actions"])

    async def get_message(self, message_id: int) -> Message:
        """The message, or ``NotFound``."""
        async with self._tx(write=False) as conn:
            row = (await conn.execute(
                sa.select(messages).where(messages.c.id == message_id)
            )).first()
        if row is None:
            raise NotFound(f"no message {message_id}", message_id=message_id)
        return record(Message, row)

    async def list_messages(
        self, conversation_id: str, after_seq: int | None = None, *, limit: int | None = None
    ) -> list[Message]:
        """Messages in ``seq`` order, only those after ``after_seq`` if given.
        ``NotFound`` if the conversation does not exist."""
        check_limit(limit)
        query = sa.select(messages).where(messages.c.conversation_id == conversation_id)
        if after_seq is not None:
            query = query.where(messages.c.seq > after_seq)
        query = query.order_by(messages.c.seq).limit(limit)
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                await self._require_conversation(conn, conversation_id)
        return [record(Message, row) for row in rows]

    async def last_customer_messages(
        self, conversation_ids: Sequence[str]
    ) -> dict[str, Message]:
        """The latest customer message of each of the given conversations that has one."""
        if not conversation_ids:
            return {}
        latest = (
            sa.select(messages.c.conversation_id, sa.func.max(messages.c.seq).label("seq"))
            .where(messages.c.conversation_id.in_(list(conversation_ids)))
            .where(messages.c.sender == "customer")
            .group_by(messages.c.conversation_id)
            .subquery()
        )
        query = sa.select(messages).join(latest, sa.and_(
            messages.c.conversation_id == latest.c.conversation_id,
            messages.c.seq == latest.c.seq))
        async with self._tx(write=False) as conn:
            return {row.conversation_id: record(Message, row)
                    for row in await conn.execute(query)}

    async def recent_customer_messages(
        self, *, limit: int = 500, assessed: bool = True
    ) -> list[Message]:
        """The latest customer messages of all conversations, newest first (only those triage
        assessed, when ``assessed``)."""
        check_limit(limit)
        query = sa.select(messages).where(messages.c.sender == "customer")
        if assessed:
            query = query.where(messages.c.triage.is_not(None))
        async with self._tx(write=False) as conn:
            rows = await conn.execute(query.order_by(messages.c.id.desc()).limit(limit))
            return [record(Message, row) for row in rows]

    async def stored_message(self, conversation_id: str,
                             client_message_id: str) -> Message | None:
        """The message stored in the conversation as ``client_message_id`` (``replayed``),
        or None."""
        async with self._tx(write=False) as conn:
            return await self._stored(conn, conversation_id, client_message_id)

    async def _stored(self, conn: Conn, conversation_id: str,
                      client_message_id: str) -> Message | None:
        row = (await conn.execute(
            sa.select(messages)
            .where(messages.c.conversation_id == conversation_id)
            .where(messages.c.client_message_id == client_message_id)
        )).first()
        return None if row is None else dataclasses.replace(record(Message, row), replayed=True)

    async def _message_id(self, conn: Conn, conversation_id: str,
                          client_message_id: str | None) -> int | None:
        """The row id of the message stored as ``client_message_id``, or None."""
        if client_message_id is None:
            return None
        found: int | None = (await conn.execute(
            sa.select(messages.c.id)
            .where(messages.c.conversation_id == conversation_id)
            .where(messages.c.client_message_id == client_message_id)
        )).scalar_one_or_none()
        return found

    async def _require_message(
        self, conn: Conn, conversation_id: str, message_id: int
    ) -> None:
        found = (await conn.execute(
            sa.select(messages.c.id).where(messages.c.id == message_id)
            .where(messages.c.conversation_id == conversation_id)
        )).first()
        if found is None:
            raise NotFound(f"no message {message_id} in conversation {conversation_id!r}",
                           message_id=message_id)

    # ----------------------------------------------------------------- notes

    async def add_note(self, conversation_id: str, *, author: str, text: str) -> Note:
        """A private agent note on a conversation (never shown to the customer)."""
        if not text.strip():
            raise BadRequest("a note needs text")
        async with self._tx(write=True) as conn:
            await self._require_conversation(conn, conversation_id)
            row = (await conn.execute(
                sa.insert(notes).values(
                    conversation_id=conversation_id, author=author, text=text, created_at=now()
                ).returning(*notes.c)
            )).one()
        return record(Note, row)

    async def list_notes(self, conversation_id: str) -> list[Note]:
        """The conversation's notes, oldest first. ``NotFound`` if it does not exist."""
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(
                sa.select(notes).where(notes.c.conversation_id == conversation_id)
                .order_by(notes.c.id)
            )).all()
            if not rows:
                await self._require_conversation(conn, conversation_id)
        return [record(Note, row) for row in rows]
