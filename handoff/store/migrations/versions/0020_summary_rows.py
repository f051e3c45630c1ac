"""The dashboard's queue stays, ownerships, owners and held replies kept with the summaries
(issue 16, docs/metrics.md "Speed").

* ``summary_people``: what ``conversation_summaries.people`` kept as JSON (a conversation's
  queue stays, its finished ownerships with their length, its owners), one row each, so the
  queue wait, the handling time, the workload and the queue's length are counted, summed and
  their medians taken in SQL instead of parsing one JSON document per conversation.
* ``summary_replies``: a conversation's held replies as the figures count them (the day each
  was held, the intent of the message it answered, the seconds to an agent's decision), so the
  accuracy, enablement and learning figures no longer join every held reply to its message.
* ``summary_days``: the summary groups (conversations counted per day, intent, model,
  involvement, escalation and outcome, with the survey's and the sentiment's sums) of whole
  UTC days, built by the first read that needs a day and deleted with any summary of that day
  that is written again, so a month is read as ~800 rows instead of one per conversation.
* ``conversation_summaries.people`` is dropped.
* The ``created_at`` indexes of ``conversations`` and ``conversation_summaries`` also carry
  the id and the stamp, so the stale check of every dashboard read (the period's
  conversations whose summary is missing or older) reads the two indexes, not the tables.
* Every summary is deleted: the summaries are a cache stamped with their conversation's
  ``(version, last_seq, metrics_rev)``, and the old ones have no ``summary_people`` rows. The
  first dashboard read of a period recomputes that period's summaries (as after 0010).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_TIME = sa.DateTime(timezone=True)


_STAMP = ["version", "last_seq", "metrics_rev"]


def _stamp_indexes(include: bool) -> None:
    """The two ``created_at`` indexes, with the id and stamp after it or not."""
    for table, key in (("conversations", "id"), ("conversation_summaries", "conversation_id")):
        name = f"ix_{table}_created_at"
        op.drop_index(name, table)
        op.create_index(name, table, ["created_at", *([key, *_STAMP] if include else [])])


def upgrade() -> None:
    _stamp_indexes(include=True)
    op.execute("DELETE FROM conversation_summaries")
    with op.batch_alter_table("conversation_summaries") as batch:
        batch.drop_column("people")
    op.create_table(
        "summary_people",
        sa.Column("conversation_id", sa.Text,
                  sa.ForeignKey("conversation_summaries.conversation_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("ord", sa.Integer, primary_key=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("agent", sa.Text),
        sa.Column("start_at", _TIME),
        sa.Column("end_at", _TIME),
        sa.Column("how", sa.Text),
        sa.Column("seconds", sa.Float),
        sa.Column("started", sa.Boolean, nullable=False),
        sa.Column("conversation_intent", sa.Text),
        sa.Column("conversation_model", sa.Text),
    )
    op.create_index("ix_summary_people_created_at", "summary_people", ["created_at"])
    op.create_table(
        "summary_replies",
        sa.Column("conversation_id", sa.Text,
                  sa.ForeignKey("conversation_summaries.conversation_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("ord", sa.Integer, primary_key=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("day", sa.Text, nullable=False),
        sa.Column("intent", sa.Text),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("decision", sa.Text),
        sa.Column("decided_by", sa.Text),
        sa.Column("latency", sa.Float),
        sa.Column("started", sa.Boolean, nullable=False),
        sa.Column("conversation_intent", sa.Text),
        sa.Column("conversation_model", sa.Text),
    )
    op.create_index("ix_summary_replies_created_at", "summary_replies", ["created_at"])
    op.create_table(
        "summary_days",
        sa.Column("day", sa.Text, nullable=False),
        sa.Column("intent", sa.Text),
        sa.Column("model_version", sa.Text),
        sa.Column("involved", sa.Boolean),
        sa.Column("escalated", sa.Boolean),
        sa.Column("outcome", sa.Text),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("answers", sa.Integer, nullable=False),
        sa.Column("effort_sum", sa.Integer, nullable=False),
        sa.Column("pairs", sa.Integer, nullable=False),
        sa.Column("first_sum", sa.Float, nullable=False),
        sa.Column("last_sum", sa.Float, nullable=False),
        sa.Column("change_sum", sa.Float, nullable=False),
    )
    op.create_index("ix_summary_days_day", "summary_days", ["day"])


def downgrade() -> None:
    _stamp_indexes(include=False)
    op.drop_index("ix_summary_days_day", "summary_days")
    op.drop_table("summary_days")
    op.drop_index("ix_summary_replies_created_at", "summary_replies")
    op.drop_table("summary_replies")
    op.drop_index("ix_summary_people_created_at", "summary_people")
    op.drop_table("summary_people")
    op.execute("DELETE FROM conversation_summaries")  # recomputed, with people, on the next read
    with op.batch_alter_table("conversation_summaries") as batch:
        batch.add_column(sa.Column("people", _JSON))
