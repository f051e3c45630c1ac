"""The correction record: what the gateway exports and the writer in ``bot/`` turns into Rasa
training data. Written once, here, and imported by both sides.

The gateway (``handoff/``, Python 3.11) stores every agent decision on a bot turn as a row of
its ``corrections`` table and exports the accepted ones as JSON records; the writer
(``bot.corrections``, Python 3.10, the Rasa environment) reads them back. This module is the
whole agreement between the two: the correction types and how a trainer resolves them, the
action the gateway logs for a reply a person wrote, the names the writer gives the stories,
rules and test stories it makes of a correction (and their inverse, which tells the gateway
which corrections a new model got right), and the one parser both sides check a record with.

Standard library only, and Python 3.8 syntax: both environments import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import (
    Any,
    Dict,
    Final,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypedDict,
    cast,
)

__all__ = [
    "AGENT_REPLY_ACTION", "APPROVED", "CORRECTION_TYPES", "EDITED", "EDIT_RESOLUTIONS",
    "ACTION_CHOSEN", "INTENT_NAME", "RELABELLED", "SLOT_SET", "WHISPERS", "REPLACED", "REPLY_DECISIONS", "RESOLUTION_KEYS", "TAKEOVER",
    "WRITE_RESOLUTIONS", "WRITTEN", "BotMessageDict", "Correction", "CorrectionRecord",
    "CorrectionType", "RecordError", "ReplyDecision", "Snapshot", "SnapshotDict",
    "correction_id_of", "correction_name", "parse_record", "parse_records",
]

# --- the types -----------------------------------------------------------------------------

APPROVED: Final = "approved"  # the bot's reply, approved unchanged
EDITED: Final = "edited"  # the bot's reply with its text edited
REPLACED: Final = "replaced"  # another action of the domain instead of the bot's
WRITTEN: Final = "written"  # a reply the agent wrote instead of the bot's
RELABELLED: Final = "relabelled"  # the customer's message read as another intent
TAKEOVER: Final = "takeover"  # the transcript of a conversation a person answered
SLOT_SET: Final = "slot_set"  # an agent's whisper: a slot of the tracker set or corrected
ACTION_CHOSEN: Final = "action_chosen"  # an agent's whisper: the bot's next action chosen

CorrectionType = Literal["approved", "edited", "replaced", "written", "relabelled", "takeover",
                         "slot_set", "action_chosen"]
ReplyDecision = Literal["approved", "edited", "replaced", "written"]
CORRECTION_TYPES: Tuple[CorrectionType, ...] = (
    APPROVED, EDITED, REPLACED, WRITTEN, RELABELLED, TAKEOVER, SLOT_SET, ACTION_CHOSEN)
# The whispers: an agent guided the bot without taking over (no held reply was decided).
WHISPERS: Tuple[CorrectionType, ...] = (SLOT_SET, ACTION_CHOSEN)
# The decisions on a held bot reply that send something to the customer (a bot message sent
# after one records which it was).
REPLY_DECISIONS: Tuple[ReplyDecision, ...] = (APPROVED, EDITED, REPLACED, WRITTEN)

# How a trainer resolves a correction (``resolution`` of a record; accepted in the gateway as
# keys of the correction's ``after``): ``edited_as`` for an edit — a variation of the response,
# or the policy changed (the response's text replaced) — and ``written_as`` for a written reply
# or a replaced action: as a story (contradicts the intent's rule, if it has one), as the new
# answer of the intent's rule ("policy_changed"), or as the answer of ``after.intent``, new or
# without a rule ("new_intent": the message becomes its example).
RESOLUTION_KEYS: Sequence[str] = ("edited_as", "written_as")
EDIT_RESOLUTIONS: Sequence[str] = ("variation", "policy_changed")
WRITE_RESOLUTIONS: Sequence[str] = ("story", "policy_changed", "new_intent")
INTENT_NAME = re.compile(r"[a-z][a-z0-9_]*")

# The action the gateway logs to Rasa for a reply a person wrote (review "write", human mode).
AGENT_REPLY_ACTION = "action_agent_reply"

# --- names of what the writer makes of a correction ------------------------------------------

_NAME = re.compile(r"^correction (\d+): ")


def correction_name(correction_id: int, what: str) -> str:
    """The name of a story, rule or test story made of correction ``correction_id``:
    ``correction 12: relabelled track_refund``. :func:`correction_id_of` reads it back."""
    if not what.strip():
        raise ValueError("a correction's story needs a description")
    return f"correction {correction_id}: {what}"


def correction_id_of(name: str) -> Optional[int]:
    """The correction a story, rule or test story was made of (its name from
    :func:`correction_name`), or None for one people wrote."""
    found = _NAME.match(name)
    return int(found.group(1)) if found else None


# --- the record ------------------------------------------------------------------------------


class BotMessageDict(TypedDict, total=False):
    text: str
    buttons: List[Dict[str, Any]]
    quick_replies: List[Dict[str, Any]]
    image: str
    custom: Dict[str, Any]
    attachment: Dict[str, Any]


class SnapshotDict(TypedDict, total=False):
    """``before`` / ``after`` of a correction: the reply (the router's ``ReplySnapshot``)."""

    action_name: Optional[str]
    messages: List[BotMessageDict]
    intent: Optional[str]
    slot: Optional[str]  # slot_set: the slot whispered
    value: Any  # slot_set: its value


class CorrectionRecord(TypedDict, total=False):
    """One exported correction, as JSON: the gateway's stored row plus ``text`` (the
    customer's words, when the correction carries them) and ``resolution`` (the trainer's
    ``edited_as`` / ``written_as``)."""

    id: int
    conversation_id: str
    type: str
    before: Optional[SnapshotDict]
    after: Optional[SnapshotDict]
    tracker_events: List[Dict[str, Any]]
    agent: str
    model_version: Optional[str]
    review_status: str
    resolution: Optional[Dict[str, Any]]
    text: Optional[str]


class RecordError(ValueError):
    """A record that cannot become training data; the message says why."""

    def __init__(self, correction_id: object, message: str) -> None:
        super().__init__(f"correction {correction_id}: {message}")
        self.correction_id = correction_id
        self.reason = message


@dataclass(frozen=True)
class Snapshot:
    action_name: Optional[str]
    texts: List[str] = field(default_factory=list)
    intent: Optional[str] = None
    slot: Optional[str] = None
    value: Any = None

    @property
    def text(self) -> str:
        """The reply's text: its messages' texts, one paragraph each (as the channel splits)."""
        return "\n\n".join(self.texts)


@dataclass(frozen=True)
class Correction:
    """A record that passed :func:`parse_record`."""

    id: int
    type: CorrectionType
    conversation_id: str
    agent: str
    before: Optional[Snapshot]
    after: Optional[Snapshot]
    tracker_events: List[Dict[str, Any]]
    text: Optional[str]
    edited_as: str = "variation"
    written_as: str = "story"
    model_version: Optional[str] = None

    def last_user_index(self) -> Optional[int]:
        """Index of the customer's message the corrected turn answers (the last ``user``)."""
        for index in range(len(self.tracker_events) - 1, -1, -1):
            if self.tracker_events[index].get("event") == "user":
                return index
        return None

    def last_user_event(self) -> Optional[Dict[str, Any]]:
        """The customer's message the corrected turn answers (the last ``user`` event)."""
        index = self.last_user_index()
        return self.tracker_events[index] if index is not None else None


def _snapshot(cid: object, raw: object, name: str) -> Optional[Snapshot]:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise RecordError(cid, f"'{name}' must be an object or null")
    texts: List[str] = []
    for message in raw.get("messages") or []:
        if isinstance(message, Mapping) and isinstance(message.get("text"), str):
            texts.append(message["text"])
    action = raw.get("action_name", raw.get("action"))
    intent = raw.get("intent")
    if action is not None and not isinstance(action, str):
        raise RecordError(cid, f"'{name}.action_name' must be a string")
    if intent is not None and not isinstance(intent, str):
        raise RecordError(cid, f"'{name}.intent' must be a string")
    if not texts and isinstance(raw.get("text"), str):
        texts = [raw["text"]]
    slot = raw.get("slot")
    if slot is not None and not isinstance(slot, str):
        raise RecordError(cid, f"'{name}.slot' must be a string")
    return Snapshot(action_name=action, texts=texts, intent=intent, slot=slot,
                    value=raw.get("value"))


def parse_record(raw: object) -> Correction:
    """An exported correction as a :class:`Correction`; :class:`RecordError` when it cannot
    become training data. The gateway checks each record with it before export, the writer
    again when it reads them."""
    if not isinstance(raw, Mapping):
        raise RecordError("?", "a correction must be a JSON object")
    cid = raw.get("id")
    if not isinstance(cid, int) or isinstance(cid, bool):
        raise RecordError(cid, "'id' must be an integer")
    kind = raw.get("type")
    if kind not in CORRECTION_TYPES:
        raise RecordError(cid, f"unknown type {kind!r} (expected one of {list(CORRECTION_TYPES)})")
    if raw.get("review_status", "accepted") != "accepted":
        raise RecordError(cid, f"review_status is {raw.get('review_status')!r}, not 'accepted'")
    events = raw.get("tracker_events") or []
    if not isinstance(events, list) or not all(isinstance(e, Mapping) for e in events):
        raise RecordError(cid, "'tracker_events' must be a list of Rasa events")
    resolution = raw.get("resolution") or {}
    if not isinstance(resolution, Mapping):
        raise RecordError(cid, "'resolution' must be an object")
    edited_as = resolution.get("edited_as", "variation")
    if kind == EDITED and edited_as not in EDIT_RESOLUTIONS:
        raise RecordError(cid, f"resolution.edited_as must be one of {list(EDIT_RESOLUTIONS)}")
    written_as = resolution.get("written_as", "story")
    if kind in (WRITTEN, REPLACED) and written_as not in WRITE_RESOLUTIONS:
        raise RecordError(cid, f"resolution.written_as must be one of {list(WRITE_RESOLUTIONS)}")
    text = raw.get("text")
    model_version = raw.get("model_version")
    correction = Correction(
        id=cid, type=cast(CorrectionType, kind),
        conversation_id=str(raw.get("conversation_id") or ""),
        agent=str(raw.get("agent") or ""),
        before=_snapshot(cid, raw.get("before"), "before"),
        after=_snapshot(cid, raw.get("after"), "after"),
        tracker_events=[dict(e) for e in events],
        text=text if isinstance(text, str) else None,
        edited_as=edited_as if kind == EDITED else "variation",
        written_as=written_as if kind in (WRITTEN, REPLACED) else "story",
        model_version=model_version if isinstance(model_version, str) else None,
    )
    _check_shape(correction)
    return correction


def _check_shape(c: Correction) -> None:
    if c.type == TAKEOVER:
        if not c.tracker_events:
            raise RecordError(c.id, "a takeover needs the conversation's tracker events")
        return
    if c.after is None and c.type != APPROVED:
        raise RecordError(c.id, f"a '{c.type}' correction needs 'after'")
    if c.type == RELABELLED:
        assert c.after is not None
        if not c.after.intent:
            raise RecordError(c.id, "a relabel needs 'after.intent'")
        if not (c.text or c.last_user_event()):
            raise RecordError(c.id, "a relabel needs the customer's text")
        return
    if not c.tracker_events:
        raise RecordError(c.id, "no tracker events: the story cannot be written (Rasa was not "
                                "reachable when the agent decided)")
    if c.type in (APPROVED, EDITED) and (c.before is None or not c.before.action_name):
        raise RecordError(c.id, f"a '{c.type}' correction needs 'before.action_name'")
    if c.type in (REPLACED, ACTION_CHOSEN):
        assert c.after is not None
        if not c.after.action_name:
            raise RecordError(c.id, f"a '{c.type}' correction needs 'after.action_name'")
    if c.type == SLOT_SET:
        assert c.after is not None
        if not c.after.slot:
            raise RecordError(c.id, "a 'slot_set' correction needs 'after.slot'")
    if c.type in (EDITED, WRITTEN):
        assert c.after is not None
        if not c.after.text.strip():
            raise RecordError(c.id, f"a '{c.type}' correction needs the reply's text")
    if c.written_as == "new_intent":
        assert c.after is not None
        if not c.after.intent or not INTENT_NAME.fullmatch(c.after.intent):
            raise RecordError(c.id, "written_as 'new_intent' needs 'after.intent': the intent "
                                    "(lower case, digits and '_') the message is an example of")
        if c.last_user_event() is None:
            raise RecordError(c.id, "written_as 'new_intent' needs the customer's message in "
                                    "the tracker events")


def parse_records(raw: object) -> List[Correction]:
    """All records of an export (a JSON list, or ``{"corrections": [...]}``), in id order;
    duplicate ids refused."""
    if isinstance(raw, Mapping) and isinstance(raw.get("corrections"), list):
        raw = raw["corrections"]
    if not isinstance(raw, list):
        raise RecordError("?", "the input must be a JSON list of correction records")
    records = [parse_record(r) for r in raw]
    seen: set[int] = set()
    for r in records:
        if r.id in seen:
            raise RecordError(r.id, "appears twice in the input")
        seen.add(r.id)
    return sorted(records, key=lambda r: r.id)

