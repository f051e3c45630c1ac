"""The Humans + Machines metrics, computed from what the store recorded (``docs/metrics.md``
defines each figure; the section names there are the ``definition`` anchors here).

The store hands over plain rows (:mod:`handoff.store.metrics`); this module turns them into
figures with no SQL and no I/O, so each definition reads as code in one place:
:func:`classify` gives every conversation its outcome, and one function per metric computes
its figure, its splits and its series over time (by UTC day). :func:`compute_metrics` reads the
rows for a filter and computes them all.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from handoff.store import Store
from handoff.store.metrics import (
    AgentAction,
    ConversationFacts,
    CorrectionFact,
    Deploy,
    MetricEvent,
    MetricFilter,
    ModelFact,
    RatingFact,
    ReviewedReply,
)

__all__ = ["METRICS", "Outcome", "classify", "compute_metrics"]

METRICS: Final = ("effort", "resolution_time", "resolution", "accuracy", "enablement",
                  "sentiment", "learning", "workload", "queue")
RESOLVED: Final = ("agent_resolved", "bot_resolved")
CORRECTING: Final = ("edited", "replaced", "written", "relabelled")  # corrections that change
DOCS: Final = "docs/metrics.md"

Json = dict[str, Any]


# --------------------------------------------------------------------------- small helpers


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _mean(values: Sequence[float]) -> float | None:
    return None if not values else round(statistics.fmean(values), 4)


def _median(values: Sequence[float]) -> float | None:
    return None if not values else round(statistics.median(values), 4)


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def _day(at: datetime) -> str:
    return at.date().isoformat()


def _summary(values: Sequence[float]) -> Json:
    return {"count": len(values), "mean": _mean(values), "median": _median(values)}


def _split(items: Iterable[Any], key: Callable[[Any], str | None],
           figure: Callable[[list[Any]], Json]) -> dict[str, Json]:
    """``figure`` of the items grouped by ``key`` (None grouped as "none"), keys sorted."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        groups[key(item) or "none"].append(item)
    return {k: figure(groups[k]) for k in sorted(groups)}


def _series(items: Iterable[Any], at: Callable[[Any], datetime],
            figure: Callable[[list[Any]], Json]) -> list[Json]:
    return [{"day": day, **fig} for day, fig in _split(items, lambda i: _day(at(i)),
                                                         figure).items()]


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
    waits: list[tuple[float, str]] = []
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
            waits.append((_seconds(queued_since, e.created_at),
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
    owners = tuple(sorted({e.owner for e in events if e.owner is not None}))
    return Outcome(facts, outcome, escalated, involved, tuple(waits), tuple(handling), owners)


# --------------------------------------------------------------------------- the metrics


def effort(outcomes: Sequence[Outcome]) -> Json:
    """Customer Effort Score: the survey's 1–7 answers of the cohort's closed conversations."""

    def figure(group: list[Outcome]) -> Json:
        scores = [o.facts.effort_score for o in group if o.facts.effort_score is not None]
        closed = sum(1 for o in group if o.closed)
        return {"mean": _mean(scores), "answers": len(scores), "closed": closed,
                "response_rate": _ratio(len(scores), closed)}

    scores = [o.facts.effort_score for o in outcomes if o.facts.effort_score is not None]
    return {**figure(list(outcomes)),
            "distribution": {str(k): scores.count(k) for k in range(1, 8)},
            "splits": {
                "involvement": _split(outcomes, lambda o: "with_agent" if o.involved
                                      else "bot_only", figure),
                "intent": _split(outcomes, lambda o: o.facts.intent, figure),
                "model_version": _split(outcomes, lambda o: o.facts.model_version, figure)},
            "series": _series(outcomes, lambda o: o.facts.created_at, figure)}


def resolution_time(outcomes: Sequence[Outcome]) -> Json:
    """Seconds from the first customer message to the close, of resolved conversations; the
    queue wait before an agent took over; the agents' handling time."""

    def figure(group: list[Outcome]) -> Json:
        return _summary([_seconds(o.facts.started_at, o.facts.closed_at) for o in group
                         if o.resolved and o.facts.started_at and o.facts.closed_at])

    waits = [s for o in outcomes for s, how in o.queue_waits if how == "taken"]
    return {**figure(list(outcomes)),
            "queue_wait": _summary(waits),
            "queue_left": sum(1 for o in outcomes for _, how in o.queue_waits if how == "left"),
            "handling": _summary([s for o in outcomes for _, s in o.handling]),
            "splits": {"involvement": _split(outcomes, lambda o: "with_agent" if o.involved
                                             else "bot_only", figure),
                       "intent": _split(outcomes, lambda o: o.facts.intent, figure)},
            "series": _series(outcomes, lambda o: o.facts.created_at, figure)}


def resolution(outcomes: Sequence[Outcome]) -> Json:
    """Resolved over closed; containment and handoff over the whole cohort."""

    def figure(group: list[Outcome]) -> Json:
        closed = [o for o in group if o.closed]
        counts = {k: sum(1 for o in group if o.outcome == k) for k in (
            "open", "agent_resolved", "bot_resolved", "abandoned", "ended_after_handoff",
            "reopened")}
        return {"conversations": len(group), "closed": len(closed), **counts,
                "success_rate": _ratio(sum(1 for o in closed if o.resolved), len(closed)),
                "abandonment_rate": _ratio(counts["abandoned"], len(closed)),
                "containment_rate": _ratio(sum(1 for o in group if not o.escalated), len(group)),
                "handoff_rate": _ratio(sum(1 for o in group if o.escalated), len(group))}

    return {**figure(list(outcomes)),
            "splits": {"intent": _split(outcomes, lambda o: o.facts.intent, figure),
                       "model_version": _split(outcomes, lambda o: o.facts.model_version,
                                               figure)},
            "series": _series(outcomes, lambda o: o.facts.created_at, figure)}


def _reviewed(replies: Iterable[ReviewedReply]) -> list[ReviewedReply]:
    """Replies an agent looked at: decided, or discarded by an agent's relabel."""
    return [r for r in replies if r.status == "decided" or (
        r.status == "discarded" and r.decided_by is not None)]


def accuracy(replies: Sequence[ReviewedReply]) -> Json:
    """Share of reviewed bot replies approved unchanged."""

    def figure(group: list[ReviewedReply]) -> Json:
        approved = sum(1 for r in group if r.decision == "approved")
        return {"reviewed": len(group), "approved": approved,
                "accuracy": _ratio(approved, len(group))}

    reviewed = _reviewed(replies)
    return {**figure(reviewed),
            "splits": {"intent": _split(reviewed, lambda r: r.intent, figure),
                       "action": _split(reviewed, lambda r: r.action, figure),
                       "model_version": _split(reviewed, lambda r: r.model_version, figure)},
            "series": _series(reviewed, lambda r: r.created_at, figure)}


def enablement(actions: Sequence[AgentAction], replies: Sequence[ReviewedReply],
               ratings: Sequence[RatingFact], corrections: Sequence[CorrectionFact]) -> Json:
    """Suggestions used, decision latency, relabels, and the agents' ratings of suggestions."""

    def used(group: list[AgentAction]) -> Json:
        n = sum(1 for a in group if a.used_suggestion)
        return {"actions": len(group), "used_suggestion": n,
                "suggestion_use": _ratio(n, len(group))}

    reviewed = _reviewed(replies)
    latency = [_seconds(r.created_at, r.decided_at) for r in reviewed if r.decided_at]
    positive = sum(1 for r in ratings if r.rating > 0)
    relabels = sum(1 for c in corrections if c.type == "relabelled")
    return {**used(list(actions)),
            "decision_latency": _summary(latency),
            "relabels": relabels, "relabel_share": _ratio(relabels, len(reviewed)),
            "ratings": len(ratings), "rated_useful": positive,
            "rating_score": _ratio(positive, len(ratings)),
            "whispers": None,  # not recorded: the gateway has no whisper yet
            "splits": {"agent": _split(actions, lambda a: a.actor, used)},
            "series": _series(actions, lambda a: a.created_at, used)}


def sentiment(outcomes: Sequence[Outcome]) -> Json:
    """Triage's sentiment of the last customer message minus that of the first, in
    conversations with at least two customer messages carrying one."""

    def figure(group: list[Outcome]) -> Json:
        pairs = [(o.facts.first_sentiment, o.facts.last_sentiment) for o in group
                 if o.facts.sentiment_messages >= 2]
        start = [a for a, _ in pairs if a is not None]
        end = [b for _, b in pairs if b is not None]
        return {"conversations": len(pairs), "start": _mean(start), "end": _mean(end),
                "change": _mean([b - a for a, b in pairs if a is not None and b is not None])}

    return {**figure(list(outcomes)),
            "splits": {"involvement": _split(outcomes, lambda o: "with_agent" if o.involved
                                             else "bot_only", figure)},
            "series": _series(outcomes, lambda o: o.facts.created_at, figure)}


def learning(models: Sequence[ModelFact], bot_turns: dict[str | None, int],
             replies: Sequence[ReviewedReply], corrections: Sequence[CorrectionFact],
             outcomes: Sequence[Outcome], f: MetricFilter) -> Json:
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
        held = sum(1 for r in replies if r.model_version == model_id)
        corrected = sum(1 for c in corrections if c.model_version == model_id
                        and c.type in CORRECTING)
        closed = [o for o in outcomes if o.facts.model_version == model_id and o.closed]
        bot_only = sum(1 for o in closed if o.outcome == "bot_resolved")
        row: Json = {
            "model_version": model_id,
            "deployed_at": fact.deployed_at.isoformat() if fact and fact.deployed_at else None,
            "corrections_learnt": len(fact.corrections or []) if fact else 0,
            "corrections_fixed": fact.fixed if fact else 0,
            "bot_turns": turns, "held": held, "corrected": corrected,
            "held_share": _ratio(held, turns), "corrected_share": _ratio(corrected, turns),
            "closed": len(closed), "bot_resolution_rate": _ratio(bot_only, len(closed)),
        }
        if rows:
            prev = rows[-1]
            row["change"] = {k: None if row[k] is None or prev[k] is None
                             else round(row[k] - prev[k], 4)
                             for k in ("held_share", "corrected_share", "bot_resolution_rate")}
        rows.append(row)
    return {"models": rows}


def workload(outcomes: Sequence[Outcome], replies: Sequence[ReviewedReply],
             actions: Sequence[AgentAction]) -> Json:
    """Per agent: conversations owned, decisions, messages sent, handling time."""
    agents: dict[str, Json] = defaultdict(lambda: {"conversations": 0, "decisions": 0,
                                                   "messages": 0, "handling_seconds": 0.0})
    for o in outcomes:
        for agent in o.owners:
            agents[agent]["conversations"] += 1
        for agent, seconds in o.handling:
            agents[agent]["handling_seconds"] += seconds
    for r in _reviewed(replies):
        if r.decided_by is not None:
            agents[r.decided_by]["decisions"] += 1
    for a in actions:
        if a.action == "message":
            agents[a.actor]["messages"] += 1
    for figures in agents.values():
        figures["handling_seconds"] = round(figures["handling_seconds"], 4)
    return {"agents": {k: agents[k] for k in sorted(agents)}}


def queue(events: Sequence[MetricEvent]) -> Json:
    """The human queue's length over time: at each change, and each day's longest."""
    points: list[Json] = []
    waiting: set[str] = set()
    for e in sorted(events, key=lambda e: e.created_at):
        before = len(waiting)
        (waiting.add if e.queued else waiting.discard)(e.conversation_id)
        if len(waiting) != before:
            points.append({"at": e.created_at.isoformat(), "length": len(waiting)})
    longest: dict[str, int] = {}
    for p in points:
        day = p["at"][:10]
        longest[day] = max(longest.get(day, 0), p["length"])
    return {"length": len(waiting), "points": points,
            "series": [{"day": d, "longest": n} for d, n in sorted(longest.items())]}


# --------------------------------------------------------------------------- all of them


def _filter_json(f: MetricFilter) -> Json:
    return {"since": f.since.isoformat(), "until": f.until.isoformat(), "intent": f.intent,
            "agent": f.agent, "model": f.model}


async def compute_metrics(store: Store, f: MetricFilter,
                          names: Sequence[str] = METRICS) -> Json:
    """The figures ``names`` for the filter ``f``, each with its definition's anchor, and the
    deploys of the period (the dashboard marks them on its time axis)."""
    facts = await store.conversation_facts(f)
    events = await store.metric_events(f)
    replies = await store.reviewed_replies(f)
    by_conv: dict[str, list[MetricEvent]] = defaultdict(list)
    for e in events:
        by_conv[e.conversation_id].append(e)
    replies_by_conv: dict[str, list[ReviewedReply]] = defaultdict(list)
    for r in replies:
        replies_by_conv[r.conversation_id].append(r)
    outcomes = [classify(c, by_conv[c.id], replies_by_conv[c.id]) for c in facts
                if c.started_at is not None]
    needs_actions = {"enablement", "workload"} & set(names)
    actions = await store.agent_actions(f) if needs_actions else []
    corrections = (await store.correction_facts(f)
                   if {"enablement", "learning"} & set(names) else [])
    out: Json = {"filter": _filter_json(f)}
    for name in names:
        value: Json
        if name == "effort":
            value = effort(outcomes)
        elif name == "resolution_time":
            value = resolution_time(outcomes)
        elif name == "resolution":
            value = resolution(outcomes)
        elif name == "accuracy":
            value = accuracy(replies)
        elif name == "enablement":
            value = enablement(actions, replies, await store.suggestion_ratings_of(f),
                               corrections)
        elif name == "sentiment":
            value = sentiment(outcomes)
        elif name == "learning":
            value = learning(await store.model_facts(), await store.bot_turns_by_model(f),
                             replies, corrections, outcomes, f)
        elif name == "workload":
            value = workload(outcomes, replies, actions)
        elif name == "queue":
            value = queue(events)
        else:
            raise ValueError(f"unknown metric {name!r}")
        out[name] = {"definition": f"{DOCS}#{name.replace('_', '-')}", **value}
    deploys: list[Deploy] = await store.deploys(f)
    out["deploys"] = [{"at": d.created_at.isoformat(), "model_version": d.model_id,
                       "by": d.actor} for d in deploys]
    return out
