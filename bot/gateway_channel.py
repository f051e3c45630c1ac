"""Rasa input channel for the handoff gateway: a whole customer turn in one round trip.

Driving Rasa step by step over its HTTP API (log the message, predict, execute, … listen) costs
about three times a plain webhook turn, because every call takes the conversation lock and
loads and saves the tracker. This channel does the same steps inside the Rasa server, under one
lock, with one tracker load and one save, and answers with everything the gateway needs:

``POST /webhooks/gateway/turn`` with ``Authorization: Bearer <token>`` and JSON

    {"sender": "conversation id", "text": "...", "metadata": {...},
     "parse_data": {...} (optional: a relabelled intent, used instead of NLU),
     "rewind": false (optional: first revert the customer's last message and what followed
                      it, as when an agent relabels that message's intent),
     "message_id": "..." (optional: the gateway's id of the message; when the tracker's last
                      customer message has it already, a turn whose answer was lost, it is
                      rewound first),
     "earlier": [{"text", "metadata", "message_id"}] (optional: messages Rasa never saw,
                      sent while it was down; each is logged, parsed and its slots filled,
                      as what the customer said, but not answered; ids already in the
                      tracker are skipped; when the tracker's last customer message is one
                      of them or the turn's own, answered by a turn the gateway gave up
                      on, that message and its answer are reverted first),
     "hold": false,
     "deadline": 1765000000.0 (optional, Unix time: the gateway stops waiting then; a turn that
                      ends later is not saved and answered with 504, so the tracker never
                      holds a reply the customer did not get)}

answers

    {"parse": {intent, entities, intent_ranking, text},
     "actions": [{"name", "policy", "confidence", "alternatives": [{"name", "confidence"}],
                  "messages": [...what this action sent...]}],
     "held": null | {"name", "policy", "confidence", "alternatives", "preview": [...]},
     "model_id": "..."}

With ``"hold": true`` the turn stops before the first action that is not ``action_listen``:
that action is returned as ``held`` (with the rendered messages of a response action as
``preview``) and is NOT executed; the tracker holds the customer's message and the slots it
filled. ``POST /webhooks/gateway/continue`` then resolves it:

    {"sender": "...", "hold": false | true,
     "decision": {"type": "approve"}                     # run the held action
               | {"type": "replace", "action": "utter_x"} # run another action instead
               | {"type": "say", "action": "utter_x" | null, "messages": [{"text": ...}],
                  "metadata": {...}}}                     # the bot "said" these (edited or
                                                          # written by an agent); logged as
                                                          # the action plus bot events

and continues the turn (holding again at the next action when ``hold`` is true) until
``action_listen``; it takes a ``deadline`` too.

``POST /webhooks/gateway/preview`` ``{"sender": "...", "action": "utter_x"}`` answers
``{"preview": [...]}``: the messages the action would send now (a response rendered with the
conversation's slots, as a held action's ``preview``; none for a custom action, whose output
exists only once it ran), without running it or changing the tracker; an action outside the
domain is 400. An agent's chosen action held for review shows them (docs/console.md).

``POST /webhooks/gateway/erase`` ``{"sender": "..."}`` deletes the conversation's tracker
from the tracker store (every session of it; SQL, in-memory and Redis stores; any other
answers 501), under the conversation's lock: an admin erasing a customer's data
(docs/security.md). Answers ``{"sender", "erased": true | false}`` (false: there was none).
Rasa 3.6's HTTP API cannot do this: ``PUT /conversations/{id}/tracker/events`` only appends
to an SQL store, and there is no delete.

``POST /webhooks/gateway/mask`` ``{"sender": "...", "kinds"?: ["email", "phone", "card",
"order"], "after"?: t, "before"?: t}`` masks the PII of the conversation's events stamped from
``after`` until ``before`` (Unix times; null or absent: no bound) in place (the same stores, the
same lock; ``contracts/masking.py``): the gateway's retention job, each event once, as it masks
the stored transcript (docs/security.md). Answers ``{"sender", "masked": n}``, the events
changed (0: none, or no such tracker). The token is ``$GATEWAY_CHANNEL_TOKEN`` (default: ``$RASA_TOKEN``);
requests without it get 401.

The same requests go over one persistent websocket, ``GET /webhooks/gateway/ws`` (the same
bearer token; a wrong one closes the socket with code 4401 before anything is read; a good one
is greeted with ``{"ready": true}``). Each text frame is a request
``{"id": n, "path": "turn" | "continue" | "erase", "body": {...as above...}}``, answered with
``{"id": n, "status": 200 | 4xx | 5xx, "body": {...}}`` when it is done; requests run side by
side and are answered in the order they finish. The gateway uses it so that a turn costs one
frame each way instead of an HTTP request (docs/performance.md).

Enable it in ``credentials.yml`` with ``bot.gateway_channel.GatewayInput:``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Set, Text, Tuple

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from rasa.core.actions.action import Action, action_for_name_or_text
from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from rasa.core.policies.policy import PolicyPrediction
from rasa.core.tracker_store import InMemoryTrackerStore, RedisTrackerStore, SQLTrackerStore
from rasa.shared.constants import UTTER_PREFIX
from rasa.shared.core.constants import ACTION_DEFAULT_FALLBACK_NAME, ACTION_LISTEN_NAME
from rasa.shared.core.events import (
    ActionExecuted, BotUttered, UserUtteranceReverted, UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from contracts.masking import KINDS, Masker

CHANNEL_NAME = "gateway"
WS_UNAUTHORISED = 4401  # the websocket's close code for a wrong token
ALTERNATIVES = 5
MAX_ACTIONS_PER_TURN = 10


logger = logging.getLogger(__name__)


class BadRequest(Exception):
    """The request cannot be processed as sent (answered with 400 and the message)."""


class PastDeadline(Exception):
    """The gateway stopped waiting for this turn (answered with 504; nothing saved)."""


def check_deadline(body: Dict[str, Any]) -> None:
    """Raise :class:`PastDeadline` when the request's ``deadline`` (Unix time) has passed."""
    deadline = body.get("deadline")
    if deadline is None:
        return
    if not isinstance(deadline, (int, float)) or isinstance(deadline, bool):
        raise BadRequest("'deadline' must be a number (Unix time)")
    if time.time() > deadline:
        raise PastDeadline(f"the turn ended {time.time() - deadline:.2f} s after its deadline; "
                           "nothing was saved")


class Unsupported(Exception):
    """The tracker store cannot erase a conversation (answered with 501 and the message)."""


def _unwrapped(tracker_store: Any) -> Any:
    """The tracker store inside Rasa's fail-safe and awaitable wrappers."""
    store = tracker_store
    while hasattr(store, "_tracker_store"):
        store = store._tracker_store  # noqa: SLF001 - FailSafe/AwaitableTrackerStore wrap it
    return store


def erase_tracker(tracker_store: Any, sender: Text) -> bool:
    """Delete every event of ``sender`` from the tracker store (unwrapping Rasa's fail-safe
    and awaitable wrappers); whether there were any."""
    store = _unwrapped(tracker_store)
    if isinstance(store, InMemoryTrackerStore):
        return store.store.pop(sender, None) is not None
    if isinstance(store, SQLTrackerStore):
        with store.session_scope() as session:
            deleted = session.query(SQLTrackerStore.SQLEvent).filter(
                SQLTrackerStore.SQLEvent.sender_id == sender
            ).delete(synchronize_session=False)
            session.commit()
        return bool(deleted)
    if isinstance(store, RedisTrackerStore):
        return bool(store.red.delete(store.key_prefix + sender))
    raise Unsupported(f"erasing from a {type(store).__name__} is not supported")


Window = Tuple[Optional[float], Optional[float]]


def _in(window: Window, event: Dict[str, Any]) -> bool:
    after, before = window
    stamp = event.get("timestamp")
    if not isinstance(stamp, (int, float)):
        return after is None  # an event without a time: with the first window only
    return (after is None or stamp >= after) and (before is None or stamp < before)


def _masked(event: Dict[str, Any], masker: Masker, window: Window) -> Dict[str, Any]:
    return masker.mask_event(event) if _in(window, event) else event


def _masked_dialogue(serialised: Any, masker: Masker, window: Window) -> Tuple[Text, int]:
    """A tracker serialised as Rasa's in-memory and Redis stores keep it (the dialogue's JSON)
    with the events of ``window`` masked; how many events changed."""
    dialogue = json.loads(serialised)
    events = dialogue.get("events") or []
    masked = [_masked(event, masker, window) for event in events]
    dialogue["events"] = masked
    return json.dumps(dialogue), sum(1 for old, new in zip(events, masked) if old != new)


def mask_tracker(tracker_store: Any, sender: Text, kinds: Sequence[Text] = KINDS,
                 after: Optional[float] = None, before: Optional[float] = None) -> int:
    """Mask the PII of ``kinds`` in the events of ``sender`` stamped from ``after`` until
    ``before`` (Unix times; None: no bound) in the tracker store (contracts/masking.py: the
    customer's text, entities and slot values, the bot's text; a value gets the same
    replacement as in the gateway's store); how many events changed (0 for an unknown
    sender). The caller masks each event once: a masked card or phone number would be masked
    again into another."""
    store = _unwrapped(tracker_store)
    masker = Masker(kinds=kinds)
    window = (after, before)
    if isinstance(store, InMemoryTrackerStore):
        stored = store.store.get(sender)
        if stored is None:
            return 0
        store.store[sender], changed = _masked_dialogue(stored, masker, window)
        return changed
    if isinstance(store, SQLTrackerStore):
        changed = 0
        with store.session_scope() as session:
            rows = session.query(SQLTrackerStore.SQLEvent).filter(
                SQLTrackerStore.SQLEvent.sender_id == sender
            ).order_by(SQLTrackerStore.SQLEvent.id).all()
            for row in rows:
                event = json.loads(row.data)
                masked = _masked(event, masker, window)
                if masked != event:
                    row.data = json.dumps(masked)
                    changed += 1
            session.commit()
        return changed
    if isinstance(store, RedisTrackerStore):
        key = store.key_prefix + sender
        stored = store.red.get(key)
        if stored is None:
            return 0
        text, changed = _masked_dialogue(stored, masker, window)
        store.red.set(key, text, keepttl=True)
        return changed
    raise Unsupported(f"masking a {type(store).__name__} is not supported")


def _kinds(body: Dict[str, Any]) -> List[Text]:
    kinds = body.get("kinds", list(KINDS))
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds) or not set(
            kinds) <= set(KINDS):
        raise BadRequest(f"'kinds' must be a list of {', '.join(KINDS)}")
    return kinds


def _time(body: Dict[str, Any], key: Text) -> Optional[float]:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise BadRequest(f"'{key}' must be a Unix time or null")
    return None if value is None else float(value)


def _token() -> str:
    return os.environ.get("GATEWAY_CHANNEL_TOKEN") or os.environ.get("RASA_TOKEN") or ""


def authorised(request: Request) -> bool:
    expected = _token()
    given = request.headers.get("authorization", "")
    return bool(expected) and hmac.compare_digest(given, f"Bearer {expected}")


def _alternatives(prediction: PolicyPrediction, action_names: List[Text]) -> List[Dict[str, Any]]:
    ranked = sorted(enumerate(prediction.probabilities), key=lambda p: p[1], reverse=True)
    return [
        {"name": action_names[i], "confidence": round(float(p), 4)}
        for i, p in ranked[: ALTERNATIVES + 1]
        if i != prediction.max_confidence_index
    ][:ALTERNATIVES]


def _describe(action: Action, prediction: PolicyPrediction, names: List[Text]) -> Dict[str, Any]:
    return {
        "name": action.name(),
        "policy": prediction.policy_name,
        "confidence": round(float(prediction.max_confidence), 4),
        "alternatives": _alternatives(prediction, names),
    }


class Turn:
    """One customer turn run inside the Rasa server, under the conversation's lock."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.processor = agent.processor
        self.domain = self.processor.domain
        self.actions: List[Dict[str, Any]] = []
        self.held: Optional[Dict[str, Any]] = None

    async def _run(
        self, tracker: DialogueStateTracker, action: Action, prediction: PolicyPrediction
    ) -> bool:
        out = CollectingOutputChannel()
        described = _describe(action, prediction, self.domain.action_names_or_texts)
        more = await self.processor._run_action(  # noqa: SLF001 - the processor's own step
            action, tracker, out, self.processor.nlg, prediction
        )
        if action.name() != ACTION_LISTEN_NAME:
            self.actions.append({**described, "messages": out.messages})
        return bool(more)

    async def _preview(self, tracker: DialogueStateTracker, name: Text) -> List[Dict[str, Any]]:
        if not name.startswith(UTTER_PREFIX):
            return []  # a custom action's output exists only once it has run
        message = await self.processor.nlg.generate(name, tracker, CHANNEL_NAME)
        return [message] if message else []

    async def loop(
        self, tracker: DialogueStateTracker, hold: bool, overridden: bool = False
    ) -> None:
        """Predict and run actions until action_listen, or until the first one to hold.

        After an agent replaced the bot's action or said something else (``overridden``), the
        conversation may be somewhere the policies never saw; where they would fall back
        (which reverts the customer's message) the turn simply ends and waits for the customer.
        """
        for _ in range(MAX_ACTIONS_PER_TURN):
            if not self.processor._should_handle_message(tracker):  # noqa: SLF001
                return
            action, prediction = self.processor.predict_next_with_tracker_if_should(tracker)
            if overridden and action.name() == ACTION_DEFAULT_FALLBACK_NAME:
                await self.run_named(tracker, ACTION_LISTEN_NAME)
                return
            if hold and action.name() != ACTION_LISTEN_NAME:
                self.held = {
                    **_describe(action, prediction, self.domain.action_names_or_texts),
                    "preview": await self._preview(tracker, action.name()),
                }
                return
            if not await self._run(tracker, action, prediction):
                return

    async def run_named(self, tracker: DialogueStateTracker, name: Text) -> None:
        if name not in self.domain.action_names_or_texts:
            raise BadRequest(f"unknown action {name!r}")
        action = action_for_name_or_text(name, self.domain, self.processor.action_endpoint)
        prediction = PolicyPrediction.for_action_name(self.domain, name, "gateway", 1.0)
        await self._run(tracker, action, prediction)

    def log_said(
        self, tracker: DialogueStateTracker, name: Optional[Text],
        messages: List[Dict[str, Any]], metadata: Dict[str, Any],
    ) -> None:
        """Record what the customer was really sent, in place of the bot's own reply."""
        action_name = name or "action_agent_reply"
        tracker.update(ActionExecuted(action_name, policy="gateway", confidence=1.0))
        for message in messages:
            text = message.get("text")
            data = {k: v for k, v in message.items() if k != "text"}
            tracker.update(BotUttered(text, data, metadata))
        self.actions.append({"name": action_name, "policy": "gateway", "confidence": 1.0,
                             "alternatives": [], "messages": messages})

    def result(self, tracker: DialogueStateTracker) -> Dict[str, Any]:
        parse = tracker.latest_message.parse_data if tracker.latest_message else {}
        return {
            "parse": {k: parse.get(k) for k in ("text", "intent", "entities", "intent_ranking")},
            "actions": self.actions,
            "held": self.held,
            "model_id": self.agent.model_id,
        }


def _earlier(value: Any) -> List[Dict[str, Any]]:
    """The ``earlier`` of a turn: messages to log, unanswered, before the turn's own."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("text"), str)
        and isinstance(m.get("metadata") or {}, dict)
        and isinstance(m.get("message_id"), (str, type(None)))
        for m in value
    ):
        raise BadRequest("'earlier' must be a list of {text, metadata?, message_id?}")
    return value


def _logged_ids(tracker: DialogueStateTracker) -> set:
    """The ids of the customer messages in the tracker (not those reverted)."""
    return {e.message_id for e in tracker.applied_events()
            if isinstance(e, UserUttered) and e.message_id}


async def _turn(agent: Any, body: Dict[str, Any]) -> Dict[str, Any]:
    text = body.get("text")
    if not isinstance(text, str):
        raise BadRequest("'text' must be a string")
    parse_data = body.get("parse_data")
    if parse_data is not None and not isinstance(parse_data, dict):
        raise BadRequest("'parse_data' must be an object")
    metadata = body.get("metadata") or {}
    message_id = body.get("message_id")
    if message_id is not None and not isinstance(message_id, str):
        raise BadRequest("'message_id' must be a string")
    earlier = _earlier(body.get("earlier"))
    message = UserMessage(
        text, CollectingOutputChannel(), body["sender"],
        input_channel=CHANNEL_NAME, metadata=metadata, parse_data=parse_data,
        message_id=message_id,
    )
    processor = agent.processor
    tracker = await processor.fetch_tracker_and_update_session(
        message.sender_id, message.output_channel, message.metadata
    )
    ours = {m.get("message_id") for m in earlier} | {message_id}
    latest = tracker.latest_message
    if latest is not None and latest.message_id and latest.message_id in ours:
        # a turn of one of these messages that the gateway gave up on (Rasa hung, then
        # finished it): the customer never saw its reply, so take it back
        tracker.update(UserUtteranceReverted())
        tracker.update(ActionExecuted(ACTION_LISTEN_NAME))
    seen = _logged_ids(tracker)
    for item in earlier:  # an outage's messages: logged, not answered
        if item.get("message_id") in seen:
            continue  # Rasa logged it before it stopped answering
        said = UserMessage(
            item["text"], CollectingOutputChannel(), body["sender"],
            input_channel=CHANNEL_NAME, metadata=item.get("metadata") or {},
            message_id=item.get("message_id"),
        )
        await processor._handle_message_with_tracker(said, tracker)  # noqa: SLF001
        tracker = await processor.run_action_extract_slots(said.output_channel, tracker)
        tracker.update(ActionExecuted(ACTION_LISTEN_NAME))
    if body.get("rewind"):  # the revert also takes back the action_listen before the message
        tracker.update(UserUtteranceReverted())
        tracker.update(ActionExecuted(ACTION_LISTEN_NAME))
    await processor._handle_message_with_tracker(  # noqa: SLF001 - log_message's
        message, tracker                           # own step, after the rewind
    )
    tracker = await processor.run_action_extract_slots(message.output_channel, tracker)
    run = Turn(agent)
    await run.loop(tracker, hold=bool(body.get("hold")))
    check_deadline(body)  # the gateway gave up: the customer sees none of it
    await processor.save_tracker(tracker)
    return run.result(tracker)


async def _continue(agent: Any, body: Dict[str, Any]) -> Dict[str, Any]:
    decision = body.get("decision")
    if not isinstance(decision, dict):
        raise BadRequest("'decision' must be an object")
    processor = agent.processor
    tracker = await processor.fetch_tracker_and_update_session(
        body["sender"], CollectingOutputChannel()
    )
    run = Turn(agent)
    kind = decision.get("type")
    if kind == "approve":
        action, prediction = processor.predict_next_with_tracker_if_should(tracker)
        await run._run(tracker, action, prediction)
    elif kind == "replace":
        await run.run_named(tracker, str(decision.get("action")))
    elif kind == "say":
        messages = decision.get("messages")
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) for m in messages
        ):
            raise BadRequest("'messages' must be a list of message objects")
        run.log_said(tracker, decision.get("action"), messages,
                     decision.get("metadata") or {})
    else:
        raise BadRequest("'decision.type' must be approve, replace or say")
    await run.loop(tracker, hold=bool(body.get("hold")), overridden=kind != "approve")
    check_deadline(body)
    await processor.save_tracker(tracker)
    return run.result(tracker)


async def _preview(agent: Any, body: Dict[str, Any]) -> Dict[str, Any]:
    name = body.get("action")
    run = Turn(agent)
    if not isinstance(name, str) or name not in run.domain.action_names_or_texts:
        raise BadRequest(f"unknown action {name!r}")
    tracker = await agent.processor.get_tracker(body["sender"])  # read only: nothing saved
    return {"preview": await run._preview(tracker, name)}  # noqa: SLF001 - the turn's own


async def _erase(agent: Any, body: Dict[str, Any]) -> Dict[str, Any]:
    erased = erase_tracker(agent.tracker_store, body["sender"])
    return {"sender": body["sender"], "erased": erased}


async def _mask(agent: Any, body: Dict[str, Any]) -> Dict[str, Any]:
    masked = mask_tracker(agent.tracker_store, body["sender"], _kinds(body),
                          _time(body, "after"), _time(body, "before"))
    return {"sender": body["sender"], "masked": masked}


# What each path of the channel does, over HTTP (``POST /webhooks/gateway/<path>``) and over
# the websocket (``{"path": ...}``) alike.
WORK: Dict[Text, Callable[[Any, Dict[str, Any]], Awaitable[Dict[str, Any]]]] = {
    "turn": _turn, "continue": _continue, "erase": _erase, "mask": _mask,
    "preview": _preview,
}


async def perform(agent: Any, path: Text, body: Any) -> Tuple[int, Dict[str, Any]]:
    """Run one request of the channel under the conversation's lock: (status, answer)."""
    if agent is None or not agent.is_ready():
        return 503, {"error": "no model loaded"}
    work = WORK.get(path)
    if work is None:
        return 404, {"error": f"no such path {path!r}"}
    try:
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        sender = body.get("sender")
        if not isinstance(sender, str) or not sender:
            raise BadRequest("'sender' must be a non-empty string")
        async with agent.lock_store.lock(sender):
            return 200, await work(agent, body)
    except BadRequest as exc:
        return 400, {"error": str(exc)}
    except Unsupported as exc:
        return 501, {"error": str(exc)}
    except PastDeadline as exc:
        return 504, {"error": str(exc)}


class Multiplexer:
    """One websocket from the gateway (``/webhooks/gateway/ws``): each text frame is a request
    ``{"id", "path", "body"}``, run in a task of its own (turns of different conversations run
    side by side, as over HTTP), and answered, in whatever order they finish, with ``{"id",
    "status", "body"}``. A request whose socket closes while it runs still completes (its
    tracker is saved), and its answer is dropped: as with an HTTP request the gateway gave up on.
    """

    def __init__(self, app: Any, ws: Any) -> None:
        self.app = app
        self.ws = ws
        self.tasks: Set["asyncio.Task[None]"] = set()

    async def serve(self) -> None:
        while True:
            frame = await self.ws.recv()
            if frame is None:  # closed
                return
            task = asyncio.ensure_future(self.answer(frame))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def answer(self, frame: Any) -> None:
        request_id: Any = None
        try:
            request = json.loads(frame)
            if not isinstance(request, dict):
                raise ValueError("not an object")
            request_id = request.get("id")
            status, answer = await perform(self.app.ctx.agent, str(request.get("path")),
                                           request.get("body"))
        except ValueError:
            status, answer = 400, {"error": "a request is {id, path, body} in JSON"}
        except Exception as exc:  # noqa: BLE001 - answered as a 500, as sanic would
            logger.exception("gateway channel request failed")
            status, answer = 500, {"error": f"{type(exc).__name__}: {exc}"}
        try:
            await self.ws.send(json.dumps({"id": request_id, "status": status, "body": answer}))
        except Exception:  # noqa: BLE001 - the gateway went away; the tracker is saved
            logger.debug("gateway channel: answer %s dropped, the socket closed", request_id)


class GatewayInput(InputChannel):
    """The handoff gateway's channel (see the module docstring)."""

    @classmethod
    def name(cls) -> Text:
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> "InputChannel":
        return cls()

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> Blueprint:
        bp = Blueprint("gateway_webhook", __name__)

        async def answer(request: Request, path: Text) -> HTTPResponse:
            if not authorised(request):
                return response.json({"error": "unauthorised"}, status=401)
            try:
                body = request.json
            except Exception:  # noqa: BLE001 - sanic's own error for a body that is not JSON
                body = None
            status, data = await perform(request.app.ctx.agent, path, body)
            return response.json(data, status=status)

        @bp.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @bp.route("/turn", methods=["POST"])
        async def turn(request: Request) -> HTTPResponse:
            return await answer(request, "turn")

        @bp.route("/continue", methods=["POST"])
        async def continue_turn(request: Request) -> HTTPResponse:
            return await answer(request, "continue")

        @bp.route("/erase", methods=["POST"])
        async def erase(request: Request) -> HTTPResponse:
            return await answer(request, "erase")

        @bp.route("/preview", methods=["POST"])
        async def preview(request: Request) -> HTTPResponse:
            return await answer(request, "preview")

        @bp.websocket("/ws")
        async def socket(request: Request, ws: Any) -> None:
            if not authorised(request):
                await ws.close(code=WS_UNAUTHORISED, reason="unauthorised")
                return
            await ws.send(json.dumps({"ready": True}))
            await Multiplexer(request.app, ws).serve()

        @bp.route("/mask", methods=["POST"])
        async def mask(request: Request) -> HTTPResponse:
            return await answer(request, "mask")

        return bp


__all__: Tuple[str, ...] = ("GatewayInput",)
