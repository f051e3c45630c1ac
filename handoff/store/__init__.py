"""The gateway's database: :class:`Store` owns it and all of its SQL (``docs/store.md``).

SQLite (WAL) by default, PostgreSQL by URL; the schema is made by the Alembic migrations in
``handoff/store/migrations``. Callers import the store and its records from here.
Command line: ``python -m handoff.store migrate --url URL``.
"""

from handoff.store.conversations import AlreadyStored as AlreadyStored
from handoff.store.conversations import StaleVersion as StaleVersion
from handoff.store.database import VERSION_TABLE as VERSION_TABLE
from handoff.store.database import alembic_config as alembic_config
from handoff.store.login_limits import LoginLimit as LoginLimit
from handoff.store.records import (
    AuditDraft as AuditDraft,
    AuditEntry as AuditEntry,
    Conversation as Conversation,
    Correction as Correction,
    CorrectionDraft as CorrectionDraft,
    CorrectionType as CorrectionType,
    Keep as Keep,
    Message as Message,
    MessageNlu as MessageNlu,
    Mode as Mode,
    ModelVersion as ModelVersion,
    Note as Note,
    PendingReply as PendingReply,
    PendingReplyDraft as PendingReplyDraft,
    PendingResolution as PendingResolution,
    PendingStatus as PendingStatus,
    ReplyDecision as ReplyDecision,
    ReviewStatus as ReviewStatus,
    Role as Role,
    TIERS as TIERS,
    SavedStep as SavedStep,
    Sender as Sender,
    StepMessage as StepMessage,
    TrackerStatus as TrackerStatus,
    TriageRecord as TriageRecord,
    User as User,
    to_json as to_json,
)
from handoff.store.store import Store as Store
from handoff.store.users import AlreadyExists as AlreadyExists

__all__ = [
    "VERSION_TABLE",
    "AlreadyExists",
    "AlreadyStored",
    "AuditDraft",
    "AuditEntry",
    "Conversation",
    "Correction",
    "CorrectionDraft",
    "CorrectionType",
    "Keep",
    "LoginLimit",
    "Message",
    "MessageNlu",
    "Mode",
    "ModelVersion",
    "Note",
    "PendingReply",
    "PendingReplyDraft",
    "PendingResolution",
    "PendingStatus",
    "ReplyDecision",
    "ReviewStatus",
    "Role",
    "TIERS",
    "SavedStep",
    "Sender",
    "StaleVersion",
    "StepMessage",
    "TriageRecord",
    "Store",
    "TrackerStatus",
    "User",
    "alembic_config",
    "to_json",
]
