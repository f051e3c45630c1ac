"""Two more correction types: the agents' whispers to the bot (issue 14).

``corrections.type`` may also be ``slot_set`` (an agent set or corrected a slot in Rasa's
tracker) and ``action_chosen`` (an agent chose the bot's next action): the CHECK is recreated
with the contract's types (contracts/correction_record.py, docs/corrections.md).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = ("approved", "edited", "replaced", "written", "relabelled", "takeover")
_NEW = (*_OLD, "slot_set", "action_chosen")


def _check(values: Sequence[str]) -> str:
    return "type IN ({})".format(", ".join(f"'{v}'" for v in values))


def upgrade() -> None:
    with op.batch_alter_table("corrections") as batch:
        batch.drop_constraint("ck_corrections_type", type_="check")
        batch.create_check_constraint("ck_corrections_type", _check(_NEW))


def downgrade() -> None:
    # The old schema cannot hold a whisper: its corrections are deleted.
    corrections = sa.table("corrections", sa.column("type", sa.Text))
    op.execute(sa.delete(corrections).where(corrections.c.type.in_(("slot_set",
                                                                    "action_chosen"))))
    with op.batch_alter_table("corrections") as batch:
        batch.drop_constraint("ck_corrections_type", type_="check")
        batch.create_check_constraint("ck_corrections_type", _check(_OLD))
