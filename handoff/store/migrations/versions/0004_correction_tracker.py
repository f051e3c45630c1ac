"""A correction's tracker events are fetched after its decision commits, and retried.

An agent's decision and its correction are written in one transaction, without waiting for
Rasa; the tracker events are fetched afterwards. ``corrections.tracker_status``: ``pending``
(not fetched yet), ``fetched`` (``tracker_events`` hold them), ``failed`` (the last fetch
failed; retried at the gateway's next start); ``tracker_error``: why the last fetch failed;
``tracker_attempts``: how many fetches were tried. Rows from before: ``fetched`` when they hold
events or carry the customer's text themselves (a trainer's label needs no tracker), else
``failed`` (stored when Rasa could not be asked), so the gateway fetches them again.
Described in docs/store.md.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_BEFORE_0004 = "no tracker events were stored (before migration 0004): Rasa could not be asked"


def upgrade() -> None:
    with op.batch_alter_table("corrections") as batch:
        batch.add_column(sa.Column("tracker_status", sa.Text, nullable=False,
                                   server_default="pending"))
        batch.add_column(sa.Column("tracker_error", sa.Text, nullable=True))
        batch.add_column(sa.Column("tracker_attempts", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.create_check_constraint(
            "ck_corrections_tracker_status",
            "tracker_status IN ('pending', 'fetched', 'failed')")
    corrections = sa.table(
        "corrections", sa.column("id", sa.Integer), sa.column("tracker_events", _JSON),
        sa.column("before", _JSON), sa.column("tracker_status", sa.Text),
        sa.column("tracker_error", sa.Text))
    bind = op.get_bind()
    fetched: list[int] = []
    failed: list[int] = []
    for cid, events, before in bind.execute(
            sa.select(corrections.c.id, corrections.c.tracker_events, corrections.c.before)):
        has_text = isinstance(before, dict) and isinstance(before.get("text"), str)
        (fetched if events or has_text else failed).append(cid)
    if fetched:
        bind.execute(sa.update(corrections).where(corrections.c.id.in_(fetched))
                     .values(tracker_status="fetched"))
    if failed:
        bind.execute(sa.update(corrections).where(corrections.c.id.in_(failed))
                     .values(tracker_status="failed", tracker_error=_BEFORE_0004))


def downgrade() -> None:
    with op.batch_alter_table("corrections") as batch:
        batch.drop_constraint("ck_corrections_tracker_status", type_="check")
        batch.drop_column("tracker_attempts")
        batch.drop_column("tracker_error")
        batch.drop_column("tracker_status")
