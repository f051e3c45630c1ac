"""Initial schema: conversations, messages, pending replies, corrections, users, notes, audit.

Every table and column is described in docs/store.md.

Revision ID: 0001
Revises:
Create Date: 2025-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.Column[int]:
    # BIGINT identity on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite.
    return sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True
    )


def _ref(name: str, target: str, *, nullable: bool, ondelete: str) -> sa.Column[int]:
    return sa.Column(
        name,
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.ForeignKey(target, ondelete=ondelete),
        nullable=nullable,
    )


def _conversation_ref() -> sa.Column[str]:
    return sa.Column(
        "conversation_id",
        sa.Text(),
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    )


def _json(name: str, *, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(
        name, sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=nullable
    )


def _time(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _one_of(column: str, values: Sequence[str], name: str) -> sa.CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({quoted})", name=name)



def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Text(), primary_key=True),
        _time("created_at"),
        _time("updated_at"),
        sa.Column("mode", sa.Text(), nullable=False, server_default="bot"),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("queued", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("queue_reason", sa.Text(), nullable=True),
        _time("queued_at", nullable=True),
        _json("state"),
        sa.Column("risk", sa.Float(), nullable=True),
        sa.Column("effort_score", sa.SmallInteger(), nullable=True),
        _time("closed_at", nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("last_seq", sa.Integer(), nullable=False, server_default="0"),
        _one_of("mode", ("bot", "review", "human", "closed"), "ck_conversations_mode"),
        sa.CheckConstraint(
            "effort_score IS NULL OR (effort_score >= 1 AND effort_score <= 7)",
            name="ck_conversations_effort_score",
        ),
    )
    op.create_index("ix_conversations_mode_queued", "conversations", ["mode", "queued"])
    op.create_index("ix_conversations_owner", "conversations", ["owner"])

    op.create_table(
        "messages",
        _id(),
        _conversation_ref(),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        _json("payload"),
        _json("metadata"),
        _time("created_at"),
        sa.Column("client_message_id", sa.Text(), nullable=True),
        sa.Column("intent", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        _json("intent_ranking"),
        _json("entities"),
        sa.Column("action", sa.Text(), nullable=True),
        sa.Column("decision", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("model_version", sa.Text(), nullable=True),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
        sa.UniqueConstraint(
            "conversation_id", "client_message_id", name="uq_messages_conversation_client_id"
        ),
        _one_of("sender", ("customer", "bot", "agent", "system"), "ck_messages_sender"),
        sa.CheckConstraint(
            "decision IS NULL OR decision IN ('approved', 'edited', 'replaced', 'written')",
            name="ck_messages_decision",
        ),
    )

    op.create_table(
        "pending_replies",
        _id(),
        _conversation_ref(),
        _time("created_at"),
        _ref("trigger_message_id", "messages.id", nullable=True, ondelete="SET NULL"),
        sa.Column("action", sa.Text(), nullable=False),
        _json("messages", nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        _json("alternatives"),
        sa.Column("model_version", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        _time("decided_at", nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decision", sa.Text(), nullable=True),
        _one_of("status", ("pending", "decided", "discarded"), "ck_pending_replies_status"),
        sa.CheckConstraint(
            "decision IS NULL OR decision IN ('approved', 'edited', 'replaced', 'written')",
            name="ck_pending_replies_decision",
        ),
    )
    op.create_index(
        "ix_pending_replies_conversation_status", "pending_replies", ["conversation_id", "status"]
    )

    op.create_table(
        "corrections",
        _id(),
        _conversation_ref(),
        _ref("message_id", "messages.id", nullable=True, ondelete="SET NULL"),
        _ref("pending_reply_id", "pending_replies.id", nullable=True, ondelete="SET NULL"),
        sa.Column("type", sa.Text(), nullable=False),
        _json("before"),
        _json("after"),
        _json("tracker_events", nullable=False),
        sa.Column("agent", sa.Text(), nullable=False),
        _time("created_at"),
        sa.Column("model_version", sa.Text(), nullable=True),
        sa.Column("review_status", sa.Text(), nullable=False, server_default="new"),
        sa.Column("reviewed_by", sa.Text(), nullable=True),
        _time("reviewed_at", nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("export_id", sa.Text(), nullable=True),
        _time("exported_at", nullable=True),
        _one_of(
            "type",
            ("approved", "edited", "replaced", "written", "relabelled", "takeover"),
            "ck_corrections_type",
        ),
        _one_of("review_status", ("new", "accepted", "rejected"), "ck_corrections_review_status"),
    )
    op.create_index("ix_corrections_review_status_type", "corrections", ["review_status", "type"])
    op.create_index("ix_corrections_conversation", "corrections", ["conversation_id"])

    op.create_table(
        "users",
        sa.Column("username", sa.Text(), primary_key=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        _time("created_at"),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        _one_of("role", ("agent", "trainer", "admin"), "ck_users_role"),
    )

    op.create_table(
        "notes",
        _id(),
        _conversation_ref(),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _time("created_at"),
    )
    op.create_index("ix_notes_conversation", "notes", ["conversation_id"])

    op.create_table(
        "audit_log",
        _id(),
        _time("created_at"),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        _json("details"),
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])
    op.create_index("ix_audit_log_target", "audit_log", ["target"])


def downgrade() -> None:
    for table in ("audit_log", "notes", "users", "corrections", "pending_replies", "messages"):
        op.drop_table(table)
    op.drop_table("conversations")
