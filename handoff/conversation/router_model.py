"""The router's vocabulary: modes, the conversation state, the events fed to
:func:`handoff.conversation.router.step`, the effects it returns and the errors it raises. Plain frozen
dataclasses and enums, no behaviour (that is :mod:`handoff.conversation.router`, which re-exports all of
them: use them as ``router.X``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

from contracts import correction_record as contract

__all__ = [
    "ACTION_LISTEN",
    "AGENT_REPLY_ACTION",
    "AgentEvent",
    "AgentMessage",
    "AlreadyOwned",
    "AppendToTracker",
    "Approve",
    "BotAction",
    "BotMessage",
    "ChooseAction",
    "Close",
    "ContinueWithBot",
    "Continuation",
    "ConversationClosed",
    "ConversationNotFound",
    "ConversationState",
    "CorrectionKind",
    "CustomerMessage",
    "DecidedByOther",
    "Edit",
    "Effect",
    "Event",
    "HANDOFF_KEY",
    "HandBack",
    "InvalidInput",
    "InvalidTransition",
    "Mode",
    "NluParse",
    "NoPendingReply",
    "NotOwner",
    "Notice",
    "NotifyCustomer",
    "PendingReply",
    "QueueReason",
    "RasaAppendReply",
    "RasaBack",
    "RasaCall",
    "RasaExecute",
    "RasaFailed",
    "RasaHandleMessage",
    "RasaRelabel",
    "RasaResult",
    "RasaRetract",
    "RecordCorrection",
    "Relabel",
    "ReplaceAction",
    "ReplySnapshot",
    "ReviewDecision",
    "ReviewTimeout",
    "RouterConfig",
    "RouterError",
    "Scored",
    "SendToCustomer",
    "Sender",
    "SetReview",
    "ShowCustomerMessage",
    "ShowPendingReply",
    "ShowRasaError",
    "ShowSuggestion",
    "StaleReply",
    "StatusChanged",
    "StoreMessage",
    "TakeOver",
    "TriageAction",
    "TriageFlag",
    "Turn",
    "Watch",
    "Write",
]


ACTION_LISTEN = "action_listen"
AGENT_REPLY_ACTION = contract.AGENT_REPLY_ACTION  # the contract's: bot/ reads it back
"""Action name under which a written or human reply enters the Rasa tracker (not in the domain)."""
HANDOFF_KEY = "handoff"

BotMessage: TypeAlias = Mapping[str, Any]
"""One message as Rasa renders it (``text``, ``buttons``, ``image``, ``custom``, ...); read-only."""


class Mode(StrEnum):
    BOT = "bot"
    REVIEW = "review"
    HUMAN = "human"
    CLOSED = "closed"


class QueueReason(StrEnum):
    CUSTOMER_REQUEST = "customer_request"
    BOT_HANDOFF_MARKER = "bot_handoff_marker"
    RASA_UNAVAILABLE = "rasa_unavailable"
    TRIAGE = "triage"  # risky: replies are held for any agent (review without an owner)
    POLICY_RULE = "policy_rule"  # a trainers' rule sends it straight to a person
    HIGH_RISK = "high_risk"  # triage's risk reached the human threshold


class TriageAction(StrEnum):
    REVIEW = "review"
    HUMAN = "human"


class Continuation(StrEnum):
    """What Rasa does after a :class:`RasaCall`'s own work. ``run``: predict and execute until
    ``action_listen``. ``hold``: predict; ``action_listen`` is executed (``held=None``), any other
    action is reported as ``held``, not executed (responses rendered). ``suggest``: predict and
    report as ``held``; execute and append nothing."""

    RUN = "run"
    HOLD = "hold"
    SUGGEST = "suggest"


class Sender(StrEnum):
    BOT = "bot"
    HUMAN = "human"


class Notice(StrEnum):
    """Gateway events for the customer; the shell picks the words (and may skip the text for
    ``bot_handoff_marker``, where the bot already said it)."""

    HANDOFF_QUEUED = "handoff_queued"
    AGENT_JOINED = "agent_joined"
    BOT_BACK = "bot_back"
    CLOSED = "closed"


class CorrectionKind(StrEnum):
    """What an agent did to a bot turn (the router's verbs); stored as the contract's
    correction type (:attr:`recorded_as`)."""

    APPROVE = "approve"
    EDIT = "edit"
    REPLACE = "replace"
    WRITE = "write"
    RELABEL = "relabel"
    TAKEOVER = "takeover"
    CHOOSE = "choose"  # a whisper: the bot's next action chosen by an agent

    @property
    def recorded_as(self) -> contract.CorrectionType:
        """The correction type a decision of this kind is stored and exported as."""
        return _RECORDED_AS[self]

    @property
    def reply_decision(self) -> contract.ReplyDecision | None:
        """What a bot message sent because of this decision records, if it sends one."""
        recorded = _RECORDED_AS[self]
        return next((d for d in contract.REPLY_DECISIONS if d == recorded), None)


_RECORDED_AS: Mapping[CorrectionKind, contract.CorrectionType] = {
    CorrectionKind.APPROVE: contract.APPROVED,
    CorrectionKind.EDIT: contract.EDITED,
    CorrectionKind.REPLACE: contract.REPLACED,
    CorrectionKind.WRITE: contract.WRITTEN,
    CorrectionKind.RELABEL: contract.RELABELLED,
    CorrectionKind.TAKEOVER: contract.TAKEOVER,
    CorrectionKind.CHOOSE: contract.ACTION_CHOSEN,
}


# --- data ---------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Scored:
    name: str
    confidence: float


@dataclass(frozen=True, kw_only=True)
class NluParse:
    intent: str | None
    confidence: float
    intent_ranking: tuple[Scored, ...] = ()
    entities: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, kw_only=True)
class BotAction:
    """An action Rasa predicted (held) or executed, with its messages (rendered, for responses)."""

    name: str
    messages: tuple[BotMessage, ...] = ()
    confidence: float | None = None
    policy: str | None = None
    alternatives: tuple[Scored, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PendingReply:
    reply_id: int  # the call_id whose result held it
    message_id: str  # the customer message it answers
    action: BotAction
    parse: NluParse | None
    model_id: str | None


@dataclass(frozen=True, kw_only=True)
class Turn:
    message: CustomerMessage
    then: Continuation
    call_id: int | None  # the awaited Rasa call; None while a pending reply waits for the owner
    parse: NluParse | None = None
    model_id: str | None = None
    pending: PendingReply | None = None
    # an agent's decision whose action Rasa is executing now (its messages get marked with it)
    decision: CorrectionKind | None = None
    decided_by: str | None = None


@dataclass(frozen=True, kw_only=True)
class ConversationState:
    conversation_id: str
    mode: Mode = Mode.BOT
    owner: str | None = None
    watchers: frozenset[str] = frozenset()
    queue_reason: QueueReason | None = None
    queue_detail: str | None = None
    turn: Turn | None = None
    backlog: tuple[CustomerMessage, ...] = ()
    next_call_id: int = 1
    last_message_id: str | None = None
    human_since: str | None = None  # last customer message id when the owner took over

    @property
    def queued(self) -> bool:
        return self.queue_reason is not None

    @property
    def waiting_for_agent(self) -> bool:
        """Queued with the customer told a person will help: the bot holds off."""
        return self.queue_reason is not None and self.queue_reason is not QueueReason.TRIAGE

    @property
    def pending(self) -> PendingReply | None:
        return self.turn.pending if self.turn else None

    @property
    def audience(self) -> tuple[str, ...]:
        """Agents who see this conversation live: the owner and the watchers, sorted."""
        agents = set(self.watchers)
        if self.owner is not None:
            agents.add(self.owner)
        return tuple(sorted(agents))


@dataclass(frozen=True, kw_only=True)
class RouterConfig:
    handoff_intents: frozenset[str] = frozenset({"contact_human_agent"})


# --- events -------------------------------------------------------------------------------------

class Event:
    """Base of everything fed to :func:`step`."""


@dataclass(frozen=True, kw_only=True)
class CustomerMessage(Event):
    message_id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RasaResult(Event):
    """What a Rasa call did: the parse (when it parsed a message), the actions it executed with
    their messages, and the next action it predicted but did not execute (``hold``/``suggest``)."""

    call_id: int
    parse: NluParse | None = None
    executed: tuple[BotAction, ...] = ()
    held: BotAction | None = None
    model_id: str | None = None
    logged: tuple[BotAction, ...] = ()  # what the agent decided, logged as the bot's: not sent
    # triage's judgement of the customer's message, made before anything Rasa said was sent
    # (only on the result of a RasaHandleMessage): a review holds this very reply
    triage: TriageFlag | None = None


@dataclass(frozen=True, kw_only=True)
class RasaFailed(Event):
    call_id: int
    error: str
    timed_out: bool = False


@dataclass(frozen=True, kw_only=True)
class ContinueWithBot(Event):
    """The customer, waiting for a person, chose to continue with the bot instead."""


@dataclass(frozen=True, kw_only=True)
class RasaBack(Event):
    """Rasa answers again after an outage. ``messages``: what the customer wrote that Rasa
    never answered (stored while it was away), oldest first."""

    messages: tuple[CustomerMessage, ...]


@dataclass(frozen=True, kw_only=True)
class TriageFlag(Event):
    """Triage found the conversation risky: ``review`` holds the bot's replies for any agent
    (an unowned review; the first agent to act owns it); ``human`` queues it for a person."""

    detail: str
    action: TriageAction = TriageAction.REVIEW
    by_rule: bool = False  # a trainers' policy rule (else the risk score) raised it


@dataclass(frozen=True, kw_only=True)
class ReviewTimeout(Event):
    """No agent decided on an unowned held reply in time: the bot's reply goes out as it was."""

    reply_id: int


@dataclass(frozen=True, kw_only=True)
class AgentEvent(Event):
    agent_id: str


@dataclass(frozen=True, kw_only=True)
class ChooseAction(AgentEvent):
    """A whisper: run ``action_name`` as the bot's next action, as if Rasa had predicted it
    (in review it is held for a decision first). ``message``: the customer's latest message,
    the one the chosen action answers (a turn needs one). ``preview``: the messages it would
    send (Rasa's rendering; none for a custom action), shown with the held reply in review."""

    action_name: str
    message: CustomerMessage
    preview: tuple[BotMessage, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Watch(AgentEvent):
    on: bool = True  # False: stop watching


@dataclass(frozen=True, kw_only=True)
class SetReview(AgentEvent):
    on: bool


@dataclass(frozen=True, kw_only=True)
class TakeOver(AgentEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class HandBack(AgentEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class Close(Event):
    agent_id: str | None  # None: closed by the system (customer left, idle timeout)


@dataclass(frozen=True, kw_only=True)
class AgentMessage(AgentEvent):
    text: str


@dataclass(frozen=True, kw_only=True)
class ReviewDecision(AgentEvent):
    """An agent's decision on the held reply ``reply_id`` (a review): approve, edit, replace,
    write or relabel."""

    reply_id: int


@dataclass(frozen=True, kw_only=True)
class Approve(ReviewDecision):
    pass


@dataclass(frozen=True, kw_only=True)
class Edit(ReviewDecision):
    text: str


@dataclass(frozen=True, kw_only=True)
class ReplaceAction(ReviewDecision):
    action_name: str


@dataclass(frozen=True, kw_only=True)
class Write(ReviewDecision):
    text: str


@dataclass(frozen=True, kw_only=True)
class Relabel(ReviewDecision):
    intent: str


# --- effects ------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Effect:
    conversation_id: str


@dataclass(frozen=True, kw_only=True)
class StoreMessage(Effect):
    """Persist the customer message; always the first effect for it."""

    message: CustomerMessage


@dataclass(frozen=True, kw_only=True)
class ShowCustomerMessage(Effect):
    """Push to the agents' consoles (``Show*`` effects come only when someone watches)."""

    agent_ids: tuple[str, ...]
    message: CustomerMessage


@dataclass(frozen=True, kw_only=True)
class ShowPendingReply(Effect):
    agent_id: str | None  # None: an unowned review, shown to every agent (the shell times it)
    reply: PendingReply


@dataclass(frozen=True, kw_only=True)
class ShowSuggestion(Effect):
    agent_ids: tuple[str, ...]
    message_id: str
    action: BotAction


@dataclass(frozen=True, kw_only=True)
class ShowRasaError(Effect):
    agent_ids: tuple[str, ...]
    error: str


@dataclass(frozen=True, kw_only=True)
class SendToCustomer(Effect):
    """``bot_uttered`` each message (stored as sent; mirrored to the audience)."""

    messages: tuple[BotMessage, ...]
    action_name: str | None
    sender: Sender = Sender.BOT
    agent_id: str | None = None  # the human who wrote, edited or chose it
    decision: CorrectionKind | None = None  # the review decision that sent it


@dataclass(frozen=True, kw_only=True)
class NotifyCustomer(Effect):
    notice: Notice
    reason: QueueReason | None = None


@dataclass(frozen=True, kw_only=True)
class StatusChanged(Effect):
    mode: Mode
    owner: str | None
    queue_reason: QueueReason | None
    queue_detail: str | None
    # the status before the step, for listeners that need the change itself (whether the
    # conversation left the queue); not part of what the effect is (equality ignores it)
    mode_before: Mode | None = field(default=None, compare=False)
    queue_reason_before: QueueReason | None = field(default=None, compare=False)


@dataclass(frozen=True, kw_only=True)
class RasaCall(Effect):
    """A Rasa request whose outcome must come back as RasaResult/RasaFailed with ``call_id``."""

    call_id: int
    then: Continuation


@dataclass(frozen=True, kw_only=True)
class RasaHandleMessage(RasaCall):
    """Log and parse the message (the channel's ``/turn``), report the parse, then continue.
    ``earlier``: messages Rasa never saw (an outage), logged first as what the customer said,
    unanswered, so the bot answers ``message`` with the whole context."""

    message: CustomerMessage
    earlier: tuple[CustomerMessage, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RasaExecute(RasaCall):
    """Execute the action (report it with its messages in ``executed``), then continue."""

    action_name: str


@dataclass(frozen=True, kw_only=True)
class RasaAppendReply(RasaCall):
    """Append ``action`` + ``bot`` events for what the customer saw, then continue."""

    action_name: str
    messages: tuple[BotMessage, ...]
    agent_id: str | None


@dataclass(frozen=True, kw_only=True)
class RasaRelabel(RasaCall):
    """Undo back to ``message`` and log it again with ``intent`` as its parse (confidence 1),
    report the new parse, then continue."""

    message: CustomerMessage
    intent: str


@dataclass(frozen=True, kw_only=True)
class RasaRetract(RasaCall):
    """Triage held a reply Rasa already ran: undo back to ``message`` and log it again with
    its own ``parse`` (nothing is parsed twice), then continue (``hold``: the same reply is
    predicted again and held)."""

    message: CustomerMessage
    parse: NluParse | None


@dataclass(frozen=True, kw_only=True)
class AppendToTracker(Effect):
    """Human mode: append ``action`` + ``bot`` (from a human) + ``action_listen``; no result."""

    action_name: str
    messages: tuple[BotMessage, ...]
    agent_id: str


@dataclass(frozen=True, kw_only=True)
class ReplySnapshot:
    action_name: str | None
    messages: tuple[BotMessage, ...] = ()
    intent: str | None = None


@dataclass(frozen=True, kw_only=True)
class RecordCorrection(Effect):
    """The shell adds the time and the tracker events up to ``message_id`` (and ``model_id`` if
    Rasa did not report one). TAKEOVER: the transcript after ``message_id``; no before/after."""

    kind: CorrectionKind
    agent_id: str
    message_id: str | None
    reply_id: int | None
    before: ReplySnapshot | None
    after: ReplySnapshot | None
    model_id: str | None


# --- errors -------------------------------------------------------------------------------------

class RouterError(Exception):
    """Base of every refusal; ``status`` is the HTTP status the API answers with."""

    status = 400


class ConversationNotFound(RouterError):
    status = 404  # raised by the shell; listed here to keep one tree


class NotOwner(RouterError):
    status = 403


class InvalidTransition(RouterError):
    status = 409


class ConversationClosed(InvalidTransition):
    """The conversation is closed."""


class AlreadyOwned(InvalidTransition):
    def __init__(self, owner: str) -> None:
        super().__init__(f"conversation is owned by {owner}")
        self.owner = owner


class DecidedByOther(AlreadyOwned):
    """A review decision on a review another agent claimed first (by deciding, or taking it):
    the first decision wins."""

    def __init__(self, owner: str) -> None:
        InvalidTransition.__init__(self, f"this review is {owner}'s: the first agent to "
                                         "decide on its replies owns it")
        self.owner = owner


class NoPendingReply(InvalidTransition):
    """A review decision while no reply waits for one."""


class StaleReply(InvalidTransition):
    """A decision on a reply that is no longer the pending one."""


class InvalidInput(RouterError):
    status = 422
