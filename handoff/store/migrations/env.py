"""Alembic environment for the handoff store; configured in code by ``handoff.store``.

``Store.migrate()`` hands Alembic an open connection in ``config.attributes["connection"]``;
without one (a ``Config`` built by hand with ``sqlalchemy.url`` set), this file opens its own
async engine on that URL. Migrations are frozen copies of the schema: they never import the
store's table definitions.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# handoff.store.alembic_config sets this option; the fallback keeps a hand-made Config working.
VERSION_TABLE = context.config.get_main_option("version_table") or "handoff_alembic_version"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table=VERSION_TABLE,
        transaction_per_migration=False,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_own_engine(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        context.configure(
            url=context.config.get_main_option("sqlalchemy.url"),
            version_table=VERSION_TABLE,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("handoff migrations need a connection or sqlalchemy.url")
    asyncio.run(_run_own_engine(url))


_main()
