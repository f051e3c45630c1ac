"""The tracker store endpoints.yml ships (bot/tracker_store.py): Rasa's SQL store, the same rows,
without a synced commit, a connection per call or a count before each save.

Each test runs a script in Rasa's environment (the store is Rasa's class) on SQLite files of its
own; tests/gateway/test_overload.py runs it inside real Rasa servers under load and compares
every tracker with what its customer saw."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.conftest import RASA_VENV
from tests.gateway.conftest import PG_ADMIN_DSN, _pg_admin

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _in_rasa(script: str, tmp_path: Path, *args: str) -> None:
    """Run ``script`` in Rasa's environment with a folder for its files as its argument (and
    ``args`` after it); it prints "ok" when its assertions held."""
    done = subprocess.run(
        [str(RASA_VENV / "bin" / "python"), "-c", script, str(tmp_path), *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert (done.returncode, done.stdout.strip()[-2:]) == (0, "ok"), (
        done.stdout[-2000:] + done.stderr[-3000:])


COMMON = """
import asyncio, sqlite3, sys
from pathlib import Path
from rasa.core.tracker_store import SQLTrackerStore as RasaStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted, BotUttered, SessionStarted, SlotSet, UserUttered, UserUtteranceReverted)
from rasa.shared.core.trackers import DialogueStateTracker
from bot.tracker_store import SQLTrackerStore

folder = Path(sys.argv[1])
domain = Domain.load("domain.yml")

def rows(db):
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT sender_id, type_name, timestamp, intent_name, action_name, data "
            "FROM events ORDER BY id").fetchall()

def said(text, intent):
    return UserUttered(text, {"name": intent, "confidence": 0.9},
                       parse_data={"intent": {"name": intent, "confidence": 0.9}, "text": text})

TURNS = [  # (conversation, the events of its turn)
    ("a", [ActionExecuted("action_session_start"), SessionStarted(),
           ActionExecuted("action_listen"), said("hello", "greet"),
           ActionExecuted("utter_greet"), BotUttered("Hi!"), ActionExecuted("action_listen")]),
    ("b", [ActionExecuted("action_session_start"), SessionStarted(),
           ActionExecuted("action_listen"), said("my mail is jane@mail.test", "give_email"),
           SlotSet("email", "jane@mail.test"), ActionExecuted("action_listen")]),
    ("a", [said("asdf", "nlu_fallback"), UserUtteranceReverted(),
           ActionExecuted("action_listen")]),
    ("a", [said("thanks", "thank"), ActionExecuted("utter_welcome"), BotUttered("Welcome"),
           ActionExecuted("action_listen")]),
    ("a", [ActionExecuted("action_session_start"), SessionStarted(),  # a new session
           ActionExecuted("action_listen"), said("hello again", "greet")]),
    ("a", [ActionExecuted("utter_greet"), BotUttered("Hi again"),
           ActionExecuted("action_listen")]),
    ("b", [said("bye", "goodbye"), ActionExecuted("utter_goodbye"), BotUttered("Bye"),
           ActionExecuted("action_listen")]),
]

async def turn(store, sender, events):
    tracker = await store.get_or_create_tracker(sender, append_action_listen=False)
    for event in events:
        tracker.update(event)
    await store.save(tracker)
    return tracker
"""


SAME_ROWS = COMMON + """
async def main() -> None:
    ours = SQLTrackerStore(domain, dialect="sqlite", db=str(folder / "ours.db"))
    rasas = RasaStore(domain, dialect="sqlite", db=str(folder / "rasa.db"))
    for sender, events in TURNS:
        for store in (ours, rasas):
            await turn(store, sender, events)
    assert len(rows(folder / "ours.db")) == sum(len(e) for _, e in TURNS) == 31
    assert rows(folder / "ours.db") == rows(folder / "rasa.db")
    # each reads what the other wrote: the same trackers (the latest session, and all)
    rasa_on_ours = RasaStore(domain, dialect="sqlite", db=str(folder / "ours.db"))
    ours_on_rasa = SQLTrackerStore(domain, dialect="sqlite", db=str(folder / "rasa.db"))
    for sender in ("a", "b"):
        for a, b in ((ours, rasa_on_ours), (ours_on_rasa, rasas)):
            for full in (False, True):
                get = "retrieve_full_tracker" if full else "retrieve"
                one, two = await getattr(a, get)(sender), await getattr(b, get)(sender)
                assert one.current_state() == two.current_state(), (sender, full)
                assert [e.as_dict() for e in one.events] == [e.as_dict() for e in two.events]
    latest = await ours.retrieve("a")  # from its latest session start on
    assert [e.type_name for e in latest.events] == [
        "session_started", "action", "user", "action", "bot", "action"]
    assert latest.latest_bot_utterance.text == "Hi again"
    assert len((await ours.retrieve_full_tracker("a")).events) == 21
    # a tracker built from the stored events elsewhere is counted as Rasa counts it
    elsewhere = DialogueStateTracker.from_dict(
        "b", [e.as_dict() for e in (await ours.retrieve("b")).events], domain.slots)
    elsewhere.update(ActionExecuted("action_listen"))
    await ours.save(elsewhere)
    assert len(rows(folder / "ours.db")) == 32
    # saved twice: the second save writes only what came after the first
    tracker = await ours.retrieve("b")
    tracker.update(said("one more", "greet"))
    await ours.save(tracker)
    tracker.update(ActionExecuted("action_listen"))
    await ours.save(tracker)
    assert [r[1] for r in rows(folder / "ours.db")[-3:]] == ["action", "user", "action"]
    assert len(rows(folder / "ours.db")) == 34
    print("ok")

asyncio.run(main())
"""


def test_the_same_rows_as_rasas_store_each_readable_by_the_other(tmp_path: Path) -> None:
    _in_rasa(SAME_ROWS, tmp_path)


TWO_SERVERS = COMMON + """
async def main() -> None:
    # two Rasa servers on one file (a blue/green deploy): turns of one conversation alternate
    one = SQLTrackerStore(domain, dialect="sqlite", db=str(folder / "shared.db"))
    two = SQLTrackerStore(domain, dialect="sqlite", db=str(folder / "shared.db"))
    rasas = RasaStore(domain, dialect="sqlite", db=str(folder / "rasa.db"))
    for i, (sender, events) in enumerate(TURNS):
        await turn((one, two)[i % 2], sender, events)
        await turn(rasas, sender, events)
    assert rows(folder / "shared.db") == rows(folder / "rasa.db")
    # SQLite in WAL mode, commits not synced, one connection kept
    with one.session_scope() as session:
        first = session.connection().connection.dbapi_connection
        assert session.execute("PRAGMA journal_mode").scalar() == "wal"
        assert session.execute("PRAGMA synchronous").scalar() == 1  # NORMAL
    await one.retrieve("a")
    with one.session_scope() as session:
        assert session.connection().connection.dbapi_connection is first
    print("ok")

asyncio.run(main())
"""


def test_two_servers_on_one_file_in_wal_mode_on_one_connection_each(tmp_path: Path) -> None:
    _in_rasa(TWO_SERVERS, tmp_path)


PG_TWO_SERVERS = COMMON + """
import psycopg2

host, port, user, ours_db, rasa_db = sys.argv[2:7]

def pg_rows(db):
    with psycopg2.connect(host=host, port=port, user=user, dbname=db) as connection:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT sender_id, type_name, timestamp, intent_name, action_name, data "
                "FROM events ORDER BY id")
            return cursor.fetchall()

def store(cls, db):
    return cls(domain, dialect="postgresql", url=host, port=int(port), db=db, username=user)

async def main() -> None:
    # two Rasa servers on one PostgreSQL database (docs/deploy.md's multi-server setup):
    # the turns of one conversation alternate between them
    one, two = store(SQLTrackerStore, ours_db), store(SQLTrackerStore, ours_db)
    rasas = store(RasaStore, rasa_db)
    for i, (sender, events) in enumerate(TURNS):
        await turn((one, two)[i % 2], sender, events)
        await turn(rasas, sender, events)
    assert len(pg_rows(ours_db)) == sum(len(e) for _, e in TURNS) == 31
    assert pg_rows(ours_db) == pg_rows(rasa_db)
    # Rasa's store reads what they wrote as they read it themselves, and the other way round
    rasa_on_ours, ours_on_rasa = store(RasaStore, ours_db), store(SQLTrackerStore, rasa_db)
    for sender in ("a", "b"):
        for a, b in ((two, rasa_on_ours), (ours_on_rasa, rasas)):
            for get in ("retrieve", "retrieve_full_tracker"):
                mine, theirs = await getattr(a, get)(sender), await getattr(b, get)(sender)
                assert [e.as_dict() for e in mine.events] == [
                    e.as_dict() for e in theirs.events], (sender, get)
    # a server whose remembered count is stale (the other saved since) writes only the new
    tracker = await one.retrieve("b")
    other = await two.retrieve("b")
    other.update(ActionExecuted("action_listen"))
    await two.save(other)
    tracker = await one.retrieve("b")  # read again, as every turn does
    tracker.update(said("one more", "greet"))
    await one.save(tracker)
    assert [r[1] for r in pg_rows(ours_db)[-2:]] == ["action", "user"]
    assert len(pg_rows(ours_db)) == 33
    print("ok")

asyncio.run(main())
"""


def test_two_servers_on_one_postgresql_database_write_rasas_rows(tmp_path: Path) -> None:
    """The multi-server setup's tracker store (docs/deploy.md): the project's store on
    PostgreSQL, two servers alternating the turns, writes exactly the rows Rasa's would, and
    each store reads the other's."""
    dsn = PG_ADMIN_DSN
    url = urlsplit(dsn)
    names = [f"trackers_{kind}_{uuid.uuid4().hex[:10]}" for kind in ("ours", "rasa")]
    try:
        asyncio.run(_pg_admin(dsn, *(f'CREATE DATABASE "{n}"' for n in names)))
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        if os.environ.get("TEST_REQUIRE_PG"):
            pytest.fail(f"PostgreSQL not reachable at {dsn}: {exc!r}")
        pytest.skip(f"PostgreSQL not reachable at {dsn}: {exc!r}")
    try:
        _in_rasa(PG_TWO_SERVERS, tmp_path, url.hostname or "127.0.0.1", str(url.port or 5432),
                 url.username or "postgres", *names)
    finally:
        asyncio.run(_pg_admin(dsn, *(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'
                                     for n in names)))


EVENT_TYPES = """
from rasa.shared.core.events import Event
from rasa.shared.utils.common import all_subclasses
from bot.tracker_store import deserialise_events, event_class

names = {cls.type_name for cls in all_subclasses(Event)}
assert len(names) > 20
for name in names:
    assert event_class(name) is Event.resolve_by_type(name), name
assert event_class("no_such_event") is None
try:
    deserialise_events([{"event": "no_such_event"}])
    raise AssertionError("an unknown event was read")
except ValueError as exc:
    assert str(exc) == "Unknown event name 'no_such_event'.", exc
assert deserialise_events([{"event": "topic"}, {"no": "event"}]) == []  # as Rasa's
print("ok")
"""


def test_event_classes_are_those_rasa_resolves(tmp_path: Path) -> None:
    _in_rasa(EVENT_TYPES, tmp_path)
