"""The conversation router: a pure state machine, one per conversation.

``step(state, event) -> (new_state, effects)`` is the whole interface. It does no I/O: the shell
loads a conversation's :class:`ConversationState`, calls :func:`step`, saves the new state, then
performs the effects in the order given and feeds every Rasa answer back as a :class:`RasaResult`
or :class:`RasaFailed` event. The shell must step one conversation's events one at a time (a lock
per conversation); that is what makes takeover exclusive: the second agent's :class:`TakeOver`
sees the first agent as owner and raises :class:`AlreadyOwned`.

Model
    ``mode`` is ``bot`` | ``review`` | ``human`` | ``closed``; ``owner`` is the one agent owning a
    ``review``/``human`` conversation; ``watchers`` see it without owning it. ``queue_reason``
    (with ``queue_detail``) puts a conversation in the agents' queue. ``triage`` marks an
    unowned ``review``: triage found it risky, every bot reply is held for any agent (the first to
    act owns it) and goes out unchanged after the review timeout (:class:`ReviewTimeout`). Any
    other reason (on a ``bot`` conversation) means the customer was told that a person will
    help: the bot holds off (messages are logged to Rasa and the prediction is shown
    as a suggestion), and with ``rasa_unavailable`` messages are only stored and wait for an agent.

Turns
    Each customer message is a turn. Its effects start with :class:`StoreMessage` and
    :class:`ShowCustomerMessage`, then one Rasa call. While a call is awaited (``turn`` is set) new
    messages wait in ``backlog`` and start, in order, when the turn ends: turns never interleave.
    Every Rasa call effect carries a ``call_id`` and a :class:`Continuation` saying what Rasa does
    after the call's own work: ``run`` (predict and execute until ``action_listen``), ``hold``
    (predict the next action and report it unexecuted as ``held``; if it is ``action_listen``,
    execute that and report ``held=None``) or ``suggest`` (predict and report, change nothing).
    Results for another ``call_id`` than the awaited one (late after a timeout, or after close)
    are ignored. Actions Rasa executed are always sent to the customer (they are in the tracker);
    a marker ``{"handoff": {"reason": ...}}`` among their custom payloads is stripped and escalates.

Review (the edit gate)
    A held action becomes a :class:`PendingReply` shown to the owner; nothing reaches the customer
    until the owner decides. Each decision names the ``reply_id`` it decides (stale ones raise
    :class:`StaleReply`) and yields a :class:`RecordCorrection`. A held action that has messages
    (a rendered response) is committed by sending exactly those messages and appending them to
    the tracker (:class:`RasaAppendReply`); one without messages (a custom action) is executed
    (:class:`RasaExecute`) and its messages are sent when the result reports them.

Transitions (agent actions; anything else raises :class:`InvalidTransition`, state unchanged)
    ==============  =========================  ==============================================
    event           from                       to / effects
    ==============  =========================  ==============================================
    TakeOver a      bot (queued or not)        human(a); notice agent_joined
    TakeOver a      review(a)                  human(a); pending reply -> suggestion
    TakeOver a      review(b) / human(b)       AlreadyOwned (409)
    SetReview a on  bot (queued or not)        review(a)
    SetReview a on  human(a)                   review(a); notice bot_back; takeover correction
    SetReview off   review(a)                  bot, like HandBack
    HandBack a      review(a)                  bot; a pending reply is released unchanged
    HandBack a      human(a)                   bot; notice bot_back; takeover correction
    HandBack a      bot, queued                dequeued; notice bot_back unless triage
    Close a|None    bot / review(a) / human(a) closed; notice closed; everything waiting dropped
    AgentMessage a  human(a)                   SendToCustomer(human) + AppendToTracker
    decisions a     review(a) with a pending   RecordCorrection + commit, then hold again
    Watch a on/off  any (on: not closed)       watchers changed, no effects
    ChooseAction a  bot, no turn, not waiting  RasaExecute of the chosen action (a whisper),
                                               sent as the bot's when it ran
    ChooseAction a  review, no turn            the chosen action held as a pending reply
                                               (for the owner, or any agent if unowned)
                                               with its preview, the messages it would send
    RasaBack        bot, queued for            dequeued; notice bot_back; of the outage's
                    rasa_unavailable, no turn  messages the earlier are logged and the
                                               latest answered (RasaHandleMessage, earlier)
    ContinueWithBot bot, waiting for a person  dequeued; notice bot_back (the customer's
                                               choice while waiting)
    TriageFlag rev  bot, not queued            review, no owner, queue triage
    TriageFlag hum  bot / unowned review       bot, queue policy_rule (by rule) or high_risk;
                                               notice handoff_queued
    RasaResult with triage review, bot turn    nothing sent: review, no owner, queue triage;
                    that only rendered         RasaRetract (take the turn back, log the
                    responses                  message again with its parse, hold): the
                                               reply comes back held for any agent
    RasaResult with any other triage flag      the result as usual, then as TriageFlag
    ReviewTimeout   unowned review, pending    the held reply is sent unchanged, hold again
    any agent a     unowned review             acts as if owner: becomes owner (HandBack: bot)
    ==============  =========================  ==============================================
    A non-owner gets :class:`NotOwner` (403); no pending reply :class:`NoPendingReply` (409);
    a closed conversation :class:`ConversationClosed` (409, also for customer messages: the
    shell starts a new conversation); bad text or names :class:`InvalidInput` (422).

Escalation: in ``bot`` mode a handoff marker (reason ``bot_handoff_marker``), an intent in
``RouterConfig.handoff_intents`` (``customer_request``) or a failed Rasa call
(``rasa_unavailable``) queue the conversation and emit ``NotifyCustomer(handoff_queued)``. In
``review`` an executed marker or a Rasa failure moves the owner into ``human`` mode instead.
Whenever mode, owner or queue change, the last effect is :class:`StatusChanged`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeAlias

from handoff.conversation import router_model
from handoff.conversation.router_model import *  # noqa: F403 - the vocabulary, re-exported

__all__ = [
    "DEFAULT_CONFIG", "Result", "edited_messages", "handoff_reason", "step", "strip_handoff",
]
__all__ += router_model.__all__

# --- pure helpers -------------------------------------------------------------------------------

def handoff_reason(messages: Sequence[BotMessage]) -> str | None:
    """The reason of the first handoff marker (``custom: {"handoff": {"reason": ...}}``)."""
    for message in messages:
        custom = message.get("custom")
        if isinstance(custom, Mapping) and isinstance(custom.get(HANDOFF_KEY), Mapping):
            return str(custom[HANDOFF_KEY].get("reason") or "unspecified")
    return None


def strip_handoff(messages: Sequence[BotMessage]) -> tuple[BotMessage, ...]:
    """The messages without handoff markers (machine-readable, not for the customer)."""
    return tuple(m for m in messages if handoff_reason([m]) is None)


def edited_messages(original: Sequence[BotMessage], text: str) -> tuple[BotMessage, ...]:
    """An edited reply: one message with ``text``, keeping the original's buttons/quick replies."""
    edited: dict[str, Any] = {"text": text}
    for message in original:
        for key in ("buttons", "quick_replies"):
            if key in message and key not in edited:
                edited[key] = message[key]
    return (edited,)


Result: TypeAlias = tuple[ConversationState, list[Effect]]
UTTER_PREFIX = "utter_"
DEFAULT_CONFIG = RouterConfig()


def step(
    state: ConversationState, event: Event, config: RouterConfig = DEFAULT_CONFIG
) -> tuple[ConversationState, tuple[Effect, ...]]:
    """Apply one event; raise a :class:`RouterError` (state unchanged) if it is not allowed."""
    new, effects = _dispatch(state, event, config)
    status = (new.mode, new.owner, new.queue_reason, new.queue_detail)
    if status != (state.mode, state.owner, state.queue_reason, state.queue_detail):
        effects.append(StatusChanged(conversation_id=new.conversation_id, mode=new.mode,
                                     owner=new.owner, queue_reason=new.queue_reason,
                                     queue_detail=new.queue_detail, mode_before=state.mode,
                                     queue_reason_before=state.queue_reason))
    return new, tuple(effects)


def _dispatch(s: ConversationState, ev: Event, cfg: RouterConfig) -> Result:
    match ev:
        case CustomerMessage():
            return _on_customer_message(s, ev)
        case RasaResult():
            return _on_rasa_result(s, ev, cfg)
        case RasaFailed():
            return _on_rasa_failed(s, ev)
        case RasaBack():
            return _on_rasa_back(s, ev)
        case ContinueWithBot():
            if s.mode is not Mode.BOT or not s.waiting_for_agent:
                raise InvalidTransition("the customer is not waiting for a person")
            return replace(s, queue_reason=None, queue_detail=None), [
                NotifyCustomer(conversation_id=s.conversation_id, notice=Notice.BOT_BACK)]
        case TriageFlag():
            return _on_triage(s, ev)
        case ReviewTimeout():
            return _on_review_timeout(s, ev)
        case Close():
            return _on_close(s, ev)
        case Watch(on=False):
            return replace(s, watchers=s.watchers - {ev.agent_id}), []
    if s.mode is Mode.CLOSED:
        raise ConversationClosed("the conversation is closed")
    match ev:
        case Watch():
            return replace(s, watchers=s.watchers | {ev.agent_id}), []
        case TakeOver():
            return _on_take_over(s, ev.agent_id)
        case SetReview(on=True):
            return _on_review_on(s, ev.agent_id)
        case SetReview(on=False):
            if s.mode is not Mode.REVIEW:
                raise InvalidTransition(f"review is not on in {s.mode.value} mode")
            return _on_hand_back(s, ev.agent_id)
        case HandBack():
            return _on_hand_back(s, ev.agent_id)
        case AgentMessage():
            return _on_agent_message(s, ev)
        case ChooseAction():
            return _on_choose_action(s, ev)
        case ReviewDecision():
            return _on_decision(s, ev)
    raise InvalidTransition(f"unknown event {type(ev).__name__}")


# --- customer messages and turns ----------------------------------------------------------------

def _on_customer_message(s: ConversationState, msg: CustomerMessage) -> Result:
    if s.mode is Mode.CLOSED:
        raise ConversationClosed("the conversation is closed; start a new one")
    cid = s.conversation_id
    effects: list[Effect] = [StoreMessage(conversation_id=cid, message=msg)]
    if s.audience:
        effects.append(ShowCustomerMessage(conversation_id=cid, agent_ids=s.audience, message=msg))
    s = replace(s, last_message_id=msg.message_id)
    if s.turn is not None:
        return replace(s, backlog=s.backlog + (msg,)), effects
    s, more = _start_turn(s, msg)
    return s, effects + more


def _default_then(s: ConversationState) -> Continuation:
    if s.mode is Mode.REVIEW:
        return Continuation.HOLD
    if s.mode is Mode.HUMAN or s.waiting_for_agent:
        return Continuation.SUGGEST
    return Continuation.RUN


def _start_turn(s: ConversationState, msg: CustomerMessage) -> Result:
    if s.mode is Mode.BOT and s.queue_reason is QueueReason.RASA_UNAVAILABLE:
        return s, []  # stored; it waits for an agent
    then = _default_then(s)
    s = replace(s, turn=Turn(message=msg, then=then, call_id=s.next_call_id),
                next_call_id=s.next_call_id + 1)
    return s, [RasaHandleMessage(conversation_id=s.conversation_id, call_id=s.next_call_id - 1,
                                 then=then, message=msg)]


def _end_turn(s: ConversationState, effects: list[Effect]) -> Result:
    s = replace(s, turn=None)
    while s.turn is None and s.backlog:
        msg = s.backlog[0]
        s, more = _start_turn(replace(s, backlog=s.backlog[1:]), msg)
        effects = effects + more
    return s, effects


def _next_call(s: ConversationState, then: Continuation) -> tuple[ConversationState, int]:
    """Mark the current turn as awaiting a new Rasa call; return the call id."""
    assert s.turn is not None
    call_id = s.next_call_id
    turn = replace(s.turn, call_id=call_id, then=then, pending=None)
    return replace(s, turn=turn, next_call_id=call_id + 1), call_id


def _retractable(s: ConversationState, ev: RasaResult) -> bool:
    """Whether triage can still hold what Rasa did in this bot-mode turn: it only rendered
    responses (nothing a custom action did in the world), none of them escalates, and the
    customer has seen none of it."""
    turn = s.turn
    return (turn is not None and turn.then is Continuation.RUN and s.mode is Mode.BOT
            and not s.queued and bool(ev.executed) and not ev.logged
            and all(a.name.startswith(UTTER_PREFIX) and handoff_reason(a.messages) is None
                    for a in ev.executed))


def _on_rasa_result(s: ConversationState, ev: RasaResult, cfg: RouterConfig) -> Result:
    turn = s.turn
    if turn is None or turn.call_id != ev.call_id:
        return s, []  # stale: late after a timeout, or the conversation moved on
    judged = ev.triage
    if judged is not None and judged.action is TriageAction.REVIEW and _retractable(s, ev):
        # Triage judged the message before the reply went out: hold it for any agent.
        s = replace(s, mode=Mode.REVIEW, owner=None, queue_reason=QueueReason.TRIAGE,
                    queue_detail=judged.detail)
        s = replace(s, turn=replace(turn, parse=ev.parse or turn.parse,
                                    model_id=ev.model_id or turn.model_id))
        s, call_id = _next_call(s, Continuation.HOLD)
        return s, [RasaRetract(conversation_id=s.conversation_id, call_id=call_id,
                               then=Continuation.HOLD, message=turn.message,
                               parse=ev.parse or turn.parse)]
    s, effects = _on_turn_result(s, ev, cfg)
    if judged is not None:  # too late to hold this reply: the conversation's next ones
        s, more = _on_triage(s, judged)
        effects += more
    return s, effects


def _on_turn_result(s: ConversationState, ev: RasaResult, cfg: RouterConfig) -> Result:
    turn = s.turn
    assert turn is not None
    s = replace(s, turn=replace(turn, call_id=None, parse=ev.parse or turn.parse,
                                model_id=ev.model_id or turn.model_id, decision=None,
                                decided_by=None))
    effects: list[Effect] = []
    marker: str | None = None
    decision, decided_by = turn.decision, turn.decided_by
    for action in ev.executed:
        effects += _send(s, action.name, action.messages, decided_by, decision=decision)
        decision = decided_by = None  # only the decided action; what follows is the bot's
        marker = marker or handoff_reason(action.messages)
    if marker is not None:
        s, more = _escalate(s, QueueReason.BOT_HANDOFF_MARKER, marker)
        effects += more
    elif (turn.then is Continuation.RUN and ev.parse is not None
          and ev.parse.intent in cfg.handoff_intents):
        s, more = _escalate(s, QueueReason.CUSTOMER_REQUEST, ev.parse.intent)
        effects += more
    held = ev.held if ev.held is None or ev.held.name != ACTION_LISTEN else None
    if held is None:
        return _end_turn(s, effects)
    if turn.then is Continuation.SUGGEST or s.mode is Mode.HUMAN or s.waiting_for_agent:
        return _suggest(s, held, effects)
    if s.mode is Mode.REVIEW:
        owner = s.owner
        assert s.turn is not None
        reply = PendingReply(reply_id=ev.call_id, message_id=turn.message.message_id,
                             action=held, parse=s.turn.parse, model_id=s.turn.model_id)
        s = replace(s, turn=replace(s.turn, pending=reply))
        return s, effects + [ShowPendingReply(conversation_id=s.conversation_id,
                                              agent_id=owner, reply=reply)]
    return _commit(s, held.name, held.messages, None, effects)  # bot mode: release it


def _suggest(s: ConversationState, action: BotAction, effects: list[Effect]) -> Result:
    assert s.turn is not None
    if s.audience:
        effects = effects + [ShowSuggestion(conversation_id=s.conversation_id,
                                            agent_ids=s.audience,
                                            message_id=s.turn.message.message_id, action=action)]
    return _end_turn(s, effects)


def _on_rasa_failed(s: ConversationState, ev: RasaFailed) -> Result:
    if s.turn is None or s.turn.call_id != ev.call_id:
        return s, []
    effects: list[Effect] = []
    if s.audience:
        effects.append(ShowRasaError(conversation_id=s.conversation_id, agent_ids=s.audience,
                                     error=ev.error))
    if s.mode is Mode.BOT:
        if not s.waiting_for_agent:
            effects.append(NotifyCustomer(conversation_id=s.conversation_id,
                                          notice=Notice.HANDOFF_QUEUED,
                                          reason=QueueReason.RASA_UNAVAILABLE))
        s = replace(s, queue_reason=QueueReason.RASA_UNAVAILABLE, queue_detail=ev.error)
    elif s.mode is Mode.REVIEW:
        s, more = _escalate(s, QueueReason.RASA_UNAVAILABLE, ev.error)
        effects += more
    return _end_turn(s, effects)


def _on_rasa_back(s: ConversationState, ev: RasaBack) -> Result:
    """A conversation queued only because Rasa was down goes back to the bot (unless an agent
    took it meanwhile): the customer is told, and the bot answers the latest message with the
    earlier ones logged first. Anything else is left as it is."""
    if not (s.mode is Mode.BOT and s.queue_reason is QueueReason.RASA_UNAVAILABLE
            and s.owner is None and s.turn is None):
        return s, []
    cid = s.conversation_id
    s = replace(s, queue_reason=None, queue_detail=None)
    effects: list[Effect] = [NotifyCustomer(conversation_id=cid, notice=Notice.BOT_BACK)]
    if not ev.messages:
        return s, effects
    *earlier, latest = ev.messages
    s, more = _start_turn(s, latest)
    return s, effects + [replace(e, earlier=tuple(earlier))
                         if isinstance(e, RasaHandleMessage) else e for e in more]


def _escalate(s: ConversationState, reason: QueueReason, detail: str | None) -> Result:
    """Bot mode: into the human queue, customer told. Review: the owner answers as a human
    (an unowned review goes to the queue like bot mode)."""
    cid = s.conversation_id
    if s.mode is Mode.REVIEW and s.owner is None:
        s = replace(s, mode=Mode.BOT, queue_reason=None, queue_detail=None)
    if s.mode is Mode.BOT and not s.waiting_for_agent:
        return replace(s, queue_reason=reason, queue_detail=detail), [
            NotifyCustomer(conversation_id=cid, notice=Notice.HANDOFF_QUEUED, reason=reason)]
    if s.mode is Mode.REVIEW:
        return replace(s, mode=Mode.HUMAN, human_since=s.last_message_id), [
            NotifyCustomer(conversation_id=cid, notice=Notice.AGENT_JOINED)]
    return s, []


def _send(s: ConversationState, action_name: str | None, messages: Sequence[BotMessage],
          agent_id: str | None, sender: Sender = Sender.BOT,
          decision: CorrectionKind | None = None) -> list[Effect]:
    visible = strip_handoff(messages)
    if not visible:
        return []
    return [SendToCustomer(conversation_id=s.conversation_id, messages=visible,
                           action_name=action_name, sender=sender, agent_id=agent_id,
                           decision=decision)]


def _commit(s: ConversationState, action_name: str, messages: tuple[BotMessage, ...],
            agent_id: str | None, effects: list[Effect],
            decision: CorrectionKind | None = None) -> Result:
    """Put a held/decided action into effect and continue the turn (hold again in review).
    ``decision``: the agent's review decision, marked on what the customer is sent."""
    cid = s.conversation_id
    if not messages:
        return _execute(s, action_name, effects, decision, agent_id)
    effects = effects + _send(s, action_name, messages, agent_id, decision=decision)
    marker = handoff_reason(messages)
    if marker is not None:
        s, more = _escalate(s, QueueReason.BOT_HANDOFF_MARKER, marker)
        effects += more
    then = _default_then(s)
    s, call_id = _next_call(s, then)
    return s, effects + [RasaAppendReply(conversation_id=cid, call_id=call_id, then=then,
                                         action_name=action_name, messages=messages,
                                         agent_id=agent_id)]


def _execute(s: ConversationState, action_name: str, effects: list[Effect],
             decision: CorrectionKind | None, agent_id: str | None) -> Result:
    """Have Rasa run ``action_name`` (its messages are known only once it ran)."""
    then = _default_then(s)
    s, call_id = _next_call(s, then)
    if decision is not None:
        assert s.turn is not None
        s = replace(s, turn=replace(s.turn, decision=decision, decided_by=agent_id))
    return s, effects + [RasaExecute(conversation_id=s.conversation_id, call_id=call_id,
                                     then=then, action_name=action_name)]


# --- agent actions ------------------------------------------------------------------------------

def _require_owner(s: ConversationState, agent_id: str) -> None:
    if s.owner != agent_id:
        raise NotOwner(f"{agent_id} does not own this conversation")


def _claim(s: ConversationState, agent_id: str) -> ConversationState:
    """An unowned review (triage) becomes the acting agent's; otherwise only its owner acts."""
    if s.mode is Mode.REVIEW and s.owner is None:
        return replace(s, owner=agent_id, queue_reason=None, queue_detail=None)
    _require_owner(s, agent_id)
    return s


def _on_triage(s: ConversationState, ev: TriageFlag) -> Result:
    """Bot mode only (an agent already in charge decides for themselves)."""
    reason = QueueReason.POLICY_RULE if ev.by_rule else QueueReason.HIGH_RISK
    if ev.action is TriageAction.HUMAN:
        if s.mode is Mode.REVIEW and s.owner is None:
            pending = s.pending
            s = replace(s, mode=Mode.BOT, queue_reason=None, queue_detail=None)
            s, effects = _escalate(s, reason, ev.detail)
            if pending is not None:
                return _suggest(s, pending.action, effects)
            return s, effects
        if s.mode is Mode.BOT and not s.waiting_for_agent:
            return _escalate(s, reason, ev.detail)
        return s, []
    if s.mode is Mode.BOT and not s.queued:
        return replace(s, mode=Mode.REVIEW, owner=None, queue_reason=QueueReason.TRIAGE,
                       queue_detail=ev.detail), []
    if s.mode is Mode.REVIEW and s.owner is None:
        return replace(s, queue_detail=ev.detail), []  # the latest reason
    return s, []


def _on_review_timeout(s: ConversationState, ev: ReviewTimeout) -> Result:
    pending = s.pending
    if s.mode is not Mode.REVIEW or s.owner is not None or pending is None or (
            pending.reply_id != ev.reply_id):
        return s, []  # decided, claimed or moved on meanwhile
    return _commit(s, pending.action.name, pending.action.messages, None, [])


def _takeover_correction(s: ConversationState) -> list[Effect]:
    if s.mode is not Mode.HUMAN or s.owner is None:
        return []
    return [RecordCorrection(conversation_id=s.conversation_id, kind=CorrectionKind.TAKEOVER,
                             agent_id=s.owner, message_id=s.human_since, reply_id=None,
                             before=None, after=None, model_id=None)]


def _on_take_over(s: ConversationState, agent_id: str) -> Result:
    if s.owner is not None and s.owner != agent_id:
        raise AlreadyOwned(s.owner)
    if s.mode is Mode.HUMAN:
        return s, []
    effects: list[Effect] = [NotifyCustomer(conversation_id=s.conversation_id,
                                            notice=Notice.AGENT_JOINED)]
    pending = s.pending
    s = replace(s, mode=Mode.HUMAN, owner=agent_id, queue_reason=None, queue_detail=None,
                human_since=s.last_message_id)
    if pending is not None:
        return _suggest(s, pending.action, effects)
    return s, effects


def _on_review_on(s: ConversationState, agent_id: str) -> Result:
    if s.owner is not None and s.owner != agent_id:
        raise AlreadyOwned(s.owner)
    if s.mode is Mode.REVIEW:
        return _claim(s, agent_id), []
    effects: list[Effect] = []
    if s.mode is Mode.HUMAN:
        effects = _takeover_correction(s) + [
            NotifyCustomer(conversation_id=s.conversation_id, notice=Notice.BOT_BACK)]
    return replace(s, mode=Mode.REVIEW, owner=agent_id, queue_reason=None, queue_detail=None,
                   human_since=None), effects


def _on_hand_back(s: ConversationState, agent_id: str) -> Result:
    if s.mode is Mode.BOT:
        if not s.queued:
            raise InvalidTransition("the bot already has this conversation")
        effects: list[Effect] = []
        if s.waiting_for_agent:
            effects.append(NotifyCustomer(conversation_id=s.conversation_id,
                                          notice=Notice.BOT_BACK))
        return replace(s, queue_reason=None, queue_detail=None), effects
    s = _claim(s, agent_id)  # an unowned review: any agent may give it back to the bot
    effects = _takeover_correction(s)
    if s.mode is Mode.HUMAN:
        effects.append(NotifyCustomer(conversation_id=s.conversation_id, notice=Notice.BOT_BACK))
    pending = s.pending
    s = replace(s, mode=Mode.BOT, owner=None, human_since=None)
    if pending is not None:
        return _commit(s, pending.action.name, pending.action.messages, None, effects)
    return s, effects


def _on_close(s: ConversationState, ev: Close) -> Result:
    if s.mode is Mode.CLOSED:
        raise ConversationClosed("the conversation is already closed")
    if ev.agent_id is not None and s.owner is not None:
        _require_owner(s, ev.agent_id)
    effects = _takeover_correction(s) + [
        NotifyCustomer(conversation_id=s.conversation_id, notice=Notice.CLOSED)]
    return replace(s, mode=Mode.CLOSED, owner=None, watchers=frozenset(), queue_reason=None,
                   queue_detail=None, turn=None, backlog=(), human_since=None), effects


def _on_agent_message(s: ConversationState, ev: AgentMessage) -> Result:
    if s.mode is not Mode.HUMAN:
        raise InvalidTransition(f"agents send messages in human mode, not {s.mode.value}")
    _require_owner(s, ev.agent_id)
    if not ev.text.strip():
        raise InvalidInput("empty message")
    messages: tuple[BotMessage, ...] = ({"text": ev.text},)
    return s, _send(s, AGENT_REPLY_ACTION, messages, ev.agent_id, Sender.HUMAN) + [
        AppendToTracker(conversation_id=s.conversation_id, action_name=AGENT_REPLY_ACTION,
                        messages=messages, agent_id=ev.agent_id)]


def _on_decision(s: ConversationState, ev: ReviewDecision) -> Result:
    if s.mode is not Mode.REVIEW:
        raise InvalidTransition(f"no review decisions in {s.mode.value} mode")
    if s.owner is not None and s.owner != ev.agent_id:
        raise DecidedByOther(s.owner)
    s = _claim(s, ev.agent_id)
    pending = s.pending
    if pending is None:
        raise NoPendingReply("no reply is waiting for a decision")
    if pending.reply_id != ev.reply_id:
        raise StaleReply(f"reply {ev.reply_id} is no longer pending (now {pending.reply_id})")
    cid = s.conversation_id
    reply: PendingReply = pending
    held = reply.action
    intent = reply.parse.intent if reply.parse else None
    before = ReplySnapshot(action_name=held.name, messages=held.messages, intent=intent)

    def correction(kind: CorrectionKind, after: ReplySnapshot) -> list[Effect]:
        return [RecordCorrection(conversation_id=cid, kind=kind, agent_id=ev.agent_id,
                                 message_id=reply.message_id, reply_id=reply.reply_id,
                                 before=before, after=after, model_id=reply.model_id)]

    match ev:
        case Approve():
            return _commit(s, held.name, held.messages, ev.agent_id,
                           correction(CorrectionKind.APPROVE, before), CorrectionKind.APPROVE)
        case Edit(text=text):
            if not held.messages:
                raise InvalidInput(f"{held.name} has no text to edit: replace or write instead")
            _nonempty(text, "text")
            edited = edited_messages(held.messages, text)
            after = ReplySnapshot(action_name=held.name, messages=edited, intent=intent)
            return _commit(s, held.name, edited, ev.agent_id,
                           correction(CorrectionKind.EDIT, after), CorrectionKind.EDIT)
        case Write(text=text):
            _nonempty(text, "text")
            written: tuple[BotMessage, ...] = ({"text": text},)
            after = ReplySnapshot(action_name=AGENT_REPLY_ACTION, messages=written, intent=intent)
            return _commit(s, AGENT_REPLY_ACTION, written, ev.agent_id,
                           correction(CorrectionKind.WRITE, after), CorrectionKind.WRITE)
        case ReplaceAction(action_name=name):
            _nonempty(name, "action_name")
            effects = correction(CorrectionKind.REPLACE,
                                 ReplySnapshot(action_name=name, intent=intent))
            return _execute(s, name, effects, CorrectionKind.REPLACE, ev.agent_id)
        case Relabel(intent=new_intent):
            _nonempty(new_intent, "intent")
            effects = correction(CorrectionKind.RELABEL,
                                 ReplySnapshot(action_name=None, intent=new_intent))
            message = _turn_message(s)
            s, call_id = _next_call(s, Continuation.HOLD)
            return s, effects + [RasaRelabel(conversation_id=cid, call_id=call_id,
                                             then=Continuation.HOLD, message=message,
                                             intent=new_intent)]
    raise InvalidTransition(f"unknown decision {type(ev).__name__}")


def _on_choose_action(s: ConversationState, ev: ChooseAction) -> Result:
    """A whisper: the agent's action runs as the bot's next one, held first in review."""
    if s.mode not in (Mode.BOT, Mode.REVIEW) or s.waiting_for_agent:
        raise InvalidTransition(f"the bot is not serving this conversation ({s.mode.value} "
                                "mode, or the customer waits for a person)")
    if s.turn is not None:
        raise InvalidTransition("the bot is answering a message now; whisper once it has")
    _nonempty(ev.action_name, "action_name")
    then = _default_then(s)
    s = replace(s, turn=Turn(message=ev.message, then=then, call_id=None))
    # the whisper is recorded with the step that carries it out (one transaction)
    record = RecordCorrection(conversation_id=s.conversation_id, kind=CorrectionKind.CHOOSE,
                              agent_id=ev.agent_id, message_id=ev.message.message_id,
                              reply_id=None, before=None,
                              after=ReplySnapshot(action_name=ev.action_name), model_id=None)
    if s.mode is Mode.REVIEW:
        reply = PendingReply(reply_id=s.next_call_id, message_id=ev.message.message_id,
                             action=BotAction(name=ev.action_name, policy="whisper",
                                              messages=ev.preview),
                             parse=None, model_id=None)
        assert s.turn is not None
        s = replace(s, turn=replace(s.turn, pending=reply), next_call_id=s.next_call_id + 1)
        return s, [record, ShowPendingReply(conversation_id=s.conversation_id,
                                            agent_id=s.owner, reply=reply)]
    s, effects = _execute(s, ev.action_name, [record], None, ev.agent_id)
    assert s.turn is not None
    return replace(s, turn=replace(s.turn, decided_by=ev.agent_id)), effects  # marks its reply


def _turn_message(s: ConversationState) -> CustomerMessage:
    assert s.turn is not None
    return s.turn.message


def _nonempty(value: str, name: str) -> None:
    if not value.strip():
        raise InvalidInput(f"{name} must not be empty")
