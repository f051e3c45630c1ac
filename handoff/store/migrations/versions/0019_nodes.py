"""Several gateway nodes on one store (issue 17): the node that runs a conversation's work.

``conversations.node_id`` names the gateway node whose process runs the conversation's Rasa
call or the timer of its held reply, and is NULL when neither runs. A node that finds the
named node gone takes the work over (docs/deploy.md, "Several nodes").

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("node_id", sa.Text))
        batch.create_index("ix_conversations_node_id", ["node_id"])


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ix_conversations_node_id")
        batch.drop_column("node_id")
