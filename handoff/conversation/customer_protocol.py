"""The customer side's wire protocol: Rasa's socketio channel, validated.

A widget written for Rasa's ``socketio`` channel (rasa-webchat 1.x, socket.io-client 3/4) talks
to the gateway unchanged:

==================  =========================================================================
event               payload
==================  =========================================================================
session_request     ``{"session_id": str | null, "session_secret"?: str}`` (client → gateway);
                    acknowledged (when the client asks for an ack) with ``{"session_id",
                    "session_secret"}``: the secret of a newly issued session, else null
session_confirm     the session id as a bare string (uuid4 hex when none was sent, or when the
                    session id is known and the secret is missing or wrong: docs/security.md)
user_uttered        ``{"message": str, "session_id": str, "metadata" | "customData": {...},
                    "message_id"?: str}``; metadata may be a JSON string (client → gateway).
                    ``message_id`` (gateway-only, optional): the client's own id of the
                    message, 1–64 letters, digits, ``_`` or ``-``; a message sent again under
                    an id already stored in the conversation is acknowledged and not stored
                    again. Acknowledged with no value once stored, or with ``{"error": code,
                    "message", "message_id"?}`` when refused
bot_uttered         Rasa's shapes: ``{"text"}``; ``{"text", "quick_replies": [{"content_type":
                    "text", "title", "payload"}]}``; ``{"attachment": {...}}``; a custom
                    payload as its contents (``custom.data``)
handoff_notice      gateway-only: ``{"kind": "handoff_queued" | "agent_joined" | "bot_back" |
                    "closed" | "reply_delayed", "text"}`` (widgets written for Rasa ignore it);
                    ``reply_delayed``: the bot's reply is late (Rasa is busy) but coming
survey_request      gateway-only, after ``closed``: ``{"question", "scale": [1, 7]}``, the
                    Customer Effort Score question
survey_answer       gateway-only: ``{"session_id", "score": 1..7}`` (client → gateway, once the
                    conversation has ended); answered with ``survey_thanks`` ``{}``
end_conversation    gateway-only: ``{"session_id"}`` (client → gateway): the customer ends the
                    chat; then ``handoff_notice`` closed and ``survey_request``
error               gateway-only: ``{"code", "message", "message_id"?}``; the payload changed
                    nothing (``message_id``: the refused ``user_uttered``'s own id)
==================  =========================================================================

Messages written by a person carry ``"metadata": {"sender": "human", "agent": <username>}``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from handoff.conversation.router import BotMessage, Notice, QueueReason

__all__ = [
    "NOTICE_TEXTS", "RASA_DOWN_TEXT", "REPLY_DELAYED", "SURVEY_REQUEST", "ProtocolError", "UserUttered", "bot_uttered_payloads",
    "message_id_of", "notice_text", "parse_end_conversation", "parse_session_request", "parse_survey_answer",
    "parse_user_uttered",
]

MAX_SESSION_ID_CHARS: Final = 128
MAX_SECRET_CHARS: Final = 128
MAX_METADATA_BYTES: Final = 8192
MAX_METADATA_DEPTH: Final = 8
MAX_MESSAGE_ID_CHARS: Final = 64
_SESSION_ID = re.compile(r"^[A-Za-z0-9_.:@-]+$")
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]+$")

NOTICE_TEXTS: Final[Mapping[Notice, str]] = {
    Notice.HANDOFF_QUEUED: "A member of our team will be with you shortly; please stay in "
                           "this chat.",
    Notice.AGENT_JOINED: "A member of our customer-service team has joined the chat.",
    Notice.BOT_BACK: "You are back with the assistant.",
    Notice.CLOSED: "This conversation has ended. Thank you for contacting us.",
}

RASA_DOWN_TEXT: Final = ("Our assistant has a technical problem right now. Your messages are "
                         "kept: a member of our team, or the assistant as soon as it is back, "
                         "will answer them.")

REPLY_DELAYED: Final[Mapping[str, str]] = {
    "kind": "reply_delayed",
    "text": "Sorry for the wait: many customers are writing to us right now. Your answer is "
            "on its way.",
}
"""The notice of a turn Rasa has not answered after ``reply_notice_after`` seconds (busy, not
down): only a ``handoff_notice``; the reply follows, and the widget keeps its typing
indicator."""

SURVEY_REQUEST: Final[Mapping[str, Any]] = {
    "question": "How easy was it to get your issue resolved?",
    "scale": [1, 7],
    "labels": {"1": "Very difficult", "7": "Very easy"},
}


class ProtocolError(ValueError):
    """A customer payload the gateway refuses; sent back as an ``error`` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class UserUttered:
    text: str
    session_id: str
    metadata: dict[str, Any]
    message_id: str | None = None  # the client's own id of the message, if it sent one


def message_id_of(data: Any) -> str | None:
    """The client's own ``message_id`` of a ``user_uttered`` payload when it is a valid one,
    else None (for echoing it in a refusal; :func:`parse_user_uttered` refuses a bad one)."""
    value = data.get("message_id") if isinstance(data, Mapping) else None
    if (isinstance(value, str) and 0 < len(value) <= MAX_MESSAGE_ID_CHARS
            and _MESSAGE_ID.match(value)):
        return value
    return None


def _session_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError("bad_session_id", "session_id must be a non-empty string")
    if len(value) > MAX_SESSION_ID_CHARS or not _SESSION_ID.match(value):
        raise ProtocolError("bad_session_id", "session_id must be at most "
                            f"{MAX_SESSION_ID_CHARS} letters, digits or _ . : @ -")
    return value


def parse_session_request(data: Any) -> tuple[str | None, str | None]:
    """The session id the client asks to resume (None for a new session) and the session's
    secret it presents (None when it has none)."""
    if data is None:
        return None, None
    if not isinstance(data, Mapping):
        raise ProtocolError("bad_payload", "session_request takes an object {session_id}")
    value = data.get("session_id")
    secret = data.get("session_secret")
    if secret is not None and (not isinstance(secret, str) or not 0 < len(secret)
                               <= MAX_SECRET_CHARS):
        raise ProtocolError("bad_session_secret", "session_secret must be a string of at most "
                            f"{MAX_SECRET_CHARS} characters")
    return (None if value is None else _session_id(value)), secret


def _unicode(value: str, what: str) -> str:
    """``value`` if it can be stored (UTF-8: no lone surrogate such as ``\\ud800``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("bad_payload", f"{what} is not valid Unicode (a lone "
                            "surrogate)") from None
    return value


def _plain_json(value: Any, depth: int = 1) -> None:
    """Metadata as JSON can store it: nested at most MAX_METADATA_DEPTH levels, valid
    Unicode, string keys (checked before anything serialises it)."""
    if depth > MAX_METADATA_DEPTH:
        raise ProtocolError("bad_metadata",
                            f"metadata may nest at most {MAX_METADATA_DEPTH} levels")
    if isinstance(value, str):
        _unicode(value, "metadata")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ProtocolError("bad_metadata", "metadata keys must be strings")
            _unicode(key, "metadata")
            _plain_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _plain_json(item, depth + 1)
    elif not (value is None or isinstance(value, bool | int | float)):
        raise ProtocolError("bad_metadata", "metadata must be JSON")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ProtocolError("bad_metadata", "metadata numbers must be finite")


def _metadata(data: Mapping[str, Any]) -> dict[str, Any]:
    raw = data.get("metadata", data.get("customData"))
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        if len(raw.encode()) > MAX_METADATA_BYTES:
            raise ProtocolError("metadata_too_large",
                                f"metadata must be at most {MAX_METADATA_BYTES} bytes")
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            raise ProtocolError("bad_metadata", "metadata is a string but not JSON") from None
    if not isinstance(raw, dict):
        raise ProtocolError("bad_metadata", "metadata must be an object")
    _plain_json(raw)
    if len(json.dumps(raw).encode()) > MAX_METADATA_BYTES:
        raise ProtocolError("metadata_too_large",
                            f"metadata must be at most {MAX_METADATA_BYTES} bytes")
    return raw


def parse_user_uttered(data: Any, *, max_chars: int) -> UserUttered:
    """Validate a ``user_uttered`` payload; :class:`ProtocolError` says what is wrong."""
    if not isinstance(data, Mapping):
        raise ProtocolError("bad_payload", "user_uttered takes an object {message, session_id}")
    text = data.get("message")
    if not isinstance(text, str):
        raise ProtocolError("bad_payload", "'message' must be a string")
    if not text.strip():
        raise ProtocolError("empty_message", "'message' must not be empty")
    if len(text) > max_chars:
        raise ProtocolError("message_too_long",
                            f"a message may have at most {max_chars} characters")
    if "\x00" in text:
        raise ProtocolError("bad_payload", "'message' must not contain NUL characters")
    _unicode(text, "'message'")
    message_id = message_id_of(data)
    if message_id is None and data.get("message_id") is not None:
        raise ProtocolError("bad_message_id", "'message_id' must be 1 to "
                            f"{MAX_MESSAGE_ID_CHARS} letters, digits, _ or -")
    return UserUttered(text=text, session_id=_session_id(data.get("session_id")),
                       metadata=_metadata(data), message_id=message_id)


def _object(data: Any, event: str, shape: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ProtocolError("bad_payload", f"{event} takes an object {shape}")
    return data


def parse_end_conversation(data: Any) -> str:
    """The session the customer ends."""
    return _session_id(_object(data, "end_conversation", "{session_id}").get("session_id"))


def parse_survey_answer(data: Any) -> tuple[str, int]:
    """The session and its effort score, an integer from 1 to 7."""
    data = _object(data, "survey_answer", "{session_id, score}")
    session_id = _session_id(data.get("session_id"))
    score = data.get("score")
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 7:
        raise ProtocolError("bad_score", "'score' must be an integer from 1 to 7")
    return session_id, score


def _paragraphs(text: str) -> list[str]:
    return text.strip().split("\n\n") or [text]


def bot_uttered_payloads(message: BotMessage) -> list[dict[str, Any]]:
    """The ``bot_uttered`` payloads Rasa's socketio channel emits for one bot message (as
    ``OutputChannel.send_response`` dispatches it); ``metadata`` is added to each payload."""
    out: list[dict[str, Any]] = []
    text = message.get("text")
    replies = message.get("quick_replies") or message.get("buttons")
    if replies:
        parts: list[dict[str, Any]] = [{"text": part} for part in _paragraphs(str(text or ""))]
        parts[-1]["quick_replies"] = [
            {"content_type": "text", "title": b.get("title"), "payload": b.get("payload")}
            for b in replies if isinstance(b, Mapping)
        ]
        out += parts
    elif text:
        out += [{"text": part} for part in _paragraphs(str(text))]
    custom = message.get("custom")
    if custom:
        if isinstance(custom, Mapping) and "data" in custom:
            out.append(custom["data"] if isinstance(custom["data"], dict)
                       else {"data": custom["data"]})
        else:
            out.append(dict(custom) if isinstance(custom, Mapping) else {"custom": custom})
    if message.get("image"):
        out.append({"attachment": {"type": "image", "payload": {"src": message["image"]}}})
    if message.get("attachment"):
        out.append({"attachment": message["attachment"]})
    for element in message.get("elements") or ():
        out.append({"attachment": {"type": "template",
                                   "payload": {"template_type": "generic", "elements": element}}})
    metadata = message.get("metadata")
    if isinstance(metadata, Mapping) and metadata:
        out = [{**payload, "metadata": dict(metadata)} for payload in out]
    return out


def notice_text(notice: Notice, reason: QueueReason | None) -> str | None:
    """What the customer reads for a notice; None where the bot already said it (its handoff
    marker came with its own words)."""
    if notice is Notice.HANDOFF_QUEUED and reason is QueueReason.BOT_HANDOFF_MARKER:
        return None
    if notice is Notice.HANDOFF_QUEUED and reason is QueueReason.RASA_UNAVAILABLE:
        return RASA_DOWN_TEXT
    return NOTICE_TEXTS[notice]
