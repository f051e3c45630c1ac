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
  send) close the conversation and record the effort score (answered ``survey_thanks``);
* ``handoff_choice`` (gateway-only) answers a waiting customer's ``handoff_offer``
  (:class:`~handoff.conversation.waiting.Waiting`).

A socket speaks only for the session it confirmed. A refused request is answered with one
``error`` event ``{code, message}`` (what Rasa's widgets can see) and, when the client asked for
an acknowledgement, with ``{error: code, message}`` as its value, so that a client knows which
message was refused and can send it again (``service_unavailable``, ``rate_limited``); both
carry the refused ``user_uttered``'s own ``message_id`` when it had one. A message sent again
under its ``message_id`` after it was stored (its acknowledgement was lost) is acknowledged
and not stored again (docs/widget.md). What the conversation sends comes through the
notifier.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from handoff.conversation import router as r
from handoff.conversation.customer_protocol import (
    ProtocolError,
    message_id_of,
    parse_end_conversation,
    parse_session_request,
    parse_survey_answer,
    parse_user_uttered,
)
from handoff.conversation.instruments import Instruments
from handoff.conversation.shell import Conversations
from handoff.conversation.waiting import Waiting
from handoff.errors import HandoffError
from handoff.web.guard import Buckets, GuardedServer, Limits, QuietLog, client_ip
from handoff.web.http import error_body
from handoff.web.notifier import SocketNotifier

__all__ = ["register_customer_protocol"]

log = logging.getLogger(__name__)
Handler = Callable[[str, Any], Awaitable[Any]]


def secret_hash(secret: str) -> str:
    """What the store keeps of a session's secret (the secret is 256 random bits: no salt
    or stretching is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def register_customer_protocol(sio: socketio.AsyncServer, notifier: SocketNotifier, *,
                               conversations: Conversations, max_chars: int, limits: Limits,
                               waiting: Waiting | None = None, sessions: str = "SECURE",
                               instruments: Instruments | None = None) -> None:
    """Add the customers' event handlers to ``sio`` (see the module docstring)."""
    store = conversations.store
    secure = sessions.upper() == "SECURE"
    refusals = (instruments or Instruments()).customer_refusals
    quiet = QuietLog(log)
    # session ids confirmed to a socket whose customer has not spoken yet: session id → sid
    unspoken: dict[str, str] = {}
    ips: dict[str, str] = {}  # sid → client IP
    strikes: dict[str, int] = {}  # sid → events refused in a row for its rate
    per_socket = Buckets(limits.customer_message_rate, limits.customer_message_burst,
                         limit=1_000_000)
    per_ip = Buckets(limits.ip_message_rate, limits.ip_message_burst)
    connects = Buckets(limits.ip_connect_rate, limits.ip_connect_burst)

    async def refuse(sid: str, exc: Exception, message_id: str | None = None
                     ) -> dict[str, str]:
        """A customer's request refused: one ``error`` event ``{code, message}`` (with the
        refused message's ``message_id`` when it had one), counted
        (``handoff_customer_refusals``) and logged at most once a second; the
        acknowledgement's value ``{error, message}`` (and ``message_id``)."""
        if isinstance(exc, ProtocolError):
            answer = exc.to_dict()
        else:
            body, _ = error_body(exc)
            answer = {"code": body["error"], "message": body["message"]}
        ack = {"error": answer["code"], "message": answer["message"]}
        if message_id is not None:
            answer["message_id"] = ack["message_id"] = message_id
        refusals.labels(answer["code"]).inc()
        quiet.warning("refused a customer event from %s (%s): %s", ips.get(sid, "?"),
                      answer["code"], answer["message"])
        if sid:
            await notifier.to_socket(sid, "error", answer)
        return ack

    async def refused_for_rate(sid: str, message_id: str | None) -> dict[str, str] | None:
        """The connection's and its IP's token buckets: None when the event may go on, else
        the refusal; a connection that goes on after ``customer_message_burst`` refusals in a
        row is disconnected."""
        if not per_socket.take(sid):
            why = (f"at most {limits.customer_message_rate:g} a second per connection (bursts "
                   f"of {limits.customer_message_burst})")
        elif not per_ip.take(ips.get(sid, "?")):
            why = (f"at most {limits.ip_message_rate:g} a second from your address, all its "
                   f"connections together (bursts of {limits.ip_message_burst})")
        else:
            strikes.pop(sid, None)
            return None
        strikes[sid] = strikes.get(sid, 0) + 1
        answer = await refuse(sid, ProtocolError("rate_limited",
                                                 f"too many messages: {why}; wait and send again"),
                              message_id)
        if strikes[sid] >= limits.customer_message_burst:
            quiet.warning("disconnected a flooding customer connection from %s",
                          ips.get(sid, "?"))
            await notifier.disconnect(sid)
        return answer

    def guarded(handler: Handler, *, counted: bool, echo: bool = False) -> Handler:
        """``handler`` behind the rate limits (``counted``); a refusal (a protocol, store or
        router error) is answered with its ``error`` event and acknowledgement, any other
        failure with ``internal_error``, each with one quiet log line instead of a
        traceback. With ``echo`` a refusal names the payload's own ``message_id``."""
        async def run(sid: str, data: Any = None) -> Any:
            message_id = message_id_of(data) if echo else None
            if counted and (refused := await refused_for_rate(sid, message_id)) is not None:
                return refused
            try:
                return await handler(sid, data)
            except (ProtocolError, HandoffError, r.RouterError) as exc:
                return await refuse(sid, exc, message_id)
            except Exception as exc:  # noqa: BLE001 - answered, counted and logged once
                quiet.warning("a customer event failed: %s: %.200s", type(exc).__name__, exc)
                return await refuse(sid, ProtocolError(
                    "internal_error", "the gateway could not handle this event"), message_id)
        return run

    async def binary(sid: str, namespace: str) -> None:
        if namespace != "/" or not sid:
            refusals.labels("binary_refused").inc()
            return
        await refuse(sid, ProtocolError("binary_refused", (
            "binary attachments are not accepted: send text (and links) only")))

    async def malformed(sid: str, exc: Exception) -> None:
        quiet.warning("a Socket.IO frame from %s could not be handled: %s: %.200s",
                      ips.get(sid, "?"), type(exc).__name__, exc)
        await refuse(sid, ProtocolError("malformed_frame", "this frame could not be decoded; "
                                        "nothing was changed"))

    if isinstance(sio, GuardedServer):
        sio.on_binary = binary
        sio.on_malformed = malformed

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
        ip = client_ip(environ)
        if not connects.take(ip):
            refusals.labels("connect_rate_limited").inc()
            quiet.warning("refused a customer connection from %s: too many", ip)
            raise socketio.exceptions.ConnectionRefusedError({
                "code": "rate_limited", "message": "too many new connections from your "
                f"address: at most {limits.ip_connect_rate:g} a second; try again shortly"})
        ips[sid] = ip
        # python-engineio keeps the handshake's environ for the connection's life, and its
        # body reader there is an instance of a class made for each request (about 3 KB per
        # idle socket); the handshake's body was read long before (docs/performance.md)
        environ.pop("wsgi.input", None)
        await sio.save_session(sid, {"conversation_id": None})

    async def disconnect(sid: str, reason: Any = None) -> None:
        ips.pop(sid, None)
        strikes.pop(sid, None)
        per_socket.forget(sid)
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
        requested, presented = parse_session_request(data)
        session = await sio.get_session(sid)
        previous = session.get("conversation_id")
        new_secret: str | None = None
        if requested is not None and requested == previous:
            conversation_id = requested  # the same socket asks again: it is its session
        else:
            spoken = joined = False
            if requested is not None:
                spoken, stored = await known(requested)
                if spoken:
                    joined = not secure or (
                        stored is not None and presented is not None
                        and hmac.compare_digest(secret_hash(presented), stored))
                else:
                    joined = requested not in unspoken  # a client's own new id, unclaimed
            conversation_id = requested if joined and requested else uuid.uuid4().hex
            if previous is not None and unspoken.get(previous) == sid:
                del unspoken[previous]
            if joined and spoken:
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

    async def user_uttered(sid: str, data: Any = None) -> dict[str, str] | None:
        uttered = parse_user_uttered(data, max_chars=max_chars)
        await own_session(sid, uttered.session_id)
        await claim(sid, uttered.session_id)
        stored = await conversations.customer_message(
            uttered.session_id, uttered.text, uttered.metadata, uttered.message_id)
        if stored is None:
            return await refuse(sid, ProtocolError("conversation_closed", (
                "this conversation has ended; send session_request without a session_id to "
                "start a new one")), uttered.message_id)
        return None

    async def end_conversation(sid: str, data: Any = None) -> None:
        session_id = await own_session(sid, parse_end_conversation(data))
        await conversations.apply(session_id, r.Close(agent_id=None))

    async def survey_answer(sid: str, data: Any = None) -> None:
        session_id, score = parse_survey_answer(data)
        await own_session(sid, session_id)
        await conversations.effort_score(session_id, score)
        await notifier.to_socket(sid, "survey_thanks", {})

    async def handoff_choice(sid: str, data: Any = None) -> None:
        if waiting is None:
            raise ProtocolError("bad_payload", "no choices are offered here")
        if not isinstance(data, dict) or not isinstance(data.get("session_id"), str):
            raise ProtocolError("bad_payload", "expected {session_id, choice, contact?}")
        session_id = await own_session(sid, data["session_id"])
        await waiting.choose(session_id, data.get("choice"), data.get("contact"))

    sio.on("connect", handler=connect)
    sio.on("disconnect", handler=disconnect)
    sio.on("handoff_choice", handler=guarded(handoff_choice, counted=True))
    sio.on("session_request", handler=guarded(session_request, counted=False))
    sio.on("user_uttered", handler=guarded(user_uttered, counted=True, echo=True))
    sio.on("end_conversation", handler=guarded(end_conversation, counted=True))
    sio.on("survey_answer", handler=guarded(survey_answer, counted=True))
