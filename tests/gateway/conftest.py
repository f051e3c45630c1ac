"""Fixtures of the gateway's store tests: every test that takes ``store`` runs on a fresh SQLite
file and on a fresh schema in a PostgreSQL database this session creates and drops. The
PostgreSQL runs are skipped, with the reason in the summary, only when no server answers at
``TEST_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``); with
``TEST_REQUIRE_PG=1`` (set by CI) they fail instead."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
import requests
import sqlalchemy as sa

from bot.serve import Stack
from handoff.store import Correction, PendingReply, Store
from handoff.store.schema import pending_replies
from tests.conftest import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GATEWAY_PYTHON = PROJECT_ROOT / ".venv" / "gateway" / "bin" / "python"

PG_ADMIN_DSN = os.environ.get(
    "TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""The Redis of the multi-node tests (each takes a key prefix of its own)."""


def redis_reachable() -> None:
    """Skip (fail with ``TEST_REQUIRE_PG=1``, as CI runs) when no Redis answers."""
    redis = pytest.importorskip("redis")  # the gateway's lock file has it
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:
        reason = f"Redis not reachable at {REDIS_URL} ({exc!r}); set TEST_REDIS_URL"
        if os.environ.get("TEST_REQUIRE_PG"):
            pytest.fail(reason)
        pytest.skip(reason)


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


# --------------------------------------------------------------------------- a running gateway


@dataclass
class Gateway:
    url: str
    database_url: str
    admin_password: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])


def _start_gateway(tmp: Path, rasa_url: str, rasa_token: str,
                   extra_env: dict[str, str] | None = None) -> Gateway:
    """A gateway process on a free port. Triage is off unless ``extra_env`` turns it on: its
    risk flags would hold replies in tests about something else (tests/gateway/test_triage_e2e
    runs it)."""
    port = free_port()
    database_url = f"sqlite+aiosqlite:///{tmp / 'handoff.db'}"
    log_path = tmp / "gateway.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")},
        "HANDOFF_ENV_FILE": str(tmp / "no.env"),
        "HANDOFF_HOST": "127.0.0.1",
        "HANDOFF_PORT": str(port),
        "HANDOFF_DATABASE_URL": database_url,
        "HANDOFF_RASA_URL": rasa_url,
        "HANDOFF_RASA_TOKEN": rasa_token,
        "HANDOFF_RASA_TIMEOUT": "60",
        "HANDOFF_JWT_SECRET": "test-secret-" + "x" * 40,
        "HANDOFF_MAX_MESSAGE_CHARS": "2000",
        "HANDOFF_TRIAGE_ENABLED": "false",
        # a loaded test machine can keep Rasa from answering a probe for a while: a test about
        # something else must not find it down (test_rasa_outage.py uses the default)
        "HANDOFF_RASA_PROBE_TIMEOUT": "5",
        "HANDOFF_FIRST_ADMIN_PASSWORD_FILE": str(tmp / "first-admin-password"),
        **(extra_env or {}),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(GATEWAY_PYTHON), "-m", "handoff"], cwd=PROJECT_ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    gateway = Gateway(url, database_url, "", process, log_path)
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited ({process.returncode}):\n{gateway.log_tail()}")
        try:
            if requests.get(f"{url}/api/health", timeout=2).status_code == 200:
                break
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or slow while triage's model loads on a busy machine
        if time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"the gateway did not start:\n{gateway.log_tail()}")
        time.sleep(0.2)
    password_file = Path(env["HANDOFF_FIRST_ADMIN_PASSWORD_FILE"])  # written on the first start
    gateway.admin_password = (password_file.read_text().strip() if password_file.exists()
                              else "")
    return gateway


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def gateway(rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _start_gateway(tmp_path_factory.mktemp("gateway"), rasa_stack.rasa_url,
                        rasa_stack.token)
    yield gw
    _stop(gw.process)


# --------------------------------------------------------------------------- reading what was stored


async def stored_correction(store: Store, correction_id: int) -> Correction:
    """The correction with that id, read the way the trainers' list reads it."""
    found = [c for c in await store.list_corrections(after_id=correction_id - 1, limit=1)
             if c.id == correction_id]
    if not found:
        raise LookupError(f"no correction {correction_id}")
    return found[0]


async def stored_pending_replies(store: Store, conversation_id: str) -> list[PendingReply]:
    """Every held reply of the conversation, whatever its status, oldest first (a direct
    select: the gateway reads pending replies only from the router's state)."""
    async with store._tx(write=False) as conn:
        rows = await conn.execute(sa.select(pending_replies).where(
            pending_replies.c.conversation_id == conversation_id).order_by(pending_replies.c.id))
        return [PendingReply(**row._asdict()) for row in rows]


async def corrections_with_tracker(store: Store, conversation_id: str,
                                   timeout: float = 30.0) -> list[Correction]:
    """The conversation's corrections once the gateway fetched their Rasa tracker events (it
    does so in the background, after the decision commits)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await store.list_corrections(conversation_id=conversation_id)
        if all(c.tracker_status != "pending" for c in found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)
