"""Failed logins, kept in the database so that every gateway node and a restart see the same
back-off and lockout: the ``login_limits`` table (``docs/store.md``, ``docs/security.md``). One
row per key (``user:<name>`` or ``ip:<address>``); the policy (how many failures, how long to
wait) is :mod:`handoff.web.login_limits`' job. Part of :class:`~handoff.store.Store`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from handoff.store.database import Database
from handoff.store.schema import login_limits

__all__ = ["LoginLimit", "LoginLimitStore"]


@dataclass(frozen=True)
class LoginLimit:
    """The failed logins of one key and the time before which it may not try again."""

    key: str
    failures: int
    not_before: datetime | None
    locked: bool


class LoginLimitStore(Database):
    """Failed logins per username and per client address."""

    async def login_limits(self, keys: Iterable[str]) -> dict[str, LoginLimit]:
        """The rows of ``keys`` that exist."""
        async with self._tx(write=False) as conn:
            rows = await conn.execute(sa.select(login_limits).where(
                login_limits.c.key.in_(list(keys))))
            return {row.key: LoginLimit(row.key, row.failures, row.not_before, row.locked)
                    for row in rows}

    async def count_login_failure(self, key: str, *, at: datetime,
                                  forget_before: datetime) -> int:
        """One more failure for ``key`` (atomic, whichever node counts it); how many it has
        now. Rows last changed before ``forget_before`` that hold nothing back any more are
        deleted first, so the table keeps only recent failures."""
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite_dialect.insert
        upsert = insert(login_limits).values(key=key, failures=1, locked=False, updated_at=at)
        stmt = upsert.on_conflict_do_update(
            index_elements=[login_limits.c.key],
            set_={"failures": login_limits.c.failures + 1, "updated_at": at},
        ).returning(login_limits.c.failures)
        async with self._tx(write=True) as conn:
            await conn.execute(sa.delete(login_limits).where(
                login_limits.c.updated_at < forget_before,
                sa.or_(login_limits.c.not_before.is_(None), login_limits.c.not_before < at)))
            return int((await conn.execute(stmt)).scalar_one())

    async def hold_login(self, key: str, *, not_before: datetime, locked: bool) -> None:
        """``key`` may not try again before ``not_before`` (``locked``: a lockout)."""
        async with self._tx(write=True) as conn:
            await conn.execute(sa.update(login_limits).where(login_limits.c.key == key)
                               .values(not_before=not_before, locked=locked))

    async def clear_login_limits(self, key: str) -> bool:
        """Forget ``key``'s failures; whether it had any."""
        async with self._tx(write=True) as conn:
            result = await conn.execute(sa.delete(login_limits).where(login_limits.c.key == key))
            return bool(result.rowcount)

    async def locked_logins(self, *, at: datetime, prefix: str) -> list[str]:
        """The keys starting with ``prefix`` locked out at ``at``, sorted."""
        async with self._tx(write=False) as conn:
            rows = await conn.execute(sa.select(login_limits.c.key).where(
                login_limits.c.key.startswith(prefix, autoescape=True),
                login_limits.c.locked.is_(True), login_limits.c.not_before > at)
                .order_by(login_limits.c.key))
            return [row.key for row in rows]
