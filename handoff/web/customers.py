"""The customers' side of the Socket.IO server: Rasa's socketio channel protocol, exactly
(payloads in :mod:`handoff.conversation.customer_protocol`), on the default namespace.

* ``session_request`` joins the socket to the room of its conversation and answers
  ``session_confirm``. A new session gets a random secret (in the acknowledgement of the
  request; only its SHA-256 is stored, at the first message). A known session id is joined
  only with its secret (``HANDOFF_CUSTOMER_SESSIONS=secure``, the default) or by the same
  socket that confirmed it; otherwise a new session starts. ``legacy`` joins by id alone
  (docs/security.md). Nothing is stored until the customer's first message;
* ``user_uttered`` is validated, stored and run through the router by
  :class:`~handoff.conversation.shell.Conversations`;
* ``end_conversation`` and ``survey_answer`` (gateway-only events that Rasa widgets never
  send) close the conversation and record the effort score (answered ``survey_thanks``).

A socket speaks only for the session it confirmed. A refused request is answered with one
``error`` event ``{code, message}``; what the conversation sends comes through the notifier.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
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
from handoff.errors import HandoffError
from handoff.web.http import error_body
from handoff.web.notifier import SocketNotifier

__all__ = ["register_customer_protocol"]


def secret_hash(secret: str) -> str:
    """What the store keeps of a session's secret (the secret is 256 random bits: no salt
    or stretching is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def register_customer_protocol(sio: socketio.AsyncServer, notifier: SocketNotifier, *,
                               conversations: Conversations, max_chars: int,
                               sessions: str = "SECURE") -> None:
    """Add the customers' event handlers to ``sio`` (see the module docstring)."""
    store = conversations.store
    secure = sessions.upper() == "SECURE"
    # session ids confirmed to a socket whose customer has not spoken yet: session id → sid
    unspoken: dict[str, str] = {}

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

    async def disconnect(sid: str) -> None:
        session = await sio.get_session(sid)
        cid = session.get("conversation_id")
        if cid is not None and unspoken.get(cid) == sid:
            del unspoken[cid]

    async def known(session_id: str) -> tuple[bool, str | None]:
        """Whether anyone spoke in the session, and its secret's hash (None for a conversation
        from before secrets)."""
        stored = await store.customer_session_hash(session_id)
        if stored is not None:
            return True, stored
        try:
            await store.get_conversation(session_id)
        except HandoffError:
            return False, None
        return True, None

    async def session_request(sid: str, data: Any = None) -> dict[str, Any] | None:
        try:
            requested, presented = parse_session_request(data)
        except ProtocolError as exc:
            await refuse(sid, exc)
            return None
        session = await sio.get_session(sid)
        previous = session.get("conversation_id")
        new_secret: str | None = None
        if requested is not None and requested == previous:
            conversation_id = requested  # the same socket asks again: it is its session
        else:
            conversation_id, joined = requested or "", False
            if requested is not None:
                spoken, stored = await known(requested)
                if spoken:
                    joined = not secure or (
                        stored is not None and presented is not None
                        and hmac.compare_digest(secret_hash(presented), stored))
                else:
                    joined = requested not in unspoken  # a client's own new id, unclaimed
            if not joined or not conversation_id:
                conversation_id = uuid.uuid4().hex
            if previous is not None and unspoken.get(previous) == sid:
                del unspoken[previous]
            if joined and (await known(conversation_id))[0]:
                session = {"conversation_id": conversation_id, "secret_hash": None}
            else:
                new_secret = secrets.token_urlsafe(32)
                unspoken[conversation_id] = sid
                session = {"conversation_id": conversation_id,
                           "secret_hash": secret_hash(new_secret)}
            await notifier.join_conversation(sid, conversation_id, previous)
            await sio.save_session(sid, session)
        await notifier.to_socket(sid, "session_confirm", conversation_id)
        return {"session_id": conversation_id, "session_secret": new_secret}

    async def claim(sid: str, session_id: str) -> None:
        """At the customer's first message in a new session: record its secret's hash."""
        session = await sio.get_session(sid)
        hashed = session.get("secret_hash")
        if hashed is None:
            return
        if not await store.claim_customer_session(session_id, hashed):
            raise ProtocolError("session_taken", "this session belongs to another customer; "
                                "send session_request without a session_id to start a new one")
        await sio.save_session(sid, {"conversation_id": session_id, "secret_hash": None})
        if unspoken.get(session_id) == sid:
            del unspoken[session_id]

    async def user_uttered(sid: str, data: Any = None) -> None:
        try:
            uttered = parse_user_uttered(data, max_chars=max_chars)
            await own_session(sid, uttered.session_id)
            await claim(sid, uttered.session_id)
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

    sio.on("connect", handler=connect)
    sio.on("disconnect", handler=disconnect)
    sio.on("session_request", handler=session_request)
    sio.on("user_uttered", handler=user_uttered)
    sio.on("end_conversation", handler=end_conversation)
    sio.on("survey_answer", handler=survey_answer)
