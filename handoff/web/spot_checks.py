"""The QA queue of spot-checks (role agent or higher; docs/console.md, "Spot-checks"):

* ``GET /api/spot-checks`` — the sampled conversations (``status``: ``open`` by default,
  ``done`` or ``all``; paging ``after_id`` + ``limit``), each with its bot messages and marks
  counted;
* ``GET /api/spot-checks/{id}`` — one, with its conversation's messages and its marks;
* ``POST /api/spot-checks/{id}/marks`` — ``{message_id, verdict: right|edit|relabel, text?,
  intent?}``: a bot message marked right, or corrected (its text edited, or the customer's
  message it answered relabelled as another intent). A correction is stored with the mark and
  enters the trainers' corrections queue (``review_status`` ``new``) like an agent's decision;
  Rasa's tracker up to the turn is fetched first (503 and nothing stored if Rasa is down);
* ``POST /api/spot-checks/{id}/finish`` — closes it once every bot message is marked.
"""

from __future__ import annotations

from typing import Any, Final, cast

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from contracts.correction_record import EDITED, INTENT_NAME, RELABELLED
from handoff.conversation.rasa_client import RasaClient, RasaError
from handoff.errors import BadRequest, NotFound, ServiceUnavailable
from handoff.learning.spot_checks import answered, correction_of, turn_events
from handoff.settings import Settings
from handoff.store import Store, to_json
from handoff.store.spot_checks import SpotCheck, SpotCheckStatus, Verdict
from handoff.web.http import int_arg, json_body, text_field
from handoff.web.rights import DECISION_RIGHTS, current_user, require_right

__all__ = ["register_spot_check_api"]

MAX_LIMIT: Final = 500
_VERDICTS: Final = {"right": "right", "edit": EDITED, "relabel": RELABELLED}


def _summary(check: SpotCheck, bot_messages: int, marked: int) -> dict[str, Any]:
    return {**to_json(check), "bot_messages": bot_messages, "marked": marked}


def register_spot_check_api(app: Sanic[Any, Any], *, settings: Settings, store: Store,
                            rasa: RasaClient) -> None:
    """Add the spot-check endpoints to ``app`` (see the module docstring)."""

    async def reviewer(request: Request) -> str:
        return current_user(request).username  # the rights middleware checked approve

    @app.get("/api/spot-checks", name="spot_checks")
    async def _list(request: Request) -> HTTPResponse:
        await reviewer(request)
        status = request.args.get("status") or "open"
        if status not in ("open", "done", "all"):
            raise BadRequest("'status' must be open, done or all")
        found = await store.list_spot_checks(
            status=None if status == "all" else cast(SpotCheckStatus, status),
            after_id=int_arg(request, "after_id", None, 2**62),
            limit=int_arg(request, "limit", 100, MAX_LIMIT))
        return json({"spot_checks": [_summary(*row) for row in found]})

    @app.get("/api/spot-checks/<spot_check_id:int>", name="spot_check")
    async def _one(request: Request, spot_check_id: int) -> HTTPResponse:
        await reviewer(request)
        check, messages = await store.spot_check_messages(spot_check_id)
        if check.status == "skipped":
            raise NotFound(f"no spot-check {spot_check_id}", spot_check_id=spot_check_id)
        marks = await store.spot_check_marks_of(spot_check_id)
        return json({"spot_check": to_json(check),
                     "messages": [to_json(m) for m in messages],
                     "marks": [to_json(m) for m in marks]})

    @app.post("/api/spot-checks/<spot_check_id:int>/marks", name="spot_check_mark")
    async def _mark(request: Request, spot_check_id: int) -> HTTPResponse:
        who = await reviewer(request)
        body = json_body(request)
        message_id = body.get("message_id")
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            raise BadRequest("'message_id' must be an integer")
        verdict = _VERDICTS.get(str(body.get("verdict")))
        if verdict is None:
            raise BadRequest("'verdict' must be right, edit or relabel")
        if verdict != "right":  # correcting needs the right a review decision of its kind needs
            require_right(current_user(request), DECISION_RIGHTS[str(body["verdict"])])
        text = intent = None
        if verdict == EDITED:
            text = text_field(body, "text", settings.max_message_chars)
        elif verdict == RELABELLED:
            intent = text_field(body, "intent", 200).strip()
            if not INTENT_NAME.fullmatch(intent):
                raise BadRequest("'intent' must be an intent name (lower case letters, digits "
                                 "and '_', starting with a letter)")
        check, messages = await store.spot_check_messages(spot_check_id)
        message = next((m for m in messages if m.id == message_id and m.sender == "bot"), None)
        if message is None or check.status == "skipped":
            raise NotFound(f"message {message_id} is not a bot message of spot-check "
                           f"{spot_check_id}", message_id=message_id)
        customer = answered(messages, message)
        correction = None
        if verdict != "right":
            if verdict == EDITED and message.text is not None and text == message.text:
                raise BadRequest("the edited text is the bot's own: mark it right instead")
            try:  # the network first, outside the store's transaction
                events = await rasa.tracker_events(check.conversation_id)
            except RasaError as exc:
                raise ServiceUnavailable(
                    f"Rasa's tracker of the conversation could not be read ({exc.message}); "
                    "nothing was stored, try again") from None
            correction = correction_of(
                verdict, message, customer,
                turn_events(events, message.created_at, message.action), text=text,
                intent=intent)
        mark, stored = await store.mark_spot_check(
            spot_check_id, message_id, verdict=cast(Verdict, verdict), reviewer=who,
            intent=customer.intent if customer else None, action=message.action,
            model_version=message.model_version, correction=correction)
        return json({"mark": to_json(mark),
                     "correction": to_json(stored) if stored else None}, status=201)

    @app.post("/api/spot-checks/<spot_check_id:int>/finish", name="spot_check_finish")
    async def _finish(request: Request, spot_check_id: int) -> HTTPResponse:
        who = await reviewer(request)
        return json({"spot_check": to_json(await store.finish_spot_check(spot_check_id, who))})
