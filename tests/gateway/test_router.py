"""The conversation router (handoff/conversation/router.py): every transition, with exact effects."""

from __future__ import annotations

from typing import Any

import pytest

from handoff.conversation.router import (
    AGENT_REPLY_ACTION,
    AlreadyOwned,
    AppendToTracker,
    Approve,
    AgentMessage,
    BotAction,
    ChooseAction,
    Close,
    ContinueWithBot,
    ConversationClosed,
    ConversationState,
    Continuation,
    CorrectionKind,
    CustomerMessage,
    DecidedByOther,
    Edit,
    Effect,
    Event,
    HandBack,
    InvalidInput,
    InvalidTransition,
    Mode,
    NluParse,
    NoPendingReply,
    NotOwner,
    Notice,
    NotifyCustomer,
    PendingReply,
    QueueReason,
    RasaAppendReply,
    RasaBack,
    RasaExecute,
    RasaFailed,
    RasaHandleMessage,
    RasaRelabel,
    RasaResult,
    RasaRetract,
    RecordCorrection,
    Relabel,
    ReplaceAction,
    ReplySnapshot,
    RouterConfig,
    RouterError,
    Scored,
    SendToCustomer,
    Sender,
    SetReview,
    ShowCustomerMessage,
    ShowPendingReply,
    ShowRasaError,
    ShowSuggestion,
    StaleReply,
    StatusChanged,
    StoreMessage,
    TakeOver,
    ReviewTimeout,
    TriageAction,
    TriageFlag,
    Watch,
    Write,
    edited_messages,
    handoff_reason,
    step,
    strip_handoff,
)

CID = "conv-1"
ANN, BOB = "ann", "bob"

GREET = BotAction(name="utter_greet", messages=({"text": "Hi! How can I help?"},),
                  confidence=0.93, policy="TEDPolicy",
                  alternatives=(Scored(name="utter_help", confidence=0.04),))
CHECK = BotAction(name="action_check_order", confidence=0.81)  # a custom action: no messages
ASK_ID = BotAction(name="utter_ask_order_id",
                   messages=({"text": "Which order?", "buttons": [{"title": "100001",
                                                                   "payload": "100001"}]},))
HANDOFF_MESSAGES: tuple[dict[str, Any], ...] = (
    {"text": "I'll get a colleague for you."},
    {"custom": {"handoff": {"reason": "customer_request"}}},
)
REQUEST_HUMAN = BotAction(name="action_request_human", messages=HANDOFF_MESSAGES)
GREET_PARSE = NluParse(intent="greet", confidence=0.97,
                       intent_ranking=(Scored(name="greet", confidence=0.97),
                                       Scored(name="thank", confidence=0.02)))


def msg(n: int, text: str = "hello") -> CustomerMessage:
    return CustomerMessage(message_id=f"m{n}", text=text, metadata={"n": n})


def feed(state: ConversationState, *events: Event) -> tuple[ConversationState, tuple[Effect, ...]]:
    """Apply events in order; return the last state and the last step's effects."""
    effects: tuple[Effect, ...] = ()
    for event in events:
        state, effects = step(state, event)
    return state, effects


def status(mode: Mode, owner: str | None = None, reason: QueueReason | None = None,
           detail: str | None = None) -> StatusChanged:
    return StatusChanged(conversation_id=CID, mode=mode, owner=owner, queue_reason=reason,
                         queue_detail=detail)


def handle(call_id: int, n: int, then: Continuation) -> RasaHandleMessage:
    return RasaHandleMessage(conversation_id=CID, call_id=call_id, then=then, message=msg(n))


def send(action: str | None, *messages: dict[str, Any], sender: Sender = Sender.BOT,
         agent: str | None = None, decision: CorrectionKind | None = None) -> SendToCustomer:
    return SendToCustomer(conversation_id=CID, messages=messages, action_name=action,
                          sender=sender, agent_id=agent, decision=decision)


def notify(notice: Notice, reason: QueueReason | None = None) -> NotifyCustomer:
    return NotifyCustomer(conversation_id=CID, notice=notice, reason=reason)


def new() -> ConversationState:
    return ConversationState(conversation_id=CID)


def reviewing() -> ConversationState:
    state, _ = feed(new(), SetReview(agent_id=ANN, on=True))
    return state


def pending(held: BotAction = GREET) -> ConversationState:
    """Review by ANN with reply 1 (``held``) waiting for a decision on customer message m1."""
    state, _ = feed(reviewing(), msg(1),
                    RasaResult(call_id=1, parse=GREET_PARSE, held=held, model_id="model-7"))
    return state


def human() -> ConversationState:
    state, _ = feed(new(), msg(1), RasaResult(call_id=1, executed=(GREET,)),
                    TakeOver(agent_id=ANN))
    return state


def correction(kind: CorrectionKind, before: ReplySnapshot | None, after: ReplySnapshot | None,
               reply_id: int | None = 1, message_id: str | None = "m1",
               model_id: str | None = "model-7") -> RecordCorrection:
    return RecordCorrection(conversation_id=CID, kind=kind, agent_id=ANN, message_id=message_id,
                            reply_id=reply_id, before=before, after=after, model_id=model_id)


GREET_SNAPSHOT = ReplySnapshot(action_name="utter_greet", messages=GREET.messages, intent="greet")


# --- bot mode and ordering ----------------------------------------------------------------------

def test_bot_turn_stores_first_then_runs_and_sends() -> None:
    state, effects = step(new(), msg(1))
    assert effects == (StoreMessage(conversation_id=CID, message=msg(1)),
                       handle(1, 1, Continuation.RUN))
    assert state.turn is not None and state.turn.call_id == 1
    state, effects = step(state, RasaResult(call_id=1, parse=GREET_PARSE,
                                            executed=(GREET, CHECK)))
    assert effects == (send("utter_greet", {"text": "Hi! How can I help?"}),)
    assert state.turn is None and state.mode is Mode.BOT and state.next_call_id == 2


def test_watchers_see_customer_messages_after_storage() -> None:
    state, effects = feed(new(), Watch(agent_id=BOB), Watch(agent_id=ANN))
    assert effects == () and state.watchers == {ANN, BOB}
    _, effects = step(state, msg(1))
    assert effects == (StoreMessage(conversation_id=CID, message=msg(1)),
                       ShowCustomerMessage(conversation_id=CID, agent_ids=(ANN, BOB),
                                           message=msg(1)),
                       handle(1, 1, Continuation.RUN))
    state, effects = step(state, Watch(agent_id=BOB, on=False))
    assert effects == () and state.watchers == {ANN}


def test_messages_during_a_turn_wait_and_run_in_order() -> None:
    state, _ = step(new(), msg(1))
    state, effects = step(state, msg(2))
    assert effects == (StoreMessage(conversation_id=CID, message=msg(2)),)
    state, effects = step(state, msg(3))
    assert effects == (StoreMessage(conversation_id=CID, message=msg(3)),)
    assert state.backlog == (msg(2), msg(3))
    state, effects = step(state, RasaResult(call_id=1, executed=(GREET,)))
    assert effects == (send("utter_greet", *GREET.messages), handle(2, 2, Continuation.RUN))
    assert state.backlog == (msg(3),)
    state, effects = step(state, RasaResult(call_id=2))
    assert effects == (handle(3, 3, Continuation.RUN),)
    state, effects = step(state, RasaResult(call_id=3))
    assert effects == () and state.turn is None and state.backlog == ()


def test_a_result_for_another_call_is_ignored() -> None:
    state, _ = step(new(), msg(1))
    assert step(state, RasaResult(call_id=7, executed=(GREET,))) == (state, ())
    assert step(state, RasaFailed(call_id=7, error="late")) == (state, ())
    assert step(new(), RasaResult(call_id=1)) == (new(), ())


def test_an_action_listen_held_ends_the_turn() -> None:
    state, _ = step(reviewing(), msg(1))
    state, effects = step(state, RasaResult(call_id=1, held=BotAction(name="action_listen")))
    assert effects == () and state.turn is None


# --- escalation ---------------------------------------------------------------------------------

def test_handoff_marker_queues_and_bot_holds_off() -> None:
    state, _ = feed(new(), Watch(agent_id=BOB), msg(1))
    state, effects = step(state, RasaResult(call_id=1, executed=(REQUEST_HUMAN,)))
    assert effects == (
        send("action_request_human", {"text": "I'll get a colleague for you."}),
        notify(Notice.HANDOFF_QUEUED, QueueReason.BOT_HANDOFF_MARKER),
        status(Mode.BOT, reason=QueueReason.BOT_HANDOFF_MARKER, detail="customer_request"),
    )
    assert state.queued and state.waiting_for_agent
    state, effects = step(state, msg(2))
    assert effects[-1] == handle(2, 2, Continuation.SUGGEST)
    state, effects = step(state, RasaResult(call_id=2, held=GREET))
    assert effects == (ShowSuggestion(conversation_id=CID, agent_ids=(BOB,), message_id="m2",
                                      action=GREET),)
    assert state.turn is None


def test_explicit_request_intent_queues_as_customer_request() -> None:
    state, _ = step(new(), msg(1, "a person please"))
    request = NluParse(intent="contact_human_agent", confidence=0.9)
    state, effects = step(state, RasaResult(call_id=1, parse=request, executed=(GREET,)))
    assert effects == (send("utter_greet", *GREET.messages),
                       notify(Notice.HANDOFF_QUEUED, QueueReason.CUSTOMER_REQUEST),
                       status(Mode.BOT, reason=QueueReason.CUSTOMER_REQUEST,
                              detail="contact_human_agent"))
    config = RouterConfig(handoff_intents=frozenset({"agent"}))
    state, _ = step(new(), msg(1))
    state, effects = step(state, RasaResult(call_id=1, parse=request), config)
    assert effects == () and not state.queued


def test_triage_review_holds_replies_for_any_agent_until_one_acts() -> None:
    state, effects = step(new(), TriageFlag(detail="low confidence"))
    assert effects == (status(Mode.REVIEW, reason=QueueReason.TRIAGE, detail="low confidence"),)
    assert state.queued and not state.waiting_for_agent and state.owner is None
    state, effects = step(state, TriageFlag(detail="negative sentiment"))
    assert effects == (status(Mode.REVIEW, reason=QueueReason.TRIAGE,
                              detail="negative sentiment"),)
    state, effects = step(state, msg(1))
    assert effects[-1] == handle(1, 1, Continuation.HOLD)
    state, effects = step(state, RasaResult(call_id=1, parse=GREET_PARSE, held=GREET,
                                            model_id="model-7"))
    reply = PendingReply(reply_id=1, message_id="m1", action=GREET, parse=GREET_PARSE,
                         model_id="model-7")
    assert effects == (ShowPendingReply(conversation_id=CID, agent_id=None, reply=reply),)
    # the first agent to decide owns the conversation from then on
    state, effects = step(state, Approve(agent_id=BOB, reply_id=1))
    assert state.owner == BOB and not state.queued and state.mode is Mode.REVIEW
    assert effects[-1] == status(Mode.REVIEW, BOB)
    with pytest.raises(NotOwner):
        step(state, HandBack(agent_id=ANN))


def test_a_reply_triage_judges_risky_is_held_before_the_customer_sees_it() -> None:
    state, _ = step(new(), msg(1))
    flag = TriageFlag(detail="risk 0.6: neighbours disagree")
    state, effects = step(state, RasaResult(call_id=1, parse=GREET_PARSE, executed=(GREET,),
                                            model_id="model-7", triage=flag))
    # nothing is sent: what Rasa said is taken back and asked for again, held
    assert effects == (RasaRetract(conversation_id=CID, call_id=2, then=Continuation.HOLD,
                                   message=msg(1), parse=GREET_PARSE),
                       status(Mode.REVIEW, reason=QueueReason.TRIAGE, detail=flag.detail))
    state, effects = step(state, RasaResult(call_id=2, parse=GREET_PARSE, held=GREET,
                                            model_id="model-7"))
    reply = PendingReply(reply_id=2, message_id="m1", action=GREET, parse=GREET_PARSE,
                         model_id="model-7")
    assert effects == (ShowPendingReply(conversation_id=CID, agent_id=None, reply=reply),)


def test_a_judged_reply_that_ran_a_custom_action_goes_out_and_the_next_ones_are_held() -> None:
    state, _ = step(new(), msg(1))
    ran = BotAction(name="action_check_order", messages=({"text": "It shipped."},))
    state, effects = step(state, RasaResult(call_id=1, parse=GREET_PARSE, executed=(ran,),
                                            triage=TriageFlag(detail="novel")))
    assert effects == (send("action_check_order", {"text": "It shipped."}),
                       status(Mode.REVIEW, reason=QueueReason.TRIAGE, detail="novel"))
    # a person-level judgement: the reply goes, then the queue
    state, _ = step(new(), msg(1))
    state, effects = step(state, RasaResult(
        call_id=1, parse=GREET_PARSE, executed=(GREET,),
        triage=TriageFlag(detail="risk 0.95", action=TriageAction.HUMAN)))
    assert effects == (send("utter_greet", *GREET.messages),
                       notify(Notice.HANDOFF_QUEUED, QueueReason.HIGH_RISK),
                       status(Mode.BOT, reason=QueueReason.HIGH_RISK, detail="risk 0.95"))


def test_an_unowned_held_reply_goes_out_unchanged_when_no_agent_decides_in_time() -> None:
    state, _ = feed(new(), TriageFlag(detail="novel"), msg(1))
    state, _ = step(state, RasaResult(call_id=1, parse=GREET_PARSE, held=GREET))
    assert step(state, ReviewTimeout(reply_id=7)) == (state, ())  # not the pending one
    state, effects = step(state, ReviewTimeout(reply_id=1))
    assert effects == (send("utter_greet", *GREET.messages),
                       RasaAppendReply(conversation_id=CID, call_id=2, then=Continuation.HOLD,
                                       action_name="utter_greet", messages=GREET.messages,
                                       agent_id=None))
    assert state.mode is Mode.REVIEW and state.owner is None  # still flagged: next turn held
    claimed, _ = step(state, SetReview(agent_id=ANN, on=True))
    assert claimed.owner == ANN
    assert step(claimed, ReviewTimeout(reply_id=1)) == (claimed, ())


def test_any_agent_can_release_an_unowned_review_to_the_bot() -> None:
    state, _ = feed(new(), TriageFlag(detail="novel"), msg(1))
    state, _ = step(state, RasaResult(call_id=1, parse=GREET_PARSE, held=GREET))
    state, effects = step(state, HandBack(agent_id=BOB))
    assert state.mode is Mode.BOT and not state.queued
    assert effects[0] == send("utter_greet", *GREET.messages)


def test_a_policy_rule_sends_the_conversation_to_a_person() -> None:
    state, effects = step(new(), TriageFlag(detail="legal threat", by_rule=True,
                                            action=TriageAction.HUMAN))
    assert effects == (notify(Notice.HANDOFF_QUEUED, QueueReason.POLICY_RULE),
                       status(Mode.BOT, reason=QueueReason.POLICY_RULE, detail="legal threat"))
    assert state.waiting_for_agent
    _, effects = step(state, msg(1))
    assert effects[-1] == handle(1, 1, Continuation.SUGGEST)  # the bot holds off
    # from an unowned review, the held reply becomes the agents' suggestion
    state, _ = feed(new(), TriageFlag(detail="novel"), msg(1))
    state, _ = step(state, RasaResult(call_id=1, parse=GREET_PARSE, held=GREET))
    state, effects = step(state, TriageFlag(detail="risk 0.95", action=TriageAction.HUMAN))
    assert state.mode is Mode.BOT and state.queue_reason is QueueReason.HIGH_RISK
    assert state.pending is None and state.turn is None
    # an agent who owns the conversation is not overruled
    owned, _ = feed(new(), SetReview(agent_id=ANN, on=True))
    assert step(owned, TriageFlag(detail="x", action=TriageAction.HUMAN)) == (owned, ())


def test_rasa_failure_queues_and_later_messages_wait_for_an_agent() -> None:
    state, _ = feed(new(), msg(1), msg(2))
    state, effects = step(state, RasaFailed(call_id=1, error="timeout after 10 s",
                                            timed_out=True))
    assert effects == (notify(Notice.HANDOFF_QUEUED, QueueReason.RASA_UNAVAILABLE),
                       status(Mode.BOT, reason=QueueReason.RASA_UNAVAILABLE,
                              detail="timeout after 10 s"))
    assert state.turn is None and state.backlog == ()  # m2 was stored; it waits for an agent
    state, effects = step(state, msg(3))
    assert effects == (StoreMessage(conversation_id=CID, message=msg(3)),)
    assert state.turn is None and state.backlog == ()
    assert step(state, RasaResult(call_id=1, executed=(GREET,))) == (state, ())  # too late


def test_rasa_failure_while_waiting_does_not_tell_the_customer_twice() -> None:
    state, _ = feed(new(), msg(1), RasaResult(call_id=1, executed=(REQUEST_HUMAN,)), msg(2))
    state, effects = step(state, RasaFailed(call_id=2, error="down"))
    assert effects == (status(Mode.BOT, reason=QueueReason.RASA_UNAVAILABLE, detail="down"),)


def test_recovery_after_rasa_failure() -> None:
    down, _ = feed(new(), msg(1), RasaFailed(call_id=1, error="down"))
    state, effects = step(down, TakeOver(agent_id=ANN))
    assert effects == (notify(Notice.AGENT_JOINED), status(Mode.HUMAN, ANN))
    state, effects = step(state, msg(2))
    assert effects[-1] == handle(2, 2, Continuation.SUGGEST)
    state, effects = step(state, RasaResult(call_id=2, held=GREET))  # Rasa is back
    assert effects == (ShowSuggestion(conversation_id=CID, agent_ids=(ANN,), message_id="m2",
                                      action=GREET),)
    state, _ = step(state, HandBack(agent_id=ANN))
    state, effects = step(state, msg(3))
    assert effects[-1] == handle(3, 3, Continuation.RUN)
    # a queued conversation can also be handed straight back to the bot
    state, effects = step(down, HandBack(agent_id=BOB))
    assert effects == (notify(Notice.BOT_BACK), status(Mode.BOT))
    # and a new conversation goes to the bot
    _, effects = step(ConversationState(conversation_id="conv-2"), msg(9))
    assert effects[-1] == RasaHandleMessage(conversation_id="conv-2", call_id=1,
                                            then=Continuation.RUN, message=msg(9))


def test_rasa_back_returns_an_outage_queue_to_the_bot_with_the_messages_it_missed() -> None:
    down, _ = feed(new(), msg(1), RasaFailed(call_id=1, error="down"), msg(2), msg(3))
    state, effects = step(down, RasaBack(messages=(msg(1), msg(2), msg(3))))
    assert effects == (
        notify(Notice.BOT_BACK),
        RasaHandleMessage(conversation_id=CID, call_id=2, then=Continuation.RUN,
                          message=msg(3), earlier=(msg(1), msg(2))),
        status(Mode.BOT))
    assert state.turn is not None and state.turn.message == msg(3)
    state, effects = step(state, msg(4))  # the catch-up turn is out: the next one waits
    assert state.backlog == (msg(4),)
    # nothing unanswered: only back to the bot
    _, effects = step(down, RasaBack(messages=()))
    assert effects == (notify(Notice.BOT_BACK), status(Mode.BOT))
    # an agent took it meanwhile, or it waits for a person for another reason: left alone
    taken, _ = step(down, TakeOver(agent_id=ANN))
    assert step(taken, RasaBack(messages=(msg(1),))) == (taken, ())
    asked, _ = feed(new(), msg(1), RasaResult(call_id=1, executed=(REQUEST_HUMAN,)))
    assert step(asked, RasaBack(messages=(msg(1),))) == (asked, ())


def test_a_waiting_customer_may_continue_with_the_bot() -> None:
    asked, _ = feed(new(), msg(1), RasaResult(call_id=1, executed=(REQUEST_HUMAN,)))
    state, effects = step(asked, ContinueWithBot())
    assert effects == (notify(Notice.BOT_BACK), status(Mode.BOT))
    _, effects = step(state, msg(2))
    assert effects[-1] == handle(2, 2, Continuation.RUN)
    with pytest.raises(InvalidTransition):
        step(state, ContinueWithBot())  # not waiting any more
    taken, _ = step(asked, TakeOver(agent_id=ANN))
    with pytest.raises(InvalidTransition):
        step(taken, ContinueWithBot())


# --- review: the edit gate ----------------------------------------------------------------------

def test_review_holds_each_predicted_action_for_the_owner() -> None:
    state, effects = step(new(), SetReview(agent_id=ANN, on=True))
    assert effects == (status(Mode.REVIEW, ANN),)
    assert step(state, SetReview(agent_id=ANN, on=True)) == (state, ())
    state, effects = step(state, msg(1))
    assert effects == (StoreMessage(conversation_id=CID, message=msg(1)),
                       ShowCustomerMessage(conversation_id=CID, agent_ids=(ANN,), message=msg(1)),
                       handle(1, 1, Continuation.HOLD))
    state, effects = step(state, RasaResult(call_id=1, parse=GREET_PARSE, held=GREET,
                                            model_id="model-7"))
    reply = PendingReply(reply_id=1, message_id="m1", action=GREET, parse=GREET_PARSE,
                         model_id="model-7")
    assert effects == (ShowPendingReply(conversation_id=CID, agent_id=ANN, reply=reply),)
    assert state.pending == reply


def test_approve_sends_unchanged_and_holds_the_next_action() -> None:
    state, effects = step(pending(), Approve(agent_id=ANN, reply_id=1))
    assert effects == (
        correction(CorrectionKind.APPROVE, GREET_SNAPSHOT, GREET_SNAPSHOT),
        send("utter_greet", *GREET.messages, agent=ANN, decision=CorrectionKind.APPROVE),
        RasaAppendReply(conversation_id=CID, call_id=2, then=Continuation.HOLD,
                        action_name="utter_greet", messages=GREET.messages, agent_id=ANN),
    )
    assert state.pending is None
    state, effects = step(state, RasaResult(call_id=2, held=ASK_ID))
    assert effects == (ShowPendingReply(conversation_id=CID, agent_id=ANN, reply=PendingReply(
        reply_id=2, message_id="m1", action=ASK_ID, parse=GREET_PARSE, model_id="model-7")),)
    state, effects = step(state, Approve(agent_id=ANN, reply_id=2))
    state, effects = step(state, RasaResult(call_id=3))
    assert effects == () and state.turn is None


def test_approving_a_custom_action_executes_it() -> None:
    state, effects = step(pending(CHECK), Approve(agent_id=ANN, reply_id=1))
    snapshot = ReplySnapshot(action_name="action_check_order", intent="greet")
    assert effects == (correction(CorrectionKind.APPROVE, snapshot, snapshot),
                       RasaExecute(conversation_id=CID, call_id=2, then=Continuation.HOLD,
                                   action_name="action_check_order"))
    done = BotAction(name="action_check_order", messages=({"text": "It ships today."},))
    state, effects = step(state, RasaResult(call_id=2, executed=(done,)))
    assert effects == (send("action_check_order", {"text": "It ships today."}, agent=ANN,
                            decision=CorrectionKind.APPROVE),)
    assert state.turn is None


def test_edit_sends_the_edited_text_and_records_it_in_the_tracker() -> None:
    state, effects = step(pending(ASK_ID), Edit(agent_id=ANN, reply_id=1, text="Order number?"))
    edited = ({"text": "Order number?", "buttons": [{"title": "100001", "payload": "100001"}]},)
    assert effects == (
        correction(CorrectionKind.EDIT,
                   ReplySnapshot(action_name="utter_ask_order_id", messages=ASK_ID.messages,
                                 intent="greet"),
                   ReplySnapshot(action_name="utter_ask_order_id", messages=edited,
                                 intent="greet")),
        send("utter_ask_order_id", *edited, agent=ANN, decision=CorrectionKind.EDIT),
        RasaAppendReply(conversation_id=CID, call_id=2, then=Continuation.HOLD,
                        action_name="utter_ask_order_id", messages=edited, agent_id=ANN),
    )


def test_replace_executes_another_action_and_holds_the_next() -> None:
    state, effects = step(pending(), ReplaceAction(agent_id=ANN, reply_id=1,
                                                   action_name="utter_ask_order_id"))
    assert effects == (
        correction(CorrectionKind.REPLACE, GREET_SNAPSHOT,
                   ReplySnapshot(action_name="utter_ask_order_id", intent="greet")),
        RasaExecute(conversation_id=CID, call_id=2, then=Continuation.HOLD,
                    action_name="utter_ask_order_id"),
    )
    state, effects = step(state, RasaResult(call_id=2, executed=(ASK_ID,), held=CHECK))
    assert effects == (
        send("utter_ask_order_id", *ASK_ID.messages, agent=ANN,
             decision=CorrectionKind.REPLACE),
        ShowPendingReply(conversation_id=CID, agent_id=ANN, reply=PendingReply(
            reply_id=2, message_id="m1", action=CHECK, parse=GREET_PARSE, model_id="model-7")),
    )


def test_write_sends_the_agents_own_reply() -> None:
    state, effects = step(pending(), Write(agent_id=ANN, reply_id=1, text="Good morning!"))
    written = ({"text": "Good morning!"},)
    assert effects == (
        correction(CorrectionKind.WRITE, GREET_SNAPSHOT,
                   ReplySnapshot(action_name=AGENT_REPLY_ACTION, messages=written,
                                 intent="greet")),
        send(AGENT_REPLY_ACTION, *written, agent=ANN, decision=CorrectionKind.WRITE),
        RasaAppendReply(conversation_id=CID, call_id=2, then=Continuation.HOLD,
                        action_name=AGENT_REPLY_ACTION, messages=written, agent_id=ANN),
    )


def test_relabel_makes_rasa_predict_again_from_the_corrected_intent() -> None:
    state, effects = step(pending(), Relabel(agent_id=ANN, reply_id=1, intent="track_order"))
    assert effects == (
        correction(CorrectionKind.RELABEL, GREET_SNAPSHOT,
                   ReplySnapshot(action_name=None, intent="track_order")),
        RasaRelabel(conversation_id=CID, call_id=2, then=Continuation.HOLD, message=msg(1),
                    intent="track_order"),
    )
    corrected = NluParse(intent="track_order", confidence=1.0)
    state, effects = step(state, RasaResult(call_id=2, parse=corrected, held=ASK_ID,
                                            model_id="model-7"))
    assert effects == (ShowPendingReply(conversation_id=CID, agent_id=ANN, reply=PendingReply(
        reply_id=2, message_id="m1", action=ASK_ID, parse=corrected, model_id="model-7")),)


def test_messages_wait_while_a_reply_is_pending() -> None:
    state, effects = step(pending(), msg(2))
    assert effects == (StoreMessage(conversation_id=CID, message=msg(2)),
                       ShowCustomerMessage(conversation_id=CID, agent_ids=(ANN,), message=msg(2)))
    state, _ = step(state, Approve(agent_id=ANN, reply_id=1))
    state, effects = step(state, RasaResult(call_id=2))
    assert effects == (handle(3, 2, Continuation.HOLD),)


def test_approving_a_handoff_moves_the_owner_into_human_mode() -> None:
    state, effects = step(pending(REQUEST_HUMAN), Approve(agent_id=ANN, reply_id=1))
    snapshot = ReplySnapshot(action_name="action_request_human", messages=HANDOFF_MESSAGES,
                             intent="greet")
    assert effects == (
        correction(CorrectionKind.APPROVE, snapshot, snapshot),
        send("action_request_human", {"text": "I'll get a colleague for you."}, agent=ANN,
             decision=CorrectionKind.APPROVE),
        notify(Notice.AGENT_JOINED),
        RasaAppendReply(conversation_id=CID, call_id=2, then=Continuation.SUGGEST,
                        action_name="action_request_human", messages=HANDOFF_MESSAGES,
                        agent_id=ANN),
        status(Mode.HUMAN, ANN),
    )


def test_rasa_failure_in_review_gives_the_owner_the_conversation() -> None:
    state, _ = step(reviewing(), msg(1))
    state, effects = step(state, RasaFailed(call_id=1, error="down"))
    assert effects == (ShowRasaError(conversation_id=CID, agent_ids=(ANN,), error="down"),
                       notify(Notice.AGENT_JOINED), status(Mode.HUMAN, ANN))


def test_review_off_releases_the_pending_reply_unchanged() -> None:
    state, effects = step(pending(), SetReview(agent_id=ANN, on=False))
    assert effects == (send("utter_greet", *GREET.messages),
                       RasaAppendReply(conversation_id=CID, call_id=2, then=Continuation.RUN,
                                       action_name="utter_greet", messages=GREET.messages,
                                       agent_id=None),
                       status(Mode.BOT))


def test_hand_back_while_a_prediction_is_on_its_way_releases_it() -> None:
    state, _ = step(reviewing(), msg(1))
    state, effects = step(state, HandBack(agent_id=ANN))
    assert effects == (status(Mode.BOT),)
    state, effects = step(state, RasaResult(call_id=1, held=CHECK))
    assert effects == (RasaExecute(conversation_id=CID, call_id=2, then=Continuation.RUN,
                                   action_name="action_check_order"),)


# --- human mode ---------------------------------------------------------------------------------

def test_takeover_is_exclusive() -> None:
    state, effects = feed(new(), msg(1), RasaResult(call_id=1, executed=(GREET,)),
                          TakeOver(agent_id=ANN))
    assert effects == (notify(Notice.AGENT_JOINED), status(Mode.HUMAN, ANN))
    assert state.human_since == "m1"
    for event in (TakeOver(agent_id=BOB), SetReview(agent_id=BOB, on=True)):
        with pytest.raises(AlreadyOwned) as refused:
            step(state, event)
        assert refused.value.status == 409 and refused.value.owner == ANN
    assert step(state, TakeOver(agent_id=ANN)) == (state, ())


def test_takeover_from_review_turns_the_pending_reply_into_a_suggestion() -> None:
    state, _ = step(pending(), msg(2))
    state, effects = step(state, TakeOver(agent_id=ANN))
    assert effects == (notify(Notice.AGENT_JOINED),
                       ShowSuggestion(conversation_id=CID, agent_ids=(ANN,), message_id="m1",
                                      action=GREET),
                       handle(2, 2, Continuation.SUGGEST),
                       status(Mode.HUMAN, ANN))


def test_human_mode_messages_and_suggestions() -> None:
    state, effects = step(human(), AgentMessage(agent_id=ANN, text="Hello, I'm Ann."))
    assert effects == (
        send(AGENT_REPLY_ACTION, {"text": "Hello, I'm Ann."}, sender=Sender.HUMAN, agent=ANN),
        AppendToTracker(conversation_id=CID, action_name=AGENT_REPLY_ACTION,
                        messages=({"text": "Hello, I'm Ann."},), agent_id=ANN),
    )
    state, effects = step(state, msg(2))
    assert effects == (StoreMessage(conversation_id=CID, message=msg(2)),
                       ShowCustomerMessage(conversation_id=CID, agent_ids=(ANN,), message=msg(2)),
                       handle(2, 2, Continuation.SUGGEST))
    state, effects = step(state, RasaResult(call_id=2, held=ASK_ID))
    assert effects == (ShowSuggestion(conversation_id=CID, agent_ids=(ANN,), message_id="m2",
                                      action=ASK_ID),)
    state, _ = step(state, msg(3))
    state, effects = step(state, RasaFailed(call_id=3, error="down"))
    assert effects == (ShowRasaError(conversation_id=CID, agent_ids=(ANN,), error="down"),)
    assert state.mode is Mode.HUMAN and not state.queued


def test_hand_back_from_human_records_the_takeover() -> None:
    state, effects = step(human(), HandBack(agent_id=ANN))
    assert effects == (correction(CorrectionKind.TAKEOVER, None, None, reply_id=None,
                                  model_id=None),
                       notify(Notice.BOT_BACK), status(Mode.BOT))
    assert state.owner is None and state.human_since is None


def test_human_to_review_by_the_owner() -> None:
    state, effects = step(human(), SetReview(agent_id=ANN, on=True))
    assert effects == (correction(CorrectionKind.TAKEOVER, None, None, reply_id=None,
                                  model_id=None),
                       notify(Notice.BOT_BACK), status(Mode.REVIEW, ANN))
    _, effects = step(state, msg(2))
    assert effects[-1] == handle(2, 2, Continuation.HOLD)


# --- closing ------------------------------------------------------------------------------------

def test_close_drops_what_waits_and_refuses_everything_after() -> None:
    state, _ = feed(human(), msg(2), msg(3))
    state, effects = step(state, Close(agent_id=ANN))
    assert effects == (correction(CorrectionKind.TAKEOVER, None, None, reply_id=None,
                                  model_id=None),
                       notify(Notice.CLOSED), status(Mode.CLOSED))
    assert state.turn is None and state.backlog == ()
    assert step(state, RasaResult(call_id=2, held=GREET)) == (state, ())
    for event in (msg(4), TakeOver(agent_id=ANN), Watch(agent_id=BOB), Close(agent_id=None),
                  SetReview(agent_id=ANN, on=True), AgentMessage(agent_id=ANN, text="hi")):
        with pytest.raises(ConversationClosed) as closed:
            step(state, event)
        assert closed.value.status == 409


def test_close_by_the_system_or_by_any_agent_when_unowned() -> None:
    _, effects = step(human(), Close(agent_id=None))
    assert effects[-2:] == (notify(Notice.CLOSED), status(Mode.CLOSED))
    _, effects = step(new(), Close(agent_id=BOB))
    assert effects == (notify(Notice.CLOSED), status(Mode.CLOSED))


# --- errors leave the state unchanged -----------------------------------------------------------

def waiting_for_rasa_in_review() -> ConversationState:
    return step(reviewing(), msg(1))[0]


ERRORS: list[tuple[str, Any, Event, type[RouterError], int]] = [
    ("decision in bot mode", new, Approve(agent_id=ANN, reply_id=1), InvalidTransition, 409),
    ("agent message in bot mode", new, AgentMessage(agent_id=ANN, text="hi"),
     InvalidTransition, 409),
    ("hand back in bot mode", new, HandBack(agent_id=ANN), InvalidTransition, 409),
    ("review off in bot mode", new, SetReview(agent_id=ANN, on=False), InvalidTransition, 409),
    ("decision by a non-owner", pending, Approve(agent_id=BOB, reply_id=1), DecidedByOther, 409),
    ("decision without a pending reply", waiting_for_rasa_in_review,
     Approve(agent_id=ANN, reply_id=1), NoPendingReply, 409),
    ("decision on a stale reply", pending, Approve(agent_id=ANN, reply_id=9), StaleReply, 409),
    ("empty edit", pending, Edit(agent_id=ANN, reply_id=1, text="  "), InvalidInput, 422),
    ("edit of a custom action", lambda: pending(CHECK), Edit(agent_id=ANN, reply_id=1, text="x"),
     InvalidInput, 422),
    ("empty write", pending, Write(agent_id=ANN, reply_id=1, text=""), InvalidInput, 422),
    ("empty replacement", pending, ReplaceAction(agent_id=ANN, reply_id=1, action_name=""),
     InvalidInput, 422),
    ("empty intent", pending, Relabel(agent_id=ANN, reply_id=1, intent=" "), InvalidInput, 422),
    ("review off by a non-owner", pending, SetReview(agent_id=BOB, on=False), NotOwner, 403),
    ("agent message in review", pending, AgentMessage(agent_id=ANN, text="hi"),
     InvalidTransition, 409),
    ("agent message by a non-owner", human, AgentMessage(agent_id=BOB, text="hi"), NotOwner, 403),
    ("empty agent message", human, AgentMessage(agent_id=ANN, text=""), InvalidInput, 422),
    ("hand back by a non-owner", human, HandBack(agent_id=BOB), NotOwner, 403),
    ("close by a non-owner", human, Close(agent_id=BOB), NotOwner, 403),
    ("decision in human mode", human, Approve(agent_id=ANN, reply_id=1), InvalidTransition, 409),
    ("takeover of another's review", pending, TakeOver(agent_id=BOB), AlreadyOwned, 409),
]


@pytest.mark.parametrize("make, event, error, http_status",
                         [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_errors_change_nothing(make: Any, event: Event, error: type[RouterError],
                               http_status: int) -> None:
    state: ConversationState = make()
    before = repr(state)
    with pytest.raises(error) as raised:
        step(state, event)
    assert raised.value.status == http_status
    assert repr(state) == before


# --- helpers ------------------------------------------------------------------------------------

def test_marker_helpers() -> None:
    assert handoff_reason(HANDOFF_MESSAGES) == "customer_request"
    assert handoff_reason([{"custom": {"handoff": {}}}]) == "unspecified"
    assert handoff_reason([{"text": "hi"}, {"custom": {"other": 1}}]) is None
    assert strip_handoff(HANDOFF_MESSAGES) == ({"text": "I'll get a colleague for you."},)
    assert edited_messages([{"text": "a", "quick_replies": [1]}, {"text": "b"}], "c") == (
        {"text": "c", "quick_replies": [1]},)


# --- whispers: an agent chooses the bot's next action ------------------------------------------

def chosen(action: str, agent: str) -> RecordCorrection:
    """The correction a whisper's chosen action records, with the step that carries it out."""
    return RecordCorrection(conversation_id=CID, kind=CorrectionKind.CHOOSE, agent_id=agent,
                            message_id="m1", reply_id=None, before=None,
                            after=ReplySnapshot(action_name=action), model_id=None)


def test_a_chosen_action_runs_as_the_bots_next_and_its_reply_is_marked_with_the_agent() -> None:
    state, _ = feed(new(), msg(1), RasaResult(call_id=1, executed=(GREET,)))
    state, effects = step(state, ChooseAction(agent_id=BOB, action_name="utter_ask_order_id",
                                              message=msg(1)))
    assert effects == (chosen("utter_ask_order_id", BOB),
                       RasaExecute(conversation_id=CID, call_id=2, then=Continuation.RUN,
                                   action_name="utter_ask_order_id"))
    state, effects = step(state, RasaResult(call_id=2, executed=(ASK_ID,)))
    assert effects == (send("utter_ask_order_id", *ASK_ID.messages, agent=BOB),)
    assert state.turn is None and state.mode is Mode.BOT


def test_in_review_a_chosen_action_is_held_and_refused_while_a_turn_runs() -> None:
    preview = ({"text": "Hello! How can I help?"},)  # what Rasa would say: shown to review
    state, effects = step(reviewing(), ChooseAction(agent_id=BOB, action_name="utter_greet",
                                                    message=msg(1), preview=preview))
    held = PendingReply(reply_id=1, message_id="m1", action=BotAction(
        name="utter_greet", policy="whisper", messages=preview), parse=None, model_id=None)
    assert effects == (chosen("utter_greet", BOB),  # recorded with the step
                       ShowPendingReply(conversation_id=CID, agent_id=ANN, reply=held))
    with pytest.raises(InvalidTransition):  # its decision is still to come
        step(state, ChooseAction(agent_id=ANN, action_name="utter_greet", message=msg(1)))
    _, effects = step(state, Approve(agent_id=ANN, reply_id=1))  # sent as shown
    assert effects[-1] == RasaAppendReply(conversation_id=CID, call_id=2,
                                          then=Continuation.HOLD, action_name="utter_greet",
                                          messages=preview, agent_id=ANN)
    # a custom action shows nothing before it runs: approved, Rasa runs it
    state, _ = step(reviewing(), ChooseAction(agent_id=BOB, action_name="action_track_order",
                                              message=msg(1)))
    _, effects = step(state, Approve(agent_id=ANN, reply_id=1))
    assert effects[-1] == RasaExecute(conversation_id=CID, call_id=2, then=Continuation.HOLD,
                                      action_name="action_track_order")
    with pytest.raises(InvalidTransition):  # a person answers: no whispers
        step(human(), ChooseAction(agent_id=ANN, action_name="utter_greet", message=msg(1)))
