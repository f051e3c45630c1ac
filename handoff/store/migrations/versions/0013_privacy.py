"""Customers' data (docs/security.md, "Customers' data").

* ``messages.masked_at``, ``notes.masked_at``: when the retention job masked the PII of the
  row's text (null: not yet); the job's scan is ``(masked_at, created_at)``.
* ``conversations.erased_at``: when an admin erased the conversation (its messages, notes and
  held replies deleted, its corrections masked, the row kept as a closed tombstone).

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("erased_at", _TIME))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("masked_at", _TIME))
    with op.batch_alter_table("notes") as batch:
        batch.add_column(sa.Column("masked_at", _TIME))
    op.create_index("ix_messages_masked_at_created_at", "messages", ["masked_at", "created_at"])
    op.create_index("ix_notes_masked_at_created_at", "notes", ["masked_at", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_notes_masked_at_created_at", "notes")
    op.drop_index("ix_messages_masked_at_created_at", "messages")
    with op.batch_alter_table("notes") as batch:
        batch.drop_column("masked_at")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("masked_at")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("erased_at")
