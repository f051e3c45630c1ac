"""The I/O shell around the router: load state, ``step``, save state, perform the effects.

:class:`Conversations` is what the app's handlers call. Each conversation's events are stepped
strictly one at a time (an ``asyncio.Lock`` per conversation id); the new state, with the
messages the step produced, the NLU result it brought, the reply it holds for an agent, the
pending reply it decided or discarded and the correction recording an agent's decision, is
written in one transaction with ``Store.save_step`` (optimistic version; a stale version
re-reads and re-steps) *before* any effect runs. Effects then run in the order the router gave
them, still under the lock, except Rasa calls: those run as background tasks (kept referenced,
cancelled by :meth:`Conversations.close`) whose outcome comes back through the same lock as a
:class:`~handoff.conversation.router.RasaResult` or
:class:`~handoff.conversation.router.RasaFailed`. While a call is out, new customer messages
wait in the router's backlog, so turns never interleave.

A correction's Rasa tracker events are fetched after its step commits, outside the lock, by a
background task that retries with backoff and then stores the events (``fetched``) or the
error (``failed``) with ``Store.set_correction_tracker``; :meth:`Conversations.recover` retries
those still ``pending`` or ``failed`` at start-up. A correction is never dropped.

Everything the sockets see goes through the :class:`Notifier` seam: ``to_customer`` (the
conversation's room on the customer namespace) and ``to_agents`` (the ``/agent`` namespace:
everyone, or the named agents).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Protocol

from handoff.conversation import router as r
from handoff.conversation import step_records
from handoff.conversation.admission import Admission
from handoff.conversation.cluster import Cluster, LocalCluster
from handoff.conversation.customer_protocol import (
    REPLY_DELAYED, SURVEY_REQUEST, bot_uttered_payloads, notice_text,
)
from handoff.conversation.instruments import Instruments
from handoff.errors import Conflict, NotFound
from handoff.conversation.locks import ConversationLocks
from handoff.conversation.rasa_client import RasaClient, RasaError, RasaUnavailable, TurnReply
from handoff.conversation.rasa_pool import RasaPool
from handoff.conversation.state_codec import decode_state, encode, encode_state
from handoff.settings import default_node_id
from handoff.store import (
    AlreadyStored,
    AuditDraft,
    Conversation,
    Correction,
    CorrectionDraft,
    Keep,
    Message,
    MessageNlu,
    PendingReplyDraft,
    PendingResolution,
    SavedStep,
    StaleVersion,
    StepMessage,
    Store,
    TriageRecord,
    to_json,
)
from handoff.conversation.triage_link import Judgement, TriageLink

__all__ = ["Conversations", "Notifier", "conversation_json", "turn_result"]

log = logging.getLogger(__name__)

_STALE_RETRIES = 5
_KEPT_ROWS = 4096  # conversations whose last saved row is kept to step on (see _step_locked)
CLIENT_ID_PREFIX = "c-"
"""Before a client's own message id in ``client_message_id``: it never equals an id the
gateway made (uuid4 hex, ``stored-N``)."""
TRACKER_RETRY_DELAYS = (1.0, 4.0, 15.0)
"""Seconds to wait before each further try of a correction's tracker fetch."""


class Notifier(Protocol):
    """Where the shell's pushes go (the Socket.IO server in the app)."""

    async def to_customer(self, conversation_id: str, event: str, payload: Any) -> None: ...

    async def to_agents(
        self, event: str, payload: Any, agent_ids: Sequence[str] | None = None
    ) -> None: ...

    def pushes(self) -> contextlib.AbstractContextManager[None]:
        """The block's pushes (one step's) may share one check of the agents' logins."""
        ...


def _clean(message: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "recipient_id"}


def _scored(items: Any) -> tuple[r.Scored, ...]:
    out = []
    for item in items or ():
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            out.append(r.Scored(name=item["name"], confidence=float(item.get("confidence") or 0)))
    return tuple(out)


def turn_result(call_id: int, reply: TurnReply, *, with_parse: bool,
                skip_said: str | None = None) -> r.RasaResult:
    """The router event for a channel answer. ``skip_said``: the action the gateway just
    logged with ``say`` (the channel reports it back; the customer already has it)."""
    parse: r.NluParse | None = None
    raw = reply["parse"]
    if with_parse and raw:
        intent = raw.get("intent") or {}
        parse = r.NluParse(
            intent=intent.get("name"), confidence=float(intent.get("confidence") or 0.0),
            intent_ranking=_scored(raw.get("intent_ranking")),
            entities=tuple(e for e in raw.get("entities") or () if isinstance(e, Mapping)),
        )
    actions = [
        r.BotAction(name=a["name"], messages=tuple(_clean(m) for m in a.get("messages") or ()),
                    confidence=a.get("confidence"), policy=a.get("policy"),
                    alternatives=_scored(a.get("alternatives")))
        for a in reply["actions"]
    ]
    logged: tuple[r.BotAction, ...] = ()
    if skip_said is not None and actions and actions[0].policy == "gateway" and (
        actions[0].name == skip_said
    ):
        logged, actions = (actions[0],), actions[1:]
    executed = tuple(actions)
    held_raw = reply["held"]
    held = None if held_raw is None else r.BotAction(
        name=held_raw["name"], messages=tuple(_clean(m) for m in held_raw.get("preview") or ()),
        confidence=held_raw.get("confidence"), policy=held_raw.get("policy"),
        alternatives=_scored(held_raw.get("alternatives")),
    )
    return r.RasaResult(call_id=call_id, parse=parse, executed=executed, held=held,
                        model_id=reply["model_id"], logged=logged)


def state_summary(state: r.ConversationState) -> dict[str, Any]:
    """The router state as the API shows it."""
    pending = state.pending
    return {
        "id": state.conversation_id,
        "mode": state.mode.value,
        "owner": state.owner,
        "watchers": sorted(state.watchers),
        "queue_reason": state.queue_reason.value if state.queue_reason else None,
        "queue_detail": state.queue_detail,
        "pending_reply": encode(pending) if pending else None,
        "busy": state.turn is not None and state.turn.call_id is not None,
    }


class Conversations:
    """Runs the router for every conversation (see the module docstring)."""

    def __init__(self, store: Store, rasa: RasaClient, notifier: Notifier,
                 config: r.RouterConfig = r.DEFAULT_CONFIG, *,
                 review_timeout: float = 30.0, triage: TriageLink | None = None,
                 tracker_retry_delays: Sequence[float] = TRACKER_RETRY_DELAYS,
                 instruments: Instruments | None = None,
                 on_ended: Callable[[str], Awaitable[None]] | None = None,
                 cluster: Cluster | None = None) -> None:
        self.store = store
        # called (in the background) when a conversation ends and when its survey arrives:
        # the spot-check sampling (handoff.learning.spot_checks); it must not raise
        self.on_ended = on_ended
        self.rasa = rasa
        self.notifier = notifier
        self.config = config
        self.review_timeout = review_timeout
        self.triage = triage
        self.tracker_retry_delays = tuple(tracker_retry_delays)
        # the gateway nodes sharing the store (one process unless HANDOFF_REDIS_URL is set)
        self.cluster: Cluster = cluster or LocalCluster(default_node_id())
        self.instruments = instruments or Instruments()
        lock_waits = self.instruments.lock_wait_seconds
        self.locks = ConversationLocks(
            self.cluster.conversation_lock if self.cluster.shared else None,
            waited=lambda waiter, seconds: lock_waits.labels(waiter).observe(seconds))
        self._watch: asyncio.Task[None] | None = None
        self._turn_started: dict[str, float] = {}  # conversation id -> monotonic arrival
        self.health: RasaPool | None = None  # set by the app when the probe is on
        # conversations whose call failed as its server went down while another is up: they
        # go back to the bot (on that one) once the failure is applied
        self._moved: set[str] = set()
        # calls in flight to each Rasa server (set by the app from the settings: bounded)
        self.admission = Admission()
        # told of every mode, owner or queue change after the agents (the waiting customers'
        # offers and places in the queue: handoff.conversation.waiting)
        self.status_listeners: list[Callable[[str, r.StatusChanged], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # conversation id -> the row its last step saved here, most recent last: the next
        # step starts from it instead of reading the store (save_step's version check catches
        # a row changed meanwhile elsewhere)
        self._rows: OrderedDict[str, Conversation] = OrderedDict()

    async def close(self) -> None:
        """Cancel the background tasks still running (Rasa calls, tracker fetches, review
        timers, the watch over the other nodes) and wait for them to end."""
        tasks = list(self._tasks) + ([self._watch] if self._watch is not None else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def recover(self) -> int:
        """At start: a turn that waits for a Rasa call no running node makes would block its
        conversation forever, so each gets :class:`~handoff.conversation.router.RasaFailed`
        (the customer is queued for a person, nothing is lost), and a held reply whose timer
        ran in no running node gets one here. Work of another node that is alive is left to
        it (:class:`~handoff.conversation.cluster.Cluster`); this node's own name found in
        the store is a previous run of it. Returns how many turns failed. The corrections
        whose tracker events are still ``pending`` or ``failed`` are fetched again (in the
        background)."""
        for correction in await self.store.list_corrections(
                tracker_status=["pending", "failed"]):
            self._spawn(self._fetch_tracker(correction.id, correction.conversation_id,
                                            correction.created_at))
        found = await self.store.list_conversations(mode=["bot", "review", "human"])
        me = self.cluster.node_id
        alive = await self.cluster.alive({c.node_id for c in found if c.node_id} - {me})
        recovered = 0
        for conv in found:
            if conv.node_id is None or conv.node_id not in alive:
                recovered += await self._adopt(conv, "the gateway restarted")
        return recovered

    def watch_nodes(self, every: float) -> None:
        """Every ``every`` seconds, take over the work of the nodes that are gone (their
        lease ran out): their turns fail into the queue, their review timers run here.
        Only with several nodes (a shared :attr:`cluster`)."""
        if self._watch is None and self.cluster.shared:
            self._watch = asyncio.get_running_loop().create_task(self._watch_nodes(every))

    async def _watch_nodes(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.adopt_from_gone()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store or Redis away: next round
                log.warning("node %s: the watch over the other nodes failed: %s",
                            self.cluster.node_id, exc)

    async def adopt_from_gone(self) -> int:
        """One round of :meth:`watch_nodes`; how many turns failed."""
        me = self.cluster.node_id
        at_work = await self.store.nodes_at_work()
        alive = await self.cluster.alive(set(at_work.values()) - {me}) | {me}
        recovered = 0
        for cid, node in at_work.items():
            if node not in alive:
                conv = await self.store.get_conversation(cid)
                recovered += await self._adopt(conv, f"gateway node {node} stopped")
        return recovered

    async def _adopt(self, conv: Conversation, why: str) -> int:
        """Take over the conversation's work from its node, gone (see :meth:`recover`): 1 when
        its turn failed. Taking it is one conditional write, so of several nodes that find
        the same node gone exactly one takes each conversation."""
        state = decode_state(conv.id, conv.state)
        busy = state.turn is not None and state.turn.call_id is not None
        timed = state.pending is not None and state.owner is None
        if not (busy or timed):
            return 0
        if not await self.store.move_node(conv.id, from_node=conv.node_id,
                                          to_node=self.cluster.node_id):
            return 0  # another node took it first, or its work ended meanwhile
        if conv.node_id not in (None, self.cluster.node_id):
            log.warning("%s: %s; its work taken over by node %s", conv.id, why,
                        self.cluster.node_id)
        if busy:
            assert state.turn is not None and state.turn.call_id is not None
            try:
                await self.apply(conv.id, r.RasaFailed(call_id=state.turn.call_id, error=why))
            except r.RouterError as exc:  # it moved on meanwhile
                log.info("%s not failed: %s", conv.id, exc)
                return 0
            return 1
        assert state.pending is not None
        waited = (datetime.now(timezone.utc) - conv.updated_at).total_seconds()
        self._spawn(self._release_later(conv.id, state.pending.reply_id,
                                        max(0.0, self.review_timeout - waited)))
        return 0

    async def resume_after_outage(self) -> int:
        """Rasa is back: each conversation queued only because it was down (``bot`` mode,
        ``rasa_unavailable``, no agent took it) goes back to the bot with the customer's
        messages Rasa never answered (:class:`~handoff.conversation.router.RasaBack`).
        Returns how many went back."""
        resumed = 0
        for conv in await self.store.list_conversations(mode="bot", queued=True):
            if conv.queue_reason != r.QueueReason.RASA_UNAVAILABLE.value:
                continue
            unanswered: list[Message] = []
            for message in reversed(await self.store.list_messages(conv.id)):
                if message.sender in ("bot", "human"):
                    break
                if message.sender == "customer" and message.intent is None:
                    unanswered.append(message)
            event = r.RasaBack(messages=tuple(
                r.CustomerMessage(message_id=m.client_message_id or f"stored-{m.id}",
                                  text=m.text or "", metadata=dict(m.metadata or {}))
                for m in reversed(unanswered)))
            try:
                state = await self.apply(conv.id, event)
            except r.RouterError as exc:  # closed meanwhile
                log.info("%s not resumed: %s", conv.id, exc)
                continue
            if state.queue_reason is None:
                resumed += 1
                log.info("Rasa is back: %s returns to the bot with %d message(s)", conv.id,
                         len(unanswered))
        return resumed

    async def _release_later(self, cid: str, reply_id: int, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.apply(cid, r.ReviewTimeout(reply_id=reply_id))
        except r.RouterError as exc:
            log.info("held reply %s of %s not released: %s", reply_id, cid, exc)

    async def idle(self) -> None:
        """Wait until no Rasa call is out (for tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ entry points

    async def open(self, conversation_id: str) -> Conversation:
        """Make sure the conversation exists (a customer's session); tell the agents when new."""
        conv = await self.store.upsert_conversation(conversation_id)
        if conv.version == 1 and conv.last_seq == 0 and conv.state is None:
            await self.notifier.to_agents("conversation", conversation_json(conv))
        return conv

    async def customer_message(self, conversation_id: str, text: str,
                               metadata: Mapping[str, Any],
                               client_message_id: str | None = None) -> Message | None:
        """Run the customer's message through the router; it is stored together with the
        step's state, before Rasa or anyone sees it. Returns the stored message, or None when
        the conversation is closed (nothing stored).

        ``client_message_id`` is the client's own id of the message (the widget's): a message
        sent again under an id already stored in the conversation (its acknowledgement was
        lost, or another node stored it) is not stored or run again: the stored message comes
        back, ``replayed``. Without one the message gets a new id and is never a replay."""
        message_id = (f"{CLIENT_ID_PREFIX}{client_message_id}" if client_message_id is not None
                      else uuid.uuid4().hex)
        event = r.CustomerMessage(message_id=message_id, text=text, metadata=dict(metadata))
        previous = self._turn_started.get(conversation_id)
        self._turn_started[conversation_id] = time.monotonic()
        flag = self.triage.rules_flag(text) if self.triage else None

        async def run() -> list[Message]:
            if flag is not None:  # before the message is run (a no-op once closed)
                await self._step_locked(conversation_id, flag)
            _, saved = await self._step_locked(conversation_id, event, once=message_id)
            return saved.messages if saved is not None else []

        async with self.locks.hold(conversation_id, "customer"):
            try:
                try:
                    stored = await run()
                except NotFound:  # a session the store lost (or never saw): open it
                    await self.open(conversation_id)
                    stored = await run()
            except AlreadyStored as exc:  # a resend: no new turn
                if previous is None:
                    self._turn_started.pop(conversation_id, None)
                else:
                    self._turn_started[conversation_id] = previous
                return exc.stored
            except r.ConversationClosed:
                if client_message_id is None:
                    return None
                # closed after it was stored: the resend of a stored message still succeeds
                return await self.store.stored_message(conversation_id, message_id)
            self.instruments.turns.inc()
        return next(m for m in stored if m.client_message_id == event.message_id)

    async def effort_score(self, conversation_id: str, score: int) -> Conversation:
        """The customer's answer to the effort survey, accepted once the conversation ended
        (``Conflict`` before). Agents are told."""
        async with self.locks.hold(conversation_id):
            conv = await self.store.get_conversation(conversation_id)
            if conv.mode != "closed":
                raise Conflict("the survey is answered after the conversation has ended")
            conv = await self.store.set_effort_score(conversation_id, score)
        await self.notifier.to_agents("survey", {"conversation_id": conversation_id,
                                                 "effort_score": conv.effort_score})
        if self.on_ended is not None:
            self._spawn(self.on_ended(conversation_id))
        return conv

    async def apply(self, conversation_id: str, event: r.Event,
                    audit: AuditDraft | None = None) -> r.ConversationState:
        """Step an agent's (or the system's) event; a refusal raises the router's error with
        nothing changed. ``NotFound`` for an unknown conversation. ``audit``: the audit-log
        entry of the agent's action, written in the step's own transaction (one write, not
        two: an agent's click waits for each), or alone when the step changed nothing."""
        async with self.locks.hold(conversation_id, "agent"):
            state, saved = await self._step_locked(conversation_id, event, audit)
        if audit is not None and saved is None:
            await self.store.audit(audit["actor"], audit["action"], target=audit["target"],
                                   details=audit["details"])
        return state

    async def apply_recorded(self, conversation_id: str, event: r.Event,
                             audit: AuditDraft | None = None) -> Correction:
        """Step an agent's event that records a correction (a whisper's chosen action) and
        return the correction, stored in the step's own transaction with ``audit``, the
        audit-log entry of the agent's action (naming the correction)."""
        async with self.locks.hold(conversation_id, "agent"):
            _, saved = await self._step_locked(conversation_id, event, audit)
        if saved is None or saved.correction is None:
            raise r.InvalidTransition(f"{type(event).__name__} recorded no correction")
        return saved.correction

    async def state(self, conversation_id: str) -> r.ConversationState:
        conv = await self.store.get_conversation(conversation_id)
        return decode_state(conversation_id, conv.state)

    # ------------------------------------------------------------------ stepping

    async def _step_locked(self, conversation_id: str, event: r.Event,
                           audit: AuditDraft | None = None, once: str | None = None,
                           triage: TriageRecord | None = None,
                           ) -> tuple[r.ConversationState, SavedStep | None]:
        """Step ``event`` under the conversation's lock. The new state, the messages the step
        produced (the customer's, the bot's), the NLU result of a Rasa answer and triage's
        record of the turn (``triage``) are written in one transaction before any effect runs;
        returns the state and what was saved (None when the step changed nothing: a late Rasa
        answer, a flag already raised; ``triage`` is then not written).

        The step starts from the row this process saved last for the conversation, when it has
        one, without reading the store (two reads fewer per customer turn): a row changed since
        by anyone else has another version, so ``save_step`` refuses it (``StaleVersion``) and
        the step is taken again on the stored row; so is a step that would change nothing or
        that the router refuses, since nothing checks their version (another gateway node may
        have moved the conversation on)."""
        for _ in range(_STALE_RETRIES):
            conv = self._rows.pop(conversation_id, None)
            kept = conv is not None
            if conv is None:
                conv = await self.store.get_conversation(conversation_id)
            before = decode_state(conversation_id, conv.state)
            try:
                after, effects = r.step(before, event, self.config)
            except r.RouterError:
                if kept:  # refused on the kept row: another node may have moved it on
                    continue
                raise
            if after == before and not effects:
                if kept:
                    continue  # decided on the kept row: decide it again on the stored one
                return before, None
            try:
                saved = await self.store.save_step(
                    conversation_id, expected_version=conv.version, mode=after.mode.value,
                    node_id=self._node_of(after, effects),
                    owner=after.owner, queued=after.queued,
                    queue_reason=after.queue_reason.value if after.queue_reason else None,
                    state=encode_state(after), appended=step_records.step_messages(effects),
                    nlu=step_records.step_nlu(before, event, effects),
                    resolve=step_records.resolution(before, after, effects),
                    hold=step_records.held_draft(effects),
                    correction=step_records.correction_draft(effects), audit=audit,
                    cause=type(event).__name__, actor=getattr(event, "agent_id", None),
                    once=once,
                    triage=triage, before=conv,  # the row stepped from: not read again
                )
            except StaleVersion:
                continue  # the conversation changed meanwhile: re-read and step again
            break
        else:
            raise StaleVersion(f"conversation {conversation_id!r} keeps changing")
        if saved.conversation.mode != "closed":
            self._rows[conversation_id] = saved.conversation
            if len(self._rows) > _KEPT_ROWS:
                self._rows.popitem(last=False)
        self._count_step(conv.mode, saved)
        if (self.on_ended is not None and saved.conversation.mode == "closed"
                and conv.mode != "closed"):
            self._spawn(self.on_ended(conversation_id))
        stored = saved.messages
        if saved.correction is not None:  # Rasa is asked outside the lock, after the commit
            self._spawn(self._fetch_tracker(saved.correction.id, conversation_id,
                                            saved.correction.created_at))
        rows = iter(stored)  # in the order _step_messages listed them
        with self.notifier.pushes():  # one read of the agents' logins for the step's pushes
            for effect in effects:
                try:
                    await self._perform(effect, rows)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one failed push must not stop the turn
                    log.exception("effect %s of %s failed", type(effect).__name__,
                                  conversation_id)
        return after, saved

    def _node_of(self, after: r.ConversationState, effects: Sequence[r.Effect]
                 ) -> str | None | Keep:
        """The node to record with the step: this one when the step starts a Rasa call or a
        review timer (they run in this process), none when nothing runs any more, else the
        node that started what still runs."""
        if any(isinstance(e, r.RasaCall) or (
                isinstance(e, r.ShowPendingReply) and e.agent_id is None) for e in effects):
            return self.cluster.node_id
        if (after.turn is None or after.turn.call_id is None) and (
                after.pending is None or after.owner is not None):
            return None
        return Keep.NODE

    def _count_step(self, mode_before: str, saved: SavedStep) -> None:
        """The step's mode change, held reply and decisions, for Prometheus."""
        ins = self.instruments
        self.count_mode_change(saved.conversation.id, mode_before, saved.conversation.mode)
        if saved.held is not None:
            ins.held_replies.inc()
        for reply in saved.resolved:
            ins.decisions.labels(reply.decision or reply.status).inc()
            if reply.decided_by is not None and reply.decided_at is not None:
                ins.decision_seconds.observe(
                    (reply.decided_at - reply.created_at).total_seconds())

    def count_mode_change(self, cid: str, mode_before: str, mode: str) -> None:
        """A change of the conversation's mode, for Prometheus: a step's, or one made outside
        the router (an erasure closing it)."""
        if mode != mode_before:
            self.instruments.mode_transitions.labels(mode_before, mode).inc()
            if mode == "closed":  # no turn of it will end any more
                self._turn_started.pop(cid, None)

    async def _perform(self, effect: r.Effect, rows: Iterator[Message]) -> None:
        cid = effect.conversation_id
        match effect:
            case r.StoreMessage():  # stored with the step: show it to the agents
                await self.notifier.to_agents("message", to_json(next(rows)))
            case r.ShowCustomerMessage():
                pass  # every stored message is already pushed to all agents
            case r.SendToCustomer():
                await self._send(effect, rows)
            case r.NotifyCustomer(notice=notice, reason=reason):
                text = notice_text(notice, reason)
                await self.notifier.to_customer(cid, "handoff_notice",
                                                {"kind": notice.value, "text": text})
                if text is not None:  # stored with the step
                    await self.notifier.to_customer(
                        cid, "bot_uttered", {"text": text, "metadata": {"sender": "system"}})
                    await self.notifier.to_agents("message", to_json(next(rows)))
                if notice is r.Notice.CLOSED:
                    await self.notifier.to_customer(cid, "survey_request", SURVEY_REQUEST)
            case r.StatusChanged():
                await self.notifier.to_agents("status", {
                    "conversation_id": cid, "mode": effect.mode.value, "owner": effect.owner,
                    "queue_reason": effect.queue_reason.value if effect.queue_reason else None,
                    "queue_detail": effect.queue_detail})
                for listener in self.status_listeners:
                    await listener(cid, effect)
            case r.ShowPendingReply(agent_id=agent_id, reply=reply):  # held with the step
                await self.notifier.to_agents("pending_reply", {
                    "conversation_id": cid, "reply": encode(reply), "owner": agent_id,
                    "release_in": None if agent_id else self.review_timeout},
                    [agent_id] if agent_id else None)
                if agent_id is None:  # an unowned (triage) review: the bot answers after a while
                    self._spawn(self._release_later(cid, reply.reply_id, self.review_timeout))
            case r.ShowSuggestion(agent_ids=agent_ids):
                await self.notifier.to_agents("suggestion", {
                    "conversation_id": cid, "message_id": effect.message_id,
                    "action": encode(effect.action)}, agent_ids)
            case r.ShowRasaError(agent_ids=agent_ids, error=error):
                await self.notifier.to_agents("rasa_error", {"conversation_id": cid,
                                                             "error": error}, agent_ids)
            case r.RecordCorrection(reply_id=reply_id, agent_id=agent_id, kind=kind):
                # stored with the step; its tracker events are fetched after the commit. Every
                # agent may have the decision card of an unowned review open: tell them all.
                if reply_id is not None:
                    await self.notifier.to_agents("reply_decided", {
                        "conversation_id": cid, "reply_id": reply_id, "agent": agent_id,
                        "decision": kind.value})
            case r.RasaCall() | r.AppendToTracker():
                self._spawn(self._call_rasa(effect))
            case _:
                log.warning("unhandled effect %r", effect)

    async def _send(self, effect: r.SendToCustomer, rows: Iterator[Message]) -> None:
        cid = effect.conversation_id
        human = effect.sender is r.Sender.HUMAN
        for message in effect.messages:
            shown: dict[str, Any] = dict(message)
            if human:
                shown["metadata"] = {**dict(shown.get("metadata") or {}), "sender": "human",
                                     "agent": effect.agent_id}
            for payload in bot_uttered_payloads(shown):
                await self.notifier.to_customer(cid, "bot_uttered", payload)
            await self.notifier.to_agents("message", to_json(next(rows)))
            text = message.get("text")
            if (self.triage is not None and effect.agent_id and isinstance(text, str) and (
                    human or effect.decision in (r.CorrectionKind.WRITE, r.CorrectionKind.EDIT))):
                await self.triage.remember_reply(text, effect.agent_id, None)

    async def _fetch_tracker(self, correction_id: int, cid: str, at: datetime) -> None:
        """Rasa's events of the conversation as they were when the agent decided (those at or
        before the correction's time ``at``: everything up to the corrected turn, the decided
        action not yet run), stored with the correction. Tried again after each of
        :attr:`tracker_retry_delays`; when every try failed the correction is marked
        ``failed`` with the last error (kept, shown to trainers, retried by :meth:`recover`).
        If even that cannot be stored, the correction stays ``pending`` for :meth:`recover`."""
        try:
            await self._fetch_tracker_once(correction_id, cid, at)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database: the correction stays pending, retried at start-up
            log.exception("tracker of correction %s in %s not stored", correction_id, cid)

    async def _fetch_tracker_once(self, correction_id: int, cid: str, at: datetime) -> None:
        error = ""
        attempts = 0
        for delay in (0.0, *self.tracker_retry_delays):
            await asyncio.sleep(delay)
            attempts += 1
            try:
                events = await self.rasa.tracker_events(cid)
            except RasaError as exc:
                error = exc.message
            except Exception as exc:  # noqa: BLE001 - whatever it was, the correction is kept
                error = f"{type(exc).__name__}: {exc}"
            else:
                await self.store.set_correction_tracker(
                    correction_id, events=step_records.events_until(events, at), attempts=attempts)
                return
            log.info("tracker of correction %s (%s), try %d: %s", correction_id, cid,
                     attempts, error)
        log.warning("correction %s in %s kept without tracker events: %s", correction_id, cid,
                    error)
        await self.store.set_correction_tracker(correction_id, error=error, attempts=attempts)

    # ------------------------------------------------------------------ Rasa

    def _spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, kept referenced until it ends; not ahead of the
        customers' transactions even when an agent's click started it (nobody waits on it)."""
        with self.store.in_line():  # the task copies this context: the click's `ahead` ends
            task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_rasa(self, effect: r.RasaCall | r.AppendToTracker) -> None:
        cid = effect.conversation_id
        if isinstance(effect, r.AppendToTracker):
            try:
                await self.rasa.continue_(cid, {
                    "type": "say", "action": effect.action_name,
                    "messages": [dict(m) for m in effect.messages],
                    "metadata": {"sender": "human", "agent": effect.agent_id}}, hold=True)
            except RasaError as exc:
                log.warning("could not log the agent's reply in %s to Rasa: %s", cid, exc)
            return
        if isinstance(effect, r.RasaHandleMessage) and self.triage is not None:
            await self._judged_turn(effect, self.triage)
            return
        asked = time.monotonic()
        event = await self._ask_rasa(effect)
        rasa_seconds = time.monotonic() - asked
        try:
            await self._apply_result(cid, event)
        finally:
            if isinstance(effect, r.RasaHandleMessage):
                self._time_turn(cid, asked, rasa_seconds)

    async def _ask_rasa(self, effect: r.RasaCall) -> r.Event:
        """Rasa's answer to a call, or the failure the router is told instead. While the
        health probe finds Rasa down the call fails at once, and a call out when it goes down
        fails then (the customer is told in seconds, not after the turn timeout)."""
        pool = self.health
        server = self.rasa.server_for(effect.conversation_id)
        try:
            if pool is None:
                return await self._admitted(effect, server)
            health = pool.health(server)
            if health.down:
                raise RasaUnavailable(f"Rasa is down ({health.error})")
            request = asyncio.ensure_future(self._admitted(effect, server))
            while True:
                # the server the call is on: a refusal may have sent it to the next one
                at = self.rasa.sending_to(effect.conversation_id) or server
                health = pool.health(at)
                went_down = asyncio.ensure_future(health.down_event.wait())
                try:
                    await asyncio.wait({request, went_down},
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    went_down.cancel()
                if request.done():
                    return request.result()
                if (self.rasa.sending_to(effect.conversation_id) or server) == at:
                    break  # its server went down with the call on it
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
            raise RasaUnavailable(f"Rasa went down during the call ({health.error})",
                                  timed_out=True)
        except RasaError as exc:
            log.warning("Rasa call %s for %s failed: %s", effect.call_id,
                        effect.conversation_id, exc)
            if pool is not None and pool.health(server).down and not pool.down:
                self._moved.add(effect.conversation_id)
            return r.RasaFailed(call_id=effect.call_id, error=exc.message,
                                timed_out=exc.timed_out)

    async def _admitted(self, effect: r.RasaCall, server: str) -> r.RasaResult:
        """The Rasa call to ``server`` once its admission control lets it go
        (handoff.conversation.admission); a customer whose reply is slow to come is told it
        is on its way."""
        cid = effect.conversation_id

        def tell_customer() -> None:
            self._spawn(self.notifier.to_customer(cid, "handoff_notice", dict(REPLY_DELAYED)))

        slow = tell_customer if isinstance(effect, r.RasaHandleMessage) else None
        async with self.admission.slot(server, on_slow=slow):
            # the client routes it when it is sent: a deploy or a server going down meanwhile
            # may have moved the conversation
            return await self._rasa_request(effect)

    async def rasa_health_changed(self, server: str, previous: str, state: str) -> None:
        """The probes' news (:class:`~handoff.conversation.rasa_pool.RasaPool`): every agent
        gets ``rasa_health``; when a Rasa server is back, the conversations queued while it
        was down go back to the bot (:meth:`resume_after_outage`). So do they when one of
        several servers is found down while another is not: a turn that failed on it before
        its probe found it down (killed mid-turn: the connection broke at once) queued its
        conversation, which the servers still up now serve."""
        health = self.health
        await self.notifier.to_agents("rasa_health", health.as_json() if health else {
            "state": state})
        if previous == "down" and state in ("up", "slow"):
            self._spawn(self.resume_after_outage())
        elif state == "down" and health is not None and health.several and not health.down:
            self._spawn(self.resume_after_outage())

    async def _apply_result(self, cid: str, event: r.Event,
                            triage: TriageRecord | None = None) -> bool:
        """Feed a Rasa call's outcome to the router, with triage's record of the turn saved
        in the same step; whether that step saved anything (and so ``triage``). A call that
        failed as its server went down, another being up, then resumes the conversations
        queued for it (on the servers that are up)."""
        moved = cid in self._moved
        self._moved.discard(cid)
        try:
            async with self.locks.hold(cid, "rasa"):
                _, saved = await self._step_locked(cid, event, triage=triage)
        except r.RouterError as exc:  # e.g. closed meanwhile
            log.info("Rasa result for %s not applied: %s", cid, exc)
            return False
        if moved:
            self._spawn(self.resume_after_outage())
        if self.triage is not None and isinstance(event, r.RasaResult):
            if self.triage.model_changed(event.model_id):
                self._spawn(self.triage.rebuild())
        return saved is not None

    async def _judged_turn(self, effect: r.RasaHandleMessage, triage: TriageLink) -> None:
        """A customer's turn with triage inside it: the slow part of the assessment runs
        beside Rasa's, the rest between Rasa's answer and the customer, and its flag goes to
        the router with the answer (a review holds this very reply). The assessment is stored
        by the step that takes in the answer (no transaction of its own) and pushed after; the
        next turn reads the conversation's triage history from the row that step saved."""
        cid = effect.conversation_id
        judging = triage.begin(self.store, cid, effect.message, kept=lambda: self._rows.get(cid))
        judgement: Judgement | None = None
        stored = False
        asked = time.monotonic()
        rasa_seconds = 0.0
        try:
            event = await self._ask_rasa(effect)
            rasa_seconds = time.monotonic() - asked
            if judging is not None:
                try:
                    with self.instruments.triage_seconds.time():
                        judgement = await triage.judge(
                            judging, effect.message,
                            event.parse if isinstance(event, r.RasaResult) else None)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception:  # triage informs; it must never break a conversation
                    log.exception("triage of a message in %s failed", cid)
            if judgement is not None and isinstance(event, r.RasaResult):
                event = replace(event, triage=judgement.flag)
            stored = await self._apply_result(
                cid, event, triage.stored(effect.message, judgement) if judgement else None)
            if judgement is not None and isinstance(event, r.RasaFailed) and judgement.flag:
                await self._flag(cid, judgement.flag)  # Rasa failed: the flag still counts
        finally:
            self._time_turn(cid, asked, rasa_seconds)
            if judgement is not None:
                self._spawn(self._record(cid, effect.message, judgement, stored))
            elif judging is not None:
                judging.task.cancel()
                triage.abandon(cid, judging.done)

    def _time_turn(self, cid: str, asked: float, rasa_seconds: float) -> None:
        """A customer turn's time, split into Rasa's share and the gateway's own."""
        total = time.monotonic() - self._turn_started.pop(cid, asked)
        hist = self.instruments.turn_seconds
        hist.labels("total").observe(total)
        hist.labels("rasa").observe(rasa_seconds)
        hist.labels("gateway").observe(max(0.0, total - rasa_seconds))

    # ------------------------------------------------------------------ triage

    async def _record(self, cid: str, message: r.CustomerMessage,
                      judgement: Judgement, stored: bool) -> None:
        """Push a message's assessment (stored by the turn's step, or here when that step
        saved nothing), then the suggested replies (off the customer's path)."""
        assert self.triage is not None
        try:
            row = await self.triage.record(self.store, self.notifier.to_agents, cid, message,
                                           judgement, stored=stored)
            kept = self._rows.get(cid)
            if row is not None and kept is not None and kept.version == row.version:
                self._rows[cid] = row  # the next turn's history comes from it
            await self.push_suggestions(cid)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception:  # triage informs agents; it must never break a conversation
            log.exception("triage of a message in %s not stored", cid)

    async def _flag(self, cid: str, flag: r.TriageFlag) -> None:
        try:
            await self.apply(cid, flag)
        except r.RouterError as exc:
            log.info("triage flag for %s not applied: %s", cid, exc)

    async def suggestions(self, cid: str) -> list[dict[str, Any]]:
        """The best replies for the conversation so far, with where each comes from (empty
        without triage or until its model is ready)."""
        if self.triage is None:
            return []
        messages = [m for m in await self.store.list_messages(cid)
                    if m.text and m.sender != "system"]
        while messages and messages[-1].sender != "customer":
            messages.pop()  # the situation ends with what the customer said last
        return [encode(s) for s in await self.triage.suggestions([m.text or "" for m in
                                                                  messages])]

    async def push_suggestions(self, cid: str) -> None:
        """The best replies for the conversation so far, pushed as ``suggested_replies`` to
        the agents in charge (everyone for an unowned review) while a reply is held or a
        person answers; not computed otherwise (it encodes the conversation). Decided on the
        row this process saved last when it has it (after every customer turn: no read)."""
        kept = self._rows.get(cid)
        state = decode_state(cid, kept.state) if kept is not None else await self.state(cid)
        if state.mode is not r.Mode.HUMAN and state.pending is None:
            return
        found = await self.suggestions(cid)
        if found:
            await self.notifier.to_agents("suggested_replies", {
                "conversation_id": cid, "suggestions": found},
                list(state.audience) if state.owner else None)

    async def _rasa_request(self, effect: r.RasaCall) -> r.RasaResult:
        cid = effect.conversation_id
        hold = effect.then is not r.Continuation.RUN
        match effect:
            case r.RasaHandleMessage(message=message, earlier=earlier):
                reply = await self.rasa.turn(
                    cid, message.text, dict(message.metadata), hold,
                    message_id=message.message_id,
                    earlier=[{"text": m.text, "metadata": dict(m.metadata),
                              "message_id": m.message_id} for m in earlier])
                return turn_result(effect.call_id, reply, with_parse=True)
            case r.RasaRetract(message=message, parse=parse):
                reply = await self.rasa.turn(cid, message.text, dict(message.metadata), hold,
                                             parse_data=_parse_data(message.text, parse),
                                             rewind=True)
                return turn_result(effect.call_id, reply, with_parse=True)
            case r.RasaRelabel(message=message, intent=intent):
                parse_data = {"text": message.text, "entities": [],
                              "intent": {"name": intent, "confidence": 1.0}}
                reply = await self.rasa.turn(cid, message.text, dict(message.metadata), hold,
                                             parse_data=parse_data, rewind=True)
                return turn_result(effect.call_id, reply, with_parse=True)  # stored: corrected
            case r.RasaExecute(action_name=name):
                reply = await self.rasa.continue_(cid, {"type": "replace", "action": name}, hold)
                return turn_result(effect.call_id, reply, with_parse=False)
            case r.RasaAppendReply(action_name=name, messages=messages, agent_id=agent_id):
                metadata = {"sender": "human", "agent": agent_id} if agent_id else {}
                reply = await self.rasa.continue_(cid, {
                    "type": "say", "action": name, "messages": [dict(m) for m in messages],
                    "metadata": metadata}, hold)
                return turn_result(effect.call_id, reply, with_parse=False, skip_said=name)
        raise TypeError(f"unknown Rasa call {type(effect).__name__}")


def _parse_data(text: str, parse: r.NluParse | None) -> dict[str, Any] | None:
    """Rasa's parse of a message as Rasa takes it back (``parse_data``), so that a retracted
    message is logged again as it was read, entities and all, without a second NLU run."""
    if parse is None:
        return None
    return {"text": text, "intent": {"name": parse.intent, "confidence": parse.confidence},
            "intent_ranking": [{"name": s.name, "confidence": s.confidence}
                               for s in parse.intent_ranking],
            "entities": [dict(e) for e in parse.entities]}


def conversation_json(conv: Conversation, last_customer: Message | None = None) -> dict[str, Any]:
    """A conversation as agents see it (API and pushes): its row without the router's internal
    state, with the customer's last message."""
    data = to_json(conv)
    data.pop("state", None)
    data["last_customer_text"] = last_customer.text if last_customer else None
    data["last_customer_at"] = last_customer.created_at.isoformat() if last_customer else None
    return data
