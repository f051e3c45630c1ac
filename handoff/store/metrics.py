"""The dashboard's reads: what really happened, in the rows the metrics are computed from
(``docs/metrics.md``), and the agents' one-click rating of a suggestion. Part of
:class:`~handoff.store.Store`; the figures themselves are computed in
:mod:`handoff.learning.metrics`, away from the SQL.

Every read takes a :class:`MetricFilter`: the conversations *created* in ``[since, until)``
(the cohort), optionally only those whose first customer message was read as ``intent``, that
``agent`` owned or decided in, or whose first message with a model names ``model``. Each query
starts from the cohort (index ``conversations.created_at``) and reaches messages through their
``(conversation_id, seq)`` key, so its cost follows the cohort, not the table.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.dialects import sqlite as sqlite_dialect

from handoff.errors import BadRequest, NotFound
from handoff.store.database import Database, now
from handoff.store.schema import (
    audit_log,
    conversation_events,
    conversation_summaries,
    conversations,
    corrections,
    messages,
    model_versions,
    pending_replies,
    spot_check_marks,
    spot_checks,
    suggestion_ratings,
    summary_days,
    summary_people,
    summary_replies,
)

__all__ = ["ConversationFacts", "MetricEvent", "Stamp", "SUMMARY_CHUNK", "MetricFilter", "MetricsStore", "ReviewedReply",
           "AgentAction", "CorrectionFact", "Deploy", "ModelFact", "QueueBucket", "RatingFact",
           "SUGGESTION_ACTIONS", "Stats"]

SUGGESTION_ACTIONS: Final = ("message", "decision")  # audit actions that may use a suggestion
SUMMARY_CHUNK: Final = 500  # conversations recomputed per round of reads

Stamp = tuple[int, int, int]  # a conversation's (version, last_seq, metrics_rev)
Stats = dict[tuple[str, str], tuple[int, float, float | None]]  # (split, key): n, sum, median
MAX_SUGGESTION_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class MetricFilter:
    """Which conversations a figure counts: created in ``[since, until)``, and optionally
    only one first intent, one agent, one model version."""

    since: datetime
    until: datetime
    intent: str | None = None
    agent: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise BadRequest("since and until must carry a time zone")
        if self.until <= self.since:
            raise BadRequest("until must be after since")


@dataclass(frozen=True, slots=True)
class ConversationFacts:
    """One conversation of the cohort, as the metrics see it."""

    id: str
    created_at: datetime
    mode: str
    queued: bool
    closed_at: datetime | None
    effort_score: int | None
    started_at: datetime | None  # its first customer message
    intent: str | None  # the intent of its first customer message that has one
    model_version: str | None  # the model named by its first message that names one
    first_sentiment: float | None  # of its first customer message that has one
    last_sentiment: float | None  # of its last one
    sentiment_messages: int  # how many of its customer messages have a sentiment
    last_sender: str | None  # who spoke last: customer | bot | agent (system notices skipped)


@dataclass(frozen=True, slots=True)
class MetricEvent:
    """A change of mode, owner or queue of a cohort conversation (``conversation_events``)."""

    conversation_id: str
    created_at: datetime
    cause: str
    actor: str | None
    mode_from: str
    mode: str
    owner: str | None
    queued: bool


@dataclass(frozen=True, slots=True)
class ReviewedReply:
    """A bot reply of a cohort conversation held for an agent."""

    conversation_id: str
    created_at: datetime
    status: str  # pending | decided | discarded
    decision: str | None  # approved | edited | replaced | written
    decided_at: datetime | None
    decided_by: str | None
    action: str
    model_version: str | None
    intent: str | None  # the intent of the customer message it answered


@dataclass(frozen=True, slots=True)
class AgentAction:
    """Agents' messages or decisions (audit log) of one day, agent, action and suggestion use,
    counted."""

    day: str
    actor: str
    action: str
    used_suggestion: bool
    n: int


@dataclass(frozen=True, slots=True)
class QueueBucket:
    """The changes of the queue's length in one bucket of time (``MetricsStore.queue_buckets``)."""

    bucket: int  # its start, in buckets since the epoch
    longest: int  # the longest the queue was just after one of its changes
    steps: int  # its changes summed: the length at its end minus that at its start
    offsets: float  # each change's step × its seconds from the bucket's start, summed


@dataclass(frozen=True, slots=True)
class RatingFact:
    created_at: datetime
    agent: str
    suggestion: str
    rating: int


@dataclass(frozen=True, slots=True)
class CorrectionFact:
    created_at: datetime
    type: str
    agent: str
    model_version: str | None


@dataclass(frozen=True, slots=True)
class ModelFact:
    """A model version with what it learnt and proved."""

    model_id: str
    status: str
    created_at: datetime
    deployed_at: datetime | None
    corrections: list[int] | None
    fixed: int  # corrections whose test story it gets right (``fixed_by_model``)
    proof: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Deploy:
    """A model going live (audit ``model_deployed``): the dashboard's marks on the time axis."""

    created_at: datetime
    model_id: str
    actor: str


def _first(column: sa.ColumnElement[Any], *where: sa.ColumnElement[bool],
           last: bool = False) -> sa.ScalarSelect[Any]:
    """The ``column`` of the conversation's first (or last) message matching ``where``."""
    return (sa.select(column).where(messages.c.conversation_id == conversations.c.id, *where)
            .order_by(messages.c.seq.desc() if last else messages.c.seq.asc())
            .limit(1).scalar_subquery())


_CUSTOMER = messages.c.sender == "customer"
_INTENT = _first(messages.c.intent, _CUSTOMER, messages.c.intent.is_not(None))
_MODEL = _first(messages.c.model_version, messages.c.model_version.is_not(None))


def _in_range(column: sa.ColumnElement[Any], f: MetricFilter) -> list[sa.ColumnElement[bool]]:
    return [column >= f.since, column < f.until]


def _cohort(f: MetricFilter) -> sa.Select[Any]:
    """The ids of the conversations ``f`` selects. The first intent and model are read from
    ``conversation_summaries``, so those filters need the period's summaries current
    (``handoff.learning.metrics.refresh_summaries``)."""
    query = sa.select(conversations.c.id).where(
        conversations.c.created_at >= f.since,
        conversations.c.created_at < f.until)
    s = conversation_summaries
    if f.intent is not None or f.model is not None:
        summary = sa.select(s.c.conversation_id).where(*_in_range(s.c.created_at, f))
        if f.intent is not None:
            summary = summary.where(s.c.intent == f.intent)
        if f.model is not None:
            summary = summary.where(s.c.model_version == f.model)
        query = query.where(conversations.c.id.in_(summary))
    if f.agent is not None:
        query = query.where(sa.or_(
            sa.exists().where(conversation_events.c.conversation_id == conversations.c.id,
                              sa.or_(conversation_events.c.owner == f.agent,
                                     conversation_events.c.actor == f.agent)),
            sa.exists().where(pending_replies.c.conversation_id == conversations.c.id,
                              pending_replies.c.decided_by == f.agent)))
    return query


def _summary_cohort(f: MetricFilter, *,
                    all_conversations: bool = False) -> list[sa.ColumnElement[bool]]:
    """The conditions on ``conversation_summaries`` that select ``f``'s cohort (by default only
    the conversations with a customer message, those the figures count)."""
    s = conversation_summaries
    where = _facts_where(f, s.c.created_at, None if all_conversations else
                         s.c.started_at.is_not(None), s.c.intent, s.c.model_version)
    if f.agent is not None:
        where.append(s.c.conversation_id.in_(_cohort(f)))
    return where


def _facts_where(f: MetricFilter, created: sa.ColumnElement[Any],
                 started: sa.ColumnElement[bool] | None, intent: sa.ColumnElement[Any],
                 model: sa.ColumnElement[Any]) -> list[sa.ColumnElement[bool]]:
    """``f``'s date range, intent and model over the columns of a table that carries a
    conversation's facts (``started``: the condition that it has a customer message, None
    to take every conversation)."""
    where = _in_range(created, f)
    if started is not None:
        where.append(started)
    if f.intent is not None:
        where.append(intent == f.intent)
    if f.model is not None:
        where.append(model == f.model)
    return where


def _day(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """The UTC date of a time column, as ``YYYY-MM-DD``."""
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d", column)


def _epoch(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[float]:
    """Seconds since the epoch of a time column (UTC), as a float."""
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", column), sa.Float)
    return (sa.func.julianday(column) - 2440587.5) * 86400.0


def _floor(dialect: str, value: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
    """The integer part of a non-negative number."""
    if dialect == "postgresql":
        return sa.cast(sa.func.floor(value), sa.BigInteger)
    return sa.cast(value, sa.Integer)


def _ids(which: MetricFilter | Sequence[str]) -> sa.Select[Any] | list[str]:
    return _cohort(which) if isinstance(which, MetricFilter) else list(which)


def _median_query(value: sa.ColumnElement[Any],
                  splits: dict[str, sa.ColumnElement[Any] | None], source: sa.FromClause,
                  where: Sequence[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    """PostgreSQL: how many values, their sum and their median (``percentile_cont(0.5)``, the
    middle value or the mean of the two middle ones, as ``statistics.median``), per key of
    each split (a split named with ``None`` has one key, ``""``): rows ``(split, key, n,
    total, median)``; a null value is not counted, but its key is listed. One scan, one
    grouping set per split, the keys compared byte-wise (``COLLATE "C"``: they are only
    grouped, and the locale's comparison was most of the sorting)."""
    keys = {name: sa.collate(expr, "C").label(f"k{i}")
            for i, (name, expr) in enumerate(splits.items()) if expr is not None}
    values = sa.select(value.label("v"), *keys.values()).select_from(source).where(
        *where).subquery("stat_values")
    columns = {name: values.c[key.name] for name, key in keys.items()}
    whole = [name for name, expr in splits.items() if expr is None]
    grouped = [(sa.func.grouping(c) == 0, name, c) for name, c in columns.items()]
    split = sa.case(*((g, sa.literal(name)) for g, name, _ in grouped),
                    else_=sa.literal(whole[0] if whole else None)) if grouped else sa.literal(
        whole[0])
    key = sa.case(*((g, c) for g, _, c in grouped), else_=sa.literal("")) if grouped else (
        sa.literal(""))
    sets = [sa.tuple_()] * bool(whole) + [sa.tuple_(c) for c in columns.values()]
    return sa.select(split.label("split"), key.label("key"), sa.func.count(values.c.v),
                     sa.func.sum(values.c.v),
                     sa.func.percentile_cont(0.5).within_group(values.c.v)).group_by(
        sa.func.grouping_sets(*sets))


def _kept(table: sa.Table, f: MetricFilter, *where: sa.ColumnElement[bool],
          all_conversations: bool = False) -> tuple[sa.FromClause, list[sa.ColumnElement[bool]]]:
    """The rows of ``table`` (``summary_people``, ``summary_replies``) kept with the cohort's
    summaries: what to read and its conditions. They carry the conversation's facts the
    intent and model filters select on; the agent filter joins the summaries."""
    if f.agent is not None:
        s = conversation_summaries
        return (table.join(s, s.c.conversation_id == table.c.conversation_id),
                [*_in_range(table.c.created_at, f),
                 *_summary_cohort(f, all_conversations=all_conversations), *where])
    cohort = _facts_where(f, table.c.created_at, None if all_conversations else
                          table.c.started.is_(True), table.c.conversation_intent,
                          table.c.conversation_model)
    return table, [*cohort, *where]


_GROUP_COLUMNS: Final = ("day", "intent", "model_version", "involved", "escalated", "outcome",
                         "n", "answers", "effort_sum", "pairs", "first_sum", "last_sum",
                         "change_sum")
SUMMARY_LOCK: Final = 160020  # PostgreSQL advisory lock of the summaries' writers


def _group_keys() -> tuple[sa.ColumnElement[Any], ...]:
    s = conversation_summaries
    return (s.c.day, s.c.intent, s.c.model_version, s.c.involved, s.c.escalated, s.c.outcome)


def _group_counts() -> list[sa.ColumnElement[Any]]:
    """The summary groups' keys and counts (``_GROUP_COLUMNS``), over summaries."""
    s = conversation_summaries
    pair = s.c.sentiment_messages >= 2
    return [
        *_group_keys(), sa.func.count().label("n"),
        sa.func.count(s.c.effort_score).label("answers"),
        sa.func.coalesce(sa.func.sum(s.c.effort_score), 0).label("effort_sum"),
        sa.func.count(sa.case((pair, 1))).label("pairs"),
        sa.func.coalesce(sa.func.sum(sa.case((pair, s.c.first_sentiment))), 0.0)
        .label("first_sum"),
        sa.func.coalesce(sa.func.sum(sa.case((pair, s.c.last_sentiment))), 0.0)
        .label("last_sum"),
        sa.func.coalesce(sa.func.sum(sa.case((pair, s.c.last_sentiment
                                              - s.c.first_sentiment))), 0.0)
        .label("change_sum")]


def _whole_days(f: MetricFilter) -> tuple[datetime, datetime]:
    """The first and the end of the whole UTC days in ``[since, until)``."""
    since, until = f.since.astimezone(timezone.utc), f.until.astimezone(timezone.utc)
    first = since.replace(hour=0, minute=0, second=0, microsecond=0)
    if first < since:
        first += timedelta(days=1)
    return first, until.replace(hour=0, minute=0, second=0, microsecond=0)


class MetricsStore(Database):
    """The rows the dashboard's metrics are computed from."""

    async def stale_summaries(self, since: datetime, until: datetime) -> list[str]:
        """The conversations created in ``[since, until)`` whose summary is missing or older
        than the conversation (its stamp differs)."""
        c, s = conversations, conversation_summaries
        query = sa.select(c.c.id).select_from(
            c.outerjoin(s, s.c.conversation_id == c.c.id)).where(
            c.c.created_at >= since, c.c.created_at < until,
            sa.or_(s.c.conversation_id.is_(None), s.c.version != c.c.version,
                   s.c.last_seq != c.c.last_seq, s.c.metrics_rev != c.c.metrics_rev),
        ).order_by(c.c.id)
        async with self._tx(write=False) as conn:
            return [cid for (cid,) in await conn.execute(query)]

    async def conversation_facts(self, ids: Sequence[str]) -> list[tuple[Stamp, ConversationFacts]]:
        """These conversations with their first and last message facts, each with the stamp
        it was read at."""
        query = sa.select(
            conversations.c.version, conversations.c.last_seq, conversations.c.metrics_rev,
            conversations.c.id, conversations.c.created_at, conversations.c.mode,
            conversations.c.queued, conversations.c.closed_at, conversations.c.effort_score,
            _first(messages.c.created_at, _CUSTOMER).label("started_at"),
            _INTENT.label("intent"), _MODEL.label("model_version"),
            _first(messages.c.sentiment, _CUSTOMER, messages.c.sentiment.is_not(None))
            .label("first_sentiment"),
            _first(messages.c.sentiment, _CUSTOMER, messages.c.sentiment.is_not(None),
                   last=True).label("last_sentiment"),
            sa.select(sa.func.count()).where(
                messages.c.conversation_id == conversations.c.id, _CUSTOMER,
                messages.c.sentiment.is_not(None)).scalar_subquery().label("sentiment_messages"),
            _first(messages.c.sender, messages.c.sender != "system", last=True)
            .label("last_sender"),
        ).where(conversations.c.id.in_(list(ids))).order_by(conversations.c.id)
        async with self._tx(write=False) as conn:
            out = []
            for row in await conn.execute(query):
                values = row._asdict()
                stamp = (values.pop("version"), values.pop("last_seq"),
                         values.pop("metrics_rev"))
                out.append((stamp, ConversationFacts(**values)))
            return out

    async def save_summaries(self, rows: Sequence[dict[str, Any]],
                             people: Sequence[dict[str, Any]] = (),
                             replies: Sequence[dict[str, Any]] = ()) -> None:
        """Write conversations' summaries (the columns of ``conversation_summaries``), each
        replacing the one before, with their queue stays, ownerships and owners
        (``summary_people``) and held replies (``summary_replies``), which replace theirs,
        and delete the ``summary_days`` of their days; two readers refreshing at once write
        the same rows."""
        if not rows:
            return
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite_dialect.insert)
        stmt = insert(conversation_summaries)
        stmt = stmt.on_conflict_do_update(
            index_elements=[conversation_summaries.c.conversation_id],
            set_={c.name: stmt.excluded[c.name] for c in conversation_summaries.c
                  if c.name != "conversation_id"})
        ids = [row["conversation_id"] for row in rows]
        async with self._tx(write=True) as conn:
            await self._lock_summaries(conn)
            await conn.execute(stmt, list(rows))
            await conn.execute(sa.delete(summary_days).where(summary_days.c.day.in_(
                sorted({row["day"] for row in rows}))))
            for table, kept in ((summary_people, people), (summary_replies, replies)):
                await conn.execute(sa.delete(table).where(table.c.conversation_id.in_(ids)))
                if kept:
                    replace = insert(table)
                    await conn.execute(replace.on_conflict_do_update(
                        index_elements=table.primary_key.columns,
                        set_={c.name: replace.excluded[c.name] for c in table.c
                              if not c.primary_key}), list(kept))

    async def bot_turns_of(self, ids: Sequence[str]) -> list[tuple[str, str | None, int]]:
        """(conversation, model, bot messages) of these conversations."""
        m = messages
        query = sa.select(m.c.conversation_id, m.c.model_version, sa.func.count()).where(
            m.c.conversation_id.in_(list(ids)), m.c.sender == "bot",
        ).group_by(m.c.conversation_id, m.c.model_version)
        async with self._tx(write=False) as conn:
            return [(cid, model, int(n)) for cid, model, n in await conn.execute(query)]

    async def summary_groups(self, f: MetricFilter) -> list[sa.Row[Any]]:
        """The cohort's conversations (those with a customer message) counted by day, first
        intent, model, involvement, escalation and outcome, with the sums the figures need:
        ``n``, ``answers`` and ``effort_sum`` (the survey), ``pairs`` (two or more customer
        messages with a sentiment), ``first_sum``, ``last_sum`` and ``change_sum`` over them.
        The whole UTC days of the period are read from ``summary_days`` (built here when
        missing), the partial days at its ends from the summaries; with an agent filter,
        everything from the summaries.

        A day's rows are read with its marker in one statement: a summary of that day written
        after it was counted deletes both at once, so a day read without its marker was being
        counted anew, and its groups are counted from the summaries instead."""
        first, last = _whole_days(f)
        if f.agent is not None or first >= last:
            return await self._groups(f)
        days = [(first + timedelta(days=k)).date().isoformat()
                for k in range((last - first).days)]
        await self._count_days(days)
        d = summary_days
        wanted: list[sa.ColumnElement[bool]] = [d.c.outcome.is_not(None)]
        if f.intent is not None:
            wanted.append(d.c.intent == f.intent)
        if f.model is not None:
            wanted.append(d.c.model_version == f.model)
        query = sa.select(*(d.c[c] for c in _GROUP_COLUMNS)).where(
            d.c.day.in_(days), sa.or_(d.c.outcome.is_(None), sa.and_(*wanted)))
        async with self._tx(write=False) as conn:
            read = list(await conn.execute(query))
        counted = {row.day for row in read if row.outcome is None}
        rows = [row for row in read if row.outcome is not None and row.day in counted]
        spans = [(f.since, first), (last, f.until)] + [
            (start, start + timedelta(days=1)) for start in (
                datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
                for day in days if day not in counted)]
        for since, until in spans:
            if since < until:
                rows += await self._groups(replace(f, since=since, until=until))
        return rows

    async def _groups(self, f: MetricFilter) -> list[sa.Row[Any]]:
        """``summary_groups`` counted from the summaries."""
        query = sa.select(*_group_counts()).where(*_summary_cohort(f)).group_by(
            *_group_keys())
        async with self._tx(write=False) as conn:
            return list(await conn.execute(query))

    async def _count_days(self, days: Sequence[str]) -> None:
        """Build the ``summary_days`` rows of the days that have none (with a marker row each,
        so a day without conversations is counted once too). Under the summaries' lock, so a
        summary written meanwhile waits and then deletes what it changes."""
        d, s = summary_days, conversation_summaries
        async with self._tx(write=False) as conn:
            counted = {day for (day,) in await conn.execute(sa.select(d.c.day).where(
                d.c.day.in_(days), d.c.outcome.is_(None)))}
        missing = [day for day in days if day not in counted]
        if not missing:
            return
        async with self._tx(write=True) as conn:
            await self._lock_summaries(conn)
            await conn.execute(sa.delete(d).where(d.c.day.in_(missing)))
            start = datetime.fromisoformat(missing[0]).replace(tzinfo=timezone.utc)
            end = datetime.fromisoformat(missing[-1]).replace(tzinfo=timezone.utc)
            await conn.execute(sa.insert(d).from_select(list(_GROUP_COLUMNS), sa.select(
                *_group_counts()).where(
                    s.c.created_at >= start, s.c.created_at < end + timedelta(days=1),
                    s.c.day.in_(missing), s.c.started_at.is_not(None))
                .group_by(*_group_keys())))
            await conn.execute(sa.insert(d), [
                {"day": day, "n": 0, "answers": 0, "effort_sum": 0, "pairs": 0,
                 "first_sum": 0.0, "last_sum": 0.0, "change_sum": 0.0} for day in missing])

    async def _lock_summaries(self, conn: AsyncConnection) -> None:
        """Serialize the writers of summaries and of ``summary_days`` (SQLite's write
        transactions are serial already)."""
        if self.dialect == "postgresql":
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SUMMARY_LOCK)))

    async def effort_distribution(self, f: MetricFilter) -> dict[int, int]:
        """How many of the cohort's survey answers gave each score."""
        s = conversation_summaries
        query = sa.select(s.c.effort_score, sa.func.count()).where(
            *_summary_cohort(f), s.c.effort_score.is_not(None)).group_by(s.c.effort_score)
        async with self._tx(write=False) as conn:
            return {int(score): int(n) for score, n in await conn.execute(query)}

    async def resolution_stats(self, f: MetricFilter) -> Stats:
        """The resolved conversations' seconds to resolution: their number, sum and median,
        over the cohort (split ``all``) and per ``involvement``, ``intent`` and ``day`` of its
        conversations (those with none resolved too)."""
        s = conversation_summaries
        splits: dict[str, sa.ColumnElement[Any] | None] = {
            "all": None,
            "involvement": sa.case((s.c.involved, "with_agent"), else_="bot_only"),
            "intent": sa.func.coalesce(s.c.intent, "none"), "day": s.c.day}
        return await self._stats(s.c.resolution_seconds, splits, s, _summary_cohort(f))

    async def people_stats(self, f: MetricFilter) -> Stats:
        """Over the cohort, split ``people``: the queue stays that ended (key ``taken`` or
        ``left``) and the finished ownerships (key ``handling``): their number, seconds summed
        and median seconds."""
        p = summary_people
        source, where = _kept(p, f, p.c.seconds.is_not(None),
                              p.c.kind.in_(("stay", "handling")))
        return await self._stats(p.c.seconds, {
            "people": sa.case((p.c.kind == "stay", p.c.how), else_="handling")}, source, where)

    async def _stats(self, value: sa.ColumnElement[Any],
                     splits: dict[str, sa.ColumnElement[Any] | None], source: sa.FromClause,
                     where: Sequence[sa.ColumnElement[bool]]) -> Stats:
        """How many values, their sum and their median per key of each split; keys whose
        values are all null are listed with none. SQLite has no median: it sends the values
        in order, once, and they are counted here."""
        if self.dialect == "postgresql":
            async with self._tx(write=False) as conn:
                return {(split, key): (int(n), float(total or 0),
                                       None if median is None else float(median))
                        for split, key, n, total, median in await conn.execute(
                            _median_query(value, splits, source, where))}
        names = list(splits)
        exprs = [e for e in splits.values() if e is not None]
        query = sa.select(value, *exprs).select_from(source).where(*where).order_by(
            sa.nulls_last(value))
        values: dict[tuple[str, str], list[float]] = {}
        async with self._tx(write=False) as conn:
            for v, *keyed in await conn.execute(query):
                found = iter(keyed)
                for name in names:
                    group = values.setdefault(
                        (name, next(found) if splits[name] is not None else ""), [])
                    if v is not None:
                        group.append(float(v))
        return {k: (len(vs), sum(vs), statistics.median(vs) if vs else None)
                for k, vs in values.items()}

    async def agent_people(self, f: MetricFilter) -> list[tuple[str, int, float]]:
        """(agent, conversations owned, seconds of finished ownerships) over the cohort."""
        p = summary_people
        source, where = _kept(p, f, p.c.kind.in_(("owner", "handling")))
        query = sa.select(
            p.c.agent, sa.func.count(sa.case((p.c.kind == "owner", 1))),
            sa.func.coalesce(sa.func.sum(sa.case((p.c.kind == "handling", p.c.seconds))), 0.0),
        ).select_from(source).where(*where).group_by(p.c.agent).order_by(p.c.agent)
        async with self._tx(write=False) as conn:
            return [(agent, int(n), float(seconds)) for agent, n, seconds
                    in await conn.execute(query)]

    async def queue_buckets(self, f: MetricFilter, seconds: int,
                            stop: datetime) -> list[QueueBucket]:
        """The changes of the queue's length by the cohort's stays before ``stop``, in buckets
        of ``seconds`` since the epoch (``seconds`` divides a day): per bucket with a change,
        the longest the queue was just after one of them, the changes summed and, over the
        changes, step × seconds from the bucket's start summed (what
        :func:`handoff.learning.metrics.queue` needs for the time-weighted mean). Replayed in
        SQL in the order of time, conversation and stay (a stay's start before its end)."""
        p = summary_people
        source, where = _kept(p, f, p.c.kind == "stay", p.c.start_at < stop)
        stays = sa.select(p.c.conversation_id, p.c.ord, p.c.start_at, p.c.end_at).select_from(
            source).where(*where).cte("stays")  # the cohort selected once, read twice
        changes = sa.union_all(
            sa.select(stays.c.start_at.label("at"), stays.c.conversation_id.label("cid"),
                      (stays.c.ord * 2).label("o"), sa.literal(1).label("step")),
            sa.select(stays.c.end_at, stays.c.conversation_id, stays.c.ord * 2 + 1,
                      sa.literal(-1)).where(stays.c.end_at < stop)).subquery("changes")
        epoch = _epoch(self.dialect, changes.c.at)
        replayed = sa.select(
            changes.c.step, epoch.label("x"),
            sa.func.sum(changes.c.step).over(
                order_by=(changes.c.at, changes.c.cid, changes.c.o), rows=(None, 0),
            ).label("length")).subquery("replayed")
        bucket = _floor(self.dialect, replayed.c.x / seconds)
        query = sa.select(
            bucket.label("bucket"), sa.func.max(replayed.c.length),
            sa.func.sum(replayed.c.step),
            sa.func.sum(replayed.c.step * (replayed.c.x - bucket * seconds)),
        ).group_by(bucket).order_by(bucket)
        async with self._tx(write=False) as conn:
            return [QueueBucket(int(b), int(longest), int(steps), float(offsets))
                    for b, longest, steps, offsets in await conn.execute(query)]

    async def reply_groups(self, f: MetricFilter) -> list[sa.Row[Any]]:
        """The cohort's held replies counted (``n``) by the day they were held, the intent of
        the message they answered, action, model, status, decision and who decided."""
        r = summary_replies
        keys = (r.c.day, r.c.intent, r.c.action, r.c.model_version, r.c.status, r.c.decision,
                r.c.decided_by)
        source, where = _kept(r, f, all_conversations=True)
        query = sa.select(*keys, sa.func.count().label("n")).select_from(source).where(
            *where).group_by(*keys)
        async with self._tx(write=False) as conn:
            return list(await conn.execute(query))

    async def spot_check_groups(self, f: MetricFilter) -> list[sa.Row[Any]]:
        """The cohort's spot-check marks counted (``n``) by the day they were made, the
        intent of the message the reply answered, the bot's action, its model and the
        verdict (``right``, ``edited``, ``relabelled``)."""
        m = spot_check_marks
        day = _day(self.dialect, m.c.created_at).label("day")
        keys = (day, m.c.intent, m.c.action, m.c.model_version, m.c.verdict)
        query = sa.select(*keys, sa.func.count().label("n")).select_from(
            m.join(spot_checks, spot_checks.c.id == m.c.spot_check_id)).where(
            spot_checks.c.conversation_id.in_(_cohort(f))).group_by(*keys)
        async with self._tx(write=False) as conn:
            return list(await conn.execute(query))

    async def decision_latency_stats(self, f: MetricFilter) -> Stats:
        """Seconds from holding to deciding each reply of the cohort an agent looked at
        (decided, or discarded by an agent), to the millisecond: their number, sum and
        median (split ``all``)."""
        r = summary_replies
        source, where = _kept(r, f, r.c.latency.is_not(None), all_conversations=True)
        return await self._stats(r.c.latency, {"all": None}, source, where)

    async def metric_events(self, which: MetricFilter | Sequence[str]) -> list[MetricEvent]:
        """The mode, owner and queue changes of the cohort (or of these conversations), in
        order."""
        e = conversation_events
        query = sa.select(e.c.conversation_id, e.c.created_at, e.c.cause, e.c.actor,
                          e.c.mode_from, e.c.mode, e.c.owner, e.c.queued).where(
            e.c.conversation_id.in_(_ids(which))).order_by(e.c.conversation_id, e.c.id)
        async with self._tx(write=False) as conn:
            return [MetricEvent(**row._asdict()) for row in await conn.execute(query)]

    async def reviewed_replies(self, which: MetricFilter | Sequence[str]) -> list[ReviewedReply]:
        """Every reply of the cohort (or of these conversations) held for an agent, whatever
        became of it."""
        p = pending_replies
        query = sa.select(
            p.c.conversation_id, p.c.created_at, p.c.status, p.c.decision, p.c.decided_at,
            p.c.decided_by, p.c.action, p.c.model_version, messages.c.intent,
        ).select_from(p.outerjoin(messages, messages.c.id == p.c.trigger_message_id)).where(
            p.c.conversation_id.in_(_ids(which))).order_by(p.c.id)
        async with self._tx(write=False) as conn:
            return [ReviewedReply(**row._asdict()) for row in await conn.execute(query)]

    async def agent_actions(self, f: MetricFilter) -> list[AgentAction]:
        """Agents' messages and decisions on the cohort (audit log), with suggestion use,
        counted (``n``) by day, agent, action and use."""
        a, s = audit_log, conversation_summaries
        prefix = "conversation:"  # the audit target of a conversation
        day = _day(self.dialect, a.c.created_at).label("day")
        suggestion = a.c.details["suggestion"].as_string()
        used = sa.case((sa.and_(suggestion.is_not(None), suggestion != ""), True),
                       else_=False).label("used_suggestion")
        query = sa.select(day, a.c.actor, a.c.action, used, sa.func.count().label("n")).where(
            a.c.action.in_(SUGGESTION_ACTIONS), *_in_range(a.c.created_at, f),
            a.c.target.startswith(prefix),
            sa.func.substr(a.c.target, len(prefix) + 1).in_(sa.select(
                s.c.conversation_id).where(*_summary_cohort(f, all_conversations=True))),
        ).group_by(day, a.c.actor, a.c.action, used)
        async with self._tx(write=False) as conn:
            return [AgentAction(day=r.day, actor=r.actor, action=r.action,
                                used_suggestion=bool(r.used_suggestion), n=int(r.n))
                    for r in await conn.execute(query)]

    async def suggestion_ratings_of(self, f: MetricFilter) -> list[RatingFact]:
        s = suggestion_ratings
        query = sa.select(s.c.created_at, s.c.agent, s.c.suggestion, s.c.rating).where(
            s.c.conversation_id.in_(_cohort(f))).order_by(s.c.id)
        async with self._tx(write=False) as conn:
            return [RatingFact(**row._asdict()) for row in await conn.execute(query)]

    async def correction_facts(self, f: MetricFilter) -> list[CorrectionFact]:
        c = corrections
        query = sa.select(c.c.created_at, c.c.type, c.c.agent, c.c.model_version).where(
            c.c.conversation_id.in_(_cohort(f))).order_by(c.c.id)
        async with self._tx(write=False) as conn:
            return [CorrectionFact(**row._asdict()) for row in await conn.execute(query)]

    async def bot_turns_by_model(self, f: MetricFilter) -> dict[str | None, int]:
        """How many bot messages each model produced in the cohort (the denominator of the
        held and corrected shares)."""
        s = conversation_summaries
        single = sa.select(s.c.bot_model, sa.func.sum(s.c.bot_turns)).where(
            *_summary_cohort(f, all_conversations=True), s.c.bot_model.is_not(None),
        ).group_by(s.c.bot_model)
        mixed = sa.select(s.c.turns_by_model).where(
            *_summary_cohort(f, all_conversations=True), s.c.turns_by_model.is_not(None))
        turns: dict[str | None, int] = {}
        async with self._tx(write=False) as conn:
            for model, n in await conn.execute(single):
                turns[model] = int(n)
            for (pairs,) in await conn.execute(mixed):
                for model, n in pairs:
                    turns[model] = turns.get(model, 0) + int(n)
        return turns

    async def model_facts(self) -> list[ModelFact]:
        """Every model version, oldest first, with how many corrections it fixed."""
        mv = model_versions
        fixed = (sa.select(sa.func.count()).where(corrections.c.fixed_by_model == mv.c.model_id)
                 .scalar_subquery())
        query = sa.select(mv.c.model_id, mv.c.status, mv.c.created_at, mv.c.deployed_at,
                          mv.c.corrections, fixed.label("fixed"), mv.c.proof).order_by(
            mv.c.created_at, mv.c.model_id)
        async with self._tx(write=False) as conn:
            return [ModelFact(**row._asdict()) for row in await conn.execute(query)]

    async def deploys(self, f: MetricFilter) -> list[Deploy]:
        """The models that went live in ``[since, until)``."""
        a = audit_log
        query = sa.select(a.c.created_at, a.c.target, a.c.actor).where(
            a.c.action == "model_deployed", *_in_range(a.c.created_at, f)).order_by(a.c.id)
        async with self._tx(write=False) as conn:
            return [Deploy(created_at=r.created_at, actor=r.actor,
                           model_id=(r.target or "").removeprefix("model:"))
                    for r in await conn.execute(query)]

    async def queue_length(self) -> int:
        """How many conversations wait in the human queue now."""
        async with self._tx(write=False) as conn:
            return int((await conn.execute(sa.select(sa.func.count()).where(
                conversations.c.queued.is_(True), conversations.c.mode != "closed"))).scalar_one())

    async def rate_suggestion(self, conversation_id: str, *, agent: str, suggestion: str,
                              rating: int) -> RatingFact:
        """Store an agent's one-click rating of a suggested reply: +1 useful, -1 not."""
        if isinstance(rating, bool) or rating not in (-1, 1):
            raise BadRequest(f"rating must be 1 or -1; got {rating!r}")
        if not isinstance(suggestion, str) or not suggestion.strip() or (
                len(suggestion) > MAX_SUGGESTION_CHARS):
            raise BadRequest("'suggestion' must be the source of the suggestion rated "
                             f"(a string of at most {MAX_SUGGESTION_CHARS} characters)")
        at = now()
        async with self._tx(write=True) as conn:
            found = (await conn.execute(sa.select(conversations.c.id).where(
                conversations.c.id == conversation_id))).first()
            if found is None:
                raise NotFound(f"no conversation {conversation_id!r}",
                               conversation_id=conversation_id)
            await conn.execute(sa.insert(suggestion_ratings).values(
                conversation_id=conversation_id, created_at=at, agent=agent,
                suggestion=suggestion, rating=rating))
        return RatingFact(created_at=at, agent=agent, suggestion=suggestion, rating=rating)
