"""Fixtures of the gateway's store tests: every test that takes ``store`` runs on a fresh SQLite
file and on a fresh schema in a PostgreSQL database this session creates and drops. The
PostgreSQL runs are skipped, with the reason in the summary, only when no server answers at
``TEST_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``); with
``TEST_REQUIRE_PG=1`` (set by CI) they fail instead."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
import sqlalchemy as sa

from handoff.store import Store

PG_ADMIN_DSN = os.environ.get(
    "TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def _pg_admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end; yields its
    SQLAlchemy URL."""
    name = f"handoff_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(PG_ADMIN_DSN, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        reason = (f"PostgreSQL not reachable at {PG_ADMIN_DSN} ({exc!r}); start it with "
                  "pg_ctlcluster or set TEST_PG_DSN")
        if os.environ.get("TEST_REQUIRE_PG"):
            pytest.fail(reason)
        pytest.skip(reason)
    url = sa.make_url(PG_ADMIN_DSN).set(drivername="postgresql+asyncpg", database=name)
    yield url.render_as_string(hide_password=False)
    asyncio.run(_pg_admin(PG_ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a new SQLite file, or the session's PostgreSQL database
    with its schema emptied."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'var' / 'handoff.db'}"
    url: str = request.getfixturevalue("pg_database")
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    asyncio.run(_pg_admin(dsn, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))
    return url


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated store on an empty database."""
    s = Store(store_url)
    await s.migrate()
    yield s
    await s.close()


