"""The gateway's database: one class, :class:`Store`, owns it and all of its SQL.

SQLite (WAL) by default, PostgreSQL by URL; the schema is made by the Alembic migrations in
``handoff/store/migrations`` (configured here in code, no alembic.ini) and described table by table in
``docs/store.md``. Every public method is async, runs in one transaction and returns plain
frozen dataclasses. Errors come from :mod:`handoff.errors` (``NotFound`` 404, ``Conflict`` 409,
``BadRequest`` 400, ``ServiceUnavailable`` 503 when the database does not answer).

    store = Store("sqlite+aiosqlite:///var/handoff.db")
    await store.migrate()
    ...
    await store.close()

Command line: ``python -m handoff.store migrate --url URL`` (:mod:`handoff.store.__main__`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import StaticPool

from handoff.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from handoff.store.records import (
    CORRECTION_TYPES,
    DECISIONS,
    MODES,
    PENDING_STATUSES,
    REVIEW_STATUSES,
    ROLES,
    SENDERS,
    AuditEntry,
    Conversation,
    Correction,
    CorrectionDraft,
    CorrectionType,
    Decided,
    Decision,
    Message,
    MessageNlu,
    Mode,
    ModelVersion,
    Note,
    OutgoingMessage,
    PendingReply,
    PendingStatus,
    ReviewStatus,
    Role,
    Sender,
    StepMessage,
    User,
    to_json,
)
from handoff.store.schema import (
    audit_log,
    conversations,
    corrections,
    messages,
    model_versions,
    notes,
    pending_replies,
    users,
)

__all__ = [  # the records are re-exported: callers import everything from here
    "AlreadyExists", "AlreadyResolved", "AuditEntry", "Conversation", "Correction",
    "CorrectionDraft", "CorrectionType", "Decided", "Decision", "Message", "MessageNlu", "Mode",
    "ModelVersion", "Note", "OutgoingMessage", "PendingReply", "PendingStatus", "ReviewStatus", "Role", "Sender",
    "StaleVersion", "StepMessage", "Store", "User", "alembic_config", "to_json",
]

MIGRATIONS_DIR: Final = Path(__file__).resolve().with_name("migrations")
VERSION_TABLE: Final = "handoff_alembic_version"
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
_MIGRATION_LOCK_KEY: Final = 0x68616E646F6666  # "handoff": one migrator at a time on PostgreSQL
_WRITE: Final = "handoff_write"


# --------------------------------------------------------------------------- errors


class StaleVersion(Conflict):
    """``set_conversation_state`` was given a version that is no longer the current one."""

    code = "stale_version"


class AlreadyResolved(Conflict):
    """The pending reply was already decided or discarded (e.g. by another agent)."""

    code = "already_resolved"


class AlreadyExists(Conflict):
    """A user with that username exists."""

    code = "already_exists"


# --------------------------------------------------------------------------- helpers

R = TypeVar("R")


MODEL_STATUSES: Final = ("candidate", "live", "retired")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _record(cls: Callable[..., R], row: sa.Row[Any]) -> R:
    return cls(**dict(zip(row._fields, row, strict=True)))


def _one_of(name: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _values(name: str, value: str | Sequence[str], allowed: Sequence[str]) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        _one_of(name, item, allowed)
    return items


def _limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise BadRequest(f"limit must be at least 1; got {limit}")


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration of the store, built in code (there is no alembic.ini).

    With ``url`` Alembic opens its own engine; ``Store.migrate`` passes a connection instead.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# Alembic keeps its migration context in module globals, so two migrations interleaving on one
# event loop (several Store objects migrating at once) corrupt each other: one at a time per
# loop. Across processes, the write transaction (SQLite) or advisory lock (PostgreSQL) orders them.
_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 driver (its legacy mode skips it for SELECT and DDL);
    # _on_sqlite_begin emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # The busy timeout first: switching a new file to WAL takes an exclusive lock, and another
    # connection opening it at the same moment must wait for it, not fail with "locked".
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    # A write transaction takes SQLite's write lock up front (waiting up to busy_timeout), so a
    # read-then-write transaction never fails with "database is locked" half way through.
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# --------------------------------------------------------------------------- the store


_MESSAGE_FIELDS = frozenset({
    "text", "payload", "metadata", "client_message_id", "intent", "confidence",
    "intent_ranking", "entities", "action", "decision", "decided_by", "model_version",
})


class Store:
    """The gateway's database. ``url``: ``sqlite+aiosqlite:///path.db`` (the default kind;
    the parent folder is created) or ``postgresql+asyncpg://user@host/db``."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = sa.make_url(url)
        self.dialect: str = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        self._serialize = False
        if self.dialect == "sqlite":
            if parsed.get_driver_name() != "aiosqlite":
                raise ValueError(f"SQLite URLs must use the aiosqlite driver: {parsed!r}")
            database = parsed.database or ""
            if database in ("", ":memory:"):
                # One shared connection: transactions must take turns.
                kwargs["poolclass"] = StaticPool
                self._serialize = True
            elif not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        elif self.dialect == "postgresql":
            if parsed.get_driver_name() != "asyncpg":
                raise ValueError(f"PostgreSQL URLs must use the asyncpg driver: {parsed!r}")
            kwargs["pool_pre_ping"] = True
        else:
            raise ValueError(f"unsupported database {parsed.get_backend_name()!r}: use SQLite or "
                             "PostgreSQL")
        self.url = parsed
        self._engine = create_async_engine(parsed, **kwargs)
        if self.dialect == "sqlite":
            sa.event.listen(self._engine.sync_engine, "connect", _on_sqlite_connect)
            sa.event.listen(self._engine.sync_engine, "begin", _on_sqlite_begin)
        self._writer = self._engine.execution_options(**{_WRITE: True})
        self._turn = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every pooled connection. The store can not be used afterwards."""
        await self._engine.dispose()

    @contextlib.asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """One transaction; commits when the block ends, rolls back on an exception."""
        turn: contextlib.AbstractAsyncContextManager[Any] = (
            self._turn if self._serialize else contextlib.nullcontext()
        )
        try:
            async with turn, (self._writer if write else self._engine).begin() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as exc:
            # Not str(exc): SQLAlchemy's text carries the statement and its parameters.
            raise ServiceUnavailable(
                f"the database does not answer ({type(exc).__name__})"
            ) from exc

    # ----------------------------------------------------------------- schema

    async def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (default: the newest). Safe to call on every start
        and from several processes at once."""
        cfg = alembic_config()

        def upgrade(sync_conn: Connection) -> None:
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, revision)

        async with _migration_lock(), self._tx(write=True) as conn:
            if self.dialect == "postgresql":
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            await conn.run_sync(upgrade)

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None before the first migration)."""

        def current(sync_conn: Connection) -> str | None:
            ctx = MigrationContext.configure(sync_conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()

        async with self._tx(write=False) as conn:
            return await conn.run_sync(current)

    async def ping(self) -> None:
        """Raise ``ServiceUnavailable`` unless the database answers."""
        async with self._tx(write=False) as conn:
            await conn.execute(sa.text("SELECT 1"))

    # ----------------------------------------------------------------- conversations

    async def upsert_conversation(
        self, conversation_id: str, *, mode: Mode = "bot", state: dict[str, Any] | None = None
    ) -> Conversation:
        """Create the conversation if it does not exist (with ``mode`` and ``state``) and
        return it; an existing conversation is returned unchanged."""
        if not conversation_id:
            raise BadRequest("conversation id must not be empty")
        _one_of("mode", mode, MODES)
        now = _now()
        values: dict[str, Any] = dict(
            id=conversation_id, created_at=now, updated_at=now, mode=mode, queued=False,
            state=state, version=1, last_seq=0, closed_at=now if mode == "closed" else None,
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
        async with self._tx(write=False) as conn:
            return await self._conversation(conn, conversation_id)

    async def list_conversations(
        self,
        *,
        mode: Mode | Sequence[Mode] | None = None,
        queued: bool | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> list[Conversation]:
        """Conversations, riskiest first (no risk last), then the longest waiting first
        (``queued_at``, else ``created_at``), then by id."""
        _limit(limit)
        query = sa.select(conversations)
        if mode is not None:
            query = query.where(conversations.c.mode.in_(_values("mode", mode, MODES)))
        if queued is not None:
            query = query.where(conversations.c.queued == queued)
        if owner is not None:
            query = query.where(conversations.c.owner == owner)
        query = query.order_by(
            conversations.c.risk.desc().nulls_last(),
            sa.func.coalesce(conversations.c.queued_at, conversations.c.created_at).asc(),
            conversations.c.id.asc(),
        ).limit(limit)
        async with self._tx(write=False) as conn:
            return [_record(Conversation, row) for row in await conn.execute(query)]

    async def set_conversation_state(
        self,
        conversation_id: str,
        *,
        expected_version: int,
        mode: Mode,
        owner: str | None,
        queued: bool,
        queue_reason: str | None,
        state: dict[str, Any] | None,
    ) -> Conversation:
        """Replace the router's part of the conversation if it is still at
        ``expected_version``; the version goes up by one. A stale version raises
        ``StaleVersion`` (409): re-read, recompute, retry. ``queued_at`` is set when the
        conversation enters the queue and cleared when it leaves; ``closed_at`` likewise for
        mode ``closed``."""
        _one_of("mode", mode, MODES)
        async with self._tx(write=True) as conn:
            return await self._set_state(
                conn, conversation_id, expected_version=expected_version, mode=mode,
                owner=owner, queued=queued, queue_reason=queue_reason, state=state)

    async def save_step(
        self,
        conversation_id: str,
        *,
        expected_version: int,
        mode: Mode,
        owner: str | None,
        queued: bool,
        queue_reason: str | None,
        state: dict[str, Any] | None,
        appended: Sequence[StepMessage] = (),
        nlu: MessageNlu | None = None,
    ) -> tuple[Conversation, list[Message]]:
        """One router step in one transaction: the new state (as ``set_conversation_state``,
        ``StaleVersion`` included), then the ``appended`` messages in order (as
        ``append_message``: a ``client_message_id`` already stored is not written again), then
        ``nlu`` on its customer message. Returns the conversation and the stored messages."""
        _one_of("mode", mode, MODES)
        values = [self._message_values(**m) for m in appended]
        async with self._tx(write=True) as conn:
            conv = await self._set_state(
                conn, conversation_id, expected_version=expected_version, mode=mode,
                owner=owner, queued=queued, queue_reason=queue_reason, state=state)
            stored = [await self._append(conn, conversation_id, v) for v in values]
            if nlu is not None:
                await self._record_turn(conn, conversation_id, nlu)
            return conv, stored

    async def _record_turn(self, conn: AsyncConnection, conversation_id: str,
                           nlu: MessageNlu) -> None:
        where = sa.and_(messages.c.conversation_id == conversation_id,
                        messages.c.client_message_id == nlu["client_message_id"])
        values: dict[str, Any] = {k: nlu[k] for k in (
            "intent", "confidence", "intent_ranking", "entities") if k in nlu}
        if nlu.get("actions"):
            before = (await conn.execute(sa.select(messages.c.actions).where(where))).scalar()
            values["actions"] = list(before or []) + list(nlu["actions"])
        if values:
            await conn.execute(sa.update(messages).where(where).values(**values))

    async def _set_state(
        self, conn: AsyncConnection, conversation_id: str, *, expected_version: int, mode: Mode,
        owner: str | None, queued: bool, queue_reason: str | None, state: dict[str, Any] | None,
    ) -> Conversation:
        current = await self._conversation(conn, conversation_id, lock=True)
        if current.version != expected_version:
            raise StaleVersion(
                f"conversation {conversation_id!r} was changed meanwhile",
                conversation_id=conversation_id,
                expected_version=expected_version,
                current_version=current.version,
            )
        now = _now()
        queued_at = (current.queued_at or now) if queued and current.queued else (
            now if queued else None
        )
        closed_at = (current.closed_at or now) if mode == "closed" else None
        row = (await conn.execute(
            sa.update(conversations)
            .where(conversations.c.id == conversation_id)
            .where(conversations.c.version == expected_version)
            .values(
                mode=mode, owner=owner, queued=queued, queue_reason=queue_reason,
                queued_at=queued_at, state=state, closed_at=closed_at, updated_at=now,
                version=conversations.c.version + 1,
            )
            .returning(*conversations.c)
        )).one()
        return _record(Conversation, row)

    async def set_risk(self, conversation_id: str, risk: float | None) -> Conversation:
        """Set the triage risk (not part of the versioned router state)."""
        return await self._update_conversation(conversation_id, risk=risk)

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
                .values(risk=risk, triage=triage).returning(*conversations.c)
            )).first()
            if row is None:
                raise NotFound(f"no conversation {conversation_id!r}",
                               conversation_id=conversation_id)
            if client_message_id is not None:
                await conn.execute(
                    sa.update(messages).where(messages.c.conversation_id == conversation_id)
                    .where(messages.c.client_message_id == client_message_id)
                    .values(triage=assessment))
        return _record(Conversation, row)

    async def set_effort_score(self, conversation_id: str, effort_score: int) -> Conversation:
        """Record the customer's answer to "How easy was it to get your issue resolved?",
        1 (very difficult) to 7 (very easy)."""
        if isinstance(effort_score, bool) or not isinstance(effort_score, int) or not (
            1 <= effort_score <= 7
        ):
            raise BadRequest(f"effort score must be an integer from 1 to 7; got {effort_score!r}")
        return await self._update_conversation(conversation_id, effort_score=effort_score)

    async def _update_conversation(self, conversation_id: str, **values: Any) -> Conversation:
        async with self._tx(write=True) as conn:
            row = (await conn.execute(
                sa.update(conversations).where(conversations.c.id == conversation_id)
                .values(**values).returning(*conversations.c)
            )).first()
        if row is None:
            raise NotFound(f"no conversation {conversation_id!r}", conversation_id=conversation_id)
        return _record(Conversation, row)

    async def _conversation(
        self, conn: AsyncConnection, conversation_id: str, *, lock: bool = False
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
        return _record(Conversation, row)

    async def _require_conversation(self, conn: AsyncConnection, conversation_id: str) -> None:
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
        decision: Decision | None = None,
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
        _one_of("sender", sender, SENDERS)
        if values.get("decision") is not None:
            _one_of("decision", values["decision"], DECISIONS)
        unknown = set(values) - _MESSAGE_FIELDS
        if unknown:
            raise BadRequest(f"unknown message fields {sorted(unknown)}")
        return {**dict.fromkeys(_MESSAGE_FIELDS), **values, "sender": sender}

    async def _append(
        self, conn: AsyncConnection, conversation_id: str, values: dict[str, Any]
    ) -> Message:
        # Lock the conversation row first: concurrent appends queue here, and whatever they
        # committed is visible to the statements below (new snapshot per statement in READ
        # COMMITTED; SQLite's BEGIN IMMEDIATE serializes writers outright).
        conversation = await self._conversation(conn, conversation_id, lock=True)
        client_id = values.get("client_message_id")
        if client_id is not None:
            existing = (await conn.execute(
                sa.select(messages)
                .where(messages.c.conversation_id == conversation_id)
                .where(messages.c.client_message_id == client_id)
            )).first()
            if existing is not None:
                return dataclasses.replace(_record(Message, existing), replayed=True)
        seq = conversation.last_seq + 1
        now = _now()
        await conn.execute(
            sa.update(conversations).where(conversations.c.id == conversation_id)
            .values(last_seq=seq, updated_at=now)
        )
        row = (await conn.execute(
            sa.insert(messages)
            .values(conversation_id=conversation_id, seq=seq, created_at=now, **values)
            .returning(*messages.c)
        )).one()
        return _record(Message, row)

    async def get_message(self, message_id: int) -> Message:
        """The message, or ``NotFound``."""
        async with self._tx(write=False) as conn:
            row = (await conn.execute(
                sa.select(messages).where(messages.c.id == message_id)
            )).first()
        if row is None:
            raise NotFound(f"no message {message_id}", message_id=message_id)
        return _record(Message, row)

    async def list_messages(
        self, conversation_id: str, after_seq: int | None = None, *, limit: int | None = None
    ) -> list[Message]:
        """Messages in ``seq`` order, only those after ``after_seq`` if given.
        ``NotFound`` if the conversation does not exist."""
        _limit(limit)
        query = sa.select(messages).where(messages.c.conversation_id == conversation_id)
        if after_seq is not None:
            query = query.where(messages.c.seq > after_seq)
        query = query.order_by(messages.c.seq).limit(limit)
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                await self._require_conversation(conn, conversation_id)
        return [_record(Message, row) for row in rows]

    async def find_message_id(self, conversation_id: str, client_message_id: str) -> int | None:
        """The row id of the message stored with ``client_message_id``, or None."""
        async with self._tx(write=False) as conn:
            return (await conn.execute(
                sa.select(messages.c.id)
                .where(messages.c.conversation_id == conversation_id)
                .where(messages.c.client_message_id == client_message_id)
            )).scalar_one_or_none()

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
            return {row.conversation_id: _record(Message, row)
                    for row in await conn.execute(query)}

    async def recent_customer_messages(
        self, *, limit: int = 500, assessed: bool = True
    ) -> list[Message]:
        """The latest customer messages of all conversations, newest first (only those triage
        assessed, when ``assessed``)."""
        _limit(limit)
        query = sa.select(messages).where(messages.c.sender == "customer")
        if assessed:
            query = query.where(messages.c.triage.is_not(None))
        async with self._tx(write=False) as conn:
            rows = await conn.execute(query.order_by(messages.c.id.desc()).limit(limit))
            return [_record(Message, row) for row in rows]

    async def set_message_nlu(
        self,
        message_id: int,
        *,
        intent: str | None,
        confidence: float | None,
        intent_ranking: list[dict[str, Any]] | None = None,
        entities: list[dict[str, Any]] | None = None,
    ) -> Message:
        """Store Rasa's parse of a customer message (after it was appended)."""
        async with self._tx(write=True) as conn:
            row = (await conn.execute(
                sa.update(messages).where(messages.c.id == message_id)
                .values(intent=intent, confidence=confidence, intent_ranking=intent_ranking,
                        entities=entities)
                .returning(*messages.c)
            )).first()
        if row is None:
            raise NotFound(f"no message {message_id}", message_id=message_id)
        return _record(Message, row)

    # ----------------------------------------------------------------- pending replies

    async def add_pending_reply(
        self,
        conversation_id: str,
        *,
        action: str,
        messages: list[dict[str, Any]],
        confidence: float | None = None,
        alternatives: list[dict[str, Any]] | None = None,
        trigger_message_id: int | None = None,
        model_version: str | None = None,
    ) -> PendingReply:
        """Hold a bot reply (the predicted ``action`` and the ``messages`` it would send) for
        an agent's decision. ``NotFound`` if the conversation does not exist."""
        async with self._tx(write=True) as conn:
            await self._require_conversation(conn, conversation_id)
            if trigger_message_id is not None:
                await self._require_message(conn, conversation_id, trigger_message_id)
            row = (await conn.execute(
                sa.insert(pending_replies).values(
                    conversation_id=conversation_id, created_at=_now(),
                    trigger_message_id=trigger_message_id, action=action, messages=messages,
                    confidence=confidence, alternatives=alternatives,
                    model_version=model_version, status="pending",
                ).returning(*pending_replies.c)
            )).one()
        return _record(PendingReply, row)

    async def get_pending_reply(self, pending_reply_id: int) -> PendingReply:
        """The pending reply (whatever its status), or ``NotFound``."""
        async with self._tx(write=False) as conn:
            return await self._pending(conn, pending_reply_id)

    async def list_pending_replies(
        self, *, conversation_id: str | None = None, status: PendingStatus | None = "pending"
    ) -> list[PendingReply]:
        """Pending replies, oldest first; by default only those still ``pending``."""
        query = sa.select(pending_replies)
        if conversation_id is not None:
            query = query.where(pending_replies.c.conversation_id == conversation_id)
        if status is not None:
            _one_of("status", status, PENDING_STATUSES)
            query = query.where(pending_replies.c.status == status)
        async with self._tx(write=False) as conn:
            rows = await conn.execute(query.order_by(pending_replies.c.id))
            return [_record(PendingReply, row) for row in rows]

    async def resolve_pending_reply(
        self,
        pending_reply_id: int,
        *,
        status: Literal["decided", "discarded"],
        decided_by: str | None = None,
        decision: Decision | None = None,
    ) -> PendingReply:
        """Mark a pending reply ``decided`` (``decision`` required) or ``discarded``.
        ``AlreadyResolved`` (409) if it is no longer pending: exactly one caller wins."""
        async with self._tx(write=True) as conn:
            return await self._resolve(conn, pending_reply_id, status, decided_by, decision)

    async def discard_pending_replies(
        self, conversation_id: str, *, decided_by: str | None = None
    ) -> list[PendingReply]:
        """Discard every still-pending reply of a conversation (e.g. on takeover or a new
        customer message); returns those it discarded."""
        async with self._tx(write=True) as conn:
            await self._require_conversation(conn, conversation_id)
            rows = await conn.execute(
                sa.update(pending_replies)
                .where(pending_replies.c.conversation_id == conversation_id)
                .where(pending_replies.c.status == "pending")
                .values(status="discarded", decided_at=_now(), decided_by=decided_by)
                .returning(*pending_replies.c)
            )
            return sorted((_record(PendingReply, row) for row in rows), key=lambda p: p.id)

    async def decide_pending_reply(
        self,
        pending_reply_id: int,
        *,
        decided_by: str,
        decision: Decision,
        messages: Sequence[OutgoingMessage],
        correction: CorrectionDraft | None = None,
    ) -> Decided:
        """An agent's decision, in one transaction: mark the reply decided, append the bot
        ``messages`` the customer will see (``sender="bot"``, with ``decision`` and
        ``decided_by``), and store the ``correction`` (if given) pointing at the reply and the
        first appended message. ``AlreadyResolved`` if another agent was first."""
        _one_of("decision", decision, DECISIONS)
        if correction is not None:
            _one_of("correction type", correction.get("type"), CORRECTION_TYPES)
        async with self._tx(write=True) as conn:
            pending = await self._resolve(conn, pending_reply_id, "decided", decided_by, decision)
            sent: list[Message] = []
            for out in messages:
                values: dict[str, Any] = dict(
                    sender="bot", text=out.get("text"), payload=out.get("payload"),
                    metadata=out.get("metadata"), action=out.get("action"),
                    model_version=out.get("model_version"),
                    client_message_id=out.get("client_message_id"),
                    decision=decision, decided_by=decided_by,
                )
                sent.append(await self._append(conn, pending.conversation_id, values))
            stored: Correction | None = None
            if correction is not None:
                stored = await self._insert_correction(
                    conn,
                    conversation_id=pending.conversation_id,
                    type=correction["type"],
                    agent=decided_by,
                    before=correction.get("before"),
                    after=correction.get("after"),
                    tracker_events=correction.get("tracker_events") or [],
                    message_id=sent[0].id if sent else None,
                    pending_reply_id=pending.id,
                    model_version=correction.get("model_version", pending.model_version),
                )
        return Decided(pending_reply=pending, messages=sent, correction=stored)

    async def _pending(self, conn: AsyncConnection, pending_reply_id: int) -> PendingReply:
        row = (await conn.execute(
            sa.select(pending_replies).where(pending_replies.c.id == pending_reply_id)
        )).first()
        if row is None:
            raise NotFound(f"no pending reply {pending_reply_id}",
                           pending_reply_id=pending_reply_id)
        return _record(PendingReply, row)

    async def _resolve(
        self,
        conn: AsyncConnection,
        pending_reply_id: int,
        status: str,
        decided_by: str | None,
        decision: str | None,
    ) -> PendingReply:
        _one_of("status", status, ("decided", "discarded"))
        if status == "decided":
            _one_of("decision", decision, DECISIONS)
        elif decision is not None:
            raise BadRequest("a discarded reply has no decision")
        row = (await conn.execute(
            sa.update(pending_replies)
            .where(pending_replies.c.id == pending_reply_id)
            .where(pending_replies.c.status == "pending")
            .values(status=status, decided_at=_now(), decided_by=decided_by, decision=decision)
            .returning(*pending_replies.c)
        )).first()
        if row is None:
            current = await self._pending(conn, pending_reply_id)
            raise AlreadyResolved(
                f"pending reply {pending_reply_id} is already {current.status}",
                pending_reply_id=pending_reply_id, status=current.status,
                decided_by=current.decided_by,
            )
        return _record(PendingReply, row)

    async def _require_message(
        self, conn: AsyncConnection, conversation_id: str, message_id: int
    ) -> None:
        found = (await conn.execute(
            sa.select(messages.c.id).where(messages.c.id == message_id)
            .where(messages.c.conversation_id == conversation_id)
        )).first()
        if found is None:
            raise NotFound(f"no message {message_id} in conversation {conversation_id!r}",
                           message_id=message_id)

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
        pending_reply_id: int | None = None,
        model_version: str | None = None,
    ) -> Correction:
        """Store an agent's correction of a bot turn with the Rasa tracker events up to that
        turn; it starts with ``review_status="new"``. ``NotFound`` if the conversation, or a
        referenced message / pending reply of that conversation, does not exist."""
        _one_of("type", type, CORRECTION_TYPES)
        async with self._tx(write=True) as conn:
            await self._require_conversation(conn, conversation_id)
            if message_id is not None:
                await self._require_message(conn, conversation_id, message_id)
            if pending_reply_id is not None:
                pending = await self._pending(conn, pending_reply_id)
                if pending.conversation_id != conversation_id:
                    raise NotFound(
                        f"no pending reply {pending_reply_id} in conversation "
                        f"{conversation_id!r}", pending_reply_id=pending_reply_id,
                    )
            return await self._insert_correction(
                conn, conversation_id=conversation_id, type=type, agent=agent, before=before,
                after=after, tracker_events=tracker_events or [], message_id=message_id,
                pending_reply_id=pending_reply_id, model_version=model_version,
            )

    async def _insert_correction(self, conn: AsyncConnection, **values: Any) -> Correction:
        row = (await conn.execute(
            sa.insert(corrections)
            .values(created_at=_now(), review_status="new", **values)
            .returning(*corrections.c)
        )).one()
        return _record(Correction, row)

    async def get_correction(self, correction_id: int) -> Correction:
        """The correction, or ``NotFound``."""
        async with self._tx(write=False) as conn:
            row = (await conn.execute(
                sa.select(corrections).where(corrections.c.id == correction_id)
            )).first()
        if row is None:
            raise NotFound(f"no correction {correction_id}", correction_id=correction_id)
        return _record(Correction, row)

    async def list_corrections(
        self,
        *,
        type: CorrectionType | Sequence[CorrectionType] | None = None,
        review_status: ReviewStatus | Sequence[ReviewStatus] | None = None,
        conversation_id: str | None = None,
        agent: str | None = None,
        exported: bool | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[Correction]:
        """Corrections in id (= creation) order. ``exported``: only those that were (True) or
        were not (False) marked exported; ``after_id`` + ``limit`` page through them."""
        _limit(limit)
        c = corrections.c
        query = sa.select(corrections)
        if type is not None:
            query = query.where(c.type.in_(_values("type", type, CORRECTION_TYPES)))
        if review_status is not None:
            query = query.where(
                c.review_status.in_(_values("review status", review_status, REVIEW_STATUSES))
            )
        if conversation_id is not None:
            query = query.where(c.conversation_id == conversation_id)
        if agent is not None:
            query = query.where(c.agent == agent)
        if exported is not None:
            query = query.where(c.exported_at.is_not(None) if exported else c.exported_at.is_(None))
        if after_id is not None:
            query = query.where(c.id > after_id)
        async with self._tx(write=False) as conn:
            rows = await conn.execute(query.order_by(c.id).limit(limit))
            return [_record(Correction, row) for row in rows]

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
        _one_of("review status", review_status, REVIEW_STATUSES)
        now = _now()
        values: dict[str, Any] = dict(
            review_status=review_status, reviewed_by=reviewed_by, reviewed_at=now
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
                done.append(_record(Correction, row))
                if audit:
                    await conn.execute(sa.insert(audit_log).values(
                        created_at=now, actor=reviewed_by, action=f"correction_{review_status}",
                        target=f"correction:{correction_id}", details=details))
        return done

    async def mark_corrections_exported(
        self, correction_ids: Iterable[int], *, export_id: str
    ) -> int:
        """Record that these corrections went into the training-data export ``export_id``;
        returns how many rows were marked."""
        return await self._mark_corrections(correction_ids, export_id=export_id,
                                            exported_at=_now())

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

    # ----------------------------------------------------------------- model versions

    async def record_model(
        self, model_id: str, file: str, *, status: str = "candidate",
        trained_at: datetime | None = None, retrained_by: str | None = None,
        corrections: list[int] | None = None, proof: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Add a model version, or update the file, training and proof of a known one (its
        status and deployment stay as they are)."""
        _one_of("status", status, MODEL_STATUSES)
        values = {"file": file, "trained_at": trained_at, "retrained_by": retrained_by,
                  "corrections": corrections, "proof": proof}
        async with self._tx(write=True) as conn:
            found = (await conn.execute(sa.select(model_versions.c.model_id).where(
                model_versions.c.model_id == model_id))).first()
            if found is None:
                await conn.execute(sa.insert(model_versions).values(
                    model_id=model_id, status=status, created_at=_now(), **values))
            else:
                await conn.execute(sa.update(model_versions).where(
                    model_versions.c.model_id == model_id).values(
                    **{k: v for k, v in values.items() if v is not None}))
            return await self._model(conn, model_id)

    async def get_model(self, model_id: str) -> ModelVersion:
        async with self._tx(write=False) as conn:
            return await self._model(conn, model_id)

    async def list_models(self, limit: int = 50) -> list[ModelVersion]:
        """Model versions, newest first."""
        _limit(limit)
        async with self._tx(write=False) as conn:
            rows = await conn.execute(sa.select(model_versions).order_by(
                model_versions.c.created_at.desc(), model_versions.c.model_id).limit(limit))
            return [_record(ModelVersion, row) for row in rows]

    async def live_model(self) -> ModelVersion | None:
        async with self._tx(write=False) as conn:
            row = (await conn.execute(sa.select(model_versions).where(
                model_versions.c.status == "live"))).first()
        return None if row is None else _record(ModelVersion, row)

    async def set_live_model(self, model_id: str, *, deployed_by: str,
                             override: str | None = None,
                             details: dict[str, Any] | None = None) -> ModelVersion:
        """``model_id`` is live now, the one live before retired; audit-logged in the same
        transaction (``model_deployed``, with ``override`` when given)."""
        now = _now()
        async with self._tx(write=True) as conn:
            await self._model(conn, model_id)
            await conn.execute(sa.update(model_versions).where(
                model_versions.c.status == "live", model_versions.c.model_id != model_id)
                .values(status="retired"))
            await conn.execute(sa.update(model_versions).where(
                model_versions.c.model_id == model_id).values(
                status="live", deployed_at=now, deployed_by=deployed_by, override=override))
            await conn.execute(sa.insert(audit_log).values(
                created_at=now, actor=deployed_by, action="model_deployed",
                target=f"model:{model_id}", details={**(details or {}), "override": override}))
            return await self._model(conn, model_id)

    async def _model(self, conn: AsyncConnection, model_id: str) -> ModelVersion:
        row = (await conn.execute(sa.select(model_versions).where(
            model_versions.c.model_id == model_id))).first()
        if row is None:
            raise NotFound(f"no model {model_id}")
        return _record(ModelVersion, row)

    # ----------------------------------------------------------------- notes

    async def add_note(self, conversation_id: str, *, author: str, text: str) -> Note:
        """A private agent note on a conversation (never shown to the customer)."""
        if not text.strip():
            raise BadRequest("a note needs text")
        async with self._tx(write=True) as conn:
            await self._require_conversation(conn, conversation_id)
            row = (await conn.execute(
                sa.insert(notes).values(
                    conversation_id=conversation_id, author=author, text=text, created_at=_now()
                ).returning(*notes.c)
            )).one()
        return _record(Note, row)

    async def list_notes(self, conversation_id: str) -> list[Note]:
        """The conversation's notes, oldest first. ``NotFound`` if it does not exist."""
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(
                sa.select(notes).where(notes.c.conversation_id == conversation_id)
                .order_by(notes.c.id)
            )).all()
            if not rows:
                await self._require_conversation(conn, conversation_id)
        return [_record(Note, row) for row in rows]

    # ----------------------------------------------------------------- audit

    async def audit(
        self,
        actor: str,
        action: str,
        *,
        target: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Append to the audit log: ``actor`` (a username or "system") did ``action`` to
        ``target`` (e.g. "conversation:abc", "user:bob")."""
        async with self._tx(write=True) as conn:
            row = (await conn.execute(
                sa.insert(audit_log).values(
                    created_at=_now(), actor=actor, action=action, target=target, details=details
                ).returning(*audit_log.c)
            )).one()
        return _record(AuditEntry, row)

    async def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        limit: int | None = 100,
    ) -> list[AuditEntry]:
        """Audit entries, newest first."""
        _limit(limit)
        query = sa.select(audit_log)
        if actor is not None:
            query = query.where(audit_log.c.actor == actor)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if target is not None:
            query = query.where(audit_log.c.target == target)
        async with self._tx(write=False) as conn:
            rows = await conn.execute(query.order_by(audit_log.c.id.desc()).limit(limit))
            return [_record(AuditEntry, row) for row in rows]

    # ----------------------------------------------------------------- users
    # Hashing and checking passwords is handoff.web.auth's job; the store keeps the rows.

    async def create_user(
        self, username: str, *, password_hash: str, role: Role, disabled: bool = False
    ) -> User:
        """Insert a user; ``AlreadyExists`` (409) if the username is taken."""
        _one_of("role", role, ROLES)
        try:
            async with self._tx(write=True) as conn:
                row = (await conn.execute(
                    sa.insert(users).values(
                        username=username, password_hash=password_hash, role=role,
                        created_at=_now(), disabled=disabled,
                    ).returning(*users.c)
                )).one()
        except sa.exc.IntegrityError as exc:
            raise AlreadyExists(f"user {username!r} exists", username=username) from exc
        return _record(User, row)

    async def create_first_user(
        self, username: str, *, password_hash: str, role: Role
    ) -> User | None:
        """Insert the user only if there is no user at all; None if there was one."""
        _one_of("role", role, ROLES)
        try:
            async with self._tx(write=True) as conn:
                count = (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one()
                if count:
                    return None
                row = (await conn.execute(
                    sa.insert(users).values(
                        username=username, password_hash=password_hash, role=role,
                        created_at=_now(), disabled=False,
                    ).returning(*users.c)
                )).one()
        except sa.exc.IntegrityError:
            return None  # a concurrent process created it first
        return _record(User, row)

    async def get_user(self, username: str) -> User:
        """The user, or ``NotFound``."""
        async with self._tx(write=False) as conn:
            row = (await conn.execute(sa.select(users).where(users.c.username == username))).first()
        if row is None:
            raise NotFound(f"no user {username!r}", username=username)
        return _record(User, row)

    async def list_users(self) -> list[User]:
        """All users by username."""
        async with self._tx(write=False) as conn:
            rows = await conn.execute(sa.select(users).order_by(users.c.username))
            return [_record(User, row) for row in rows]

    async def count_users(self) -> int:
        """How many users exist (disabled ones included)."""
        async with self._tx(write=False) as conn:
            count = (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one()
            return int(count)

    async def update_user(
        self,
        username: str,
        *,
        password_hash: str | None = None,
        role: Role | None = None,
        disabled: bool | None = None,
    ) -> User:
        """Change the given fields of a user; ``NotFound`` if there is no such user."""
        values: dict[str, Any] = {}
        if password_hash is not None:
            values["password_hash"] = password_hash
        if role is not None:
            _one_of("role", role, ROLES)
            values["role"] = role
        if disabled is not None:
            values["disabled"] = disabled
        if not values:
            return await self.get_user(username)
        async with self._tx(write=True) as conn:
            row = (await conn.execute(
                sa.update(users).where(users.c.username == username)
                .values(**values).returning(*users.c)
            )).first()
        if row is None:
            raise NotFound(f"no user {username!r}", username=username)
        return _record(User, row)
