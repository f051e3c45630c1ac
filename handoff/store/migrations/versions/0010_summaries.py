"""The dashboard's figures kept incrementally (docs/metrics.md, "Speed").

* ``conversation_summaries``: one row per conversation with what the metrics need of it (its
  first intent and model, first and last sentiment, who spoke last, its outcome, queue stays,
  handling times, owners), computed by ``handoff.learning.metrics`` from its messages and events
  and stamped with the conversation's ``(version, last_seq, metrics_rev)``. A read recomputes
  only the rows whose stamp no longer matches, so the dashboard reads one row per conversation
  instead of scanning every message of the period. Empty at first: the first read after this
  migration fills it.
* ``conversations.metrics_rev``: bumped by the writes that change a metric's input without a
  step (triage's sentiment, the survey's answer).

Revision ID: 0010
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("metrics_rev", sa.Integer, nullable=False,
                                   server_default="0"))
    op.create_table(
        "conversation_summaries",
        sa.Column("conversation_id", sa.Text,
                  sa.ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("metrics_rev", sa.Integer, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("queued", sa.Boolean, nullable=False),
        sa.Column("closed_at", _TIME),
        sa.Column("effort_score", sa.SmallInteger),
        sa.Column("started_at", _TIME),
        sa.Column("intent", sa.Text),
        sa.Column("model_version", sa.Text),
        sa.Column("first_sentiment", sa.Float),
        sa.Column("last_sentiment", sa.Float),
        sa.Column("sentiment_messages", sa.Integer, nullable=False),
        sa.Column("last_sender", sa.Text),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("escalated", sa.Boolean, nullable=False),
        sa.Column("involved", sa.Boolean, nullable=False),
        sa.Column("people", _JSON),
        sa.Column("day", sa.Text, nullable=False),
        sa.Column("resolution_seconds", sa.Float),
        sa.Column("bot_turns", sa.Integer, nullable=False),
        sa.Column("bot_model", sa.Text),
        sa.Column("turns_by_model", _JSON),
    )
    op.create_index("ix_conversation_summaries_created_at", "conversation_summaries",
                    ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_conversation_summaries_created_at", "conversation_summaries")
    op.drop_table("conversation_summaries")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("metrics_rev")
