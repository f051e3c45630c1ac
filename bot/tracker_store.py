"""Rasa's SQL tracker store without the work it repeats on every turn (docs/performance.md).

Rasa 3.6's ``SQLTrackerStore`` loads and saves a conversation on every turn, and on the
embedded default (a SQLite file) each turn paid for it three times over, all on the Rasa
server's one event loop, so no other conversation's turn could run meanwhile:

- **a synced commit**: SQLite's default journal (``DELETE``, ``synchronous=FULL``) syncs the
  file several times per commit, 15-25 ms on this machine's disk, with the loop blocked;
- **a new connection per load and per save** (SQLAlchemy 1.4 gives a SQLite file no pool),
  each opening the file and reading its schema again;
- **a count before each save** (``SELECT count(*)`` of the conversation's events since its
  latest session start, to know which events are new), although the store had just loaded
  them and knows how many there were;
- and each loaded event's class looked up among every subclass of ``Event``, walked
  recursively, once per event.

:class:`SQLTrackerStore` is Rasa's store with these four taken out: on SQLite one pooled
connection in WAL mode with ``synchronous=NORMAL`` (the gateway's own store's settings: a
commit is not synced, the write-ahead log is at checkpoints; a crash of the process loses
nothing committed, a power loss may lose the last commits), a tracker that remembers how many
of its events are stored (set when it is loaded or saved; a tracker built elsewhere is counted
as Rasa counts it), and the event classes looked up in a table made once. The tables, the rows
and the queries are Rasa's own: a database written by one store is read by the other, and
``bot.gateway_channel``'s erase and mask work on both (it is a ``SQLTrackerStore``).

Enable it in ``endpoints.yml``::

    tracker_store:
      type: bot.tracker_store.SQLTrackerStore
      dialect: "sqlite"            # or "postgresql" with url, db, username, password
      db: "var/rasa-tracker.db"

Rasa falls back to an in-memory store, with a warning, when it cannot import the class.
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any, Dict, Iterator, List, Optional, Text, Type

import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore as RasaSQLTrackerStore
from rasa.shared.core.events import Event
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.utils.common import all_subclasses

logger = logging.getLogger(__name__)

STORED = "_stored_events"  # the tracker's attribute: how many of its events are stored
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")
_EVENT_TYPES: Dict[Text, Type[Event]] = {}


def event_class(type_name: Text) -> Optional[Type[Event]]:
    """The class of the events named ``type_name``: the one ``Event.resolve_by_type`` finds
    (the first subclass by that name), from a table made once; None for a name that the table
    does not have (a class imported since, or none: left to Rasa)."""
    if not _EVENT_TYPES:
        for cls in all_subclasses(Event):
            _EVENT_TYPES.setdefault(cls.type_name, cls)
    return _EVENT_TYPES.get(type_name)


def deserialise_events(serialised: List[Dict[Text, Any]]) -> List[Event]:
    """Rasa's ``deserialise_events`` with the classes from :func:`event_class`."""
    events = []
    for data in serialised:
        name = data.get("event")
        if name is None:
            continue
        cls = event_class(name)
        event = cls._from_parameters(data) if cls is not None else (  # noqa: SLF001
            Event.from_parameters(data))
        if event is not None:
            events.append(event)
    return events


def stored_events(tracker: DialogueStateTracker) -> Optional[int]:
    """How many of the tracker's first events are in the store (None: not known)."""
    stored = getattr(tracker, STORED, None)
    return stored if isinstance(stored, int) else None


class SQLTrackerStore(RasaSQLTrackerStore):
    """Rasa's SQL tracker store, its repeated work taken out (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        engine: Any = self.engine
        if engine.dialect.name == "sqlite":
            engine.dispose()
            # one connection kept (Rasa's calls all come from the server's event loop; more
            # would only wait for SQLite's one writer)
            engine = sa.create_engine(
                engine.url, poolclass=sa.pool.QueuePool, pool_size=1, max_overflow=4,
                connect_args={"check_same_thread": False})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            self.engine = engine
            self.sessionmaker = sa.orm.session.sessionmaker(bind=engine)

    async def _retrieve(
        self, sender_id: Text, fetch_events_from_all_sessions: bool
    ) -> Optional[DialogueStateTracker]:
        with self.session_scope() as session:
            rows = self._event_query(
                session, sender_id,
                fetch_events_from_all_sessions=fetch_events_from_all_sessions,
            ).all()
            serialised = [json.loads(row.data) for row in rows]
        if not self.domain or not serialised:
            return None
        tracker = DialogueStateTracker.from_events(
            sender_id, deserialise_events(serialised), self.domain.slots)
        setattr(tracker, STORED, len(tracker.events))
        return tracker

    def _additional_events(self, session: Any,
                           tracker: DialogueStateTracker) -> Iterator[Event]:
        """The tracker's events not yet stored: those after the ones it was loaded with or
        last saved with; for a tracker built elsewhere, Rasa's count."""
        stored = stored_events(tracker)
        if stored is None:
            events: Iterator[Event] = super()._additional_events(session, tracker)
            return events
        return itertools.islice(tracker.events, stored, len(tracker.events))

    async def save(self, tracker: DialogueStateTracker) -> None:
        await super().save(tracker)
        setattr(tracker, STORED, len(tracker.events))


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


__all__ = ("SQLTrackerStore",)
