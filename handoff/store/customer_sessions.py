"""Customer sessions' secrets: the ``customer_sessions`` table (``docs/store.md``,
``docs/security.md``). The gateway keeps only the SHA-256 of each secret; hashing and comparing
is :mod:`handoff.web.customers`' job. Part of :class:`~handoff.store.Store`."""

from __future__ import annotations

import sqlalchemy as sa

from handoff.store.database import Database, now
from handoff.store.schema import customer_sessions

__all__ = ["CustomerSessionStore"]


class CustomerSessionStore(Database):
    """The hash of each customer session's secret."""

    async def customer_session_hash(self, session_id: str) -> str | None:
        """The stored hash of the session's secret, or None for a session nobody spoke in."""
        async with self._tx(write=False) as conn:
            value = (await conn.execute(
                sa.select(customer_sessions.c.secret_hash)
                .where(customer_sessions.c.session_id == session_id))).scalar_one_or_none()
        return None if value is None else str(value)

    async def claim_customer_session(self, session_id: str, secret_hash: str) -> bool:
        """Record the session's secret hash if the session has none yet. True when the session
        is now this secret's (newly recorded or recorded before with the same hash)."""
        try:
            async with self._tx(write=True) as conn:
                existing = (await conn.execute(
                    sa.select(customer_sessions.c.secret_hash)
                    .where(customer_sessions.c.session_id == session_id))).scalar_one_or_none()
                if existing is not None:
                    return bool(existing == secret_hash)
                await conn.execute(sa.insert(customer_sessions).values(
                    session_id=session_id, secret_hash=secret_hash, created_at=now()))
        except sa.exc.IntegrityError:  # a concurrent claim came first
            return await self.customer_session_hash(session_id) == secret_hash
        return True
