"""Model versions: every model a retraining made, which one is live, and who deployed it.

``model_versions``: one row per Rasa model (its ``model_id``), with the proof it passed, who
retrained and who deployed it, and the override reason when a trainer deployed it despite
regressions; ``corrections.fixed_by_model``: the model whose training included the correction
and that gets its test story right. Described in docs/store.md.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("model_id", sa.Text, primary_key=True),
        sa.Column("file", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("trained_at", _TIME),
        sa.Column("retrained_by", sa.Text),
        sa.Column("corrections", _JSON),
        sa.Column("proof", _JSON),
        sa.Column("deployed_at", _TIME),
        sa.Column("deployed_by", sa.Text),
        sa.Column("override", sa.Text),
    )
    with op.batch_alter_table("corrections") as batch:
        batch.add_column(sa.Column("fixed_by_model", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("corrections") as batch:
        batch.drop_column("fixed_by_model")
    op.drop_table("model_versions")
