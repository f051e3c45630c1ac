"""The Humans + Machines metrics, computed from what the store recorded (``docs/metrics.md``
defines each figure; the section names there are the ``definition`` anchors here).

The store hands over plain rows (:mod:`handoff.store.metrics`); this module turns them into
figures with no SQL and no I/O, so each definition reads as code in one place:
:func:`classify` gives every conversation its outcome, and one function per metric computes
its figure, its splits and its series over time (by UTC day). :func:`compute_metrics` reads the
rows for a filter and computes them all.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final

from contracts.correction_record import ACTION_CHOSEN, RELABELLED, SLOT_SET
from handoff.learning.refresh import Refresh
from handoff.store import Store
from handoff.store.database import now
from handoff.store.metrics import (
    AgentAction,
    ConversationFacts,
    CorrectionFact,
    Deploy,
    MetricEvent,
    MetricFilter,
    ModelFact,
    QueueBucket,
    RatingFact,
    ReviewedReply,
    Stamp,
    Stats,
    SUMMARY_CHUNK,
)

__all__ = ["METRICS", "Outcome", "classify", "compute_metrics", "people_rows",
           "refresh_summaries", "reply_rows", "summary_row"]

METRICS: Final = ("effort", "resolution_time", "resolution", "accuracy", "enablement",
                  "sentiment", "learning", "workload", "queue")
RESOLVED: Final = ("agent_resolved", "bot_resolved")
CORRECTING: Final = ("edited", "replaced", "written", "relabelled")  # corrections that change
DOCS: Final = "docs/metrics.md"

Json = dict[str, Any]


# --------------------------------------------------------------------------- small helpers


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def _day(at: datetime) -> str:
    return at.date().isoformat()


def _split(items: Iterable[Any], key: Callable[[Any], str | None],
           figure: Callable[[list[Any]], Json]) -> dict[str, Json]:
    """``figure`` of the items grouped by ``key`` (None grouped as "none"), keys sorted."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        groups[key(item) or "none"].append(item)
    return {k: figure(groups[k]) for k in sorted(groups)}


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one conversation (docs/metrics.md, "Outcomes")."""

    facts: ConversationFacts
    # open | agent_resolved | bot_resolved | abandoned | ended_after_handoff | reopened
    outcome: str
    escalated: bool  # entered the human queue or an agent owned it
    involved: bool  # an agent owned it or decided on one of its replies
    queue_waits: tuple[tuple[float, str], ...]  # (seconds, "taken" | "left") per queue stay
    # every queue stay: (start, end or None while queued, "taken" | "left" | None)
    stays: tuple[tuple[datetime, datetime | None, str | None], ...]
    handling: tuple[tuple[str, float], ...]  # (agent, seconds) per finished ownership
    owners: tuple[str, ...]  # every agent who owned it

    @property
    def resolved(self) -> bool:
        return self.outcome in RESOLVED

    @property
    def closed(self) -> bool:
        return self.outcome != "open"


def classify(facts: ConversationFacts, events: Sequence[MetricEvent],
             replies: Sequence[ReviewedReply]) -> Outcome:
    """The outcome of a conversation from its facts, its mode/owner/queue changes in order,
    and its held replies."""
    escalated = any(e.queued or e.owner is not None for e in events)
    involved = any(e.owner is not None for e in events) or any(
        r.decided_by is not None for r in replies)
    reopened = any(e.mode_from == "closed" and e.mode != "closed" for e in events)
    stays: list[tuple[datetime, datetime | None, str | None]] = []
    handling: list[tuple[str, float]] = []
    queued_since: datetime | None = None
    owner: str | None = None
    owned_since: datetime | None = None
    queued_at_close = False
    closed_by_agent = False
    for e in events:
        was_queued = queued_since is not None
        if e.queued and queued_since is None:
            queued_since = e.created_at
        elif not e.queued and queued_since is not None:
            stays.append((queued_since, e.created_at,
                          "taken" if e.owner is not None else "left"))
            queued_since = None
        if e.owner != owner:
            if owner is not None and owned_since is not None:
                handling.append((owner, _seconds(owned_since, e.created_at)))
            owner, owned_since = e.owner, e.created_at
        if e.mode == "closed" and e.mode_from != "closed":
            closed_by_agent = e.actor is not None
            queued_at_close = was_queued
    if facts.mode != "closed":
        outcome = "open"
    elif reopened:
        outcome = "reopened"
    elif closed_by_agent:
        outcome = "agent_resolved"
    elif queued_at_close or facts.last_sender == "customer":
        outcome = "abandoned"
    elif escalated:
        outcome = "ended_after_handoff"
    else:
        outcome = "bot_resolved"
    if queued_since is not None:
        stays.append((queued_since, None, None))
    owners = tuple(sorted({e.owner for e in events if e.owner is not None}))
    return _outcome(facts, outcome, escalated, involved, stays, handling, owners)


def _outcome(facts: ConversationFacts, outcome: str, escalated: bool, involved: bool,
             stays: Sequence[tuple[datetime, datetime | None, str | None]],
             handling: Sequence[tuple[str, float]], owners: Sequence[str]) -> Outcome:
    waits = tuple((_seconds(start, end), how) for start, end, how in stays
                  if end is not None and how is not None)
    return Outcome(facts, outcome, escalated, involved, waits, tuple(stays), tuple(handling),
                   tuple(owners))


# --------------------------------------------------------------------------- summaries


def summary_row(stamp: Stamp, o: Outcome, turns: dict[str | None, int]) -> Json:
    """``o`` as a ``conversation_summaries`` row stamped ``stamp``, with its bot messages
    counted by model (``turns``)."""
    f = o.facts
    return {"conversation_id": f.id, "created_at": f.created_at, "version": stamp[0],
            "last_seq": stamp[1], "metrics_rev": stamp[2], "mode": f.mode, "queued": f.queued,
            "closed_at": f.closed_at, "effort_score": f.effort_score,
            "started_at": f.started_at, "intent": f.intent, "model_version": f.model_version,
            "first_sentiment": f.first_sentiment, "last_sentiment": f.last_sentiment,
            "sentiment_messages": f.sentiment_messages, "last_sender": f.last_sender,
            "outcome": o.outcome, "escalated": o.escalated, "involved": o.involved,
            "day": _day(f.created_at),
            "resolution_seconds": _seconds(f.started_at, f.closed_at)
            if o.resolved and f.started_at and f.closed_at else None,
            **_turns(turns)}


def _cohort_facts(f: ConversationFacts) -> Json:
    """What the rows kept with a summary copy of its conversation, for the cohort's filters."""
    return {"conversation_id": f.id, "created_at": f.created_at,
            "started": f.started_at is not None, "conversation_intent": f.intent,
            "conversation_model": f.model_version}


def people_rows(o: Outcome) -> list[Json]:
    """``o``'s queue stays, finished ownerships and owners as ``summary_people`` rows."""
    f = o.facts
    base = {**_cohort_facts(f), "agent": None, "start_at": None, "end_at": None, "how": None,
            "seconds": None}
    return [
        *({**base, "kind": "stay", "ord": k, "start_at": start, "end_at": end, "how": how,
           "seconds": _seconds(start, end) if end is not None else None}
          for k, (start, end, how) in enumerate(o.stays)),
        *({**base, "kind": "handling", "ord": k, "agent": agent, "seconds": seconds}
          for k, (agent, seconds) in enumerate(o.handling)),
        *({**base, "kind": "owner", "ord": k, "agent": agent}
          for k, agent in enumerate(o.owners))]


def reply_rows(facts: ConversationFacts, replies: Sequence[ReviewedReply]) -> list[Json]:
    """A conversation's held replies as ``summary_replies`` rows: the day each was held and,
    for those an agent looked at (decided, or discarded by an agent), the seconds to the
    decision, to the millisecond."""
    return [{**_cohort_facts(facts), "ord": k, "day": _day(r.created_at), "intent": r.intent, "action": r.action,
             "model_version": r.model_version, "status": r.status, "decision": r.decision,
             "decided_by": r.decided_by,
             "latency": round(_seconds(r.created_at, r.decided_at), 3)
             if r.decided_at is not None and (r.status == "decided" or (
                 r.status == "discarded" and r.decided_by is not None)) else None}
            for k, r in enumerate(replies)]


def _turns(turns: dict[str | None, int]) -> Json:
    """The bot-turn columns of a summary: one model's count in ``bot_model``/``bot_turns``,
    several (or none named) as pairs in ``turns_by_model``."""
    total = sum(turns.values())
    models = [m for m, n in turns.items() if n]
    if total == 0 or (len(models) == 1 and models[0] is not None):
        return {"bot_turns": total, "bot_model": models[0] if models else None,
                "turns_by_model": None}
    return {"bot_turns": total, "bot_model": None,
            "turns_by_model": [[m, turns[m]] for m in sorted(models, key=str)]}


async def refresh_summaries(store: Store, since: datetime, until: datetime) -> int:
    """Recompute the summaries of the conversations created in ``[since, until)`` that changed
    since they were computed (or never were); returns how many. Each is read with the stamp it
    had before its events and replies were read, so a change made meanwhile leaves the summary
    stale and the next read recomputes it."""
    stale = await store.stale_summaries(since, until)
    for start in range(0, len(stale), SUMMARY_CHUNK):
        ids = stale[start:start + SUMMARY_CHUNK]
        facts = await store.conversation_facts(ids)
        events: dict[str, list[MetricEvent]] = defaultdict(list)
        for e in await store.metric_events(ids):
            events[e.conversation_id].append(e)
        replies: dict[str, list[ReviewedReply]] = defaultdict(list)
        for r in await store.reviewed_replies(ids):
            replies[r.conversation_id].append(r)
        turns: dict[str, dict[str | None, int]] = defaultdict(dict)
        for cid, model, n in await store.bot_turns_of(ids):
            turns[cid][model] = n
        outcomes = [(stamp, classify(c, events[c.id], replies[c.id])) for stamp, c in facts]
        await store.save_summaries(
            [summary_row(stamp, o, turns[o.facts.id]) for stamp, o in outcomes],
            [row for _, o in outcomes for row in people_rows(o)],
            [row for _, c in facts for row in reply_rows(c, replies[c.id])])
    return len(stale)


# --------------------------------------------------------------------------- the metrics


Group = Any  # a row of ``MetricsStore.summary_groups``: conversations of one kind, counted
Reply = Any  # a row of ``MetricsStore.reply_groups``: held replies of one kind, counted


def _n(rows: Iterable[Any], attr: str = "n") -> int:
    return sum(getattr(r, attr) for r in rows)


def _involvement(g: Group) -> str:
    return "with_agent" if g.involved else "bot_only"


def _by_day(items: Iterable[Any], figure: Callable[[list[Any]], Json]) -> list[Json]:
    """``figure`` per day of items that carry their ``day``."""
    return [{"day": day, **fig} for day, fig in _split(items, lambda i: i.day, figure).items()]


def effort(groups: Sequence[Group], distribution: dict[int, int]) -> Json:
    """Customer Effort Score: the survey's 1–7 answers of the cohort's closed conversations."""

    def figure(group: list[Group]) -> Json:
        answers = _n(group, "answers")
        closed = _n(g for g in group if g.outcome != "open")
        return {"mean": _ratio(_n(group, "effort_sum"), answers), "answers": answers,
                "closed": closed, "response_rate": _ratio(answers, closed)}

    return {**figure(list(groups)),
            "distribution": {str(k): distribution.get(k, 0) for k in range(1, 8)},
            "splits": {
                "involvement": _split(groups, _involvement, figure),
                "intent": _split(groups, lambda g: g.intent, figure),
                "model_version": _split(groups, lambda g: g.model_version, figure)},
            "series": _by_day(groups, figure)}


def _stat(stats: Stats, split: str, key: str) -> Json:
    """``count``, ``mean`` and ``median`` of one key of a split of ``stats``."""
    n, total, median = stats.get((split, key), (0, 0.0, None))
    return {"count": n, "mean": _mean_of(total, n),
            "median": None if median is None else round(median, 4)}


def _stat_split(stats: Stats, split: str) -> dict[str, Json]:
    """``_stat`` of every key of a split, keys sorted."""
    return {k: _stat(stats, split, k) for k in sorted(k for s, k in stats if s == split)}


def resolution_time(stats: Stats, people: Stats) -> Json:
    """Seconds from the first customer message to the close, of resolved conversations; the
    queue wait before an agent took over; the agents' handling time."""
    return {**_stat(stats, "all", ""),
            "queue_wait": _stat(people, "people", "taken"),
            "queue_left": _stat(people, "people", "left")["count"],
            "handling": _stat(people, "people", "handling"),
            "splits": {"involvement": _stat_split(stats, "involvement"),
                       "intent": _stat_split(stats, "intent")},
            "series": [{"day": day, **fig} for day, fig in _stat_split(stats, "day").items()]}


def resolution(groups: Sequence[Group]) -> Json:
    """Resolved over closed; containment and handoff over the whole cohort."""

    def figure(group: list[Group]) -> Json:
        n = _n(group)
        counts = {k: _n(g for g in group if g.outcome == k) for k in (
            "open", "agent_resolved", "bot_resolved", "abandoned", "ended_after_handoff",
            "reopened")}
        closed = n - counts["open"]
        escalated = _n(g for g in group if g.escalated)
        return {"conversations": n, "closed": closed, **counts,
                "success_rate": _ratio(counts["agent_resolved"] + counts["bot_resolved"],
                                       closed),
                "abandonment_rate": _ratio(counts["abandoned"], closed),
                "containment_rate": _ratio(n - escalated, n),
                "handoff_rate": _ratio(escalated, n)}

    return {**figure(list(groups)),
            "splits": {"intent": _split(groups, lambda g: g.intent, figure),
                       "model_version": _split(groups, lambda g: g.model_version, figure)},
            "series": _by_day(groups, figure)}


def _reviewed(replies: Iterable[Reply]) -> list[Reply]:
    """Replies an agent looked at: decided, or discarded by an agent's relabel."""
    return [r for r in replies if r.status == "decided" or (
        r.status == "discarded" and r.decided_by is not None)]


def spot_checked(marks: Sequence[Any]) -> Json:
    """Share of spot-checked bot replies (sent by the bot alone, marked afterwards) that the
    reviewer marked right."""

    def figure(group: list[Any]) -> Json:
        checked = _n(group)
        right = _n(m for m in group if m.verdict == "right")
        return {"checked": checked, "right": right, "accuracy": _ratio(right, checked)}

    return {**figure(list(marks)),
            "splits": {"intent": _split(marks, lambda m: m.intent, figure),
                       "action": _split(marks, lambda m: m.action, figure),
                       "model_version": _split(marks, lambda m: m.model_version, figure)},
            "series": _by_day(marks, figure)}


def accuracy(replies: Sequence[Reply], marks: Sequence[Any] = ()) -> Json:
    """Share of reviewed bot replies approved unchanged; beside it, ``spot_checks``: the
    share of spot-checked replies marked right."""

    def figure(group: list[Reply]) -> Json:
        reviewed = _n(group)
        approved = _n(r for r in group if r.decision == "approved")
        return {"reviewed": reviewed, "approved": approved,
                "accuracy": _ratio(approved, reviewed)}

    reviewed = _reviewed(replies)
    return {**figure(reviewed),
            "splits": {"intent": _split(reviewed, lambda r: r.intent, figure),
                       "action": _split(reviewed, lambda r: r.action, figure),
                       "model_version": _split(reviewed, lambda r: r.model_version, figure)},
            "series": _by_day(reviewed, figure),
            "spot_checks": spot_checked(marks)}


def enablement(actions: Sequence[AgentAction], replies: Sequence[Reply],
               latencies: Stats, ratings: Sequence[RatingFact],
               corrections: Sequence[CorrectionFact]) -> Json:
    """Suggestions used, decision latency, relabels and whispers, and the agents' ratings of
    suggestions."""

    def used(group: list[AgentAction]) -> Json:
        n, total = _n(a for a in group if a.used_suggestion), _n(group)
        return {"actions": total, "used_suggestion": n, "suggestion_use": _ratio(n, total)}

    reviewed = _n(_reviewed(replies))
    positive = sum(1 for r in ratings if r.rating > 0)
    relabels = sum(1 for c in corrections if c.type == RELABELLED)
    slots = sum(1 for c in corrections if c.type == SLOT_SET)
    chosen = sum(1 for c in corrections if c.type == ACTION_CHOSEN)
    return {**used(list(actions)),
            "decision_latency": _stat(latencies, "all", ""),
            "relabels": relabels, "relabel_share": _ratio(relabels, reviewed),
            "ratings": len(ratings), "rated_useful": positive,
            "rating_score": _ratio(positive, len(ratings)),
            "whispers": slots + chosen, "whispered_slots": slots, "whispered_actions": chosen,
            "splits": {"agent": _split(actions, lambda a: a.actor, used)},
            "series": _by_day(actions, used)}


def sentiment(groups: Sequence[Group]) -> Json:
    """Triage's sentiment of the last customer message minus that of the first, in
    conversations with at least two customer messages carrying one."""

    def figure(group: list[Group]) -> Json:
        pairs = _n(group, "pairs")
        return {"conversations": pairs,
                "start": _mean_of(sum(g.first_sum for g in group), pairs),
                "end": _mean_of(sum(g.last_sum for g in group), pairs),
                "change": _mean_of(sum(g.change_sum for g in group), pairs)}

    return {**figure(list(groups)),
            "splits": {"involvement": _split(groups, _involvement, figure)},
            "series": _by_day(groups, figure)}


def _mean_of(total: float, n: int) -> float | None:
    return None if n == 0 else round(total / n, 4)


def learning(models: Sequence[ModelFact], bot_turns: dict[str | None, int],
             replies: Sequence[Reply], corrections: Sequence[CorrectionFact],
             groups: Sequence[Group], f: MetricFilter) -> Json:
    """Per model version that served the cohort or went live in the period, in deploy order:
    what it learnt and proved, the share of its turns held or corrected, its bot-only
    resolution rate; each beside the version before it."""
    rows: list[Json] = []
    served = {k for k in bot_turns if k is not None} | {
        r.model_version for r in replies if r.model_version is not None}
    models = [m for m in models if m.model_id in served or (
        m.deployed_at is not None and f.since <= m.deployed_at < f.until)]
    known = {m.model_id for m in models}
    extra = sorted(k for k in served if k not in known)
    ordered = sorted(models, key=lambda m: (m.deployed_at or m.created_at, m.model_id))
    for model_id, fact in [(m.model_id, m) for m in ordered] + [(k, None) for k in extra]:
        turns = bot_turns.get(model_id, 0)
        held = _n(r for r in replies if r.model_version == model_id)
        corrected = sum(1 for c in corrections if c.model_version == model_id
                        and c.type in CORRECTING)
        closed = [g for g in groups if g.model_version == model_id and g.outcome != "open"]
        bot_only = _n(g for g in closed if g.outcome == "bot_resolved")
        row: Json = {
            "model_version": model_id,
            "deployed_at": fact.deployed_at.isoformat() if fact and fact.deployed_at else None,
            "corrections_learnt": len(fact.corrections or []) if fact else 0,
            "corrections_fixed": fact.fixed if fact else 0,
            "bot_turns": turns, "held": held, "corrected": corrected,
            "held_share": _ratio(held, turns), "corrected_share": _ratio(corrected, turns),
            "closed": _n(closed), "bot_resolution_rate": _ratio(bot_only, _n(closed)),
        }
        if rows:
            prev = rows[-1]
            row["change"] = {k: None if row[k] is None or prev[k] is None
                             else round(row[k] - prev[k], 4)
                             for k in ("held_share", "corrected_share", "bot_resolution_rate")}
        rows.append(row)
    return {"models": rows}


def workload(people: Sequence[tuple[str, int, float]], replies: Sequence[Reply],
             actions: Sequence[AgentAction]) -> Json:
    """Per agent: conversations owned, decisions, messages sent, handling time."""
    agents: dict[str, Json] = defaultdict(lambda: {"conversations": 0, "decisions": 0,
                                                   "messages": 0, "handling_seconds": 0.0})
    for agent, owned, seconds in people:
        agents[agent]["conversations"] += owned
        agents[agent]["handling_seconds"] += seconds
    for r in _reviewed(replies):
        if r.decided_by is not None:
            agents[r.decided_by]["decisions"] += r.n
    for a in actions:
        if a.action == "message":
            agents[a.actor]["messages"] += a.n
    for figures in agents.values():
        figures["handling_seconds"] = round(figures["handling_seconds"], 4)
    return {"agents": {k: agents[k] for k in sorted(agents)}}


QUEUE_BUCKETS: Final = (300, 900, 3600, 21600, 86400)  # seconds; each divides a day
QUEUE_POINTS: Final = 750  # at most this many buckets, unless even days are more


@dataclass(frozen=True, slots=True)
class QueueWindow:
    """What the queue figure covers: ``[since, stop)`` in buckets of ``seconds``, and the
    changes of the queue's length in them (those before ``stop``)."""

    since: datetime
    stop: datetime  # the end of the period, or now if that is earlier
    seconds: int
    buckets: Sequence[QueueBucket]


def queue_bucket_seconds(since: datetime, stop: datetime) -> int:
    """The shortest of ``QUEUE_BUCKETS`` that cuts ``[since, stop)`` in at most
    ``QUEUE_POINTS`` buckets (a day if none does)."""
    span = max(_seconds(since, stop), 1.0)
    return next((b for b in QUEUE_BUCKETS if span / b <= QUEUE_POINTS), QUEUE_BUCKETS[-1])


def queue(w: QueueWindow) -> Json:
    """The human queue's length over time: per bucket of ``w.seconds`` the longest it was and
    its mean over the bucket's time (within the period), each day's longest, and its length at
    the period's end (or now)."""
    start, stop = w.since.timestamp(), w.stop.timestamp()
    changed = {b.bucket: b for b in w.buckets}
    points: list[Json] = []
    longest_of: dict[str, int] = {}
    length = 0
    for k in range(int(start // w.seconds), math.ceil(stop / w.seconds)):
        lo, hi = max(k * w.seconds, start), min((k + 1) * w.seconds, stop)
        if hi <= lo:
            continue
        b = changed.get(k)
        area = length * (hi - lo)  # the length at the bucket's start, held to its end
        longest = length
        if b is not None:  # each change holds from its time to the bucket's end
            area += b.steps * (hi - k * w.seconds) - b.offsets
            longest = max(longest, b.longest)
            length += b.steps
        at = datetime.fromtimestamp(lo, timezone.utc)
        points.append({"at": at.isoformat(), "longest": longest,
                       "mean": round(area / (hi - lo), 4)})
        day = _day(at)
        longest_of[day] = max(longest_of.get(day, 0), longest)
    return {"length": length, "bucket_seconds": w.seconds, "points": points,
            "series": [{"day": d, "longest": n} for d, n in sorted(longest_of.items())]}


async def _queue_window(store: Store, f: MetricFilter) -> QueueWindow:
    stop = min(f.until, now())
    seconds = queue_bucket_seconds(f.since, stop)
    return QueueWindow(f.since, stop, seconds, await store.queue_buckets(f, seconds, stop))


# --------------------------------------------------------------------------- all of them


def _filter_json(f: MetricFilter) -> Json:
    return {"since": f.since.isoformat(), "until": f.until.isoformat(), "intent": f.intent,
            "agent": f.agent, "model": f.model}


Read = Callable[[Store, MetricFilter], Awaitable[Any]]

# The store's reads, each with the figures that need it (a read needed by several is made once)
READS: Final[dict[str, tuple[frozenset[str], Read]]] = {
    "groups": (frozenset({"effort", "resolution", "sentiment", "learning"}),
               lambda s, f: s.summary_groups(f)),
    "distribution": (frozenset({"effort"}), lambda s, f: s.effort_distribution(f)),
    "resolution_stats": (frozenset({"resolution_time"}), lambda s, f: s.resolution_stats(f)),
    "people_stats": (frozenset({"resolution_time"}), lambda s, f: s.people_stats(f)),
    "replies": (frozenset({"accuracy", "enablement", "learning", "workload"}),
                lambda s, f: s.reply_groups(f)),
    "marks": (frozenset({"accuracy"}), lambda s, f: s.spot_check_groups(f)),
    "actions": (frozenset({"enablement", "workload"}), lambda s, f: s.agent_actions(f)),
    "corrections": (frozenset({"enablement", "learning"}), lambda s, f: s.correction_facts(f)),
    "latencies": (frozenset({"enablement"}), lambda s, f: s.decision_latency_stats(f)),
    "ratings": (frozenset({"enablement"}), lambda s, f: s.suggestion_ratings_of(f)),
    "models": (frozenset({"learning"}), lambda s, f: s.model_facts()),
    "bot_turns": (frozenset({"learning"}), lambda s, f: s.bot_turns_by_model(f)),
    "agent_people": (frozenset({"workload"}), lambda s, f: s.agent_people(f)),
    "queue": (frozenset({"queue"}), _queue_window),
    "deploys": (frozenset(METRICS), lambda s, f: s.deploys(f)),
}
READ_CONCURRENCY: Final = 4  # reads of one request at once, each on its own connection


async def _read(store: Store, f: MetricFilter, wanted: set[str]) -> dict[str, Any]:
    """The reads ``wanted`` figures need, up to ``READ_CONCURRENCY`` at a time."""
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(read: Read) -> Any:
        async with gate:
            return await read(store, f)

    names = [name for name, (users, _) in READS.items() if users & wanted]
    return dict(zip(names, await asyncio.gather(*(one(READS[n][1]) for n in names))))


async def compute_metrics(store: Store, f: MetricFilter, names: Sequence[str] = METRICS, *,
                          refresh: Refresh | None = None) -> Json:
    """The figures ``names`` for the filter ``f``, each with its definition's anchor, and the
    deploys of the period (the dashboard marks them on its time axis). The period's summaries
    are brought up to date first, by ``refresh`` when given (the gateway's
    :class:`~handoff.learning.refresh.SharedRefresh`, one check for concurrent requests), else
    by :func:`refresh_summaries` of this call alone."""
    if refresh is None:
        await refresh_summaries(store, f.since, f.until)
    else:
        await refresh(f.since, f.until)
    wanted = set(names)
    unknown = wanted - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric {sorted(unknown)[0]!r}")
    r = await _read(store, f, wanted)
    out: Json = {"filter": _filter_json(f)}
    for name in names:
        value: Json
        if name == "effort":
            value = effort(r["groups"], r["distribution"])
        elif name == "resolution_time":
            value = resolution_time(r["resolution_stats"], r["people_stats"])
        elif name == "resolution":
            value = resolution(r["groups"])
        elif name == "accuracy":
            value = accuracy(r["replies"], r["marks"])
        elif name == "enablement":
            value = enablement(r["actions"], r["replies"], r["latencies"], r["ratings"],
                               r["corrections"])
        elif name == "sentiment":
            value = sentiment(r["groups"])
        elif name == "learning":
            value = learning(r["models"], r["bot_turns"], r["replies"], r["corrections"],
                             r["groups"], f)
        elif name == "workload":
            value = workload(r["agent_people"], r["replies"], r["actions"])
        else:
            value = queue(r["queue"])
        out[name] = {"definition": f"{DOCS}#{name.replace('_', '-')}", **value}
    deploys: list[Deploy] = r["deploys"]
    out["deploys"] = [{"at": d.created_at.isoformat(), "model_version": d.model_id,
                       "by": d.actor} for d in deploys]
    return out
