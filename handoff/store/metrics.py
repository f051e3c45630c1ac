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

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from handoff.errors import BadRequest, NotFound
from handoff.store.database import Database, now
from handoff.store.schema import (
    audit_log,
    conversation_events,
    conversations,
    corrections,
    messages,
    model_versions,
    pending_replies,
    suggestion_ratings,
)

__all__ = ["ConversationFacts", "MetricEvent", "MetricFilter", "MetricsStore", "ReviewedReply",
           "AgentAction", "CorrectionFact", "Deploy", "ModelFact", "RatingFact",
           "SUGGESTION_ACTIONS"]

SUGGESTION_ACTIONS: Final = ("message", "decision")  # audit actions that may use a suggestion
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
    """An agent's message or decision (audit log), and whether it used a suggestion."""

    created_at: datetime
    actor: str
    action: str
    used_suggestion: bool


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


def _cohort(f: MetricFilter) -> sa.Select[Any]:
    """The ids of the conversations ``f`` selects."""
    query = sa.select(conversations.c.id).where(
        conversations.c.created_at >= f.since,
        conversations.c.created_at < f.until)
    if f.intent is not None:
        query = query.where(_INTENT == f.intent)
    if f.model is not None:
        query = query.where(_MODEL == f.model)
    if f.agent is not None:
        query = query.where(sa.or_(
            sa.exists().where(conversation_events.c.conversation_id == conversations.c.id,
                              sa.or_(conversation_events.c.owner == f.agent,
                                     conversation_events.c.actor == f.agent)),
            sa.exists().where(pending_replies.c.conversation_id == conversations.c.id,
                              pending_replies.c.decided_by == f.agent)))
    return query


def _in_range(column: sa.ColumnElement[Any], f: MetricFilter) -> list[sa.ColumnElement[bool]]:
    return [column >= f.since, column < f.until]


class MetricsStore(Database):
    """The rows the dashboard's metrics are computed from."""

    async def conversation_facts(self, f: MetricFilter) -> list[ConversationFacts]:
        """Every conversation of the cohort with its first and last message facts."""
        cohort = _cohort(f).subquery()
        query = sa.select(
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
        ).where(conversations.c.id.in_(sa.select(cohort.c.id))).order_by(
            conversations.c.created_at, conversations.c.id)
        async with self._tx(write=False) as conn:
            return [ConversationFacts(**row._asdict()) for row in await conn.execute(query)]

    async def metric_events(self, f: MetricFilter) -> list[MetricEvent]:
        """The mode, owner and queue changes of the cohort, in order."""
        e = conversation_events
        query = sa.select(e.c.conversation_id, e.c.created_at, e.c.cause, e.c.actor,
                          e.c.mode_from, e.c.mode, e.c.owner, e.c.queued).where(
            e.c.conversation_id.in_(_cohort(f))).order_by(e.c.conversation_id, e.c.id)
        async with self._tx(write=False) as conn:
            return [MetricEvent(**row._asdict()) for row in await conn.execute(query)]

    async def reviewed_replies(self, f: MetricFilter) -> list[ReviewedReply]:
        """Every reply of the cohort held for an agent, whatever became of it."""
        p = pending_replies
        query = sa.select(
            p.c.conversation_id, p.c.created_at, p.c.status, p.c.decision, p.c.decided_at,
            p.c.decided_by, p.c.action, p.c.model_version, messages.c.intent,
        ).select_from(p.outerjoin(messages, messages.c.id == p.c.trigger_message_id)).where(
            p.c.conversation_id.in_(_cohort(f))).order_by(p.c.id)
        async with self._tx(write=False) as conn:
            return [ReviewedReply(**row._asdict()) for row in await conn.execute(query)]

    async def agent_actions(self, f: MetricFilter) -> list[AgentAction]:
        """Agents' messages and decisions on the cohort (audit log), with suggestion use."""
        a = audit_log
        target = sa.literal("conversation:") + conversations.c.id
        query = sa.select(a.c.created_at, a.c.actor, a.c.action, a.c.details).where(
            a.c.action.in_(SUGGESTION_ACTIONS), *_in_range(a.c.created_at, f),
            a.c.target.in_(sa.select(target).where(conversations.c.id.in_(_cohort(f)))),
        ).order_by(a.c.id)
        async with self._tx(write=False) as conn:
            rows = await conn.execute(query)
            return [AgentAction(created_at=r.created_at, actor=r.actor, action=r.action,
                                used_suggestion=isinstance(r.details, dict)
                                and bool(r.details.get("suggestion")))
                    for r in rows]

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
        m = messages
        query = sa.select(m.c.model_version, sa.func.count()).where(
            m.c.conversation_id.in_(_cohort(f)), m.c.sender == "bot",
        ).group_by(m.c.model_version)
        async with self._tx(write=False) as conn:
            return {model: int(n) for model, n in await conn.execute(query)}

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
