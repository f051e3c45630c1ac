"""The customers' side of the Socket.IO server: Rasa's socketio channel protocol, exactly
(payloads in :mod:`handoff.conversation.customer_protocol`), on the default namespace.

* ``session_request`` joins the socket to the room of its conversation (the session id: sent
  again on reconnect, it resumes the conversation) and answers ``session_confirm``;
* ``user_uttered`` is validated, stored and run through the router by
  :class:`~handoff.conversation.shell.Conversations`;
* ``end_conversation`` and ``survey_answer`` (gateway-only events that Rasa widgets never
  send) close the conversation and record the effort score (answered ``survey_thanks``);
* ``handoff_choice`` (gateway-only) answers a waiting customer's ``handoff_offer``
  (:class:`~handoff.conversation.waiting.Waiting`).

A socket speaks only for the session it confirmed. A refused request is answered with one
``error`` event ``{code, message}``; what the conversation sends comes through the notifier.
"""

from __future__ import annotations

import uuid
from typing import Any

import socketio

from handoff.conversation import router as r
from handoff.conversation.customer_protocol import (
    ProtocolError,
    parse_end_conversation,
    parse_session_request,
    parse_survey_answer,
    parse_user_uttered,
)
from handoff.conversation.shell import Conversations
from handoff.conversation.waiting import Waiting
from handoff.errors import HandoffError
from handoff.web.http import error_body
from handoff.web.notifier import SocketNotifier

__all__ = ["register_customer_protocol"]


def register_customer_protocol(sio: socketio.AsyncServer, notifier: SocketNotifier, *,
                               conversations: Conversations, max_chars: int,
                               waiting: Waiting | None = None) -> None:
    """Add the customers' event handlers to ``sio`` (see the module docstring)."""

    async def refuse(sid: str, exc: Exception) -> None:
        """A customer's request refused: one ``error`` event ``{code, message}``."""
        if isinstance(exc, ProtocolError):
            await notifier.to_socket(sid, "error", exc.to_dict())
            return
        body, _ = error_body(exc)
        await notifier.to_socket(sid, "error", {"code": body["error"],
                                                "message": body["message"]})

    async def own_session(sid: str, session_id: str) -> str:
        """The socket may speak only for the session it confirmed."""
        session = await sio.get_session(sid)
        if session.get("conversation_id") is None:
            raise ProtocolError("no_session", "send session_request first")
        if session["conversation_id"] != session_id:
            raise ProtocolError("session_mismatch",
                                "session_id is not the session this socket confirmed")
        return session_id

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.save_session(sid, {"conversation_id": None})

    async def session_request(sid: str, data: Any = None) -> None:
        try:
            requested = parse_session_request(data)
        except ProtocolError as exc:
            await refuse(sid, exc)
            return
        conversation_id = requested or uuid.uuid4().hex
        session = await sio.get_session(sid)
        await conversations.open(conversation_id)
        await notifier.join_conversation(sid, conversation_id, session.get("conversation_id"))
        await sio.save_session(sid, {"conversation_id": conversation_id})
        await notifier.to_socket(sid, "session_confirm", conversation_id)

    async def user_uttered(sid: str, data: Any = None) -> None:
        try:
            uttered = parse_user_uttered(data, max_chars=max_chars)
            await own_session(sid, uttered.session_id)
        except ProtocolError as exc:
            await refuse(sid, exc)
            return
        stored = await conversations.customer_message(
            uttered.session_id, uttered.text, uttered.metadata)
        if stored is None:
            await refuse(sid, ProtocolError("conversation_closed", (
                "this conversation has ended; send session_request without a session_id to "
                "start a new one")))

    async def end_conversation(sid: str, data: Any = None) -> None:
        try:
            session_id = await own_session(sid, parse_end_conversation(data))
            await conversations.apply(session_id, r.Close(agent_id=None))
        except (ProtocolError, HandoffError, r.RouterError) as exc:
            await refuse(sid, exc)

    async def survey_answer(sid: str, data: Any = None) -> None:
        try:
            session_id, score = parse_survey_answer(data)
            await own_session(sid, session_id)
            await conversations.effort_score(session_id, score)
        except (ProtocolError, HandoffError) as exc:
            await refuse(sid, exc)
            return
        await notifier.to_socket(sid, "survey_thanks", {})

    async def handoff_choice(sid: str, data: Any = None) -> None:
        try:
            if waiting is None:
                raise ProtocolError("bad_payload", "no choices are offered here")
            if not isinstance(data, dict) or not isinstance(data.get("session_id"), str):
                raise ProtocolError("bad_payload",
                                    "expected {session_id, choice, contact?}")
            session_id = await own_session(sid, data["session_id"])
            await waiting.choose(session_id, data.get("choice"), data.get("contact"))
        except (ProtocolError, HandoffError, r.RouterError) as exc:
            await refuse(sid, exc)

    sio.on("connect", handler=connect)
    sio.on("handoff_choice", handler=handoff_choice)
    sio.on("session_request", handler=session_request)
    sio.on("user_uttered", handler=user_uttered)
    sio.on("end_conversation", handler=end_conversation)
    sio.on("survey_answer", handler=survey_answer)
