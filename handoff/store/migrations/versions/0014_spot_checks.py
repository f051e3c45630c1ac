"""Spot-checks of conversations the bot handled alone (docs/console.md, "Spot-checks").

* ``spot_checks``: one row per ended bot-only conversation, the sampling decided once (the
  random draw, the probability it was compared with and why): ``skipped`` (not sampled),
  ``open`` (in the QA queue) or ``done`` (a reviewer finished it).
* ``spot_check_marks``: a reviewer's verdict on one bot message of an open spot-check:
  ``right``, ``edited`` or ``relabelled`` (the latter two with the correction they became), with
  the intent, action and model version of the reply, which the accuracy metric splits by.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "spot_checks",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("conversation_id", sa.Text,
                  sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("draw", sa.Float, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("reason", _JSON),
        sa.Column("intent", sa.Text),
        sa.Column("model_version", sa.Text),
        sa.Column("effort_score", sa.SmallInteger),
        sa.Column("opened_at", _TIME),
        sa.Column("finished_at", _TIME),
        sa.Column("finished_by", sa.Text),
        sa.UniqueConstraint("conversation_id", name="uq_spot_checks_conversation"),
    )
    op.create_index("ix_spot_checks_status", "spot_checks", ["status", "id"])
    op.create_table(
        "spot_check_marks",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("spot_check_id", _ID, sa.ForeignKey("spot_checks.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("message_id", _ID, sa.ForeignKey("messages.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("correction_id", _ID, sa.ForeignKey("corrections.id", ondelete="SET NULL")),
        sa.Column("reviewer", sa.Text, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("intent", sa.Text),
        sa.Column("action", sa.Text),
        sa.Column("model_version", sa.Text),
        sa.UniqueConstraint("spot_check_id", "message_id", name="uq_spot_check_marks_message"),
    )
    op.create_index("ix_spot_check_marks_created_at", "spot_check_marks", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_spot_check_marks_created_at", "spot_check_marks")
    op.drop_table("spot_check_marks")
    op.drop_index("ix_spot_checks_status", "spot_checks")
    op.drop_table("spot_checks")
