"""What a router step writes, read from its effects: the rows ``Store.save_step`` commits in
the step's one transaction (the messages, the NLU result, the reply held for an agent, the
pending reply resolved, the correction of an agent's decision), and the Rasa tracker cut to
the moment of a correction. Plain functions over the router's values; no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from handoff.conversation import router as r
from handoff.conversation.customer_protocol import notice_text
from handoff.conversation.state_codec import encode
from handoff.store import (
    CorrectionDraft,
    MessageNlu,
    PendingReplyDraft,
    PendingResolution,
    StepMessage,
)

__all__ = ["correction_draft", "events_until", "held_draft", "resolution", "step_messages",
           "step_nlu"]


def step_messages(effects: Sequence[r.Effect]) -> list[StepMessage]:
    """The messages a step produced, in effect order: the customer's (``StoreMessage``), each
    one sent to the customer (``SendToCustomer``), stored as sent, and the text of a notice to
    the customer (``NotifyCustomer``, sender ``system``): stored with the state change it
    tells of, so no reader sees one without the other."""
    out: list[StepMessage] = []
    for effect in effects:
        if isinstance(effect, r.StoreMessage):
            message = effect.message
            out.append({"sender": "customer", "text": message.text,
                        "metadata": dict(message.metadata) or None,
                        "client_message_id": message.message_id})
        elif isinstance(effect, r.SendToCustomer):
            for sent in effect.messages:
                text = sent.get("text")
                extra = {k: v for k, v in sent.items() if k != "text"}
                out.append({
                    "sender": "agent" if effect.sender is r.Sender.HUMAN else "bot",
                    "text": text if isinstance(text, str) else None,
                    "payload": extra or None, "action": effect.action_name,
                    "decided_by": effect.agent_id,
                    "decision": effect.decision.reply_decision if effect.decision else None})
        elif isinstance(effect, r.NotifyCustomer):
            text = notice_text(effect.notice, effect.reason)
            if text is not None:
                out.append({"sender": "system", "text": text,
                            "payload": {"notice": effect.notice.value}})
    return out


def resolution(before: r.ConversationState, after: r.ConversationState,
                effects: Sequence[r.Effect]) -> PendingResolution | None:
    """How the step ends the reply that was pending, if it does: decided by the agent whose
    decision sends a reply, else discarded (relabelled, released unchanged, taken over,
    closed)."""
    if before.pending is None or (
            after.pending is not None and after.pending.reply_id == before.pending.reply_id):
        return None
    record = next((e for e in effects if isinstance(e, r.RecordCorrection)
                   and e.reply_id == before.pending.reply_id), None)
    if record is None:
        return {"status": "discarded"}
    decision = record.kind.reply_decision
    if decision is None:
        return {"status": "discarded", "decided_by": record.agent_id}
    return {"status": "decided", "decision": decision, "decided_by": record.agent_id}


def held_draft(effects: Sequence[r.Effect]) -> PendingReplyDraft | None:
    """The reply the step holds for an agent's decision (``ShowPendingReply``)."""
    shown = next((e for e in effects if isinstance(e, r.ShowPendingReply)), None)
    if shown is None:
        return None
    reply = shown.reply
    return {"action": reply.action.name, "messages": [dict(m) for m in reply.action.messages],
            "confidence": reply.action.confidence,
            "alternatives": [encode(a) for a in reply.action.alternatives],
            "model_version": reply.model_id, "trigger_client_message_id": reply.message_id}


def correction_draft(effects: Sequence[r.Effect]) -> CorrectionDraft | None:
    """The correction the step records (``RecordCorrection``; the router makes at most one)."""
    effect = next((e for e in effects if isinstance(e, r.RecordCorrection)), None)
    if effect is None:
        return None
    return {"type": effect.kind.recorded_as, "agent": effect.agent_id,
            "before": encode(effect.before), "after": encode(effect.after),
            "model_version": effect.model_id, "client_message_id": effect.message_id}


def events_until(events: Sequence[dict[str, Any]], at: datetime) -> list[dict[str, Any]]:
    """The tracker ``events`` up to time ``at`` (Rasa's ``timestamp``: seconds since the
    epoch), oldest first: the tracker as it was then."""
    limit = at.timestamp()
    out: list[dict[str, Any]] = []
    for event in events:
        stamp = event.get("timestamp")
        if isinstance(stamp, int | float) and not isinstance(stamp, bool) and stamp > limit:
            break
        out.append(event)
    return out


def step_nlu(before: r.ConversationState, event: r.Event,
             effects: Sequence[r.Effect] = ()) -> MessageNlu | None:
    """What a Rasa result says about the customer message of the turn it answers: its parse
    (when it parsed it) and the actions Rasa executed (none when triage retracted them to
    hold the reply: they are run again, or replaced, once an agent decides)."""
    if not isinstance(event, r.RasaResult):
        return None
    turn = before.turn
    if turn is None or turn.call_id != event.call_id:
        return None  # stale: the router ignores it too
    nlu: MessageNlu = {"client_message_id": turn.message.message_id}
    parse = event.parse
    if parse is not None:
        nlu["intent"] = parse.intent
        nlu["confidence"] = parse.confidence
        nlu["intent_ranking"] = [encode(s) for s in parse.intent_ranking]
        nlu["entities"] = [dict(e) for e in parse.entities]
    retracted = any(isinstance(e, r.RasaRetract) for e in effects)
    if (event.logged or event.executed) and not retracted:
        nlu["actions"] = [{"name": a.name, "policy": a.policy, "confidence": a.confidence}
                          for a in event.logged + event.executed]
    return nlu if len(nlu) > 1 else None
