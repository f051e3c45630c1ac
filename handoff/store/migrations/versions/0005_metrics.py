"""What the dashboard's metrics need and the store did not keep (docs/metrics.md).

* ``conversation_events``: every change of a conversation's mode, owner or queue, with the
  router event that caused it and the agent who did it (``actor``, null for the customer or the
  system). Before it only the current mode was kept, so queue waits, handling times, who closed
  a conversation and reopenings could not be measured. Written by ``save_step`` in the step's
  transaction. Conversations from before this migration have no events.
* ``messages.sentiment``: triage's sentiment of a customer message (VADER compound, -1 … +1),
  a column so the start-versus-end comparison does not read JSON per row; filled here from the
  assessments already stored (``messages.triage -> measures -> sentiment``).
* ``suggestion_ratings``: an agent's one-click rating of a suggested reply (+1 useful, -1 not).
* Indexes for the metrics' date ranges: ``conversations.created_at``,
  ``pending_replies.created_at``, ``audit_log (action, created_at)``, ``corrections.created_at``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_TIME = sa.DateTime(timezone=True)
_MODES = "'bot', 'review', 'human', 'closed'"


def upgrade() -> None:
    op.create_table(
        "conversation_events",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("conversation_id", sa.Text,
                  sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("actor", sa.Text),
        sa.Column("mode_from", sa.Text, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("owner", sa.Text),
        sa.Column("queued", sa.Boolean, nullable=False),
        sa.Column("queue_reason", sa.Text),
        sa.CheckConstraint(f"mode IN ({_MODES})", name="ck_conversation_events_mode"),
        sa.CheckConstraint(f"mode_from IN ({_MODES})", name="ck_conversation_events_mode_from"),
    )
    op.create_index("ix_conversation_events_conversation", "conversation_events",
                    ["conversation_id", "id"])
    op.create_index("ix_conversation_events_created_at", "conversation_events", ["created_at"])
    op.create_table(
        "suggestion_ratings",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("conversation_id", sa.Text,
                  sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("agent", sa.Text, nullable=False),
        sa.Column("suggestion", sa.Text, nullable=False),
        sa.Column("rating", sa.SmallInteger, nullable=False),
        sa.CheckConstraint("rating IN (-1, 1)", name="ck_suggestion_ratings_rating"),
    )
    op.create_index("ix_suggestion_ratings_created_at", "suggestion_ratings", ["created_at"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("sentiment", sa.Float, nullable=True))
    op.create_index("ix_conversations_created_at", "conversations", ["created_at"])
    op.create_index("ix_pending_replies_created_at", "pending_replies", ["created_at"])
    op.create_index("ix_corrections_created_at", "corrections", ["created_at"])
    op.create_index("ix_audit_log_action_created_at", "audit_log", ["action", "created_at"])
    messages = sa.table("messages", sa.column("id", sa.Integer), sa.column("triage", _JSON),
                        sa.column("sentiment", sa.Float))
    bind = op.get_bind()
    for mid, triage in bind.execute(sa.select(messages.c.id, messages.c.triage).where(
            messages.c.triage.is_not(None))):
        measures = triage.get("measures") if isinstance(triage, dict) else None
        value = measures.get("sentiment") if isinstance(measures, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bind.execute(sa.update(messages).where(messages.c.id == mid)
                         .values(sentiment=float(value)))


def downgrade() -> None:
    op.drop_index("ix_audit_log_action_created_at", "audit_log")
    op.drop_index("ix_corrections_created_at", "corrections")
    op.drop_index("ix_pending_replies_created_at", "pending_replies")
    op.drop_index("ix_conversations_created_at", "conversations")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("sentiment")
    op.drop_index("ix_suggestion_ratings_created_at", "suggestion_ratings")
    op.drop_table("suggestion_ratings")
    op.drop_index("ix_conversation_events_created_at", "conversation_events")
    op.drop_index("ix_conversation_events_conversation", "conversation_events")
    op.drop_table("conversation_events")
