"""The gateway's web app: ``create_app(settings, store, rasa) -> Sanic`` (no module-global app).

Two audiences, one Socket.IO server (``python-socketio``, ``async_mode="sanic"``, path
``/socket.io``):

* **Customers**, on the default namespace, speak Rasa's socketio channel protocol exactly
  (see :mod:`handoff.conversation.customer_protocol`). ``session_request`` joins the socket to the room of
  its conversation (the session id: sent again on reconnect, it resumes the conversation);
  ``user_uttered`` is validated, stored, and run through the router by
  :class:`~handoff.conversation.shell.Conversations`.
* **Agents** use the JSON API and the ``/agent`` namespace of :mod:`handoff.web.agents` (every
  action both as an HTTP endpoint and as a Socket.IO event), listed in the OpenAPI document
  served at ``/api/openapi.json`` (:mod:`handoff.web.openapi`). Live pushes on ``/agent``:
  ``conversation`` (a new one), ``message`` (every stored message), ``status`` (mode / owner /
  queue changes), ``pending_reply`` and ``suggestion`` (to the agents concerned), ``note``,
  ``survey``, ``rasa_error``.

Errors answer ``{"error", "message"}`` with the status of the exception (:mod:`handoff.errors`,
the router's errors).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import socketio
from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff.conversation import router as r
from handoff.web.agents import (
    AGENT_NAMESPACE,
    AGENTS_ROOM,
    _body,
    error_body,
    register_agent_api,
)
from handoff.web.auth import (
    FIRST_ADMIN,
    authenticate,
    ensure_first_admin,
    issue_token,
    verify_token,
)
from handoff.conversation.shell import Conversations
from handoff.conversation.customer_protocol import (
    ProtocolError,
    parse_end_conversation,
    parse_session_request,
    parse_survey_answer,
    parse_user_uttered,
)
from handoff.learning.deploys import Deploys, register_models_api
from handoff.errors import BadRequest, HandoffError
from handoff.web.openapi import openapi_document
from handoff.web.pages import register_pages
from handoff.conversation.rasa_client import RasaClient
from handoff.settings import Settings
from handoff.store import Store
from handoff.web.trainers import register_trainer_api
from handoff.triage import TriageConfig
from handoff.conversation.triage_link import TriageLink

__all__ = ["SocketNotifier", "create_app"]

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 1_000_000


class SocketNotifier:
    """The :class:`~handoff.conversation.shell.Notifier` over the Socket.IO server."""

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
    triage = TriageLink(TriageConfig.from_settings(settings)) if (
        settings.triage_enabled) else None
    conversations = Conversations(store, rasa, SocketNotifier(sio),
                                  review_timeout=settings.review_timeout, triage=triage)
    deploys = Deploys(settings, store, rasa, sio, triage)
    app.ctx.sio = sio
    app.ctx.conversations = conversations
    app.ctx.deploys = deploys
    app.ctx.store = store

    @app.before_server_start
    async def _start(_app: Sanic[Any, Any]) -> None:
        await store.migrate()
        if triage is not None:
            await triage.start()  # in the background: customers are served meanwhile
        await deploys.start()  # before any turn: the supervisor may have switched Rasa
        if (stuck := await conversations.recover()):
            log.warning("%d conversation(s) waited for Rasa across a restart: queued", stuck)
        password = await ensure_first_admin(store)
        if password is not None:
            print(f"Created the first user: {FIRST_ADMIN} / {password}  (shown only this "
                  f"once; change it with python -m handoff.web.auth set-password --username "
                  f"{FIRST_ADMIN})", flush=True)

    @app.before_server_stop
    async def _stop(_app: Sanic[Any, Any]) -> None:
        await deploys.close()
        await conversations.close()
        if triage is not None:
            await triage.close()

    # ------------------------------------------------------------------ errors

    @app.exception(HandoffError, r.RouterError)
    async def _error(request: Request, exc: Exception) -> HTTPResponse:
        body, status = error_body(exc)
        return json(body, status=status)

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

    async def _own_session(sid: str, session_id: str) -> str:
        """The socket may speak only for the session it confirmed."""
        session = await sio.get_session(sid)
        if session.get("conversation_id") is None:
            raise ProtocolError("no_session", "send session_request first")
        if session["conversation_id"] != session_id:
            raise ProtocolError("session_mismatch",
                                "session_id is not the session this socket confirmed")
        return session_id

    async def _user_uttered(sid: str, data: Any = None) -> None:
        try:
            uttered = parse_user_uttered(data, max_chars=settings.max_message_chars)
            await _own_session(sid, uttered.session_id)
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

    async def _refuse(sid: str, exc: Exception) -> None:
        """A customer's request refused: one ``error`` event ``{code, message}``."""
        if isinstance(exc, ProtocolError):
            await sio.emit("error", exc.to_dict(), to=sid)
            return
        body, _ = error_body(exc)
        await sio.emit("error", {"code": body["error"], "message": body["message"]}, to=sid)

    async def _end_conversation(sid: str, data: Any = None) -> None:
        try:
            session_id = await _own_session(sid, parse_end_conversation(data))
            await conversations.apply(session_id, r.Close(agent_id=None))
        except (ProtocolError, HandoffError, r.RouterError) as exc:
            await _refuse(sid, exc)

    sio.on("end_conversation", handler=_end_conversation)

    async def _survey_answer(sid: str, data: Any = None) -> None:
        try:
            session_id, score = parse_survey_answer(data)
            await _own_session(sid, session_id)
            await conversations.effort_score(session_id, score)
        except (ProtocolError, HandoffError) as exc:
            await _refuse(sid, exc)
            return
        await sio.emit("survey_thanks", {}, to=sid)

    sio.on("survey_answer", handler=_survey_answer)

    # ------------------------------------------------------------------ API

    @app.get("/api/health", name="health")
    async def _health(request: Request) -> HTTPResponse:
        return json({"status": "ok", "triage": "off" if triage is None else (
            "ready" if triage.ready else "loading")})

    @app.get("/api/openapi.json", name="openapi")
    async def _openapi(request: Request) -> HTTPResponse:
        return json(openapi_document())

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

    register_agent_api(app, sio, settings=settings, store=store, rasa=rasa,
                       conversations=conversations)
    register_trainer_api(app, settings=settings, store=store, triage=triage)
    register_models_api(app, settings=settings, store=store, deploys=deploys)
    register_pages(app, settings)
    return app
