"""The gateway's database: one class, :class:`Store`, owns it and all of its SQL.

SQLite (WAL) by default, PostgreSQL by URL; the schema is made by the Alembic migrations in
``handoff/store/migrations`` (configured in code, no alembic.ini) and described table by table in
``docs/store.md``. Every public method is async, runs in one transaction and returns plain
frozen dataclasses. Errors come from :mod:`handoff.errors` (``NotFound`` 404, ``Conflict`` 409,
``BadRequest`` 400, ``ServiceUnavailable`` 503 when the database does not answer).

    store = Store("sqlite+aiosqlite:///var/handoff.db")
    await store.migrate()
    ...
    await store.close()

The methods live with the tables they write, over one engine and one transaction helper
(:mod:`handoff.store.database`): conversations, messages and notes
(:mod:`~handoff.store.conversations`), pending replies and corrections
(:mod:`~handoff.store.reviews`), the router step saved whole (:mod:`~handoff.store.steps`),
users and the audit log (:mod:`~handoff.store.users`), model versions
(:mod:`~handoff.store.model_versions`), spot-checks (:mod:`~handoff.store.spot_checks`),
the dashboard's reads (:mod:`~handoff.store.metrics`), customers' data exported, erased and
masked (:mod:`~handoff.store.privacy`), customer sessions' secret hashes
(:mod:`~handoff.store.customer_sessions`), failed logins
(:mod:`~handoff.store.login_limits`).
Callers use :class:`Store`, imported from :mod:`handoff.store`.

Command line: ``python -m handoff.store migrate --url URL`` (:mod:`handoff.store.__main__`).
"""

from __future__ import annotations

from handoff.store.customer_sessions import CustomerSessionStore
from handoff.store.login_limits import LoginLimitStore
from handoff.store.metrics import MetricsStore
from handoff.store.model_versions import ModelStore
from handoff.store.privacy import PrivacyStore
from handoff.store.spot_checks import SpotCheckStore
from handoff.store.steps import StepStore
from handoff.store.users import UserStore

__all__ = ["Store"]


class Store(StepStore, SpotCheckStore, UserStore, ModelStore, MetricsStore, PrivacyStore,
            CustomerSessionStore, LoginLimitStore):
    """The gateway's database. ``url``: ``sqlite+aiosqlite:///path.db`` (the default kind;
    the parent folder is created) or ``postgresql+asyncpg://user@host/db``."""
