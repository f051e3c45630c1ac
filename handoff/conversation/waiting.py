"""Nobody waits in silence: what a customer waiting for a person is told and offered.

A conversation waits for a person while it is in ``bot`` mode in the queue for any reason but
triage (the customer was told a person will help). :class:`Waiting` hears every status change
(``Conversations.status_listeners``) and:

* when it starts waiting and **no agent is available** (:mod:`handoff.conversation.presence`:
  none logged in and not away, or outside the opening hours), tells the customer so at once and
  offers a choice (``handoff_offer``); with agents available it makes the same offer after
  ``HANDOFF_QUEUE_OFFER_AFTER`` seconds if nobody has taken the conversation by then;
* keeps every waiting customer told of their place in the queue (``queue_position``).

The customer answers with ``handoff_choice`` (:meth:`Waiting.choose`): ``wait`` (keep the
place), ``bot`` (back to the assistant; not while Rasa is down) or ``contact`` with an e-mail
address or phone number, stored with the conversation (agents get ``contact_left``; the
conversation stays in the queue).

What the customer is told here is not a router step's (it depends on who is logged in and on
timers, after the step that queued the conversation): each message is stored before it is
pushed, so the customer never reads what the store lacks, and a contact address is stored in
one transaction with the message that thanks the customer for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from handoff.conversation import router as r
from handoff.conversation.presence import OpeningHours, Presence
from handoff.conversation.shell import Conversations
from handoff.errors import BadRequest, Conflict
from handoff.store import Message, Store, to_json

__all__ = ["CHOICES", "Waiting"]

log = logging.getLogger(__name__)

CHOICES: Final = ("wait", "bot", "contact")
MAX_CONTACT_CHARS: Final = 254
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_PHONE = re.compile(r"^\+?[0-9 ()./-]{6,30}$")

TEXTS: Final = {
    "closed": "We are closed right now, so no member of our team can answer yet.",
    "no_agent": "No member of our team is available right now.",
    "long_wait": "Sorry for the wait: our team is busy right now.",
    "choices": " You can keep waiting, continue with the assistant, or leave an e-mail address "
               "or phone number and we will get back to you.",
    "choices_no_bot": " You can keep waiting, or leave an e-mail address or phone number and "
                      "we will get back to you.",
}


class Waiting:
    """Offers and places in the queue for waiting customers (see the module docstring)."""

    def __init__(self, conversations: Conversations, store: Store, presence: Presence,
                 hours: OpeningHours, offer_after: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.conversations = conversations
        self.cluster = conversations.cluster  # presence and offers shared by the nodes
        self.store = store
        self.notifier = conversations.notifier
        self.presence = presence
        self.hours = hours
        self.offer_after = offer_after
        self.clock = clock
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._positions: dict[str, int] = {}
        self._offered: set[str] = set()
        self._watch: asyncio.Task[None] | None = None

    def watch(self, every: float) -> None:
        """Several gateway nodes: every ``every`` seconds make the offers that are due, so an
        offer whose timer ran on a node that is gone is still made (by one node: the offer is
        claimed once)."""
        if self._watch is None and self.cluster.shared and self.offer_after > 0:
            self._watch = asyncio.get_running_loop().create_task(self._offer_due(every))

    async def _offer_due(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                due = self.clock().timestamp() - self.offer_after
                for conv in await self.store.list_conversations(mode="bot", queued=True):
                    if (self._waits(conv.mode, conv.queue_reason) and conv.queued_at is not None
                            and conv.queued_at.timestamp() <= due
                            and conv.id not in self._offered):
                        await self.offer(conv.id, "long_wait")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store or Redis away: next round
                log.warning("due offers not made: %s", exc)

    async def close(self) -> None:
        timers = list(self._timers.values()) + ([self._watch] if self._watch else [])
        for task in timers:
            task.cancel()
        await asyncio.gather(*timers, return_exceptions=True)

    # ------------------------------------------------------------------ presence

    def is_open(self) -> bool:
        return self.hours.is_open(self.clock())

    async def agent_connected(self, sid: str, username: str) -> None:
        self.presence.connected(sid, username)
        await self._share_presence()

    async def agent_disconnected(self, sid: str) -> None:
        self.presence.disconnected(sid)
        await self._share_presence()

    async def set_away(self, username: str, away: bool) -> None:
        self.presence.set_away(username, away)
        await self._share_presence()

    async def _share_presence(self) -> None:
        await self.cluster.share_presence(self.presence.sockets, self.presence.away)

    async def _agents(self) -> tuple[list[str], list[str]]:
        """Logged in and available: the union over the gateway nodes alive."""
        sockets, away = await self.cluster.presence()
        logged_in = set(sockets.values())
        return sorted(logged_in), sorted(logged_in - away)

    async def agents_available(self) -> list[str]:
        return (await self._agents())[1] if self.is_open() else []

    async def presence_json(self) -> dict[str, Any]:
        logged_in, available = await self._agents()
        is_open = self.is_open()
        return {"open": is_open, "opening_hours": self.hours.text or None,
                "logged_in": logged_in, "available": available if is_open else []}

    # ------------------------------------------------------------------ queue

    @staticmethod
    def _waits(mode: r.Mode | str, reason: r.QueueReason | str | None) -> bool:
        return str(mode) == "bot" and reason is not None and str(reason) != "triage"

    async def status_changed(self, cid: str, status: r.StatusChanged) -> None:
        if self._waits(status.mode, status.queue_reason):
            if cid not in self._timers and cid not in self._offered:
                if not await self.agents_available():
                    await self.offer(cid, "no_agent" if self.is_open() else "closed")
                elif self.offer_after > 0:
                    self._timers[cid] = asyncio.get_running_loop().create_task(
                        self._offer_later(cid))
        else:
            queued = cid in self._positions
            self._forget(cid)
            # a conversation that did not wait before this change moves nobody's place: the
            # queue is not read again (an agent's takeover of a bot conversation, on any node).
            # Whether it waited is the step's to say: with several nodes another node may have
            # queued it, and this node's own places do not know; without it, read as before.
            waited = (self.cluster.shared if status.mode_before is None
                      else self._waits(status.mode_before, status.queue_reason_before))
            if not (queued or waited):
                return
        await self.push_positions()

    def _forget(self, cid: str) -> None:
        if (timer := self._timers.pop(cid, None)) is not None:
            timer.cancel()
        self._offered.discard(cid)
        self._positions.pop(cid, None)

    async def _offer_later(self, cid: str) -> None:
        try:
            await asyncio.sleep(self.offer_after)
            self._timers.pop(cid, None)
            state = await self.conversations.state(cid)
            if self._waits(state.mode, state.queue_reason) and cid not in self._offered:
                await self.offer(cid, "long_wait")
        except asyncio.CancelledError:
            raise
        except Exception:  # an offer must never break a conversation
            log.exception("the waiting offer of %s failed", cid)

    async def waiting(self) -> list[str]:
        """The waiting conversations, first come first."""
        queued = await self.store.list_conversations(mode="bot", queued=True)
        return [c.id for c in queued if self._waits(c.mode, c.queue_reason)]

    async def position(self, cid: str) -> int | None:
        ids = await self.waiting()
        return ids.index(cid) + 1 if cid in ids else None

    async def push_positions(self) -> None:
        ids = await self.waiting()
        for place, cid in enumerate(ids, 1):
            if self._positions.get(cid) != place:
                self._positions[cid] = place
                await self.notifier.to_customer(cid, "queue_position", {
                    "position": place, "waiting": len(ids)})
        for cid in set(self._positions) - set(ids):
            self._positions.pop(cid, None)

    # ------------------------------------------------------------------ offer and choice

    def options(self) -> list[str]:
        health = self.conversations.health
        return ["wait", "contact"] if health is not None and health.down else list(CHOICES)

    async def offer(self, cid: str, reason: str) -> None:
        """Tell the customer honestly why nobody answers yet, and what they can do (once per
        stay in the queue, also when several gateway nodes see it wait)."""
        self._offered.add(cid)
        if self.cluster.shared:
            queued_at = (await self.store.get_conversation(cid)).queued_at
            stay = queued_at.isoformat() if queued_at else "-"
            if not await self.cluster.once(f"offer:{cid}:{stay}", 86400):
                return  # another node made it
        options = self.options()
        text = TEXTS[reason] + (TEXTS["choices"] if "bot" in options else
                                TEXTS["choices_no_bot"])
        await self._say(cid, text, {"offer": reason})  # the choices go under their text
        await self.notifier.to_customer(cid, "handoff_offer", {
            "reason": reason, "text": text, "options": options,
            "position": await self.position(cid)})

    async def _say(self, cid: str, text: str, payload: dict[str, Any]) -> None:
        await self._show(await self.store.append_message(cid, "system", text,
                                                         payload=payload))

    async def _show(self, stored: Message) -> None:
        """Push a system message stored for the customer to them and to the agents."""
        await self.notifier.to_customer(stored.conversation_id, "bot_uttered", {
            "text": stored.text, "metadata": {"sender": "system"}})
        await self.notifier.to_agents("message", to_json(stored))

    async def choose(self, cid: str, choice: Any, contact: Any = None) -> None:
        """The customer's answer to the offer; ``BadRequest`` or ``Conflict`` (nothing
        changed) when it cannot be taken."""
        if choice not in CHOICES:
            raise BadRequest("'choice' must be wait, bot or contact")
        state = await self.conversations.state(cid)
        if not self._waits(state.mode, state.queue_reason):
            raise Conflict("this conversation is not waiting for a person")
        if choice == "wait":
            place = await self.position(cid)
            await self._say(cid, f"Thank you for waiting: you are number {place} in the queue.",
                            {"choice": "wait"})
        elif choice == "bot":
            if "bot" not in self.options():
                raise Conflict("the assistant is not available right now")
            await self.conversations.apply(cid, r.ContinueWithBot())
        else:
            address = _contact(contact)
            saved = await self.store.set_contact(cid, address, reply={
                "sender": "system", "payload": {"choice": "contact"},
                "text": f"Thank you: we will get back to you at {address}. You keep your "
                        "place in the queue too."})
            await self.notifier.to_agents("contact_left", {
                "conversation_id": cid, "contact": address,
                "left_at": saved["left_at"].isoformat()})
            await self._show(saved["reply"])


def _contact(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("'contact' must be an e-mail address or a phone number")
    address = value.strip()
    if len(address) > MAX_CONTACT_CHARS or not (
            _EMAIL.fullmatch(address) or _PHONE.fullmatch(address)):
        raise BadRequest("'contact' must be an e-mail address or a phone number")
    return address
