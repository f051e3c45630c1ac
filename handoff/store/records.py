"""The gateway's records: what :class:`~handoff.store.Store` returns (frozen dataclasses, one per
table row), what it takes in bulk (``TypedDict``s), the allowed values of each enumerated column,
and :func:`to_json`. Plain data: no SQL here (that is :mod:`handoff.store`).

The correction types and the decisions on a held reply are the contract's
(:mod:`contracts.correction_record`), which the writer in ``bot/`` reads them back with."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, TypedDict

from contracts.correction_record import (
    CORRECTION_TYPES as CORRECTION_TYPES,
    REPLY_DECISIONS as REPLY_DECISIONS,
    CorrectionType as CorrectionType,
    ReplyDecision as ReplyDecision,
)

__all__ = [
    "AuditDraft", "AuditEntry", "Conversation", "Correction", "CorrectionDraft", "CorrectionType", "Message",
    "MessageNlu", "Mode", "ModelVersion", "Note", "PendingReply", "PendingReplyDraft",
    "PendingResolution", "PendingStatus", "ReplyDecision", "ReviewStatus", "Role", "Sender", "TIERS",
    "SavedStep", "StepMessage", "TrackerStatus", "TriageRecord", "User",
    "to_json",
]

Mode = Literal["bot", "review", "human", "closed"]
Sender = Literal["customer", "bot", "agent", "system"]
PendingStatus = Literal["pending", "decided", "discarded"]
ReviewStatus = Literal["new", "accepted", "rejected"]
TrackerStatus = Literal["pending", "fetched", "failed"]
Role = str  # a certification tier's name (TIERS); kept under its old name for callers

MODES: Final = ("bot", "review", "human", "closed")
SENDERS: Final = ("customer", "bot", "agent", "system")
REVIEW_STATUSES: Final = ("new", "accepted", "rejected")
TRACKER_STATUSES: Final = ("pending", "fetched", "failed")
TIERS: Final = ("trainee", "agent", "reviewer", "trainer", "lead", "admin")
"""The certification tiers an admin assigns; what each may do is :mod:`handoff.web.rights`."""
ROLES: Final = TIERS


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    created_at: datetime
    updated_at: datetime
    mode: str
    owner: str | None
    queued: bool
    queue_reason: str | None
    queued_at: datetime | None
    state: dict[str, Any] | None
    risk: float | None
    effort_score: int | None
    closed_at: datetime | None
    version: int
    last_seq: int
    triage: dict[str, Any] | None = None  # {"history", "assessment"}: docs/triage.md
    metrics_rev: int = 0  # changes of the metrics' inputs outside a step (migration 0010)
    erased_at: datetime | None = None  # an admin erased it (migration 0013)
    node_id: str | None = None  # the gateway node running its Rasa call or timer (0019)
    tracker_masked_before: datetime | None = None  # Rasa's tracker masked up to (0021)


class Keep(enum.Enum):
    """``Store.save_step(node_id=Keep.NODE)``: the conversation's node stays as it was."""

    NODE = "keep"


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    conversation_id: str
    seq: int
    sender: str
    text: str | None
    payload: dict[str, Any] | None
    metadata: dict[str, Any] | None
    created_at: datetime
    client_message_id: str | None
    intent: str | None
    confidence: float | None
    intent_ranking: list[dict[str, Any]] | None
    entities: list[dict[str, Any]] | None
    action: str | None
    decision: str | None
    decided_by: str | None
    model_version: str | None
    triage: dict[str, Any] | None = None  # a customer message's assessment
    actions: list[dict[str, Any]] | None = None  # what Rasa executed for a customer message
    sentiment: float | None = None  # triage's sentiment of a customer message (-1 … +1)
    masked_at: datetime | None = None  # the retention job masked its PII (migration 0013)
    replayed: bool = False
    """Not a column: True when ``append_message`` found this message already stored under the
    same ``client_message_id`` (a retry) and stored nothing."""


@dataclass(frozen=True, slots=True)
class PendingReply:
    id: int
    conversation_id: str
    created_at: datetime
    trigger_message_id: int | None
    action: str
    messages: list[dict[str, Any]]
    confidence: float | None
    alternatives: list[dict[str, Any]] | None
    model_version: str | None
    status: str
    decided_at: datetime | None
    decided_by: str | None
    decision: str | None


@dataclass(frozen=True, slots=True)
class Correction:
    id: int
    conversation_id: str
    message_id: int | None
    pending_reply_id: int | None
    type: str
    before: Any
    after: Any
    tracker_events: list[dict[str, Any]]
    agent: str
    created_at: datetime
    model_version: str | None
    review_status: str
    reviewed_by: str | None
    reviewed_at: datetime | None
    note: str | None
    export_id: str | None
    exported_at: datetime | None
    fixed_by_model: str | None = None  # the model trained on it that gets its test story right
    tracker_status: str = "fetched"  # pending | fetched | failed: Rasa's events in tracker_events
    tracker_error: str | None = None  # why the last fetch of the events failed
    tracker_attempts: int = 0  # how many fetches were tried


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A Rasa model the gateway knows: the one it found live, or one a retraining made."""

    model_id: str
    file: str
    status: str  # candidate | live | retired
    created_at: datetime
    trained_at: datetime | None
    retrained_by: str | None
    corrections: list[int] | None
    proof: dict[str, Any] | None
    deployed_at: datetime | None
    deployed_by: str | None
    override: str | None


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password_hash: str = field(repr=False)
    tier: str
    created_at: datetime
    disabled: bool
    token_version: int = 0  # bumped by logout, disabling and a password reset: older tokens end


@dataclass(frozen=True, slots=True)
class Note:
    id: int
    conversation_id: str
    author: str
    text: str
    created_at: datetime
    masked_at: datetime | None = None  # the retention job masked its PII (migration 0013)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    created_at: datetime
    actor: str
    action: str
    target: str | None
    details: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class SavedStep:
    """What ``Store.save_step`` wrote, all in one transaction."""

    conversation: Conversation
    messages: list[Message]  # the appended ones, in order (a retry's stored row, replayed)
    held: PendingReply | None = None  # the reply the step holds for an agent's decision
    resolved: list[PendingReply] = field(default_factory=list)  # decided or discarded by it
    correction: Correction | None = None  # the decision's record, its tracker still pending


class StepMessage(TypedDict, total=False):
    """A message a router step produced, appended with the step's state (``sender`` is
    required; the rest are ``append_message``'s keywords)."""

    sender: Sender
    text: str | None
    payload: dict[str, Any] | None
    metadata: dict[str, Any] | None
    client_message_id: str | None
    action: str | None
    decision: ReplyDecision | None
    decided_by: str | None
    model_version: str | None


class MessageNlu(TypedDict, total=False):
    """What a Rasa answer said about the customer message stored as ``client_message_id``:
    its parse (when the answer parsed it) and the actions Rasa executed for it (appended to
    those of earlier answers in the same turn)."""

    client_message_id: str  # required
    intent: str | None
    confidence: float | None
    intent_ranking: list[dict[str, Any]] | None
    entities: list[dict[str, Any]] | None
    actions: list[dict[str, Any]]  # [{"name", "policy", "confidence"}]


class TriageRecord(TypedDict):
    """Triage's view of a customer turn, written with the router step that takes in Rasa's
    answer (``save_step``'s ``triage``): the conversation's ``risk`` and ``triage`` (history
    and latest assessment), and the ``assessment`` of the customer message stored as
    ``client_message_id`` (its sentiment copied into the message's own column)."""

    risk: float
    triage: dict[str, Any]
    client_message_id: str
    assessment: dict[str, Any]


class PendingReplyDraft(TypedDict, total=False):
    """A bot reply a router step holds for an agent's decision (``action`` and ``messages``
    are required): the predicted action and the messages it would send."""

    action: str
    messages: list[dict[str, Any]]
    confidence: float | None
    alternatives: list[dict[str, Any]] | None
    model_version: str | None
    trigger_client_message_id: str | None  # the customer message it answers


class AuditDraft(TypedDict):
    """An audit-log entry written in the transaction of the change it records (``actor`` did
    ``action`` to ``target``)."""

    actor: str
    action: str
    target: str | None
    details: dict[str, Any] | None


class PendingResolution(TypedDict, total=False):
    """How a router step ends the conversation's pending reply (``status`` is required):
    ``decided`` with the agent's ``decision``, or ``discarded`` (released unchanged, taken
    over, relabelled, closed)."""

    status: Literal["decided", "discarded"]
    decision: ReplyDecision | None
    decided_by: str | None


class CorrectionDraft(TypedDict, total=False):
    """The correction a router step records (``type`` and ``agent`` are required). Its
    tracker events are fetched from Rasa after the step commits (``tracker_status``
    ``pending`` until then)."""

    type: CorrectionType
    agent: str
    before: Any
    after: Any
    model_version: str | None
    client_message_id: str | None  # the customer message the corrected turn answers


def to_json(record: Any) -> dict[str, Any]:
    """A record as a JSON-ready dict: datetimes as ISO 8601, ``password_hash`` left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name == "password_hash":
            continue
        value = getattr(record, f.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = to_json(value)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            value = [to_json(v) for v in value]
        out[f.name] = value
    return out
