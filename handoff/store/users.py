"""Console accounts and the audit log: the ``users`` and ``audit_log`` tables
(``docs/store.md``). Hashing and checking passwords is :mod:`handoff.web.auth`'s job; the store
keeps the rows. Part of :class:`~handoff.store.Store`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa

from handoff.errors import Conflict, NotFound
from handoff.store.database import Conn, Database, check_limit, now, one_of, record
from handoff.store.records import TIERS, AuditEntry, Role, User
from handoff.store.schema import audit_log, users

__all__ = ["AlreadyExists", "UserStore"]


class AlreadyExists(Conflict):
    """A user with that username exists."""

    code = "already_exists"


class UserStore(Database):
    """Users and the audit log."""

    async def create_user(
        self, username: str, *, password_hash: str, tier: Role, disabled: bool = False
    ) -> User:
        """Insert a user; ``AlreadyExists`` (409) if the username is taken."""
        one_of("tier", tier, TIERS)
        try:
            async with self._tx(write=True) as conn:
                row = (await conn.execute(
                    sa.insert(users).values(
                        username=username, password_hash=password_hash, tier=tier,
                        created_at=now(), disabled=disabled,
                    ).returning(*users.c)
                )).one()
        except sa.exc.IntegrityError as exc:
            raise AlreadyExists(f"user {username!r} exists", username=username) from exc
        return record(User, row)

    async def create_first_user(
        self, username: str, *, password_hash: str, tier: Role
    ) -> User | None:
        """Insert the user only if there is no user at all; None if there was one."""
        one_of("tier", tier, TIERS)
        try:
            async with self._tx(write=True) as conn:
                count = (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one()
                if count:
                    return None
                row = (await conn.execute(
                    sa.insert(users).values(
                        username=username, password_hash=password_hash, tier=tier,
                        created_at=now(), disabled=False,
                    ).returning(*users.c)
                )).one()
        except sa.exc.IntegrityError:
            return None  # a concurrent process created it first
        return record(User, row)

    async def get_user(self, username: str) -> User:
        """The user, or ``NotFound``."""
        async def read(conn: Conn) -> Any:
            return (await conn.execute(sa.select(users).where(users.c.username == username))
                    ).first()
        row = await self._run(read, write=False)
        if row is None:
            raise NotFound(f"no user {username!r}", username=username)
        return record(User, row)

    async def list_users(self, *, after: str | None = None, limit: int | None = 100) -> list[User]:
        """Users by username, the page after the username ``after``."""
        check_limit(limit)
        query = sa.select(users).order_by(users.c.username)
        if after is not None:
            query = query.where(users.c.username > after)
        async with self._tx(write=False) as conn:
            return [record(User, row) for row in await conn.execute(query.limit(limit))]

    async def users_by_name(self, usernames: Collection[str]) -> dict[str, User]:
        """The users of ``usernames`` that exist, by username (one query: the notifier checks
        the users of every open ``/agent`` socket before each push)."""
        if not usernames:
            return {}

        async def read(conn: Conn) -> dict[str, User]:
            rows = await conn.execute(sa.select(users).where(
                users.c.username.in_(list(usernames))))
            return {row.username: record(User, row) for row in rows}
        return await self._run(read, write=False)

    async def count_users(self) -> int:
        """How many users exist (disabled ones included)."""
        async with self._tx(write=False) as conn:
            count = (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one()
            return int(count)

    async def update_user(
        self,
        username: str,
        *,
        password_hash: str | None = None,
        tier: Role | None = None,
        disabled: bool | None = None,
        bump_token_version: bool = False,
    ) -> User:
        """Change the given fields of a user (``bump_token_version``: end every token issued
        so far); ``NotFound`` if there is no such user."""
        values: dict[str, Any] = {}
        if password_hash is not None:
            values["password_hash"] = password_hash
        if tier is not None:
            one_of("tier", tier, TIERS)
            values["tier"] = tier
        if bump_token_version:
            values["token_version"] = users.c.token_version + 1
        if disabled is not None:
            values["disabled"] = disabled
        if not values:
            return await self.get_user(username)
        async with self._tx(write=True) as conn:
            row = (await conn.execute(
                sa.update(users).where(users.c.username == username)
                .values(**values).returning(*users.c)
            )).first()
        if row is None:
            raise NotFound(f"no user {username!r}", username=username)
        return record(User, row)

    async def audit(
        self,
        actor: str,
        action: str,
        *,
        target: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Append to the audit log: ``actor`` (a username or "system") did ``action`` to
        ``target`` (e.g. "conversation:abc", "user:bob")."""
        async def write(conn: Conn) -> AuditEntry:
            return record(AuditEntry, (await conn.execute(
                sa.insert(audit_log).values(
                    created_at=now(), actor=actor, action=action, target=target, details=details
                ).returning(*audit_log.c)
            )).one())
        return await self._run(write, write=True)

    async def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        before_id: int | None = None,
        limit: int | None = 100,
        actions: Sequence[str] | None = None,
    ) -> list[AuditEntry]:
        """Audit entries, newest first (the page before the entry ``before_id``); ``actions``:
        only these actions (the trainers' part of the log)."""
        check_limit(limit)
        query = sa.select(audit_log)
        if before_id is not None:
            query = query.where(audit_log.c.id < before_id)
        if actor is not None:
            query = query.where(audit_log.c.actor == actor)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if actions is not None:
            query = query.where(audit_log.c.action.in_(list(actions)))
        if target is not None:
            query = query.where(audit_log.c.target == target)
        async with self._tx(write=False) as conn:
            rows = await conn.execute(query.order_by(audit_log.c.id.desc()).limit(limit))
            return [record(AuditEntry, row) for row in rows]
