"""The gateway's web app: ``create_app(settings, store, rasa) -> Sanic`` (no module-global app).

Two audiences, one Socket.IO server (``python-socketio``, ``async_mode="sanic"``, path
``/socket.io``):

* **Customers**, on the default namespace, speak Rasa's socketio channel protocol exactly
  (see :mod:`handoff.customer_protocol`). ``session_request`` joins the socket to the room of
  its conversation (the session id: sent again on reconnect, it resumes the conversation);
  ``user_uttered`` is validated, stored, and run through the router by
  :class:`~handoff.conversations.Conversations`.
* **Agents**, on ``/agent``, connect with ``auth={"token": <login token>}`` (refused otherwise)
  and receive live pushes: ``conversation`` (a new one), ``message`` (every stored message),
  ``status`` (mode / owner / queue changes), ``pending_reply`` and ``suggestion`` (to the agents
  concerned), ``rasa_error``.

Every agent action is a JSON HTTP endpoint with ``Authorization: Bearer <token>`` (role agent or
higher); errors answer ``{"error", "message"}`` with the status of the exception
(:mod:`handoff.errors`, the router's errors):

==========================================================  ===================================
``POST /api/login`` {username, password}                    {token, expires_at, role}
``GET  /api/health``                                        {status}
``GET  /api/conversations`` ?mode=&queued=                  {conversations: [...]}
``GET  /api/conversations/{id}``                            {conversation, router, messages}
``POST /api/conversations/{id}/takeover``                   {conversation: router state}
``POST /api/conversations/{id}/handback``                   same
``POST /api/conversations/{id}/review`` {on: bool}          same
``POST /api/conversations/{id}/close``                      same
``POST /api/conversations/{id}/messages`` {text}            same
``POST /api/conversations/{id}/replies/{reply_id}/decision``
  {type: approve|edit|write|replace|relabel, text?, action?, intent?}   same
==========================================================  ===================================
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import socketio
from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff import router as r
from handoff.auth import (
    authenticate, ensure_first_admin, issue_token, require_role, user_from_token, verify_token,
)
from handoff.conversations import Conversations, state_summary
from handoff.customer_protocol import ProtocolError, parse_session_request, parse_user_uttered
from handoff.errors import BadRequest, HandoffError, Unauthorized
from handoff.pages import register_pages
from handoff.rasa_client import RasaClient
from handoff.settings import Settings
from handoff.store import Store, User, to_json

__all__ = ["SocketNotifier", "create_app"]

log = logging.getLogger(__name__)
AGENT_NAMESPACE = "/agent"
AGENTS_ROOM = "agents"
MAX_REQUEST_BYTES = 1_000_000


class SocketNotifier:
    """The :class:`~handoff.conversations.Notifier` over the Socket.IO server."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio

    async def to_customer(self, conversation_id: str, event: str, payload: Any) -> None:
        await self.sio.emit(event, payload, room=conversation_id)

    async def to_agents(
        self, event: str, payload: Any, agent_ids: Sequence[str] | None = None
    ) -> None:
        if agent_ids is None:
            await self.sio.emit(event, payload, room=AGENTS_ROOM, namespace=AGENT_NAMESPACE)
            return
        for agent_id in agent_ids:
            await self.sio.emit(event, payload, room=f"agent:{agent_id}",
                                namespace=AGENT_NAMESPACE)


def _error_code(exc: Exception) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def _body(request: Request) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        data = request.json
    except Exception:
        raise BadRequest("the body must be JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _text(body: dict[str, Any], key: str, max_chars: int) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key!r} must be a non-empty string")
    if len(value) > max_chars:
        raise BadRequest(f"{key!r} may have at most {max_chars} characters")
    return value


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, True)
    if not isinstance(value, bool):
        raise BadRequest(f"{key!r} must be true or false")
    return value


def _decision(body: dict[str, Any], agent: str, reply_id: int, max_chars: int) -> r.Decision:
    kind = body.get("type")
    if kind == "approve":
        return r.Approve(agent_id=agent, reply_id=reply_id)
    if kind == "edit":
        return r.Edit(agent_id=agent, reply_id=reply_id, text=_text(body, "text", max_chars))
    if kind == "write":
        return r.Write(agent_id=agent, reply_id=reply_id, text=_text(body, "text", max_chars))
    if kind == "replace":
        return r.ReplaceAction(agent_id=agent, reply_id=reply_id,
                               action_name=_text(body, "action", 200))
    if kind == "relabel":
        return r.Relabel(agent_id=agent, reply_id=reply_id, intent=_text(body, "intent", 200))
    raise BadRequest("'type' must be approve, edit, write, replace or relabel")


def create_app(settings: Settings, store: Store, rasa: RasaClient) -> Sanic[Any, Any]:
    """The gateway app over the given store and Rasa client (see the module docstring).
    On start it migrates the store and creates the first admin (password printed once)."""
    app = Sanic(f"handoff-{uuid.uuid4().hex[:8]}")
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.REQUEST_MAX_SIZE = MAX_REQUEST_BYTES
    # async_handlers=False: one client's events are handled one after another, in the order
    # sent (handlers are short: Rasa calls run as background tasks in Conversations).
    sio = socketio.AsyncServer(async_mode="sanic", cors_allowed_origins=settings.cors_allowed,
                               async_handlers=False)
    sio.attach(app, socketio_path="socket.io")
    conversations = Conversations(store, rasa, SocketNotifier(sio))
    app.ctx.sio = sio
    app.ctx.conversations = conversations
    app.ctx.store = store

    @app.before_server_start
    async def _start(_app: Sanic[Any, Any]) -> None:
        await store.migrate()
        if (stuck := await conversations.recover()):
            log.warning("%d conversation(s) waited for Rasa across a restart: queued", stuck)
        password = await ensure_first_admin(store)
        if password is not None:
            print(f"Created the first user: admin / {password}  (shown only this once; "
                  "change it with python -m handoff.auth)", flush=True)

    @app.before_server_stop
    async def _stop(_app: Sanic[Any, Any]) -> None:
        await conversations.close()

    # ------------------------------------------------------------------ errors

    @app.exception(HandoffError)
    async def _handoff_error(request: Request, exc: HandoffError) -> HTTPResponse:
        return json(exc.to_dict(), status=exc.status)

    @app.exception(r.RouterError)
    async def _router_error(request: Request, exc: r.RouterError) -> HTTPResponse:
        return json({"error": _error_code(exc), "message": str(exc)}, status=exc.status)

    # ------------------------------------------------------------------ customers

    async def _customer_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.save_session(sid, {"conversation_id": None})

    sio.on("connect", handler=_customer_connect)

    async def _session_request(sid: str, data: Any = None) -> None:
        try:
            requested = parse_session_request(data)
        except ProtocolError as exc:
            await sio.emit("error", exc.to_dict(), to=sid)
            return
        conversation_id = requested or uuid.uuid4().hex
        session = await sio.get_session(sid)
        previous = session.get("conversation_id")
        if previous and previous != conversation_id:
            await sio.leave_room(sid, previous)
        await conversations.open(conversation_id)
        await sio.enter_room(sid, conversation_id)
        await sio.save_session(sid, {"conversation_id": conversation_id})
        await sio.emit("session_confirm", conversation_id, to=sid)

    sio.on("session_request", handler=_session_request)

    async def _user_uttered(sid: str, data: Any = None) -> None:
        try:
            uttered = parse_user_uttered(data, max_chars=settings.max_message_chars)
            session = await sio.get_session(sid)
            if session.get("conversation_id") is None:
                raise ProtocolError("no_session", "send session_request first")
            if session["conversation_id"] != uttered.session_id:
                raise ProtocolError("session_mismatch",
                                    "session_id is not the session this socket confirmed")
        except ProtocolError as exc:
            await sio.emit("error", exc.to_dict(), to=sid)
            return
        stored = await conversations.customer_message(
            uttered.session_id, uttered.text, uttered.metadata)
        if stored is None:
            await sio.emit("error", {"code": "conversation_closed", "message": (
                "this conversation has ended; send session_request without a session_id to "
                "start a new one")}, to=sid)

    sio.on("user_uttered", handler=_user_uttered)

    # ------------------------------------------------------------------ agents: Socket.IO

    async def _agent_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError("a login token is required")
        try:
            user = await user_from_token(store, token, secret=settings.jwt_secret)
            require_role(user, "agent")
        except HandoffError as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.message) from None
        await sio.save_session(sid, {"username": user.username, "role": user.role},
                               namespace=AGENT_NAMESPACE)
        await sio.enter_room(sid, AGENTS_ROOM, namespace=AGENT_NAMESPACE)
        await sio.enter_room(sid, f"agent:{user.username}", namespace=AGENT_NAMESPACE)

    sio.on("connect", handler=_agent_connect, namespace=AGENT_NAMESPACE)

    # ------------------------------------------------------------------ agents: HTTP

    async def agent(request: Request) -> User:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send Authorization: Bearer <token> (POST /api/login)")
        user = await user_from_token(store, token.strip(), secret=settings.jwt_secret)
        require_role(user, "agent")
        return user

    @app.get("/api/health", name="health")
    async def _health(request: Request) -> HTTPResponse:
        return json({"status": "ok"})

    @app.post("/api/login", name="login")
    async def _login(request: Request) -> HTTPResponse:
        body = _body(request)
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise BadRequest("send {username, password}")
        user = await authenticate(store, username, password)
        token = issue_token(user.username, user.role, secret=settings.jwt_secret,
                            ttl=settings.token_lifetime)
        claims = verify_token(token, secret=settings.jwt_secret)
        await store.audit(user.username, "login")
        return json({"token": token, "expires_at": claims.expires_at.isoformat(),
                     "role": user.role})

    @app.get("/api/conversations", name="conversations")
    async def _list(request: Request) -> HTTPResponse:
        await agent(request)
        mode = request.args.get("mode")
        queued = request.args.get("queued")
        found = await store.list_conversations(
            mode=mode if mode else None,
            queued=None if queued is None else queued.lower() in ("1", "true", "yes"))
        return json({"conversations": [_conversation(c) for c in found]})

    @app.get("/api/conversations/<conversation_id:str>", name="conversation")
    async def _get(request: Request, conversation_id: str) -> HTTPResponse:
        await agent(request)
        conv = await store.get_conversation(conversation_id)
        state = await conversations.state(conversation_id)
        messages = await store.list_messages(conversation_id)
        return json({"conversation": _conversation(conv), "router": state_summary(state),
                     "messages": [to_json(m) for m in messages]})

    def action(path: str, name: str,
               make: Callable[[User, dict[str, Any], dict[str, Any]], r.Event]) -> None:
        async def handler(request: Request, conversation_id: str, **params: Any) -> HTTPResponse:
            user = await agent(request)
            event = make(user, _body(request), params)
            await store.get_conversation(conversation_id)  # 404 before anything else
            state = await conversations.apply(conversation_id, event)
            await store.audit(user.username, name, target=f"conversation:{conversation_id}")
            return json({"conversation": state_summary(state)})

        app.add_route(handler, f"/api/conversations/<conversation_id:str>/{path}",
                      methods=["POST"], name=name)

    max_chars = settings.max_message_chars
    action("takeover", "takeover", lambda u, b, p: r.TakeOver(agent_id=u.username))
    action("handback", "handback", lambda u, b, p: r.HandBack(agent_id=u.username))
    action("review", "review",
           lambda u, b, p: r.SetReview(agent_id=u.username, on=_flag(b, "on")))
    action("close", "close", lambda u, b, p: r.Close(agent_id=u.username))
    action("watch", "watch",
           lambda u, b, p: r.Watch(agent_id=u.username, on=_flag(b, "on")))
    action("messages", "agent_message", lambda u, b, p: r.AgentMessage(
        agent_id=u.username, text=_text(b, "text", max_chars)))
    action("replies/<reply_id:int>/decision", "decision",
           lambda u, b, p: _decision(b, u.username, int(p["reply_id"]), max_chars))

    register_pages(app, settings)
    return app


def _conversation(conv: Any) -> dict[str, Any]:
    data = to_json(conv)
    data.pop("state", None)
    return data

