"""The agents' API: every action as a JSON HTTP endpoint and, for live use, as a Socket.IO
event on ``/agent`` — one table (:data:`ACTIONS`) drives both, so they cannot drift apart.

HTTP: ``Authorization: Bearer <token>``. Socket.IO: connect to ``/agent`` with
``auth={"token": <token>}``; the token and the user's tier are checked again on every event (an
expired or withdrawn login stops working mid-connection). The right each route and event needs
is declared in :mod:`handoff.web.rights` and checked there. An action event carries the HTTP body plus
``conversation_id`` (and ``reply_id`` for ``decision``) and is answered through the Socket.IO
acknowledgement with exactly the HTTP answer: ``{"conversation": ...}`` on success,
``{"error", "message", "status"}`` on a refusal (nothing changed).

The full list, with bodies and answers, is the OpenAPI document at ``/api/openapi.json``
(:mod:`handoff.web.openapi`) and ``docs/api.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import socketio
from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff.conversation import router as r
from handoff.conversation.rasa_client import RasaClient
from handoff.conversation.shell import Conversations, conversation_json, state_summary
from handoff.conversation.waiting import Waiting
from handoff.errors import BadRequest, HandoffError
from handoff.settings import Settings
from handoff.store import AuditDraft, Store, User, to_json
from handoff.web.auth import user_from_token, verify_token
from handoff.web.http import Body, flag_field, int_arg, json_body, text_field
from handoff.web.notifier import AGENT_NAMESPACE, SocketNotifier
from handoff.web.rights import DECISION_RIGHTS, current_user, guard, require_right

__all__ = ["ACTIONS", "AgentAction", "register_agent_api"]

log = logging.getLogger(__name__)
DOMAIN_CACHE_SECONDS = 30.0
OVERRIDES = ("takeover", "handback", "close")
LIST_PAGE = 200  # conversations per page of GET /api/conversations by default
MAX_LIST_PAGE = 500
MAX_NOTE_CHARS = 4000


def decision_event(body: Body, agent: str, reply_id: int, max_chars: int) -> r.ReviewDecision:
    kind = body.get("type")
    if kind == "approve":
        return r.Approve(agent_id=agent, reply_id=reply_id)
    if kind == "edit":
        return r.Edit(agent_id=agent, reply_id=reply_id, text=text_field(body, "text", max_chars))
    if kind == "write":
        return r.Write(agent_id=agent, reply_id=reply_id, text=text_field(body, "text", max_chars))
    if kind == "replace":
        return r.ReplaceAction(agent_id=agent, reply_id=reply_id,
                               action_name=text_field(body, "action", 200))
    if kind == "relabel":
        return r.Relabel(agent_id=agent, reply_id=reply_id,
                         intent=text_field(body, "intent", 200))
    raise BadRequest("'type' must be approve, edit, write, replace or relabel")


def suggestion_used(body: Body) -> str | None:
    """The suggested reply an agent's message or decision used (``suggestion``: its source,
    e.g. ``response:utter_refund_policy``), recorded in the audit log."""
    value = body.get("suggestion")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise BadRequest("'suggestion' must be the source of the suggestion used (a string)")
    return value


def _reply_id(body: Body) -> int:
    value = body.get("reply_id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest("'reply_id' must be an integer")
    return value


@dataclass(frozen=True)
class AgentAction:
    """One agent action on a conversation: ``POST /api/conversations/{id}/<path>`` and the
    ``/agent`` event ``<event>``; ``make`` turns (agent, body, max chars) into the router event."""

    event: str
    path: str
    summary: str
    make: Callable[[str, Body, int], r.Event]
    body: Mapping[str, Any] | None = None  # JSON schema of the body (OpenAPI)


ACTIONS: tuple[AgentAction, ...] = (
    AgentAction("watch", "watch", "Watch the conversation live (on: false stops).",
                lambda a, b, m: r.Watch(agent_id=a, on=flag_field(b, "on")),
                {"on": {"type": "boolean", "default": True}}),
    AgentAction("takeover", "takeover", "Take the conversation over: the agent answers. "
                "Exclusive: another owner gets 409.",
                lambda a, b, m: r.TakeOver(agent_id=a)),
    AgentAction("handback", "handback", "Hand the conversation back to the bot.",
                lambda a, b, m: r.HandBack(agent_id=a)),
    AgentAction("review", "review", "Review mode on or off: each bot reply is held for the "
                "owner's decision.",
                lambda a, b, m: r.SetReview(agent_id=a, on=flag_field(b, "on")),
                {"on": {"type": "boolean", "default": True}}),
    AgentAction("close", "close", "End the conversation (the customer is asked the effort "
                "survey).", lambda a, b, m: r.Close(agent_id=a)),
    AgentAction("message", "messages", "Send the customer a message as the owning agent "
                "(human mode).",
                lambda a, b, m: r.AgentMessage(agent_id=a, text=text_field(b, "text", m)),
                {"text": {"type": "string"}, "suggestion": {"type": "string"}}),
    AgentAction("decision", "replies/<reply_id:int>/decision",
                "Decide on the held bot reply: approve, edit (text), write (text), replace "
                "(action) or relabel (intent).",
                lambda a, b, m: decision_event(b, a, _reply_id(b), m),
                {"type": {"type": "string",
                          "enum": ["approve", "edit", "write", "replace", "relabel"]},
                 "text": {"type": "string"}, "action": {"type": "string"},
                 "intent": {"type": "string"}, "suggestion": {"type": "string"}}),
)


def register_agent_api(app: Sanic[Any, Any], sio: socketio.AsyncServer,
                       notifier: SocketNotifier, *, settings: Settings, store: Store,
                       rasa: RasaClient, conversations: Conversations,
                       waiting: Waiting | None = None) -> None:
    """Add the agents' HTTP endpoints and ``/agent`` events to ``app`` and ``sio``; the
    agents' sockets join their rooms, and notes are pushed, through ``notifier``."""
    max_chars = settings.max_message_chars
    domain_cache: dict[str, Any] = {}

    def agent(request: Request) -> User:
        return current_user(request)  # checked by handoff.web.rights' middleware

    async def run(user: User, action: AgentAction, conversation_id: str,
                  body: Body) -> dict[str, Any]:
        kind = body.get("type")
        if action.event == "decision" and isinstance(kind, str) and kind in DECISION_RIGHTS:
            require_right(user, DECISION_RIGHTS[kind])  # approve is checked; edit needs more
        event = action.make(user.username, body, max_chars)
        used = suggestion_used(body)
        audit = AuditDraft(actor=user.username, action=action.event,
                           target=f"conversation:{conversation_id}",
                           details={"suggestion": used} if used else None)
        with store.ahead():  # a person waits on this click: not behind customers' messages
            # one transaction: the step and its audit entry (404 for an unknown conversation)
            state = await conversations.apply(conversation_id, event, audit)
        return {"conversation": state_summary(state)}

    # ------------------------------------------------------------------ HTTP

    for action in ACTIONS:
        def bind(action: AgentAction) -> Callable[..., Coroutine[Any, Any, HTTPResponse]]:
            async def handler(request: Request, conversation_id: str,
                              **params: Any) -> HTTPResponse:
                user = agent(request)
                body = dict(json_body(request))
                body.update(params)  # reply_id from the path
                return json(await run(user, action, conversation_id, body))
            return handler

        app.add_route(bind(action), f"/api/conversations/<conversation_id:str>/{action.path}",
                      methods=["POST"], name=f"action_{action.event}")

    @app.post("/api/conversations/<conversation_id:str>/override", name="override")
    async def _override(request: Request, conversation_id: str) -> HTTPResponse:
        """Right ``override``: take over, hand back or close anyone's conversation, a
        disabled owner's included (``{action, reason}``), audit-logged with the owner."""
        user = agent(request)
        body = json_body(request)
        kind = body.get("action")
        if kind not in OVERRIDES:
            raise BadRequest(f"'action' must be one of {', '.join(OVERRIDES)}")
        reason = text_field(body, "reason", 500)
        owner = (await conversations.state(conversation_id)).owner  # 404 first
        acting = owner or user.username
        with store.ahead():  # a person waits on this click: not behind customers' messages
            if kind == "close":
                state = await conversations.apply(conversation_id, r.Close(agent_id=owner))
            elif kind == "handback":
                state = await conversations.apply(conversation_id, r.HandBack(agent_id=acting))
            else:
                if owner is not None and owner != user.username:  # the owner's hands first
                    await conversations.apply(conversation_id, r.HandBack(agent_id=owner))
                state = await conversations.apply(conversation_id,
                                                  r.TakeOver(agent_id=user.username))
            await store.audit(user.username, f"override_{kind}",
                              target=f"conversation:{conversation_id}",
                              details={"reason": reason, "owner": owner})
        return json({"conversation": state_summary(state)})

    @app.get("/api/conversations", name="conversations")
    async def _list(request: Request) -> HTTPResponse:
        agent(request)
        mode = request.args.get("mode")
        queued = request.args.get("queued")
        limit = int_arg(request, "limit", LIST_PAGE, MAX_LIST_PAGE) or 1
        offset = int_arg(request, "offset", 0, 2**31) or 0
        found = await store.list_conversations(
            mode=mode if mode else None,
            queued=None if queued is None else queued.lower() in ("1", "true", "yes"),
            owner=request.args.get("owner") or None, limit=limit + 1, offset=offset)
        page = found[:limit]
        last = await store.last_customer_messages([c.id for c in page])
        return json({"conversations": [conversation_json(c, last.get(c.id)) for c in page],
                     "next_offset": offset + limit if len(found) > limit else None})

    @app.get("/api/conversations/<conversation_id:str>", name="conversation")
    async def _get(request: Request, conversation_id: str) -> HTTPResponse:
        agent(request)
        conv = await store.get_conversation(conversation_id)
        state = await conversations.state(conversation_id)
        messages = await store.list_messages(conversation_id)
        last = next((m for m in reversed(messages) if m.sender == "customer"), None)
        contact = await store.get_contact(conversation_id)
        return json({"conversation": conversation_json(conv, last),
                     "router": state_summary(state),
                     "messages": [to_json(m) for m in messages],
                     "contact": None if contact is None else {
                         "contact": contact["contact"],
                         "left_at": contact["left_at"].isoformat()}})

    @app.get("/api/conversations/<conversation_id:str>/notes", name="notes")
    async def _notes(request: Request, conversation_id: str) -> HTTPResponse:
        agent(request)
        notes = await store.list_notes(conversation_id)
        return json({"notes": [to_json(n) for n in notes]})

    @app.post("/api/conversations/<conversation_id:str>/notes", name="add_note")
    async def _add_note(request: Request, conversation_id: str) -> HTTPResponse:
        user = agent(request)
        text = text_field(json_body(request), "text", MAX_NOTE_CHARS)
        note = await store.add_note(conversation_id, author=user.username, text=text)
        await store.audit(user.username, "note", target=f"conversation:{conversation_id}")
        await notifier.to_agents("note", {"conversation_id": conversation_id,
                                          "note": to_json(note)})
        return json({"note": to_json(note)}, status=201)

    @app.get("/api/conversations/<conversation_id:str>/suggestions", name="suggestions")
    async def _suggestions(request: Request, conversation_id: str) -> HTTPResponse:
        agent(request)
        await store.get_conversation(conversation_id)
        return json({"suggestions": await conversations.suggestions(conversation_id)})

    @app.post("/api/conversations/<conversation_id:str>/suggestions/rating",
              name="rate_suggestion")
    async def _rate(request: Request, conversation_id: str) -> HTTPResponse:
        user = agent(request)
        body = json_body(request)
        value = body.get("rating")
        if isinstance(value, bool) or value not in (1, -1):
            raise BadRequest("'rating' must be 1 (useful) or -1 (not useful)")
        rating = await store.rate_suggestion(
            conversation_id, agent=user.username, rating=int(value),
            suggestion=text_field(body, "suggestion", 200))
        return json({"rating": to_json(rating)}, status=201)

    @app.get("/api/domain", name="domain")
    async def _domain(request: Request) -> HTTPResponse:
        agent(request)
        now = time.monotonic()
        if domain_cache.get("until", 0.0) < now:
            raw = await rasa.domain()
            domain_cache.update(value=_domain_json(raw), until=now + DOMAIN_CACHE_SECONDS)
        return json(domain_cache["value"])

    # ------------------------------------------------------------------ Socket.IO /agent

    async def _connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError("a login token is required")
        try:
            user = await user_from_token(store, token, secret=settings.jwt_secret)
            claims = verify_token(token, secret=settings.jwt_secret)
        except HandoffError as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.message) from None
        await sio.save_session(sid, {"token": token}, namespace=AGENT_NAMESPACE)
        await notifier.join_agent(sid, user, claims.expires_at.timestamp(), claims.version)
        if waiting is not None:  # logged in to the console: available unless marked away
            await waiting.agent_connected(sid, user.username)
            await notifier.to_agents("presence", await waiting.presence_json())

    async def _disconnect(sid: str, *_reason: Any) -> None:
        notifier.leave_agent(sid)
        if waiting is not None:
            await waiting.agent_disconnected(sid)
            await notifier.to_agents("presence", await waiting.presence_json())

    async def _presence(user: User, sid: str, data: Any) -> dict[str, Any]:
        return await set_presence(user, data)

    async def set_presence(user: User, data: Any) -> dict[str, Any]:
        status = data.get("status") if isinstance(data, Mapping) else None
        if status not in ("available", "away"):
            raise BadRequest("'status' must be available or away")
        if waiting is None:
            raise BadRequest("presence is not kept here")
        await waiting.set_away(user.username, status == "away")
        await store.audit(user.username, "presence", target=f"agent:{user.username}",
                          details={"status": status})
        shown = await waiting.presence_json()
        await notifier.to_agents("presence", shown)
        return {"presence": shown}

    sio.on("connect", handler=_connect, namespace=AGENT_NAMESPACE)
    sio.on("disconnect", handler=_disconnect, namespace=AGENT_NAMESPACE)
    sio.on("presence", namespace=AGENT_NAMESPACE, handler=guard(
        sio, AGENT_NAMESPACE, "presence", _presence, store=store, settings=settings,
        event_users=notifier.event_users, instruments=conversations.instruments))

    @app.get("/api/presence", name="presence")
    async def _get_presence(request: Request) -> HTTPResponse:
        if waiting is None:
            raise BadRequest("presence is not kept here")
        return json({"presence": await waiting.presence_json()})

    @app.post("/api/presence", name="set_presence")
    async def _post_presence(request: Request) -> HTTPResponse:
        return json(await set_presence(agent(request), json_body(request)))

    for action in ACTIONS:
        def bind_event(action: AgentAction) -> Callable[[User, str, Any],
                                                        Coroutine[Any, Any, dict[str, Any]]]:
            async def handler(user: User, sid: str, data: Any) -> dict[str, Any]:
                if not isinstance(data, Mapping):
                    raise BadRequest(f"{action.event} takes an object with conversation_id")
                cid = data.get("conversation_id")
                if not isinstance(cid, str) or not cid:
                    raise BadRequest("'conversation_id' must be a non-empty string")
                return await run(user, action, cid, data)
            return handler

        sio.on(action.event, namespace=AGENT_NAMESPACE, handler=guard(
            sio, AGENT_NAMESPACE, action.event, bind_event(action), store=store,
            settings=settings, event_users=notifier.event_users,
            instruments=conversations.instruments))


def _domain_json(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Rasa's domain reduced to what an agent picks from: intents, responses, actions, slots."""
    intents = []
    for item in raw.get("intents") or ():
        name = item if isinstance(item, str) else next(iter(item), None) if isinstance(
            item, Mapping) else None
        if isinstance(name, str):
            intents.append(name)
    responses = {name: [v for v in variants if isinstance(v, Mapping)]
                 for name, variants in (raw.get("responses") or {}).items()
                 if isinstance(variants, list)}
    actions = sorted({a for a in raw.get("actions") or () if isinstance(a, str)}
                     | set(responses) | {f for f in raw.get("forms") or {}})
    slots = sorted(s for s in raw.get("slots") or {} if isinstance(s, str)
                   and s != "requested_slot")  # the slots an agent may whisper (docs/console.md)
    return {"intents": sorted(intents), "responses": dict(sorted(responses.items())),
            "actions": actions, "slots": slots}
