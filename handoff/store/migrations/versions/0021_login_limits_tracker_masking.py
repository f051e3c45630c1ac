"""Failed logins in the database, and Rasa's trackers masked by the retention job (issue 15).

* ``login_limits``: one row per ``user:<name>`` or ``ip:<address>`` with recent failed logins,
  their count, the time before which no attempt is allowed and whether that is a lockout
  (docs/security.md, "Login limits"): every gateway node and a restart see the same back-off
  and lockout, and an admin's unlock lifts it on all of them.
* ``conversations.tracker_masked_before``: the retention job has masked the events of the
  conversation's Rasa tracker up to this time (its cutoff then); the next pass masks the
  events from there to its own cutoff, so every event is masked once.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_limits",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True)),
        sa.Column("locked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("tracker_masked_before", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("tracker_masked_before")
    op.drop_table("login_limits")
