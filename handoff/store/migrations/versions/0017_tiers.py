"""Certification tiers instead of three ranks, and token versions (issue 15).

* ``users.role`` becomes ``users.tier``, without the old CHECK on three values: the tiers and
  their rights are data of :mod:`handoff.web.rights`, and the store checks the name against
  :data:`handoff.store.records.TIERS`. Existing users keep their name, which is a tier with the
  same rights as before: ``agent``, ``trainer``, ``admin``.
* ``users.token_version``: every token carries the version it was issued under; logging out,
  disabling the user or resetting the password bumps it, which ends every older token at once.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_ROLES = ("agent", "trainer", "admin")


def upgrade() -> None:
    with op.batch_alter_table("users", recreate="always") as batch:
        batch.drop_constraint("ck_users_role", type_="check")
        batch.alter_column("role", new_column_name="tier", existing_type=sa.Text,
                           existing_nullable=False)
        batch.add_column(sa.Column("token_version", sa.Integer, nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    # Tiers the old ranks did not know fall back to the rank with no more rights than theirs.
    users = sa.table("users", sa.column("tier", sa.Text))
    op.execute(sa.update(users).where(users.c.tier.in_(("trainee", "reviewer", "lead")))
               .values(tier="agent"))
    with op.batch_alter_table("users", recreate="always") as batch:
        batch.drop_column("token_version")
        batch.alter_column("tier", new_column_name="role", existing_type=sa.Text,
                           existing_nullable=False)
    quoted = ", ".join(f"'{v}'" for v in _OLD_ROLES)
    with op.batch_alter_table("users", recreate="always") as batch:
        batch.create_check_constraint("ck_users_role", f"role IN ({quoted})")
