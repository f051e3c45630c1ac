"""The trainers' API (rights ``review_corrections``, ``retrain``, ``deploy``: :mod:`handoff.web.rights`): the corrections queue and emerging needs.

* ``GET /api/corrections`` lists correction records (filters: ``status``, ``type``,
  ``intent``, ``agent``, ``model_version``, ``conversation_id``, paging with ``after_id`` and
  ``limit``), ``GET /api/corrections/groups`` counts them by type and intent; ``POST
  /api/corrections/{id}/review`` accepts or rejects one (``{status, note?, after?}``: ``after``
  edits it before accepting, checked as the writer would read it, the original kept in the
  audit entry), ``POST /api/corrections/review`` several at once (``{ids, status, note?}``,
  all or nothing); all audit-logged, and ``GET /api/corrections/audit`` reads that part of
  the audit log (filters ``actor``, ``action``).
  Accepted corrections are what ``bot/`` turns into Rasa training data
  (``python -m handoff.learning.corrections export``).
* ``GET /api/emerging-needs`` clusters recent customer messages that the assistant was unsure
  of or that are unlike its training data (triage's assessment says so), each cluster with its
  size, examples and a proposed intent; ``POST /api/emerging-needs/label`` turns the messages
  of a cluster into accepted ``relabelled`` corrections of an existing or a new intent: the
  corrections pipeline then writes them as NLU examples.
"""

from __future__ import annotations

import json as jsonlib
import re
from dataclasses import replace
from typing import Any

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from contracts.correction_record import (
    EDITED,
    INTENT_NAME,
    RELABELLED,
    REPLACED,
    WRITTEN,
    RecordError,
    parse_record,
)
from handoff.conversation.triage_link import TriageLink
from handoff.errors import BadRequest, Conflict, NotFound
from handoff.learning.corrections import export_record
from handoff.settings import Settings
from handoff.store import Correction, Store, to_json
from handoff.triage.clustering import CANDIDATE_REASONS
from handoff.web.http import int_arg, json_body
from handoff.web.rights import current_user

__all__ = ["register_trainer_api"]

MAX_LIMIT = 500
MAX_LABEL = 200
MAX_AFTER_BYTES = 65536
MAX_FILTER = 200
# The audit log's entries about corrections: what ``GET /api/corrections/audit`` shows trainers.
REVIEW_ACTIONS = ("correction_accepted", "correction_rejected", "correction_new",
                  "label_emerging_need")
_INTENT = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


def correction_json(correction: Correction) -> dict[str, Any]:
    return to_json(correction)


def register_trainer_api(app: Sanic[Any, Any], *, settings: Settings, store: Store,
                         triage: TriageLink | None) -> None:
    """Add the trainers' endpoints to ``app`` (see the module docstring)."""

    async def trainer(request: Request) -> str:
        return current_user(request).username

    @app.get("/api/corrections", name="corrections")
    async def _list(request: Request) -> HTTPResponse:
        await trainer(request)
        status = request.args.get("status")
        kind = request.args.get("type")
        intent = _filter(request, "intent")
        if intent is not None and not INTENT_NAME.fullmatch(intent):
            raise BadRequest("'intent' must be an intent name: lower-case letters, digits and _")
        found = await store.list_corrections(
            review_status=status or None,  # the store validates both
            type=kind or None,
            intent=intent, agent=_filter(request, "agent"),
            model_version=_filter(request, "model_version"),
            conversation_id=request.args.get("conversation_id") or None,
            after_id=int_arg(request, "after_id", None, 2**62),
            limit=int_arg(request, "limit", 100, MAX_LIMIT))
        return json({"corrections": [correction_json(c) for c in found]})

    async def review(who: str, ids: list[int], status: Any, note: Any,
                     after: Any = None) -> list[Correction]:
        if status not in ("accepted", "rejected", "new"):
            raise BadRequest("'status' must be accepted, rejected or new")
        if note is not None and (not isinstance(note, str) or len(note) > 4000):
            raise BadRequest("'note' must be a string of at most 4,000 characters")
        if after is not None and (not isinstance(after, dict) or len(
                jsonlib.dumps(after)) > MAX_AFTER_BYTES):
            raise BadRequest(f"'after' must be an object of at most {MAX_AFTER_BYTES} bytes")
        details = {k: v for k, v in (("note", note), ("after", after)) if v is not None}
        if after is not None:
            [original] = [await _stored(store, i) for i in ids]  # 404 first
            _check_edit(original, after)
            details["original_after"] = original.after  # the agent's version, kept
        return await store.review_corrections(ids, review_status=status, reviewed_by=who,
                                              note=note, after=after, details=details or None)

    @app.post("/api/corrections/<correction_id:int>/review", name="review_correction")
    async def _review(request: Request, correction_id: int) -> HTTPResponse:
        who = await trainer(request)
        body = json_body(request)
        [correction] = await review(who, [correction_id], body.get("status"), body.get("note"),
                                    body.get("after"))
        return json({"correction": correction_json(correction)})

    @app.post("/api/corrections/review", name="review_corrections")
    async def _review_many(request: Request) -> HTTPResponse:
        who = await trainer(request)
        body = json_body(request)
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_LABEL or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise BadRequest(f"'ids' must be a list of 1 to {MAX_LABEL} correction ids")
        done = await review(who, ids, body.get("status"), body.get("note"))  # all or nothing
        return json({"corrections": [correction_json(c) for c in done]})

    @app.get("/api/corrections/audit", name="correction_audit")
    async def _audit(request: Request) -> HTTPResponse:
        """The corrections' part of the audit log (:data:`REVIEW_ACTIONS`), newest first;
        filters ``actor`` and ``action``, paging with ``before_id`` and ``limit``."""
        await trainer(request)
        action = _filter(request, "action")
        if action is not None and action not in REVIEW_ACTIONS:
            raise BadRequest(f"'action' must be one of {', '.join(REVIEW_ACTIONS)}")
        limit = int_arg(request, "limit", 100, MAX_LIMIT) or 1
        entries = await store.list_audit(
            actor=_filter(request, "actor"), action=action, actions=REVIEW_ACTIONS,
            before_id=int_arg(request, "before_id", None, 2**62), limit=limit)
        return json({"entries": [to_json(e) for e in entries],
                     "next": entries[-1].id if len(entries) == limit else None})

    @app.get("/api/corrections/groups", name="correction_groups")
    async def _groups(request: Request) -> HTTPResponse:
        await trainer(request)
        status: Any = request.args.get("status") or "new"  # the store validates it
        found = await store.list_corrections(review_status=status, limit=MAX_LIMIT)
        groups: dict[tuple[str, str | None], list[int]] = {}
        for c in found:
            groups.setdefault((c.type, _intent(c)), []).append(c.id)
        return json({"groups": [
            {"type": kind, "intent": intent, "count": len(ids), "ids": ids}
            for (kind, intent), ids in sorted(groups.items(), key=lambda g: (-len(g[1]),
                                                                            g[0][0],
                                                                            g[0][1] or ""))]})

    @app.get("/api/emerging-needs", name="emerging_needs")
    async def _emerging(request: Request) -> HTTPResponse:
        await trainer(request)
        limit = int_arg(request, "limit", 300, 2000)
        worker = triage.worker if triage is not None else None
        if worker is None:
            raise Conflict("triage is off or still loading its model (GET /api/health)")
        recent = [m for m in await store.recent_customer_messages(limit=limit or 300)
                  if m.text and _candidate(m.triage)]
        clusters = await worker.emerging_needs([m.text or "" for m in recent])
        return json({"messages": len(recent), "clusters": [
            {**cluster.to_json(), "members": [
                {"message_id": recent[i].id, "conversation_id": recent[i].conversation_id,
                 "text": recent[i].text} for i in cluster.members]}
            for cluster in clusters]})

    @app.post("/api/emerging-needs/label", name="label_emerging_need")
    async def _label(request: Request) -> HTTPResponse:
        who = await trainer(request)
        body = json_body(request)
        intent = body.get("intent")
        if not isinstance(intent, str) or not _INTENT.match(intent):
            raise BadRequest("'intent' must be an intent name: lower-case letters, digits and _")
        ids = body.get("message_ids")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_LABEL or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise BadRequest(f"'message_ids' must be a list of 1 to {MAX_LABEL} message ids")
        messages = [await store.get_message(i) for i in dict.fromkeys(ids)]  # 404 first
        if any(m.sender != "customer" for m in messages):
            raise BadRequest("only customer messages can become NLU examples")
        if any(not m.text for m in messages):
            raise NotFound("a message without text cannot become an NLU example")
        made = []
        for message in messages:
            correction = await store.add_correction(
                message.conversation_id, type=RELABELLED, agent=who,
                before={"action_name": None, "messages": [], "intent": message.intent,
                        "text": message.text},
                after={"action_name": None, "messages": [], "intent": intent,
                       "text": message.text},
                message_id=message.id, model_version=message.model_version)
            made.append(await store.review_correction(
                correction.id, review_status="accepted", reviewed_by=who,
                note="emerging need labelled by a trainer"))
        await store.audit(who, "label_emerging_need", target=f"intent:{intent}",
                          details={"message_ids": [m.id for m in messages]})
        return json({"corrections": [correction_json(c) for c in made]}, status=201)


def _filter(request: Request, name: str) -> str | None:
    """A text filter of the query: None when absent or empty, ``BadRequest`` when too long."""
    value = request.args.get(name) or None
    if value is not None and len(value) > MAX_FILTER:
        raise BadRequest(f"'{name}' must be at most {MAX_FILTER} characters")
    return value


async def _stored(store: Store, correction_id: int) -> Correction:
    found = await store.list_corrections(after_id=correction_id - 1, limit=1)
    if not found or found[0].id != correction_id:
        raise NotFound(f"no correction {correction_id}", correction_id=correction_id)
    return found[0]


def _check_edit(correction: Correction, after: dict[str, Any]) -> None:
    """``BadRequest`` unless the correction with ``after`` instead of its own is a record the
    writer would take (``contracts.correction_record.parse_record``, as the export checks it)
    and its resolution (``edited_as`` / ``written_as``) fits its type. Tracker events still
    being fetched are not the edit's fault (the export waits for them): assumed present."""
    def refuse(why: str) -> BadRequest:
        return BadRequest(f"the edited correction cannot become training data: {why}")

    kind = correction.type
    intent = after.get("intent")
    if intent is not None and (not isinstance(intent, str) or not INTENT_NAME.fullmatch(intent)):
        raise refuse("'after.intent' must be an intent name: lower-case letters, digits and _")
    if "edited_as" in after and kind != EDITED:
        raise refuse(f"'edited_as' is for an edited reply, not a {kind!r} correction")
    if "written_as" in after and kind not in (WRITTEN, REPLACED):
        raise refuse(f"'written_as' is for a written reply or a replaced action, not a "
                     f"{kind!r} correction")
    if kind == REPLACED and after.get("written_as") == "policy_changed":
        raise refuse("a replaced action cannot be 'policy_changed' (the rule's action in "
                     "data/rules.yml stays a hand edit): 'story' or 'new_intent'")
    record = export_record(replace(correction, after=after, review_status="accepted"))
    if correction.tracker_status != "fetched":
        record["tracker_events"] = [{"event": "user", "text": record.get("text") or ""}]
    try:
        parse_record(record)
    except RecordError as exc:
        raise refuse(exc.reason) from None


def _intent(correction: Correction) -> str | None:
    """The intent a correction is about: the corrected one, else the one it corrected."""
    for side in (correction.after, correction.before):
        if isinstance(side, dict) and isinstance(side.get("intent"), str):
            return str(side["intent"])
    return None


def _candidate(assessment: dict[str, Any] | None) -> bool:
    reasons = (assessment or {}).get("reasons") or ()
    return any(isinstance(r, dict) and r.get("code") in CANDIDATE_REASONS for r in reasons)
