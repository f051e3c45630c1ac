"""handoff.store against a real SQLite file and the local PostgreSQL.

Every test that takes ``store`` runs twice: ``[sqlite]`` on a fresh WAL file in tmp_path and
``[postgresql]`` on a fresh schema in a database that this session creates and drops. The
PostgreSQL runs are skipped, with the reason in the summary, only when no server answers at
``TEST_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``); with
``TEST_REQUIRE_PG=1`` they fail instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from handoff.errors import BadRequest, Conflict, HandoffError, NotFound, ServiceUnavailable
from handoff.store import (
    VERSION_TABLE,
    AlreadyExists,
    Conversation,
    PendingReply,
    StaleVersion,
    Store,
    alembic_config,
    to_json,
)
from handoff.store.schema import metadata
from tests.gateway.conftest import _pg_admin, stored_correction, stored_pending_replies

pytestmark = pytest.mark.asyncio

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TABLES = {
    "conversations", "messages", "pending_replies", "corrections", "users", "notes", "audit_log",
    "model_versions", "conversation_events", "suggestion_ratings", "conversation_summaries",
    "spot_checks", "spot_check_marks", "conversation_contacts", "customer_sessions",
    "summary_days", "summary_people", "summary_replies",
    "login_limits",
}


@pytest_asyncio.fixture
async def conv(store: Store) -> str:
    await store.upsert_conversation("c1")
    return "c1"


# --------------------------------------------------------------------------- schema


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_migrate_from_empty(store_url: str) -> None:
    async with Store(store_url) as store:
        assert await store.schema_revision() is None
        assert await _tables(store_url) == set()
        await store.migrate()
        assert await store.schema_revision() == "0021"
        assert await _tables(store_url) == TABLES | {VERSION_TABLE}
        await store.migrate()  # idempotent
        assert await store.schema_revision() == "0021"


async def test_table_definitions_match_migrations(store: Store, store_url: str) -> None:
    engine = create_async_engine(store_url)

    def diff(conn: sa.Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return list(compare_metadata(ctx, metadata))

    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_downgrade_to_base_and_up_again(store: Store, store_url: str) -> None:
    await store.upsert_conversation("c1")
    # The standalone env.py path: Alembic opens its own engine from the URL.
    await asyncio.to_thread(command.downgrade, alembic_config(store_url), "base")
    assert await _tables(store_url) == {VERSION_TABLE}
    await store.migrate()
    assert await _tables(store_url) == TABLES | {VERSION_TABLE}
    assert await store.list_conversations() == []


async def test_concurrent_migrations(store_url: str) -> None:
    stores = [Store(store_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        assert [await s.schema_revision() for s in stores] == ["0021"] * 3
    finally:
        for s in stores:
            await s.close()


async def test_migrate_cli(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    for _ in range(2):
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "handoff.store", "migrate", "--url", url],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, "schema at revision 0021\n", "")


async def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "h.db"
    async with Store(f"sqlite+aiosqlite:///{path}") as store:
        await store.migrate()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_in_memory_sqlite_serializes_transactions() -> None:
    async with Store("sqlite+aiosqlite://") as store:
        await store.migrate()
        await store.upsert_conversation("m")
        await asyncio.gather(*(store.append_message("m", "customer", str(i)) for i in range(10)))
        assert [m.seq for m in await store.list_messages("m")] == list(range(1, 11))


async def test_bad_urls() -> None:
    with pytest.raises(ValueError, match="aiosqlite"):
        Store("sqlite:///x.db")
    with pytest.raises(ValueError, match="asyncpg"):
        Store("postgresql://localhost/x")
    with pytest.raises(ValueError, match="unsupported"):
        Store("mysql+aiomysql://localhost/x")


async def test_unreachable_database_is_service_unavailable() -> None:
    async with Store("postgresql+asyncpg://postgres@127.0.0.1:1/nothing") as store:
        with pytest.raises(ServiceUnavailable) as err:
            await store.list_conversations()
    assert err.value.status == 503


async def test_a_server_refusing_connections_is_service_unavailable(pg_database: str) -> None:
    """PostgreSQL refusing a connection for lack of slots (SQLSTATE 53300, "too many
    connections", met here through a role allowed none) is a 503 the caller can retry, not
    a 500: for reads and writes alike, and nothing is written."""
    role = f"handoff_limited_{os.getpid()}"
    dsn = sa.make_url(pg_database).set(drivername="postgresql").render_as_string(
        hide_password=False)
    async with Store(pg_database) as ready:
        await ready.migrate()
    await _pg_admin(dsn, f'DROP ROLE IF EXISTS "{role}"',
                    f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    try:
        limited = sa.make_url(pg_database).set(username=role, password=None)
        async with Store(limited.render_as_string(hide_password=False)) as store:
            for call in (store.list_conversations, lambda: store.upsert_conversation("full")):
                with pytest.raises(ServiceUnavailable) as err:
                    await call()
                assert err.value.status == 503
                assert "TooManyConnections" not in str(err.value)  # no driver text to clients
    finally:
        await _pg_admin(dsn, f'DROP ROLE IF EXISTS "{role}"')
    async with Store(pg_database) as store:
        with pytest.raises(NotFound):
            await store.get_conversation("full")


async def test_repr_hides_password() -> None:
    store = Store("postgresql+asyncpg://u:secret@127.0.0.1/db")
    assert "secret" not in repr(store)
    await store.close()


# --------------------------------------------------------------------------- conversations


async def test_upsert_and_get_conversation(store: Store) -> None:
    created = await store.upsert_conversation("c1", state={"turn": 1})
    assert (created.id, created.mode, created.owner, created.queued, created.queue_reason) == (
        "c1", "bot", None, False, None
    )
    assert (created.state, created.risk, created.effort_score, created.closed_at) == (
        {"turn": 1}, None, None, None
    )
    assert (created.version, created.last_seq, created.queued_at) == (1, 0, None)
    assert created.created_at.tzinfo == timezone.utc
    assert created.created_at == created.updated_at
    assert abs((datetime.now(timezone.utc) - created.created_at).total_seconds()) < 60
    again = await store.upsert_conversation("c1", mode="human", state={"other": True})
    assert again == created
    assert await store.get_conversation("c1") == created


async def test_upsert_concurrently_creates_once(store: Store) -> None:
    results = await asyncio.gather(*(store.upsert_conversation("same") for _ in range(10)))
    assert len({r.created_at for r in results}) == 1
    assert len(await store.list_conversations()) == 1


async def test_get_missing_conversation(store: Store) -> None:
    with pytest.raises(NotFound) as err:
        await store.get_conversation("nope")
    assert (err.value.status, err.value.to_dict()) == (
        404, {"error": "not_found", "message": "no conversation 'nope'", "conversation_id": "nope"}
    )


async def test_upsert_validates(store: Store) -> None:
    with pytest.raises(BadRequest):
        await store.upsert_conversation("")
    with pytest.raises(BadRequest):
        await store.upsert_conversation("x", mode="chatty")  # type: ignore[arg-type]


async def test_state_none_is_sql_null(store: Store) -> None:
    await store.upsert_conversation("c1")
    assert (await store.get_conversation("c1")).state is None


async def _state(store: Store, cid: str, **changes: object) -> None:
    current = await store.get_conversation(cid)
    values: dict[str, object] = dict(
        mode=current.mode, owner=current.owner, queued=current.queued,
        queue_reason=current.queue_reason, state=current.state,
    )
    values.update(changes)
    await store.save_step(cid, expected_version=current.version, **values)  # type: ignore[arg-type]


async def _step(store: Store, cid: str, **values: Any) -> Conversation:
    """The router's state alone, through the one write path that sets it."""
    return (await store.save_step(cid, **values)).conversation


async def test_list_conversations_orders_by_risk_then_wait(store: Store) -> None:
    for cid in ("a", "b", "c", "d"):
        await store.upsert_conversation(cid)
    await store.set_triage("a", risk=0.9, triage={})
    await store.set_triage("c", risk=0.2, triage={})
    await store.set_triage("d", risk=0.9, triage={})
    # "a" was created before "d" but entered the queue after "d" was created: "d" waits longer.
    await _state(store, "a", queued=True, queue_reason="angry")
    listed = await store.list_conversations()
    assert [c.id for c in listed] == ["d", "a", "c", "b"]
    assert [c.risk for c in listed] == [0.9, 0.9, 0.2, None]
    assert [c.id for c in await store.list_conversations(limit=2)] == ["d", "a"]
    # Now both wait in the queue, and "a" has waited longer.
    await _state(store, "d", queued=True, queue_reason="asked for a human")
    assert [c.id for c in await store.list_conversations(queued=True)] == ["a", "d"]
    await _state(store, "a", queued=True)  # stays queued: keeps its place
    assert [c.id for c in await store.list_conversations(queued=True)] == ["a", "d"]
    assert [c.id for c in await store.list_conversations(queued=False)] == ["c", "b"]


async def test_list_conversations_filters(store: Store) -> None:
    for cid in ("a", "b", "c"):
        await store.upsert_conversation(cid)
    await _state(store, "a", mode="human", owner="alice")
    await _state(store, "b", mode="review", owner="bob")
    assert [c.id for c in await store.list_conversations(mode="human")] == ["a"]
    assert [c.id for c in await store.list_conversations(mode=["human", "review"])] == ["a", "b"]
    assert [c.id for c in await store.list_conversations(owner="bob")] == ["b"]
    assert [c.id for c in await store.list_conversations(mode="bot", queued=False)] == ["c"]
    assert await store.list_conversations(mode="closed") == []
    with pytest.raises(BadRequest):
        await store.list_conversations(mode="sleeping")  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        await store.list_conversations(limit=0)


async def test_save_step_sets_the_router_state(store: Store, conv: str) -> None:
    before = await store.get_conversation(conv)
    queued = await _step(store,
        conv, expected_version=1, mode="review", owner=None, queued=True,
        queue_reason="low confidence", state={"step": "await_agent"},
    )
    assert (queued.version, queued.mode, queued.owner, queued.queued, queued.queue_reason) == (
        2, "review", None, True, "low confidence"
    )
    assert queued.state == {"step": "await_agent"}
    assert queued.queued_at is not None and queued.queued_at >= before.created_at
    assert queued.updated_at >= before.updated_at and queued.closed_at is None
    taken = await _step(store,
        conv, expected_version=2, mode="human", owner="alice", queued=False, queue_reason=None,
        state={"step": "human"},
    )
    assert (taken.version, taken.owner, taken.queued, taken.queued_at) == (3, "alice", False, None)
    closed = await _step(store,
        conv, expected_version=3, mode="closed", owner="alice", queued=False, queue_reason=None,
        state=None,
    )
    assert closed.closed_at is not None and closed.state is None and closed.version == 4
    assert await store.get_conversation(conv) == closed
    reopened = await _step(store,
        conv, expected_version=4, mode="bot", owner=None, queued=False, queue_reason=None,
        state={},
    )
    assert (reopened.closed_at, reopened.state) == (None, {})


async def test_a_step_records_the_node_at_work_and_one_node_takes_it_over(
    store: Store, conv: str
) -> None:
    step = dict(mode="bot", owner=None, queued=False, queue_reason=None, state={})
    assert (await _step(store, conv, expected_version=1, node_id="node-a", **step)).node_id == (
        "node-a")
    assert (await _step(store, conv, expected_version=2, **step)).node_id == "node-a"  # kept
    await store.upsert_conversation("c2")
    assert await store.nodes_at_work() == {conv: "node-a"}
    # node-a is gone: of two nodes taking over, one wins; a node that is not its node loses
    assert await store.move_node(conv, from_node="node-x", to_node="node-b") is False
    assert await store.move_node(conv, from_node="node-a", to_node="node-b") is True
    assert await store.move_node(conv, from_node="node-a", to_node="node-c") is False
    assert await store.nodes_at_work() == {conv: "node-b"}
    done = await _step(store, conv, expected_version=3, node_id=None, **step)
    assert (done.node_id, done.version) == (None, 4)
    assert await store.nodes_at_work() == {}


async def test_stale_version_conflict(store: Store, conv: str) -> None:
    args = dict(mode="human", owner="alice", queued=False, queue_reason=None, state={"a": 1})
    await store.save_step(conv, expected_version=1, **args)  # type: ignore[arg-type]
    with pytest.raises(StaleVersion) as err:
        await store.save_step(conv, expected_version=1, **args)  # type: ignore[arg-type]
    assert isinstance(err.value, Conflict) and err.value.status == 409
    assert err.value.to_dict() == {
        "error": "stale_version", "message": "conversation 'c1' was changed meanwhile",
        "conversation_id": "c1", "expected_version": 1, "current_version": 2,
    }
    assert (await store.get_conversation(conv)).version == 2
    with pytest.raises(NotFound):
        await store.save_step("nope", expected_version=1, **args)  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        await store.save_step(conv, expected_version=2, **{**args, "mode": "x"})  # type: ignore[arg-type]


async def test_a_step_from_the_row_it_had_writes_the_same_without_reading_it(
        store: Store, conv: str) -> None:
    """``before``: the row at ``expected_version`` that the caller stepped from (the shell's
    kept row). The step writes exactly what it writes without it (queue time kept, messages
    numbered on), and a row that moved on meanwhile is still refused."""
    start = await store.get_conversation(conv)
    queued = (await store.save_step(
        conv, expected_version=1, mode="review", owner=None, queued=True,
        queue_reason="low confidence", state={}, before=start,
        appended=[{"sender": "customer", "text": "one", "client_message_id": "m1"}])).conversation
    saved = await store.save_step(
        conv, expected_version=2, mode="review", owner=None, queued=True,
        queue_reason="low confidence", state={"n": 2}, before=queued,
        appended=[{"sender": "customer", "text": "one", "client_message_id": "m1"},
                  {"sender": "bot", "text": "two"}, {"sender": "bot", "text": "three"}],
        audit={"actor": "ann", "action": "review", "target": f"conversation:{conv}",
               "details": None})
    assert saved.conversation.queued_at == queued.queued_at  # still queued: keeps its place
    assert [(m.seq, m.text, m.replayed) for m in saved.messages] == [
        (1, "one", True), (2, "two", False), (3, "three", False)]
    assert saved.conversation.last_seq == 1  # as returned by the step's first statement
    assert (await store.get_conversation(conv)).last_seq == 3
    assert [(e.actor, e.action) for e in await store.list_audit(actor="ann")] == [
        ("ann", "review")]
    with pytest.raises(StaleVersion) as err:  # the row moved on since ``queued``
        await store.save_step(conv, expected_version=2, mode="human", owner="bo",
                              queued=False, queue_reason=None, state={}, before=queued)
    assert (err.value.to_dict()["expected_version"], err.value.to_dict()["current_version"]
            ) == (2, 3)
    gone = dataclasses.replace(start, id="nope")
    with pytest.raises(NotFound):
        await store.save_step("nope", expected_version=1, mode="bot", owner=None,
                              queued=False, queue_reason=None, state={}, before=gone)
    assert [m.text for m in await store.list_messages(conv)] == ["one", "two", "three"]


async def test_concurrent_state_writes_one_wins(store: Store, conv: str) -> None:
    results = await asyncio.gather(
        *(
            _step(store, conv, expected_version=1, mode="human", owner=f"agent{i}",
                  queued=False, queue_reason=None, state=None)
            for i in range(10)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, StaleVersion) for r in results if isinstance(r, BaseException))
    final = await store.get_conversation(conv)
    assert (final.version, final.owner) == (2, winners[0].owner)


async def test_risk_and_effort_score(store: Store, conv: str) -> None:
    risky = await store.set_triage(conv, risk=0.75, triage={"assessment": None})
    assert (risky.risk, risky.triage, risky.version) == (0.75, {"assessment": None}, 1)  # not versioned
    assert (await store.set_effort_score(conv, 7)).effort_score == 7
    assert (await store.set_effort_score(conv, 1)).effort_score == 1
    for bad in (0, 8, True, 2.5):
        with pytest.raises(BadRequest):
            await store.set_effort_score(conv, bad)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await store.set_effort_score("nope", 3)


# --------------------------------------------------------------------------- messages


async def test_append_and_list_messages(store: Store, conv: str) -> None:
    customer = await store.append_message(
        conv, "customer", "where is my order 123?", client_message_id="m-1",
        metadata={"widget": "1.0"}, intent="order_status", confidence=0.93,
        intent_ranking=[{"name": "order_status", "confidence": 0.93}],
        entities=[{"entity": "order_id", "value": "123", "start": 18, "end": 21}],
    )
    bot = await store.append_message(
        conv, "bot", "Let me check.", action="utter_checking", decision="edited",
        decided_by="alice", model_version="20251128-1",
        payload={"buttons": [{"title": "Yes", "payload": "/affirm"}]},
    )
    system = await store.append_message(conv, "system", "an agent joined")
    assert [m.seq for m in (customer, bot, system)] == [1, 2, 3]
    assert (customer.sender, customer.text, customer.client_message_id, customer.replayed) == (
        "customer", "where is my order 123?", "m-1", False
    )
    assert (customer.intent, customer.confidence, customer.metadata) == (
        "order_status", 0.93, {"widget": "1.0"}
    )
    assert customer.intent_ranking == [{"name": "order_status", "confidence": 0.93}]
    assert customer.entities == [
        {"entity": "order_id", "value": "123", "start": 18, "end": 21}
    ]
    assert (bot.action, bot.decision, bot.decided_by, bot.model_version) == (
        "utter_checking", "edited", "alice", "20251128-1"
    )
    assert bot.payload == {"buttons": [{"title": "Yes", "payload": "/affirm"}]}
    assert (system.payload, system.metadata, system.intent) == (None, None, None)
    assert customer.created_at.tzinfo == timezone.utc
    assert await store.list_messages(conv) == [customer, bot, system]
    assert await store.list_messages(conv, after_seq=1) == [bot, system]
    assert await store.list_messages(conv, after_seq=3) == []
    assert await store.list_messages(conv, limit=2) == [customer, bot]
    assert await store.get_message(bot.id) == bot
    conversation = await store.get_conversation(conv)
    assert (conversation.last_seq, conversation.updated_at) == (3, system.created_at)


async def test_messages_of_missing_conversation(store: Store, conv: str) -> None:
    assert await store.list_messages(conv) == []
    with pytest.raises(NotFound):
        await store.list_messages("nope")
    with pytest.raises(NotFound):
        await store.append_message("nope", "customer", "hi")
    with pytest.raises(NotFound):
        await store.get_message(12345)
    with pytest.raises(BadRequest):
        await store.append_message(conv, "robot", "hi")  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        await store.append_message(conv, "bot", "hi", decision="maybe")  # type: ignore[arg-type]


async def test_retried_message_is_stored_once(store: Store, conv: str) -> None:
    first = await store.append_message(conv, "customer", "hello", client_message_id="abc")
    retry = await store.append_message(conv, "customer", "hello", client_message_id="abc")
    assert retry.replayed is True
    assert retry == dataclasses.replace(first, replayed=True)
    assert await store.list_messages(conv) == [first]
    # Without a client id, or with another one, a message is new.
    second = await store.append_message(conv, "customer", "hello")
    third = await store.append_message(conv, "customer", "hello")
    other = await store.append_message(conv, "customer", "hello", client_message_id="abd")
    assert [m.seq for m in (second, third, other)] == [2, 3, 4]
    # The same client id in another conversation is another message.
    await store.upsert_conversation("c2")
    elsewhere = await store.append_message("c2", "customer", "hello", client_message_id="abc")
    assert (elsewhere.seq, elsewhere.replayed) == (1, False)
    assert (await store.get_conversation(conv)).last_seq == 4


async def test_50_concurrent_appends_keep_seq_unique_and_gap_free(store: Store, conv: str) -> None:
    appended = await asyncio.gather(
        *(store.append_message(conv, "customer", f"message {i}") for i in range(50))
    )
    assert sorted(m.seq for m in appended) == list(range(1, 51))
    assert len({m.id for m in appended}) == 50
    listed = await store.list_messages(conv)
    assert [m.seq for m in listed] == list(range(1, 51))
    assert sorted(m.text or "" for m in listed) == sorted(f"message {i}" for i in range(50))
    assert (await store.get_conversation(conv)).last_seq == 50


async def test_concurrent_retries_store_one_message(store: Store, conv: str) -> None:
    results = await asyncio.gather(
        *(
            store.append_message(conv, "customer", f"try {i % 5}", client_message_id=f"id-{i % 5}")
            for i in range(25)
        )
    )
    assert sorted(r.seq for r in results if not r.replayed) == [1, 2, 3, 4, 5]
    assert sum(r.replayed for r in results) == 20
    listed = await store.list_messages(conv)
    assert [m.seq for m in listed] == [1, 2, 3, 4, 5]
    by_client = {m.client_message_id: m.id for m in listed}
    assert all(by_client[r.client_message_id] == r.id for r in results)


async def test_save_step_writes_state_messages_and_nlu_at_once(store: Store, conv: str) -> None:
    step = dict(mode="bot", owner=None, queued=False, queue_reason=None)
    saved = await store.save_step(
        conv, expected_version=1, state={"turn": 1}, appended=[
            {"sender": "customer", "text": "where is my order?", "client_message_id": "m1"}],
        **step)  # type: ignore[arg-type]
    assert saved.conversation.version == 2 and [(m.seq, m.text) for m in saved.messages] == [
        (1, "where is my order?")]
    saved = await store.save_step(
        conv, expected_version=2, state={"turn": None}, appended=[
            {"sender": "bot", "text": "Which order?", "action": "utter_ask_order_id"},
            {"sender": "bot", "text": "It has 6 digits.", "action": "utter_ask_order_id",
             "decision": "edited", "decided_by": "ann"}],
        nlu={"client_message_id": "m1", "intent": "track_order", "confidence": 0.9,
             "intent_ranking": [{"name": "track_order", "confidence": 0.9}], "entities": [],
             "actions": [{"name": "order_form", "policy": "RulePolicy", "confidence": 1.0}]},
        **step)  # type: ignore[arg-type]
    await store.save_step(conv, expected_version=3, state={"turn": None}, nlu={
        "client_message_id": "m1", "actions": [{"name": "utter_ask_order_id",
                                                "policy": "RulePolicy", "confidence": 1.0}]},
        **step)  # type: ignore[arg-type]  # a later answer in the same turn: appended
    messages = await store.list_messages(conv)
    assert [a["name"] for a in messages[0].actions or []] == ["order_form", "utter_ask_order_id"]
    assert messages[0].intent == "track_order"  # kept: the later answer did not parse
    assert [(m.seq, m.sender, m.intent, m.decision, m.decided_by) for m in messages] == [
        (1, "customer", "track_order", None, None), (2, "bot", None, None, None),
        (3, "bot", None, "edited", "ann")]
    assert (await store.get_conversation(conv)).state == {"turn": None}

    # a stale step writes nothing at all, and a replayed customer message is not stored twice
    with pytest.raises(StaleVersion):
        await store.save_step(conv, expected_version=2, state={"x": 1}, appended=[
            {"sender": "bot", "text": "lost"}], **step)  # type: ignore[arg-type]
    saved = await store.save_step(conv, expected_version=4, state={}, appended=[
        {"sender": "customer", "text": "where is my order?", "client_message_id": "m1"}],
        **step)  # type: ignore[arg-type]
    assert saved.messages[0].replayed and saved.messages[0].seq == 1
    assert [m.text for m in await store.list_messages(conv)] == [
        "where is my order?", "Which order?", "It has 6 digits."]
    for bad in ({"sender": "robot"}, {"sender": "bot", "decision": "maybe"},
                {"sender": "bot", "colour": "red"}):
        with pytest.raises(BadRequest):
            await store.save_step(conv, expected_version=5, state={}, appended=[bad],
                                  **step)  # type: ignore[arg-type,list-item]
    assert (await store.get_conversation(conv)).version == 5


async def test_save_step_writes_triages_record_of_the_turn_with_it(store: Store,
                                                                   conv: str) -> None:
    """The step that takes in Rasa's answer stores triage's view of the turn too: the
    conversation's risk and triage, the message's assessment and sentiment (in the same
    statements as the state and the NLU); the row it returns carries them."""
    step = dict(mode="bot", owner=None, queued=False, queue_reason=None)
    await store.save_step(conv, expected_version=1, state={}, appended=[
        {"sender": "customer", "text": "this is useless", "client_message_id": "m1"}],
        **step)  # type: ignore[arg-type]
    assessment = {"risk": 0.62, "action": "review", "measures": {"sentiment": -0.4},
                  "reasons": [{"code": "negative_sentiment", "contribution": 0.3}]}
    triage = {"history": {"intents": ["complain"]}, "assessment": assessment}
    saved = await store.save_step(
        conv, expected_version=2, state={"turn": None},
        nlu={"client_message_id": "m1", "intent": "complain", "confidence": 0.8},
        triage={"risk": 0.62, "triage": triage, "client_message_id": "m1",
                "assessment": assessment}, **step)  # type: ignore[arg-type]
    assert (saved.conversation.version, saved.conversation.risk,
            saved.conversation.triage) == (3, 0.62, triage)
    [message] = await store.list_messages(conv)
    assert (message.intent, message.confidence, message.triage, message.sentiment) == (
        "complain", 0.8, assessment, -0.4)
    # without an NLU result (a failed Rasa call) the assessment is stored all the same; a
    # step without triage leaves what is stored alone
    later = {**assessment, "risk": 0.7}
    saved = await store.save_step(conv, expected_version=3, state={}, triage={
        "risk": 0.7, "triage": {**triage, "assessment": later}, "client_message_id": "m1",
        "assessment": later}, **step)  # type: ignore[arg-type]
    saved = await store.save_step(conv, expected_version=4, state={},
                                  **step)  # type: ignore[arg-type]
    assert (saved.conversation.risk, saved.conversation.triage["assessment"]) == (0.7, later)
    [message] = await store.list_messages(conv)
    assert (message.intent, message.triage) == ("complain", later)
    with pytest.raises(StaleVersion):  # a stale step writes no triage either
        await store.save_step(conv, expected_version=4, state={}, triage={
            "risk": 0.1, "triage": {}, "client_message_id": "m1", "assessment": {}},
            **step)  # type: ignore[arg-type]
    assert (await store.get_conversation(conv)).risk == 0.7


async def test_set_triage_and_an_upgrade_from_0001_keeps_data(store_url: str) -> None:
    store = Store(store_url)
    try:
        await store.migrate("0001")
        when = datetime(2026, 11, 28, tzinfo=timezone.utc) if "postgresql" in store_url else (
            "2026-11-28 00:00:00.000000")
        async with store._tx(write=True) as conn:  # the 0001 schema: the Store's SQL is newer
            await conn.execute(sa.text(
                "INSERT INTO conversations (id, created_at, updated_at, mode, queued, version, "
                "last_seq) VALUES ('c1', :t, :t, 'bot', false, 1, 1)"), {"t": when})
            await conn.execute(sa.text(
                "INSERT INTO messages (conversation_id, seq, sender, text, created_at, "
                "client_message_id) VALUES ('c1', 1, 'customer', 'sue you!', :t, 'm1')"),
                {"t": when})
        await store.migrate()
        assert await store.schema_revision() == "0021"
        assessment = {"risk": 1.0, "action": "human", "reasons": [
            {"code": "rule:legal_threat", "text": "Legal threat", "contribution": 1.0}]}
        conv = await store.set_triage("c1", risk=1.0, client_message_id="m1",
                                      assessment=assessment,
                                      triage={"history": {"intents": ["complaint"]},
                                              "assessment": assessment})
        assert (conv.risk, conv.triage["assessment"]) == (1.0, assessment)
        [message] = await store.list_messages("c1")
        assert (message.text, message.triage) == ("sue you!", assessment)
        with pytest.raises(NotFound):
            await store.set_triage("nope", risk=0.1, triage={})
    finally:
        await store.close()


async def test_an_upgrade_to_0004_flags_the_corrections_stored_without_events(
    store_url: str
) -> None:
    store = Store(store_url)
    try:
        await store.migrate("0003")
        when = datetime(2026, 11, 28, tzinfo=timezone.utc) if "postgresql" in store_url else (
            "2026-11-28 00:00:00.000000")
        async with store._tx(write=True) as conn:  # the 0003 schema: the Store's SQL is newer
            await conn.execute(sa.text(
                "INSERT INTO conversations (id, created_at, updated_at, mode, queued, version, "
                "last_seq) VALUES ('c1', :t, :t, 'bot', false, 1, 0)"), {"t": when})
            for before, events in (('{"action_name": "utter_greet"}', '[{"event": "user"}]'),
                                   ('{"action_name": "utter_greet"}', "[]"),
                                   ('{"intent": null, "text": "a label"}', "[]")):
                await conn.execute(sa.text(
                    "INSERT INTO corrections (conversation_id, type, before, tracker_events, "
                    "agent, created_at, review_status) VALUES ('c1', 'approved', :b, :e, 'ann', "
                    ":t, 'new')"), {"b": before, "e": events, "t": when})
        await store.migrate()
        found = await store.list_corrections()
        assert [(c.tracker_status, c.tracker_attempts) for c in found] == [
            ("fetched", 0), ("failed", 0), ("fetched", 0)]
        assert found[1].tracker_error and "0004" in found[1].tracker_error
        assert found[0].tracker_events == [{"event": "user"}]
    finally:
        await store.close()


# --------------------------------------------------------------------------- a decision and its record


_REVIEW = dict(mode="review", owner="alice", queued=False, queue_reason=None)


async def _held(store: Store, conv: str) -> tuple[int, PendingReply]:
    """A customer message and the bot reply held for it, as one step; returns the version
    after it and the held reply."""
    saved = await store.save_step(
        conv, expected_version=1, state={"pending": 1}, **_REVIEW,  # type: ignore[arg-type]
        appended=[{"sender": "customer", "text": "where is my parcel", "client_message_id": "m1"}],
        hold={"action": "utter_ask_order_id", "messages": [{"text": "Order id?"}],
              "confidence": 0.41, "alternatives": [{"name": "utter_greet", "confidence": 0.2}],
              "model_version": "m1", "trigger_client_message_id": "m1"})
    assert saved.held is not None and saved.resolved == [] and saved.correction is None
    return saved.conversation.version, saved.held


async def test_a_step_holds_a_reply_and_a_later_step_decides_it_with_its_record(
    store: Store, conv: str
) -> None:
    version, held = await _held(store, conv)
    [trigger] = await store.list_messages(conv)
    assert (held.status, held.action, held.confidence, held.trigger_message_id) == (
        "pending", "utter_ask_order_id", 0.41, trigger.id)
    assert (held.messages, held.alternatives, held.model_version) == (
        [{"text": "Order id?"}], [{"name": "utter_greet", "confidence": 0.2}], "m1")
    assert (held.decided_at, held.decided_by, held.decision) == (None, None, None)
    assert await stored_pending_replies(store, conv) == [held]

    saved = await store.save_step(
        conv, expected_version=version, state={"pending": None}, **_REVIEW,  # type: ignore[arg-type]
        appended=[{"sender": "bot", "text": "Which order id, please?",
                   "action": "utter_ask_order_id", "decision": "edited", "decided_by": "alice"}],
        resolve={"status": "decided", "decision": "edited", "decided_by": "alice"},
        correction={"type": "edited", "agent": "alice", "before": {"action_name": "x"},
                    "after": {"action_name": "x", "messages": [{"text": "Which order id?"}]},
                    "model_version": "m1", "client_message_id": "m1"})
    [decided] = saved.resolved
    assert (decided.id, decided.status, decided.decision, decided.decided_by) == (
        held.id, "decided", "edited", "alice")
    assert decided.decided_at is not None
    correction = saved.correction
    assert correction is not None
    assert (correction.type, correction.agent, correction.message_id,
            correction.pending_reply_id, correction.model_version) == (
        "edited", "alice", trigger.id, held.id, "m1")
    assert (correction.tracker_status, correction.tracker_events, correction.tracker_error,
            correction.tracker_attempts) == ("pending", [], None, 0)
    assert await store.list_corrections() == [correction]
    assert await stored_pending_replies(store, conv) == [decided]
    assert [(m.sender, m.decision) for m in await store.list_messages(conv)] == [
        ("customer", None), ("bot", "edited")]

    # Rasa's tracker, fetched after the commit: a failure is kept and flagged, then filled.
    failed = await store.set_correction_tracker(correction.id, error="Rasa is down",
                                                attempts=3)
    assert (failed.tracker_status, failed.tracker_error, failed.tracker_attempts,
            failed.tracker_events) == ("failed", "Rasa is down", 3, [])
    assert await store.list_corrections(tracker_status=["pending", "failed"]) == [failed]
    events = [{"event": "user", "text": "where is my parcel", "timestamp": 1.0}]
    fetched = await store.set_correction_tracker(correction.id, events=events)
    assert (fetched.tracker_status, fetched.tracker_error, fetched.tracker_attempts,
            fetched.tracker_events) == ("fetched", None, 4, events)
    assert await stored_correction(store, correction.id) == fetched
    assert await store.list_corrections(tracker_status="failed") == []
    with pytest.raises(BadRequest):
        await store.set_correction_tracker(correction.id)
    with pytest.raises(BadRequest):
        await store.set_correction_tracker(correction.id, events=[], error="both")
    with pytest.raises(NotFound):
        await store.set_correction_tracker(1234, events=[])
    with pytest.raises(BadRequest):
        await store.list_corrections(tracker_status="lost")  # type: ignore[arg-type]


async def test_a_step_that_fails_half_way_writes_nothing(store: Store, conv: str) -> None:
    version, held = await _held(store, conv)
    before = await store.get_conversation(conv)
    messages = await store.list_messages(conv)
    with pytest.raises(sa.exc.IntegrityError):  # corrections.agent is NOT NULL
        await store.save_step(
            conv, expected_version=version, state={"pending": None}, **_REVIEW,  # type: ignore[arg-type]
            appended=[{"sender": "bot", "text": "Order id?", "decision": "approved",
                       "decided_by": "alice"}],
            resolve={"status": "decided", "decision": "approved", "decided_by": "alice"},
            correction={"type": "approved", "agent": None})  # type: ignore[typeddict-item]
    assert await store.get_conversation(conv) == before
    assert await store.list_messages(conv) == messages
    assert await stored_pending_replies(store, conv) == [held]
    assert await store.list_corrections() == []


@pytest.mark.parametrize("bad", [
    {"resolve": {"status": "decided"}},  # a decision needs what was decided
    {"resolve": {"status": "discarded", "decision": "approved"}},
    {"resolve": {"status": "gone"}},
    {"correction": {"type": "liked", "agent": "alice"}},
    {"hold": {"messages": []}},
])
async def test_a_step_with_a_bad_draft_is_refused_before_writing(
    store: Store, conv: str, bad: dict[str, Any]
) -> None:
    version, held = await _held(store, conv)
    with pytest.raises(BadRequest):
        await store.save_step(conv, expected_version=version, state={}, **_REVIEW,  # type: ignore[arg-type]
                              **bad)
    assert (await store.get_conversation(conv)).version == version
    assert await stored_pending_replies(store, conv) == [held]


async def test_a_discarding_step_resolves_without_a_decision(store: Store, conv: str) -> None:
    version, held = await _held(store, conv)
    saved = await store.save_step(
        conv, expected_version=version, state={}, mode="human", owner="alice", queued=False,
        queue_reason=None, resolve={"status": "discarded"})
    assert [(p.id, p.status, p.decision, p.decided_by) for p in saved.resolved] == [
        (held.id, "discarded", None, None)]
    again = await store.save_step(
        conv, expected_version=version + 1, state={}, mode="human", owner="alice",
        queued=False, queue_reason=None, resolve={"status": "discarded"})
    assert again.resolved == []  # nothing was pending any more


async def test_concurrent_decisions_one_wins(store: Store, conv: str) -> None:
    version, _ = await _held(store, conv)
    results = await asyncio.gather(
        *(
            store.save_step(
                conv, expected_version=version, state={}, **{**_REVIEW, "owner": f"agent{i}"},  # type: ignore[arg-type]
                appended=[{"sender": "bot", "text": "Order id?", "decision": "approved",
                           "decided_by": f"agent{i}"}],
                resolve={"status": "decided", "decision": "approved", "decided_by": f"agent{i}"},
                correction={"type": "approved", "agent": f"agent{i}"})
            for i in range(5)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert sum(isinstance(r, StaleVersion) for r in results) == 4
    assert [m.text for m in await store.list_messages(conv)] == ["where is my parcel",
                                                                  "Order id?"]
    assert [c.agent for c in await store.list_corrections()] == [winners[0].conversation.owner]
    [pending] = await stored_pending_replies(store, conv)
    assert pending.decided_by == winners[0].conversation.owner


# --------------------------------------------------------------------------- corrections


async def test_corrections(store: Store, conv: str) -> None:
    message = await store.append_message(conv, "customer", "i want a refund")
    events = [{"event": "action", "name": "action_listen"},
              {"event": "user", "text": "i want a refund",
               "parse_data": {"intent": {"name": "greet", "confidence": 0.5}}}]
    relabel = await store.add_correction(
        conv, type="relabelled", agent="alice", before={"intent": "greet"},
        after={"intent": "request_refund"}, tracker_events=events, message_id=message.id,
        model_version="m1",
    )
    assert (relabel.type, relabel.agent, relabel.before, relabel.after) == (
        "relabelled", "alice", {"intent": "greet"}, {"intent": "request_refund"}
    )
    assert (relabel.tracker_events, relabel.message_id, relabel.pending_reply_id) == (
        events, message.id, None
    )
    assert (relabel.review_status, relabel.reviewed_by, relabel.reviewed_at, relabel.note) == (
        "new", None, None, None
    )
    assert (relabel.export_id, relabel.exported_at, relabel.model_version) == (None, None, "m1")
    assert (relabel.tracker_status, relabel.tracker_attempts) == ("fetched", 0)  # as given
    replaced = await store.add_correction(
        conv, type="replaced", agent="bob", before="utter_greet", after="utter_refund",
    )
    assert (replaced.before, replaced.after, replaced.tracker_events) == (
        "utter_greet", "utter_refund", []
    )
    takeover = await store.add_correction(conv, type="takeover", agent="bob")
    assert await stored_correction(store, relabel.id) == relabel

    assert await store.list_corrections() == [relabel, replaced, takeover]
    assert await store.list_corrections(type="takeover") == [takeover]
    assert await store.list_corrections(type=["relabelled", "replaced"]) == [relabel, replaced]
    assert await store.list_corrections(agent="bob") == [replaced, takeover]
    assert await store.list_corrections(conversation_id="other") == []
    assert await store.list_corrections(after_id=relabel.id, limit=1) == [replaced]

    accepted = await store.review_correction(
        relabel.id, review_status="accepted", reviewed_by="trainer1", note="good catch"
    )
    assert (accepted.review_status, accepted.reviewed_by, accepted.note) == (
        "accepted", "trainer1", "good catch"
    )
    assert accepted.reviewed_at is not None
    rejected = await store.review_correction(replaced.id, review_status="rejected",
                                             reviewed_by="trainer1")
    assert rejected.note is None
    again = await store.review_correction(relabel.id, review_status="accepted",
                                          reviewed_by="trainer2")
    assert again.note == "good catch"  # kept when no new note is given
    assert await store.list_corrections(review_status="new") == [takeover]
    assert [c.id for c in await store.list_corrections(review_status=["accepted", "rejected"])] == [
        relabel.id, replaced.id
    ]
    assert await store.list_corrections(review_status="accepted", type="replaced") == []

    assert await store.mark_corrections_exported([relabel.id], export_id="export-1") == 1
    assert await store.mark_corrections_exported([], export_id="export-2") == 0
    exported = await store.list_corrections(exported=True)
    assert [(c.id, c.export_id) for c in exported] == [(relabel.id, "export-1")]
    assert exported[0].exported_at is not None
    assert [c.id for c in await store.list_corrections(exported=False)] == [
        replaced.id, takeover.id
    ]


async def test_model_versions_one_live_and_corrections_linked(store: Store, conv: str) -> None:
    first = await store.record_model("m-1", "first.tar.gz")
    assert first.status == "candidate" and await store.live_model() is None
    await store.set_live_model("m-1", deployed_by="system")
    proof = {"corrections": {"before": 0, "after": 1, "total": 1, "failing": []},
             "regressions": [], "deploy": True}
    await store.record_model("m-2", "second.tar.gz", retrained_by="tina", corrections=[7],
                             proof=proof)
    live = await store.set_live_model("m-2", deployed_by="tina", override="hotfix",
                                      details={"previous": "m-1"})
    assert (live.status, live.deployed_by, live.override) == ("live", "tina", "hotfix")
    assert {m.model_id: m.status for m in await store.list_models()} == {
        "m-1": "retired", "m-2": "live"}
    assert (await store.live_model()) == live and live.proof == proof
    again = await store.record_model("m-2", "second.tar.gz")  # known: status and proof kept
    assert again.status == "live" and again.proof == proof and again.corrections == [7]
    entry = (await store.list_audit(action="model_deployed"))[0]
    assert (entry.actor, entry.target, entry.details) == (
        "tina", "model:m-2", {"previous": "m-1", "override": "hotfix"})
    with pytest.raises(NotFound):
        await store.set_live_model("nope", deployed_by="tina")
    with pytest.raises(BadRequest):
        await store.record_model("m-3", "x.tar.gz", status="shiny")

    correction = await store.add_correction(conv, type="relabelled", agent="a",
                                            model_version="m-1")
    assert await store.mark_corrections_fixed([correction.id], "m-2") == 1
    fixed = await stored_correction(store, correction.id)
    assert (fixed.model_version, fixed.fixed_by_model) == ("m-1", "m-2")


async def test_correction_errors(store: Store, conv: str) -> None:
    with pytest.raises(NotFound):
        await store.add_correction("nope", type="takeover", agent="a")
    with pytest.raises(BadRequest):
        await store.add_correction(conv, type="liked", agent="a")  # type: ignore[arg-type]
    await store.upsert_conversation("c2")
    elsewhere = await store.append_message("c2", "customer", "hi")
    with pytest.raises(NotFound):
        await store.add_correction(conv, type="approved", agent="a", message_id=elsewhere.id)
    with pytest.raises(NotFound):
        await store.review_correction(1234, review_status="accepted", reviewed_by="t")
    with pytest.raises(BadRequest):
        await store.review_correction(1, review_status="maybe", reviewed_by="t")  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        await store.list_corrections(review_status="done")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- notes and audit


async def test_notes(store: Store, conv: str) -> None:
    assert await store.list_notes(conv) == []
    first = await store.add_note(conv, author="alice", text="asked for a callback")
    second = await store.add_note(conv, author="bob", text="called back")
    assert (first.conversation_id, first.author, first.text) == (conv, "alice",
                                                                "asked for a callback")
    assert await store.list_notes(conv) == [first, second]
    with pytest.raises(NotFound):
        await store.add_note("nope", author="a", text="x")
    with pytest.raises(NotFound):
        await store.list_notes("nope")
    with pytest.raises(BadRequest):
        await store.add_note(conv, author="a", text="  ")


async def test_audit_log(store: Store) -> None:
    first = await store.audit("alice", "takeover", target="conversation:c1",
                              details={"from": "review"})
    second = await store.audit("system", "start")
    third = await store.audit("alice", "user.disable", target="user:bob")
    assert (first.actor, first.action, first.target, first.details) == (
        "alice", "takeover", "conversation:c1", {"from": "review"}
    )
    assert (second.target, second.details) == (None, None)
    assert await store.list_audit() == [third, second, first]
    assert await store.list_audit(actor="alice") == [third, first]
    assert await store.list_audit(action="start") == [second]
    assert await store.list_audit(target="user:bob") == [third]
    assert await store.list_audit(limit=1) == [third]


# --------------------------------------------------------------------------- users


async def test_user_rows(store: Store) -> None:
    assert await store.count_users() == 0
    user = await store.create_user("alice", password_hash="$argon2id$x", tier="agent")
    assert (user.username, user.tier, user.disabled, user.password_hash) == (
        "alice", "agent", False, "$argon2id$x"
    )
    assert "argon2" not in repr(user)
    with pytest.raises(AlreadyExists) as err:
        await store.create_user("alice", password_hash="h", tier="admin")
    assert err.value.status == 409
    with pytest.raises(BadRequest):
        await store.create_user("bob", password_hash="h", tier="boss")  # type: ignore[arg-type]
    await store.create_user("bob", password_hash="h", tier="trainer", disabled=True)
    assert (await store.get_user("bob")).disabled
    assert await store.count_users() == 2
    changed = await store.update_user("alice", tier="admin", disabled=True, password_hash="h2")
    assert (changed.tier, changed.disabled, changed.password_hash) == ("admin", True, "h2")
    assert await store.get_user("alice") == changed
    assert await store.update_user("alice") == changed
    with pytest.raises(NotFound):
        await store.get_user("carol")
    with pytest.raises(NotFound):
        await store.update_user("carol", disabled=True)
    assert await store.create_first_user("root", password_hash="h", tier="admin") is None
    assert changed.token_version == 0
    bumped = await store.update_user("alice", bump_token_version=True)
    assert bumped.token_version == 1 and bumped.tier == "admin"
    await store.create_user("carl", password_hash="h", tier="trainee")
    assert [u.username for u in await store.list_users(limit=2)] == ["alice", "bob"]
    assert [u.username for u in await store.list_users(after="bob")] == ["carl"]


async def test_migration_0017_maps_roles_to_tiers(store: Store, store_url: str) -> None:
    """Users of the three ranks keep their name as a tier (same rights) across 0017."""
    await asyncio.to_thread(command.downgrade, alembic_config(store_url), "0016")
    engine = create_async_engine(store_url)
    try:
        async with engine.begin() as conn:
            for name, role in (("ann", "agent"), ("tom", "trainer"), ("ada", "admin")):
                await conn.execute(sa.text(
                    "INSERT INTO users (username, password_hash, role, created_at, disabled) "
                    "VALUES (:u, 'h', :r, CURRENT_TIMESTAMP, false)"), {"u": name, "r": role})
    finally:
        await engine.dispose()
    await store.migrate()
    found = {u.username: (u.tier, u.token_version) for u in await store.list_users()}
    assert found == {"ann": ("agent", 0), "tom": ("trainer", 0), "ada": ("admin", 0)}


async def test_create_first_user_once(store: Store) -> None:
    results = await asyncio.gather(
        *(store.create_first_user("admin", password_hash=f"h{i}", tier="admin") for i in range(5))
    )
    assert sum(r is not None for r in results) == 1
    assert await store.count_users() == 1
    assert (await store.get_user("admin")).password_hash in {f"h{i}" for i in range(5)}


# --------------------------------------------------------------------------- misc


async def test_to_json(store: Store, conv: str) -> None:
    conversation = await store.get_conversation(conv)
    data = to_json(conversation)
    assert data["id"] == conv and data["created_at"] == conversation.created_at.isoformat()
    user = await store.create_user("alice", password_hash="secret-hash", tier="agent")
    assert "password_hash" not in to_json(user)


async def test_error_tree() -> None:
    for cls, status in ((BadRequest, 400), (NotFound, 404), (Conflict, 409),
                        (StaleVersion, 409), (AlreadyExists, 409),
                        (ServiceUnavailable, 503)):
        assert issubclass(cls, HandoffError) and cls.status == status


async def test_corrections_filtered_by_intent_and_model_and_audit_by_actions(store: Store) -> None:
    """The trainers' filters on both databases: the intent a correction is about (``after``'s,
    else ``before``'s, read inside the JSON column) and the model of the corrected turn."""
    await store.upsert_conversation("filters")
    relabel = await store.add_correction("filters", type="relabelled", agent="ann",
                                         model_version="m1", before={"intent": "greet"},
                                         after={"intent": "thank", "text": "ta"})
    edit = await store.add_correction("filters", type="edited", agent="bob", model_version="m2",
                                      before={"action_name": "utter_greet", "intent": "greet"},
                                      after={"action_name": "utter_greet", "messages": []})
    assert [c.id for c in await store.list_corrections(intent="thank")] == [relabel.id]
    assert [c.id for c in await store.list_corrections(intent="greet")] == [edit.id]
    assert [c.id for c in await store.list_corrections(model_version="m1")] == [relabel.id]
    assert await store.list_corrections(intent="greet", model_version="m1") == []
    await store.review_corrections([relabel.id], review_status="accepted", reviewed_by="tia")
    await store.audit("tia", "login")
    entries = await store.list_audit(actions=["correction_accepted", "correction_rejected"])
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("tia", "correction_accepted", f"correction:{relabel.id}")]


# --------------------------------------------------------------------------- write turns (SQLite)


@pytest_asyncio.fixture
async def sqlite_store(tmp_path: Path) -> Any:
    s = Store(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}")
    await s.migrate()
    yield s
    await s.close()


async def test_sqlite_writes_take_turns_agents_first_and_reads_do_not_wait(
    sqlite_store: Store,
) -> None:
    """One write transaction at a time in the process: those waiting queue without a
    connection, in arrival order, an agent's (``ahead``) before the customers' that came
    earlier; a read goes on meanwhile; a waiting writer cancelled passes its place on."""
    store = sqlite_store
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_the_turn() -> None:
        async with store._tx(write=True) as conn:
            await conn.execute(sa.text("SELECT 1"))
            held.set()
            await release.wait()

    async def agent() -> None:
        with store.ahead():
            await store.audit("agent", "takeover")

    holder = asyncio.ensure_future(hold_the_turn())
    await held.wait()
    customers = [asyncio.ensure_future(store.audit(f"customer-{i}", "message"))
                 for i in range(4)]
    cancelled = asyncio.ensure_future(store.audit("gone", "message"))
    await asyncio.sleep(0.05)
    ahead = asyncio.ensure_future(agent())
    await asyncio.sleep(0.05)
    cancelled.cancel()
    assert await asyncio.wait_for(store.list_audit(), 5) == []  # a read does not queue
    assert not any(t.done() for t in customers) and not ahead.done()
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, ahead, *customers), 10)
    order = [e.actor for e in reversed(await store.list_audit())]
    assert order == ["agent", "customer-0", "customer-1", "customer-2", "customer-3"]


async def test_a_sqlite_step_runs_whole_in_one_store_thread(sqlite_store: Store) -> None:
    """On a SQLite file a router step is one hand-off from the event loop: all its statements
    run in one of the store's threads, BEGIN to COMMIT, and the row it stepped from is not
    read again; a transaction that awaits anything else is refused and writes nothing."""
    store = sqlite_store
    conv = await store.upsert_conversation("t1")
    ran: list[tuple[int, str]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        ran.append((threading.get_ident(), statement.split()[0].upper()))

    assert store._threaded is not None
    sa.event.listen(store._threaded, "before_cursor_execute", seen)
    await store.save_step(
        "t1", expected_version=1, mode="review", owner="ann", queued=False, queue_reason=None,
        state={}, before=conv, appended=[{"sender": "system", "text": "ann joined"}],
        audit={"actor": "ann", "action": "review", "target": "conversation:t1",
               "details": None})
    assert len({ident for ident, _ in ran}) == 1
    assert ran[0][0] != threading.get_ident()  # not the event loop's
    # BEGIN IMMEDIATE; the state (RETURNING); its change; the message's number and row; audit
    assert [word for _, word in ran] == ["BEGIN", "UPDATE", "INSERT", "UPDATE", "INSERT",
                                         "INSERT"]
    sa.event.remove(store._threaded, "before_cursor_execute", seen)

    async def awaits_elsewhere(conn: Any) -> None:
        await conn.execute(sa.text("INSERT INTO audit_log (created_at, actor, action) "
                                   "VALUES ('2026-01-01', 'x', 'y')"))
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited something other"):
        await store._run(awaits_elsewhere, write=True)
    assert await store.list_audit(actor="x") == []


async def test_agents_transactions_on_postgresql_do_not_wait_for_a_busy_pool(
        store: Store) -> None:
    """On PostgreSQL the agents' transactions (``ahead``) have connections of their own:
    with every connection of the main pool held by other transactions (a burst of customer
    messages), an agent's read and write go through at once while another read waits."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite orders its writers instead (the test above)")
    held, release = asyncio.Event(), asyncio.Event()
    holding = 0
    size = store._engine.sync_engine.pool.size() + store._engine.sync_engine.pool._max_overflow

    async def hold() -> None:
        nonlocal holding
        async with store._tx(write=False) as conn:
            await conn.execute(sa.text("SELECT 1"))
            holding += 1
            if holding == size:
                held.set()
            await release.wait()

    holders = [asyncio.ensure_future(hold()) for _ in range(size)]
    try:
        await asyncio.wait_for(held.wait(), 10)
        waiting = asyncio.ensure_future(store.list_audit())
        with store.ahead():
            await asyncio.wait_for(store.audit("agent", "takeover"), 5)
            assert [e.actor for e in await asyncio.wait_for(store.list_audit(), 5)] == ["agent"]
        await asyncio.sleep(0.2)
        assert not waiting.done()  # the main pool is still all taken
    finally:
        release.set()
        await asyncio.gather(*holders)
    assert [e.actor for e in await asyncio.wait_for(waiting, 10)] == ["agent"]


async def _end_store_connections(store: Store) -> int:
    """End every connection the server has to the store's database but the one asking, as a
    restart of PostgreSQL does (the server closes them); how many there were."""
    dsn = store.url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        ended = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await conn.close()
    await asyncio.sleep(0.3)  # the clients see their sockets close
    return len(ended)


async def _use_every_pool(store: Store, n: int) -> None:
    """Reads and writes on both pools (the customers' and the agents'), ``n`` at once each."""
    await asyncio.gather(*(store.audit("warm", f"w{i}") for i in range(n)),
                         *(store.get_user("admin") for _ in range(n)),
                         *(store.list_audit(actor="warm") for _ in range(n)))
    with store.ahead():
        await asyncio.gather(*(store.audit("warm", f"a{i}") for i in range(n)),
                             *(store.get_user("admin") for _ in range(n)))


async def test_postgresql_connections_the_server_ended_are_replaced_without_an_error(
        store: Store) -> None:
    """The pooled connections a PostgreSQL restart ends are replaced before they are used,
    without a round trip to check each one (no ``pool_pre_ping``): every kind of
    transaction after it (reads, writes, ``_tx`` and ``_run``, both pools) succeeds at its
    first try and nothing is written twice."""
    if store.dialect != "postgresql":
        pytest.skip("PostgreSQL's connections only")
    await store.create_user("admin", password_hash="x", tier="admin")
    await _use_every_pool(store, 4)
    assert await _end_store_connections(store) >= 2
    # first on each pool a transaction of _tx, which is never run again
    assert len(await store.list_audit(actor="warm")) == 8
    with store.ahead():
        assert len(await store.list_audit(actor="warm")) == 8
    await _use_every_pool(store, 4)
    assert [e.action for e in await store.list_audit(actor="warm")].count("w0") == 2
    assert len(await store.list_audit(actor="warm")) == 16


async def test_postgresql_a_transaction_on_a_connection_broken_unseen_runs_again(
        store: Store) -> None:
    """A transaction of ``_run`` whose connection breaks before its commit (the server
    rolled it back) runs once more on a new connection: a read, a router step and a write
    succeed once each. Here the check at checkout that finds the connections the server
    closed is taken away, so that the broken connections are used, as one broken without a
    word (a network cut) would be."""
    if store.dialect != "postgresql":
        pytest.skip("PostgreSQL's connections only")
    from handoff.store import database
    await store.create_user("admin", password_hash="x", tier="admin")
    conv = await store.upsert_conversation("c1")
    await _use_every_pool(store, 1)
    engines = [store._engine.sync_engine, store._ahead_engine.sync_engine]
    for engine in engines:
        sa.event.remove(engine, "checkout", database._drop_closed)
    try:
        assert await _end_store_connections(store) >= 2
        assert (await store.get_user("admin")).username == "admin"
        saved = await store.save_step("c1", expected_version=conv.version, mode="bot",
                                      owner=None, queued=False, queue_reason=None, state=None,
                                      appended=[{"sender": "customer", "text": "hi"}],
                                      before=conv)
        assert saved.conversation.version == conv.version + 1
        with store.ahead():
            await store.audit("agent", "takeover")
    finally:
        for engine in engines:
            sa.event.listen(engine, "checkout", database._drop_closed)
    assert [m.text for m in await store.list_messages("c1")] == ["hi"]
    assert [e.action for e in await store.list_audit(actor="agent")] == ["takeover"]
