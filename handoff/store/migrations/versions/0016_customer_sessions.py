"""Customer sessions that cannot be hijacked (issue 15).

* ``customer_sessions``: one row per customer session id that a customer has spoken in, with
  the SHA-256 of the random secret the gateway gave the widget (never the secret itself). A
  ``session_request`` for a known session id joins it only when it presents that secret
  (``HANDOFF_CUSTOMER_SESSIONS=secure``). The row is written at the customer's first message,
  together with the conversation: a ``session_request`` alone keeps nothing.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_sessions",
        sa.Column("session_id", sa.Text, primary_key=True),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("customer_sessions")
