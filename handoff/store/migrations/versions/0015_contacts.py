"""A waiting customer's contact address (docs/supervision.md, "Nobody waits in silence").

* ``conversation_contacts``: the e-mail address or phone number a customer left while waiting
  for a person, one per conversation (a new one replaces it), with when.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_contacts",
        sa.Column("conversation_id", sa.Text,
                  sa.ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("contact", sa.Text, nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("conversation_contacts")
