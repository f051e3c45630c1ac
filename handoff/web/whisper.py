"""Whisper to the bot over HTTP and ``/agent`` (docs/api.md, "Whisper"): one handler, two doors.

``POST /api/conversations/{id}/whisper`` (route ``whisper``) and the ``/agent`` event
``whisper`` (the same body plus ``conversation_id``) take either

- ``{"slot": "order_id", "value": "100002"}``: set or correct a slot in Rasa's tracker, or
- ``{"action": "utter_ask_order_id"}``: run an action of the domain as the bot's next one
  (held as a pending reply first when the conversation is in review),

and answer ``{"whisper": {"slot", "value"} | {"action"}, "correction": {...}}``. Both need the
right ``whisper``; both are recorded as corrections (``slot_set`` / ``action_chosen``) in one
transaction with their audit entry (``whisper_slot`` with the slot's name, not its value, and
``whisper_action``); a slot whose record fails is set back in Rasa (503
``whisper_not_recorded``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import socketio
from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff.conversation.shell import Conversations
from handoff.conversation.whisper import Whisper
from handoff.errors import BadRequest
from handoff.settings import Settings
from handoff.store import Store, User, to_json
from handoff.web.http import json_body, text_field
from handoff.web.notifier import AGENT_NAMESPACE
from handoff.web.rights import current_user, guard

__all__ = ["register_whisper_api"]

MAX_NAME_CHARS = 200
MAX_VALUE_CHARS = 1000


def register_whisper_api(app: Sanic[Any, Any], sio: socketio.AsyncServer, *,
                         settings: Settings, store: Store,
                         conversations: Conversations) -> None:
    """Add the ``whisper`` route and ``/agent`` event (see the module docstring)."""
    whisper = Whisper(conversations)

    async def run(user: User, cid: str, body: Mapping[str, Any]) -> dict[str, Any]:
        await store.get_conversation(cid)  # 404 before anything else
        has_slot, has_action = "slot" in body, "action" in body
        if has_slot == has_action:
            raise BadRequest("send either {slot, value} or {action}")
        if has_slot:
            slot = text_field(body, "slot", MAX_NAME_CHARS)
            if "value" not in body:
                raise BadRequest("'value' is required with 'slot' (null clears the slot)")
            value = body["value"]
            if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
                raise BadRequest(f"'value' may have at most {MAX_VALUE_CHARS} characters")
            correction = await whisper.set_slot(cid, user.username, slot, value)
            done: dict[str, Any] = {"slot": slot, "value": value}
        else:
            action = text_field(body, "action", MAX_NAME_CHARS)
            correction = await whisper.choose_action(cid, user.username, action)
            done = {"action": action}
        return {"whisper": done, "correction": to_json(correction)}

    @app.post("/api/conversations/<conversation_id:str>/whisper", name="whisper")
    async def _whisper(request: Request, conversation_id: str) -> HTTPResponse:
        user = current_user(request)  # the rights middleware checked whisper
        return json(await run(user, conversation_id, json_body(request)))

    async def _event(user: User, sid: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise BadRequest("whisper takes an object with conversation_id")
        cid = data.get("conversation_id")
        if not isinstance(cid, str) or not cid:
            raise BadRequest("'conversation_id' must be a non-empty string")
        return await run(user, cid, {k: v for k, v in data.items() if k != "conversation_id"})

    sio.on("whisper", namespace=AGENT_NAMESPACE, handler=guard(
        sio, AGENT_NAMESPACE, "whisper", _event, store=store, settings=settings,
        instruments=conversations.instruments))
