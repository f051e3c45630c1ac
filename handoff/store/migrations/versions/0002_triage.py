"""Triage, and the actions of a turn: what the gateway learns of each customer message.

``conversations.triage``: ``{"history": ..., "assessment": ...}`` (the triage history that the
next assessment continues from, and the latest assessment); ``messages.triage``: the assessment
of that customer message (risk, action, reasons); ``messages.actions``: the actions Rasa
executed for it. All are described in docs/store.md.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("triage", _JSON, nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("triage", _JSON, nullable=True))
        batch.add_column(sa.Column("actions", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("actions")
        batch.drop_column("triage")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("triage")
