"""The gateway's tables as SQLAlchemy Core ``Table`` objects (the Alembic migrations in
``handoff/store/migrations`` create them; a test checks the two agree). Described in docs/store.md."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = [
    "audit_log", "conversation_events", "conversation_summaries", "conversations", "corrections",
    "conversation_contacts", "customer_sessions", "messages", "metadata", "model_versions",
    "notes", "pending_replies", "spot_check_marks", "spot_checks", "suggestion_ratings",
    "summary_days", "summary_people", "summary_replies", "users",
]

class _UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (stored naive, as UTC) and PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware (UTC) datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_TIME = _UTCDateTime

metadata = sa.MetaData()


def _conv_ref() -> sa.Column[str]:
    return sa.Column(
        "conversation_id", sa.Text, sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    )


conversations = sa.Table(
    "conversations", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("updated_at", _TIME, nullable=False),
    sa.Column("mode", sa.Text, nullable=False, server_default="bot"),
    sa.Column("owner", sa.Text),
    sa.Column("queued", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("queue_reason", sa.Text),
    sa.Column("queued_at", _TIME),
    sa.Column("state", _JSON),
    sa.Column("risk", sa.Float),
    sa.Column("effort_score", sa.SmallInteger),
    sa.Column("triage", _JSON),
    sa.Column("closed_at", _TIME),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("last_seq", sa.Integer, nullable=False, server_default="0"),
    # bumped by every write the metrics read that changes neither version nor last_seq
    # (triage's sentiment, the survey's answer): a conversation_summaries row is current while
    # its (version, last_seq, metrics_rev) equal these (migration 0010)
    sa.Column("metrics_rev", sa.Integer, nullable=False, server_default="0"),
    sa.Column("erased_at", _TIME),  # an admin erased it: a closed tombstone (0013)
    # the gateway node running its Rasa call or review timer, None when nothing runs (0019)
    sa.Column("node_id", sa.Text),
    sa.Column("tracker_masked_before", _TIME),  # Rasa's tracker masked up to then (0021)
    sa.Index("ix_conversations_mode_queued", "mode", "queued"),
    sa.Index("ix_conversations_node_id", "node_id"),
    sa.Index("ix_conversations_owner", "owner"),
    # the period's conversations with their stamp, read from the index alone (0020)
    sa.Index("ix_conversations_created_at", "created_at", "id", "version", "last_seq",
             "metrics_rev"),
)

messages = sa.Table(
    "messages", metadata,
    sa.Column("id", _ID, primary_key=True),
    _conv_ref(),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("text", sa.Text),
    sa.Column("payload", _JSON),
    sa.Column("metadata", _JSON),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("client_message_id", sa.Text),
    sa.Column("intent", sa.Text),
    sa.Column("confidence", sa.Float),
    sa.Column("intent_ranking", _JSON),
    sa.Column("entities", _JSON),
    sa.Column("action", sa.Text),
    sa.Column("decision", sa.Text),
    sa.Column("decided_by", sa.Text),
    sa.Column("model_version", sa.Text),
    sa.Column("triage", _JSON),
    sa.Column("actions", _JSON),
    sa.Column("sentiment", sa.Float),  # triage's VADER compound of a customer message
    sa.Column("masked_at", _TIME),  # the retention job masked its PII (0013)
    sa.UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
    sa.UniqueConstraint(
        "conversation_id", "client_message_id", name="uq_messages_conversation_client_id"
    ),
    sa.Index("ix_messages_masked_at_created_at", "masked_at", "created_at"),
)

pending_replies = sa.Table(
    "pending_replies", metadata,
    sa.Column("id", _ID, primary_key=True),
    _conv_ref(),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("trigger_message_id", _ID, sa.ForeignKey("messages.id", ondelete="SET NULL")),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("messages", _JSON, nullable=False),
    sa.Column("confidence", sa.Float),
    sa.Column("alternatives", _JSON),
    sa.Column("model_version", sa.Text),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("decided_at", _TIME),
    sa.Column("decided_by", sa.Text),
    sa.Column("decision", sa.Text),
    sa.Index("ix_pending_replies_conversation_status", "conversation_id", "status"),
    sa.Index("ix_pending_replies_created_at", "created_at"),
)

corrections = sa.Table(
    "corrections", metadata,
    sa.Column("id", _ID, primary_key=True),
    _conv_ref(),
    sa.Column("message_id", _ID, sa.ForeignKey("messages.id", ondelete="SET NULL")),
    sa.Column("pending_reply_id", _ID, sa.ForeignKey("pending_replies.id", ondelete="SET NULL")),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("before", _JSON),
    sa.Column("after", _JSON),
    sa.Column("tracker_events", _JSON, nullable=False),
    sa.Column("agent", sa.Text, nullable=False),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("model_version", sa.Text),
    sa.Column("review_status", sa.Text, nullable=False, server_default="new"),
    sa.Column("reviewed_by", sa.Text),
    sa.Column("reviewed_at", _TIME),
    sa.Column("note", sa.Text),
    sa.Column("export_id", sa.Text),
    sa.Column("exported_at", _TIME),
    sa.Column("fixed_by_model", sa.Text),
    sa.Column("tracker_status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("tracker_error", sa.Text),
    sa.Column("tracker_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_corrections_review_status_type", "review_status", "type"),
    sa.Index("ix_corrections_conversation", "conversation_id"),
    sa.Index("ix_corrections_created_at", "created_at"),
)

users = sa.Table(
    "users", metadata,
    sa.Column("username", sa.Text, primary_key=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("tier", sa.Text, nullable=False),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("token_version", sa.Integer, nullable=False, server_default="0"),
)

customer_sessions = sa.Table(
    "customer_sessions", metadata,  # the hash of each customer session's secret (0016)
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("secret_hash", sa.Text, nullable=False),
    sa.Column("created_at", _TIME, nullable=False),
)

login_limits = sa.Table(
    "login_limits", metadata,  # failed logins per user:<name> / ip:<address> (0021)
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("not_before", _TIME),
    sa.Column("locked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", _TIME, nullable=False),
)

notes = sa.Table(
    "notes", metadata,
    sa.Column("id", _ID, primary_key=True),
    _conv_ref(),
    sa.Column("author", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("masked_at", _TIME),  # the retention job masked its PII (0013)
    sa.Index("ix_notes_conversation", "conversation_id"),
    sa.Index("ix_notes_masked_at_created_at", "masked_at", "created_at"),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("details", _JSON),
    sa.Index("ix_audit_log_created_at", "created_at"),
    sa.Index("ix_audit_log_target", "target"),
    sa.Index("ix_audit_log_action_created_at", "action", "created_at"),
)

model_versions = sa.Table(
    "model_versions", metadata,
    sa.Column("model_id", sa.Text, primary_key=True),
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # candidate | live | retired
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("trained_at", _TIME),
    sa.Column("retrained_by", sa.Text),
    sa.Column("corrections", _JSON),  # the ids of the corrections its training included
    sa.Column("proof", _JSON),  # bot.prove's report against the model live then
    sa.Column("deployed_at", _TIME),
    sa.Column("deployed_by", sa.Text),
    sa.Column("override", sa.Text),  # why it was deployed despite regressions
)

conversation_events = sa.Table(
    "conversation_events", metadata,  # each change of mode, owner or queue (migration 0005)
    sa.Column("id", _ID, primary_key=True),
    _conv_ref(),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("cause", sa.Text, nullable=False),  # the router event, e.g. "TakeOver"
    sa.Column("actor", sa.Text),  # the agent who caused it; null: the customer or the system
    sa.Column("mode_from", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("owner", sa.Text),
    sa.Column("queued", sa.Boolean, nullable=False),
    sa.Column("queue_reason", sa.Text),
    sa.Index("ix_conversation_events_conversation", "conversation_id", "id"),
    sa.Index("ix_conversation_events_created_at", "created_at"),
)

suggestion_ratings = sa.Table(
    "suggestion_ratings", metadata,  # an agent's one-click rating of a suggestion (0005)
    sa.Column("id", _ID, primary_key=True),
    _conv_ref(),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("agent", sa.Text, nullable=False),
    sa.Column("suggestion", sa.Text, nullable=False),  # its source, e.g. response:utter_x
    sa.Column("rating", sa.SmallInteger, nullable=False),  # +1 useful, -1 not
    sa.Index("ix_suggestion_ratings_created_at", "created_at"),
)

conversation_summaries = sa.Table(
    "conversation_summaries", metadata,  # the metrics' view of one conversation (0010)
    sa.Column("conversation_id", sa.Text, sa.ForeignKey("conversations.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("created_at", _TIME, nullable=False),  # the conversation's: the cohort's key
    # the conversation's (version, last_seq, metrics_rev) it was computed from
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("last_seq", sa.Integer, nullable=False),
    sa.Column("metrics_rev", sa.Integer, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("queued", sa.Boolean, nullable=False),
    sa.Column("closed_at", _TIME),
    sa.Column("effort_score", sa.SmallInteger),
    sa.Column("started_at", _TIME),  # its first customer message; null: none yet
    sa.Column("intent", sa.Text),
    sa.Column("model_version", sa.Text),
    sa.Column("first_sentiment", sa.Float),
    sa.Column("last_sentiment", sa.Float),
    sa.Column("sentiment_messages", sa.Integer, nullable=False),
    sa.Column("last_sender", sa.Text),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("escalated", sa.Boolean, nullable=False),
    sa.Column("involved", sa.Boolean, nullable=False),
    sa.Column("day", sa.Text, nullable=False),  # created_at's UTC date: the series' key
    sa.Column("resolution_seconds", sa.Float),  # first customer message to close, if resolved
    sa.Column("bot_turns", sa.Integer, nullable=False),  # its bot messages
    sa.Column("bot_model", sa.Text),  # the model all of them name, if one; else null and:
    sa.Column("turns_by_model", _JSON),  # [[model | null, turns], ...]
    sa.Index("ix_conversation_summaries_created_at", "created_at", "conversation_id",
             "version", "last_seq", "metrics_rev"),
)

summary_people = sa.Table(
    "summary_people", metadata,  # a summary's queue stays, ownerships and owners (0020)
    sa.Column("conversation_id", sa.Text,
              sa.ForeignKey("conversation_summaries.conversation_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),  # stay | handling | owner
    sa.Column("ord", sa.Integer, primary_key=True),  # its place among the summary's of its kind
    sa.Column("created_at", _TIME, nullable=False),  # the conversation's: the cohort's key
    sa.Column("agent", sa.Text),  # handling, owner: who
    sa.Column("start_at", _TIME),  # stay: entered the queue
    sa.Column("end_at", _TIME),  # stay: left it; null while it waits
    sa.Column("how", sa.Text),  # stay: taken | left | null while it waits
    sa.Column("seconds", sa.Float),  # a finished stay's wait, a finished ownership's length
    # the conversation's, copied so the cohort is selected without joining the summaries:
    sa.Column("started", sa.Boolean, nullable=False),  # it has a customer message
    sa.Column("conversation_intent", sa.Text),  # its first intent
    sa.Column("conversation_model", sa.Text),  # the first model it names
    sa.Index("ix_summary_people_created_at", "created_at"),
)

summary_days = sa.Table(
    "summary_days", metadata,  # the summary groups of whole UTC days (0020)
    sa.Column("day", sa.Text, nullable=False),
    sa.Column("intent", sa.Text),
    sa.Column("model_version", sa.Text),
    sa.Column("involved", sa.Boolean),
    sa.Column("escalated", sa.Boolean),
    sa.Column("outcome", sa.Text),  # null only in the day's marker row: "this day is counted"
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("answers", sa.Integer, nullable=False),
    sa.Column("effort_sum", sa.Integer, nullable=False),
    sa.Column("pairs", sa.Integer, nullable=False),
    sa.Column("first_sum", sa.Float, nullable=False),
    sa.Column("last_sum", sa.Float, nullable=False),
    sa.Column("change_sum", sa.Float, nullable=False),
    sa.Index("ix_summary_days_day", "day"),
)

summary_replies = sa.Table(
    "summary_replies", metadata,  # a summary's held replies, as the figures count them (0020)
    sa.Column("conversation_id", sa.Text,
              sa.ForeignKey("conversation_summaries.conversation_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("ord", sa.Integer, primary_key=True),  # its place among the conversation's
    sa.Column("created_at", _TIME, nullable=False),  # the conversation's: the cohort's key
    sa.Column("day", sa.Text, nullable=False),  # the UTC date the reply was held
    sa.Column("intent", sa.Text),  # of the customer message it answered
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text),
    sa.Column("status", sa.Text, nullable=False),  # pending | decided | discarded
    sa.Column("decision", sa.Text),
    sa.Column("decided_by", sa.Text),
    sa.Column("latency", sa.Float),  # seconds held before an agent's decision, to the ms
    # the conversation's, copied so the cohort is selected without joining the summaries:
    sa.Column("started", sa.Boolean, nullable=False),  # it has a customer message
    sa.Column("conversation_intent", sa.Text),  # its first intent
    sa.Column("conversation_model", sa.Text),  # the first model it names
    sa.Index("ix_summary_replies_created_at", "created_at"),
)

spot_checks = sa.Table(
    "spot_checks", metadata,  # the sampling of an ended bot-only conversation (0014)
    sa.Column("id", _ID, primary_key=True),
    _conv_ref(),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # skipped | open | done
    sa.Column("draw", sa.Float, nullable=False),  # the random draw, in [0, 1)
    sa.Column("probability", sa.Float, nullable=False),  # sampled when draw < probability
    sa.Column("reason", _JSON),  # {"share", "intent", "model", "low_ces"}: the weights used
    sa.Column("intent", sa.Text),  # the conversation's first intent
    sa.Column("model_version", sa.Text),  # the model of its first bot reply
    sa.Column("effort_score", sa.SmallInteger),  # the survey's answer when decided
    sa.Column("opened_at", _TIME),  # when it entered the QA queue
    sa.Column("finished_at", _TIME),
    sa.Column("finished_by", sa.Text),
    sa.UniqueConstraint("conversation_id", name="uq_spot_checks_conversation"),
    sa.Index("ix_spot_checks_status", "status", "id"),
)

spot_check_marks = sa.Table(
    "spot_check_marks", metadata,  # a reviewer's verdict on one bot message (0014)
    sa.Column("id", _ID, primary_key=True),
    sa.Column("spot_check_id", _ID, sa.ForeignKey("spot_checks.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("message_id", _ID, sa.ForeignKey("messages.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("verdict", sa.Text, nullable=False),  # right | edited | relabelled
    sa.Column("correction_id", _ID, sa.ForeignKey("corrections.id", ondelete="SET NULL")),
    sa.Column("reviewer", sa.Text, nullable=False),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("intent", sa.Text),  # of the customer message the reply answered
    sa.Column("action", sa.Text),  # the bot's action
    sa.Column("model_version", sa.Text),  # the model that predicted it
    sa.UniqueConstraint("spot_check_id", "message_id", name="uq_spot_check_marks_message"),
    sa.Index("ix_spot_check_marks_created_at", "created_at"),
)

conversation_contacts = sa.Table(
    "conversation_contacts", metadata,  # a waiting customer's contact address (0015)
    sa.Column("conversation_id", sa.Text, sa.ForeignKey("conversations.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("contact", sa.Text, nullable=False),  # an e-mail address or a phone number
    sa.Column("left_at", _TIME, nullable=False),
)
