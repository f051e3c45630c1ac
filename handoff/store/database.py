"""The store's one engine and its transactions: :class:`Database`, the base every table group
of :class:`~handoff.store.Store` builds on, with the schema's migrations.

SQLite (WAL) by default, PostgreSQL by URL. A write transaction takes SQLite's write lock up
front (``BEGIN IMMEDIATE``); an in-memory SQLite database shares one connection, so its
transactions take turns. On a SQLite file the process's write transactions also take turns
before they take a connection (:class:`_WriteTurns`), agents' writes (:meth:`Database.ahead`)
before the others, and the transactions on the hot path (:meth:`Database._run`: a router
step, the agents' users) run whole in one of the store's threads on the plain ``sqlite3``
driver: one hand-off from the event loop per transaction instead of several per statement.
On PostgreSQL a transaction is few round trips: no ``pool_pre_ping`` (a connection the
server closed is dropped when taken, and :meth:`Database._run` runs a transaction broken
before its commit once more), and the reads of :meth:`Database._run` go without ``BEGIN``
and ``COMMIT``. Errors come from :mod:`handoff.errors` (``ServiceUnavailable`` 503 when the
database does not answer). Described in ``docs/store.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Protocol, Self, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import StaticPool

from handoff.errors import BadRequest, ServiceUnavailable

__all__ = ["MIGRATIONS_DIR", "VERSION_TABLE", "Conn", "Database", "alembic_config"]

MIGRATIONS_DIR: Final = Path(__file__).resolve().with_name("migrations")
VERSION_TABLE: Final = "handoff_alembic_version"
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
_MIGRATION_LOCK_KEY: Final = 0x68616E646F6666  # "handoff": one migrator at a time on PostgreSQL
_WRITE: Final = "handoff_write"
_AHEAD: contextvars.ContextVar[bool] = contextvars.ContextVar("handoff_store_ahead", default=False)
SQLITE_THREADS: Final = 4  # threads running whole transactions on a SQLite file (_run)
AHEAD_POOL_SIZE: Final = 2  # PostgreSQL connections kept for the agents' transactions (ahead)
AHEAD_POOL_OVERFLOW: Final = 3

R = TypeVar("R")


# --------------------------------------------------------------------------- helpers of the table groups


def now() -> datetime:
    """The store's clock: an aware UTC datetime."""
    return datetime.now(timezone.utc)


def record(cls: Callable[..., R], row: sa.Row[Any]) -> R:
    """A row as the record ``cls`` (its fields are the row's columns)."""
    return cls(**dict(zip(row._fields, row, strict=True)))


def one_of(name: str, value: object, allowed: Sequence[str]) -> None:
    """``BadRequest`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def values_of(name: str, value: str | Sequence[str], allowed: Sequence[str]) -> list[str]:
    """A filter's value or values, each checked with :func:`one_of`."""
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        one_of(name, item, allowed)
    return items


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise BadRequest(f"limit must be at least 1; got {limit}")


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration of the store, built in code (there is no alembic.ini).

    With ``url`` Alembic opens its own engine; ``Store.migrate`` passes a connection instead.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# Alembic keeps its migration context in module globals, so two migrations interleaving on one
# event loop (several Store objects migrating at once) corrupt each other: one at a time per
# loop. Across processes, the write transaction (SQLite) or advisory lock (PostgreSQL) orders them.
_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 driver (its legacy mode skips it for SELECT and DDL);
    # _on_sqlite_begin emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # The busy timeout first: switching a new file to WAL takes an exclusive lock, and another
    # connection opening it at the same moment must wait for it, not fail with "locked".
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    # A write transaction takes SQLite's write lock up front (waiting up to busy_timeout), so a
    # read-then-write transaction never fails with "database is locked" half way through.
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _drop_closed(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    # A pooled PostgreSQL connection whose server side has gone (a restart closes every
    # connection; asyncpg sees the socket close) is replaced before it is used, without the
    # round trips of pool_pre_ping. One broken without a word is caught by _run's retry.
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise sa.exc.DisconnectionError("the pooled connection was closed by the server")


# SQLSTATE classes of a server that cannot serve now, whatever the statement: 08 connection
# exception, 53 insufficient resources (53300 too many connections), 57P operator intervention
# (a shutdown, 57P03 cannot connect now while it starts)
_UNAVAILABLE_SQLSTATES: Final = ("08", "53", "57P")


def _unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot serve now (not that the statement is wrong):
    a lost or refused connection, or the server's SQLSTATE for it: a 503, not a 500."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, OSError)):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return isinstance(code, str) and code.startswith(_UNAVAILABLE_SQLSTATES)


def _broken_connection(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLAlchemy's report of a connection found broken (it has
    invalidated the connection, and the pool's older ones with it)."""
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


# --------------------------------------------------------------------------- the engine


class Conn(Protocol):
    """What a transaction's statements are run on: an ``AsyncConnection``, or inside one of
    the store's threads (:meth:`Database._run` on a SQLite file) a plain connection whose
    ``execute`` finishes at once."""

    async def execute(self, statement: Any, parameters: Any = None) -> Any: ...


class _InThread:
    """A plain (sync) connection that a transaction's coroutine awaits like an
    ``AsyncConnection``: each ``execute`` runs at once, in the thread running the coroutine,
    so the coroutine never suspends and runs to its end in that thread."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._conn.execute(statement, parameters)


def _run_whole(coro: Coroutine[Any, Any, R]) -> R:
    """Run ``coro`` to its end here, in one go: it awaits only :class:`_InThread`."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a transaction run in the store's thread awaited something other than "
                       "its connection")


class _WriteTurns:
    """A SQLite file's write transactions of this process, one at a time, in arrival order,
    those marked ``ahead`` first.

    Without it each writer takes a pooled connection and waits in SQLite's busy handler for
    the write lock, which sleeps up to 100 ms between tries: with a burst of customer
    messages (200 at once) the writers held every pooled connection, so reads waited for one
    too, and an agent's takeover waited seconds behind them (docs/performance.md, "The
    agents' takeover under load"). Here a writer waits without a connection and gets the lock
    the moment the one before commits. Other processes on the same file still meet
    ``BEGIN IMMEDIATE`` and the busy timeout."""

    def __init__(self) -> None:
        self._busy = False
        self._waiting: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())

    @contextlib.asynccontextmanager
    async def turn(self, ahead: bool) -> AsyncIterator[None]:
        if self._busy or any(self._waiting):
            ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            line = self._waiting[0 if ahead else 1]
            line.append(ticket)
            try:
                await ticket  # _release hands its turn over: _busy stays set
            except asyncio.CancelledError:
                if ticket.done() and not ticket.cancelled():
                    self._release()  # handed the turn just as it was cancelled: pass it on
                elif ticket in line:
                    line.remove(ticket)
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        for line in self._waiting:
            while line:
                ticket = line.popleft()
                if not ticket.done():
                    ticket.set_result(None)
                    return
        self._busy = False


class Database:
    """The engine of the store and its one transaction helper, :meth:`_tx`. ``url``:
    ``sqlite+aiosqlite:///path.db`` (the default kind; the parent folder is created) or
    ``postgresql+asyncpg://user@host/db``."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = sa.make_url(url)
        self.dialect: str = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        self._serialize = False
        self._write_turns: _WriteTurns | None = None
        if self.dialect == "sqlite":
            if parsed.get_driver_name() != "aiosqlite":
                raise ValueError(f"SQLite URLs must use the aiosqlite driver: {parsed!r}")
            database = parsed.database or ""
            if database in ("", ":memory:"):
                # One shared connection: transactions must take turns.
                kwargs["poolclass"] = StaticPool
                self._serialize = True
            else:
                self._write_turns = _WriteTurns()
                if not database.startswith("file:"):
                    Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        elif self.dialect == "postgresql":
            if parsed.get_driver_name() != "asyncpg":
                raise ValueError(f"PostgreSQL URLs must use the asyncpg driver: {parsed!r}")
            # no pool_pre_ping: it is three round trips per transaction (BEGIN, a query,
            # ROLLBACK), each a wait for the loaded event loop. A connection the server
            # closed is found without asking (_drop_closed), and _run runs a transaction
            # again on a new one when its connection broke before the commit.
        else:
            raise ValueError(f"unsupported database {parsed.get_backend_name()!r}: use SQLite or "
                             "PostgreSQL")
        self.url = parsed
        self._engine = create_async_engine(parsed, **kwargs)
        # a SQLite file: the hot path's transactions run whole in a thread (_run), on the
        # plain sqlite3 driver with the same pragmas and BEGIN
        self._threaded: sa.Engine | None = None
        self._threads: ThreadPoolExecutor | None = None
        if self._write_turns is not None:
            self._threaded = sa.create_engine(
                parsed.set(drivername="sqlite+pysqlite"), echo=echo,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
            self._threads = ThreadPoolExecutor(SQLITE_THREADS, thread_name_prefix="handoff-store")
        for engine in (self._engine.sync_engine, self._threaded):
            if self.dialect == "sqlite" and engine is not None:
                sa.event.listen(engine, "connect", _on_sqlite_connect)
                sa.event.listen(engine, "begin", _on_sqlite_begin)
        self._writer = self._engine.execution_options(**{_WRITE: True})
        # PostgreSQL: the agents' transactions (ahead) take their connections from a small
        # pool of their own, so that a burst of customers' transactions holding every
        # connection of the main pool does not keep a person's click waiting for one
        self._ahead_engine: Any = None
        # PostgreSQL: the reads of _run without BEGIN and COMMIT (each of their statements is
        # its own transaction, as each already sees its own snapshot in a transaction at READ
        # COMMITTED, PostgreSQL's default): one round trip a statement instead of three
        self._reader: Any = self._engine
        self._ahead_reader: Any = None
        if self.dialect == "postgresql":
            self._ahead_engine = create_async_engine(
                parsed, pool_size=AHEAD_POOL_SIZE, max_overflow=AHEAD_POOL_OVERFLOW, **kwargs)
            for engine in (self._engine.sync_engine, self._ahead_engine.sync_engine):
                sa.event.listen(engine, "checkout", _drop_closed)
            self._reader = self._engine.execution_options(isolation_level="AUTOCOMMIT")
            self._ahead_reader = self._ahead_engine.execution_options(
                isolation_level="AUTOCOMMIT")
        self._turn = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every pooled connection. The store can not be used afterwards."""
        await self._engine.dispose()
        if self._ahead_engine is not None:
            await self._ahead_engine.dispose()
        if self._threads is not None and self._threaded is not None:
            await asyncio.get_running_loop().run_in_executor(self._threads,
                                                             self._threaded.dispose)
            self._threads.shutdown(wait=True)

    @contextlib.asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """One transaction; commits when the block ends, rolls back on an exception."""
        turn: contextlib.AbstractAsyncContextManager[Any] = (
            self._turn if self._serialize
            else self._write_turns.turn(_AHEAD.get()) if write and self._write_turns is not None
            else contextlib.nullcontext()
        )
        engine = (self._ahead_engine if self._ahead_engine is not None and _AHEAD.get()
                  else self._writer if write else self._engine)
        try:
            async with turn, engine.begin() as conn:
                yield conn
        except (sa.exc.DBAPIError, OSError) as exc:
            if not _unavailable(exc):
                raise
            # Not str(exc): SQLAlchemy's text carries the statement and its parameters.
            raise ServiceUnavailable(
                f"the database does not answer ({type(exc).__name__})"
            ) from exc

    async def _run(self, body: Callable[[Conn], Coroutine[Any, Any, R]], *,
                   write: bool) -> R:
        """One transaction of ``body(conn)``, as :meth:`_tx` runs one, committed when it
        returns. On a SQLite file it runs whole in one of the store's threads (``body`` may
        await only ``conn``'s statements): one hand-off from the event loop and back instead
        of several per statement, each of which waits for the loop (docs/performance.md, "The
        agents' takeover under load"). Writers still take their turn first, in the order
        :meth:`ahead` gives; a transaction that began runs to its end even if its caller is
        cancelled meanwhile (its turn is held until then)."""
        if self._threaded is None or self._threads is None:
            if self.dialect == "postgresql":
                return await self._run_pg(body, write=write)
            async with self._tx(write=write) as conn:
                return await body(conn)
        engine = self._threaded.execution_options(**{_WRITE: True}) if write else self._threaded

        def run() -> R:
            with engine.begin() as conn:
                return _run_whole(body(_InThread(conn)))

        turn: contextlib.AbstractAsyncContextManager[Any] = (
            self._write_turns.turn(_AHEAD.get()) if write and self._write_turns is not None
            else contextlib.nullcontext())
        try:
            async with turn:
                done = asyncio.get_running_loop().run_in_executor(self._threads, run)
                try:
                    return await asyncio.shield(done)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await done  # the thread finishes it: the turn is held until then
                    raise
        except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as exc:
            raise ServiceUnavailable(
                f"the database does not answer ({type(exc).__name__})"
            ) from exc

    async def _run_pg(self, body: Callable[[Conn], Coroutine[Any, Any, R]], *,
                      write: bool) -> R:
        """:meth:`_run` on PostgreSQL. A read runs without ``BEGIN`` and ``COMMIT`` (one
        round trip a statement). A transaction whose connection breaks before its commit
        was sent (the server rolled it back: nothing of it was stored) runs once more on a
        new connection: a restarted server is met without a round trip before every
        transaction (pool_pre_ping). One broken at the commit is not run again (it may have
        committed): ``ServiceUnavailable``, as when the database is away."""
        ahead = _AHEAD.get()
        engine = (self._ahead_engine if ahead else self._writer) if write else (
            self._ahead_reader if ahead else self._reader)
        for retry in (True, False):
            committing = False
            try:
                async with engine.begin() as conn:
                    result = await body(conn)
                    committing = True
                return result
            except (sa.exc.DBAPIError, OSError) as exc:
                if retry and not committing and _broken_connection(exc):
                    continue
                if _unavailable(exc):
                    raise ServiceUnavailable(
                        f"the database does not answer ({type(exc).__name__})") from exc
                raise
        raise AssertionError("unreachable")

    @staticmethod
    @contextlib.contextmanager
    def ahead() -> Iterator[None]:
        """The transactions of this block (and of the tasks it starts) go before the others:
        an agent's action, a person waiting on a click, is not queued behind a burst of
        customer messages. On a SQLite file its write transactions go before the others
        waiting for their turn; on PostgreSQL (whose writers lock rows, not the database)
        all its transactions take their connections from a small pool of their own, never
        waiting for one behind the customers' (docs/performance.md, "The agents' takeover
        under load")."""
        token = _AHEAD.set(True)
        try:
            yield
        finally:
            _AHEAD.reset(token)

    @staticmethod
    @contextlib.contextmanager
    def in_line() -> Iterator[None]:
        """The transactions of this block (and of the tasks it starts) take their turn with
        everyone's, even inside :meth:`ahead`: for work started by an agent's click that
        nobody waits on (a Rasa call in the background, a timer), which would otherwise inherit
        the click's place ahead of the customers' messages."""
        token = _AHEAD.set(False)
        try:
            yield
        finally:
            _AHEAD.reset(token)

    @staticmethod
    def is_ahead() -> bool:
        """Whether this task's transactions go ahead (:meth:`ahead`)."""
        return _AHEAD.get()

    async def answers(self, timeout: float = 2.0) -> bool:
        """Whether the database answers a trivial query within ``timeout`` seconds
        (``/api/health``'s ``store``)."""
        async def select_one() -> None:
            async with self._tx(write=False) as conn:
                await conn.execute(sa.text("SELECT 1"))
        try:
            await asyncio.wait_for(select_one(), timeout)
        except (ServiceUnavailable, asyncio.TimeoutError):
            return False
        return True

    # ----------------------------------------------------------------- schema

    async def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (default: the newest). Safe to call on every start
        and from several processes at once."""
        cfg = alembic_config()

        def upgrade(sync_conn: Connection) -> None:
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, revision)

        async with _migration_lock(), self._tx(write=True) as conn:
            if self.dialect == "postgresql":
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            await conn.run_sync(upgrade)

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None before the first migration)."""

        def current(sync_conn: Connection) -> str | None:
            ctx = MigrationContext.configure(sync_conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()

        async with self._tx(write=False) as conn:
            return await conn.run_sync(current)

