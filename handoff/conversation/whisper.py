"""Whispering to the bot: an agent guides a conversation the bot is serving without taking it
over (docs/console.md, "Whisper").

- :meth:`Whisper.set_slot` sets or corrects a slot in Rasa's tracker (a ``slot`` event), so the
  bot's next reply uses it;
- :meth:`Whisper.choose_action` has Rasa run an action of the domain as if it had predicted it
  (the router's ``ChooseAction``: a turn with the customer's latest message whose next action
  is the agent's, run by the channel's ``/continue`` with ``replace``); what it says goes to the
  customer as the bot's reply, and the bot carries on until it listens again. In review the
  chosen action is held as a pending reply first, decided like any other, with the messages
  it would send (Rasa's preview: a response rendered; none for a custom action), which an
  approval sends as they were shown.

Both are checked against the loaded model's domain (an unknown slot or action: 400, nothing
changed), refused while a turn is running or a person answers (409), and recorded as
corrections (``slot_set`` / ``action_chosen``, contracts/correction_record.py) carrying the
tracker as it was before the whisper, for the trainers' queue, in one transaction with their
audit-log entry (``whisper_slot`` with the slot's name, not its value; ``whisper_action``). A
slot is set in Rasa before its record is stored: when the store fails, the slot is set back to
its previous value and :class:`WhisperNotRecorded` (503) says so.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from contracts.correction_record import SLOT_SET
from handoff.conversation import router as r
from handoff.conversation.shell import Conversations
from handoff.conversation.state_codec import decode_state
from handoff.errors import BadRequest, Conflict, ServiceUnavailable
from handoff.store import AuditDraft, Correction

__all__ = ["DOMAIN_SECONDS", "Whisper", "WhisperNotRecorded"]

log = logging.getLogger(__name__)

DOMAIN_SECONDS = 30.0  # how long the domain's slots and actions are kept before asking again


class WhisperNotRecorded(ServiceUnavailable):
    """A whispered slot whose correction could not be stored: the slot was set back in Rasa
    (unless ``slot_restored`` is false, which the message says too)."""

    code = "whisper_not_recorded"


def _audit(agent: str, cid: str, action: str, details: dict[str, Any]) -> AuditDraft:
    return {"actor": agent, "action": action, "target": f"conversation:{cid}",
            "details": details}


class Whisper:
    """The whispers of one gateway (over its :class:`Conversations`)."""

    def __init__(self, conversations: Conversations) -> None:
        self.conversations = conversations
        self._domain: dict[str, Any] = {}
        self._until = 0.0

    async def domain(self) -> tuple[frozenset[str], frozenset[str]]:
        """The loaded model's slots and actions (responses, custom actions, forms)."""
        now = time.monotonic()
        if self._until < now:
            raw = await self.conversations.rasa.domain()
            slots = raw.get("slots") or {}
            actions = {a for a in raw.get("actions") or () if isinstance(a, str)}
            actions |= {name for name in (raw.get("responses") or {})}
            actions |= {name for name in (raw.get("forms") or {})}
            self._domain = {"slots": frozenset(s for s in slots if s != "requested_slot"),
                            "actions": frozenset(a for a in actions if a != "action_listen")}
            self._until = now + DOMAIN_SECONDS
        return self._domain["slots"], self._domain["actions"]

    async def _ready(self, cid: str) -> r.ConversationState:
        conv = await self.conversations.store.get_conversation(cid)  # NotFound: 404
        state = decode_state(cid, conv.state)
        if state.mode not in (r.Mode.BOT, r.Mode.REVIEW) or state.waiting_for_agent:
            raise Conflict(f"the bot is not serving this conversation ({state.mode.value} "
                           "mode): whisper only to a conversation the bot answers")
        if state.turn is not None:
            raise Conflict("the bot is answering a message now; whisper once it has")
        return state

    async def set_slot(self, cid: str, agent: str, slot: str, value: Any) -> Correction:
        """Set ``slot`` to ``value`` in the conversation's tracker; the correction and its
        audit entry recorded, or (the store failed) the slot set back and
        :class:`WhisperNotRecorded`."""
        slots, _ = await self.domain()
        if slot not in slots:
            raise BadRequest(f"unknown slot {slot!r} (the domain's slots: {sorted(slots)})")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise BadRequest("'value' must be a string, a number, true/false or null")
        conversations = self.conversations
        async with conversations.locks.hold(cid):
            await self._ready(cid)
            tracker = await conversations.rasa.tracker(cid)
            previous = tracker["slots"].get(slot)
            await conversations.rasa.append_events(
                cid, [{"event": "slot", "name": slot, "value": value}])
            try:
                return await conversations.store.add_correction(
                    cid, type=SLOT_SET, agent=agent, after={"slot": slot, "value": value},
                    tracker_events=tracker["events"],
                    audit=_audit(agent, cid, "whisper_slot", {"slot": slot}))
            except Exception as exc:  # noqa: BLE001 - whatever broke the store, undo in Rasa
                raise await self._restore_slot(cid, slot, previous, exc) from exc

    async def _restore_slot(self, cid: str, slot: str, previous: Any,
                            cause: Exception) -> WhisperNotRecorded:
        """Set ``slot`` back to ``previous`` after its correction failed to be stored
        (``cause``); the error to answer."""
        why = f"{type(cause).__name__}: {cause}"
        try:
            await self.conversations.rasa.append_events(
                cid, [{"event": "slot", "name": slot, "value": previous}])
        except Exception as exc:  # noqa: BLE001 - said in the answer and the log
            log.error("slot %r of %s set in Rasa, not recorded (%s), not set back: %s",
                      slot, cid, why, exc)
            return WhisperNotRecorded(
                f"the slot could not be recorded ({why}) and setting it back in Rasa failed "
                f"({exc}): Rasa keeps the new value with no record", slot_restored=False)
        log.warning("slot %r of %s not recorded (%s): set back in Rasa", slot, cid, why)
        return WhisperNotRecorded(
            f"the slot could not be recorded ({why}): it was set back to its previous value "
            "in Rasa; nothing changed, try again", slot_restored=True)

    async def choose_action(self, cid: str, agent: str, action: str) -> Correction:
        """Run ``action`` as the bot's next action (the router's :class:`ChooseAction`): in
        bot mode Rasa runs it and its messages go to the customer as the bot's; in review it
        is held as a pending reply for a decision first."""
        _, actions = await self.domain()
        if action not in actions:
            raise BadRequest(f"unknown action {action!r}: pick one of the domain's actions "
                             "or responses")
        conversations = self.conversations
        store = conversations.store
        state = await conversations.state(cid)  # NotFound: 404
        if state.turn is not None:
            raise Conflict("the bot is answering a message now; whisper once it has")
        last = (await store.last_customer_messages([cid])).get(cid)
        if last is None or last.client_message_id is None:
            raise Conflict("the customer has said nothing yet: there is no turn to answer")
        message = r.CustomerMessage(message_id=last.client_message_id, text=last.text or "",
                                    metadata=dict(last.metadata or {}))
        preview: tuple[dict[str, Any], ...] = ()
        if state.mode is r.Mode.REVIEW:  # the reviewer sees what it would say
            preview = tuple(await conversations.rasa.preview(cid, action))
        # the step and its correction are one transaction; the tracker as it was before the
        # chosen action ran is fetched after the commit, as for every agent decision
        return await conversations.apply_recorded(
            cid, r.ChooseAction(agent_id=agent, action_name=action, message=message,
                                preview=preview),
            _audit(agent, cid, "whisper_action", {"action": action}))
