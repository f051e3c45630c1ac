"""The OpenAPI 3.1 document of the gateway's HTTP API, served at ``GET /api/openapi.json``.

The agent actions come from :data:`handoff.web.agents.ACTIONS` (the same table that registers
the routes); a test checks that every ``/api`` route of the app is documented here and nothing
else is.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from handoff.learning.metrics import METRICS
from handoff.store import TIERS
from handoff.web.agents import ACTIONS
from handoff.web.dashboard import DASHBOARD_RIGHT
from handoff.web.privacy import REQUIRED_RIGHT as PRIVACY_RIGHT

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_OBJECT: dict[str, Any] = {"type": "object"}
_NAMES: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
_PRESENCE: dict[str, Any] = {"type": "object", "properties": {"presence": {
    "type": "object", "properties": {
        "open": {"type": "boolean"}, "opening_hours": {"type": ["string", "null"]},
        "logged_in": _NAMES, "available": _NAMES}}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {400: "Bad request: nothing changed", 401: "No valid login token",
             403: "The user's tier lacks the right this needs", 404: "Unknown conversation or reply",
             409: "Refused by the conversation's state (owned by another agent, stale reply, "
                  "closed...) or by a deploy or retraining already running: nothing changed",
             429: "Too many failed logins: wait retry_after seconds (docs/security.md)",
             502: "Rasa (or the supervisor) refused the request",
             503: "Rasa (or the supervisor) is not answering"}
    return {str(s): _json(_ERROR, words[s]) for s in statuses}


def _body(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


def _operation(summary: str, ok: dict[str, Any], *, auth: bool = True, body: Any = None,
               statuses: tuple[int, ...] = (401, 403, 404), ok_status: int = 200,
               parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {str(ok_status): ok,
                                                             **_errors(*statuses)}}
    if not auth:
        op["security"] = []
    if body is not None:
        op["requestBody"] = body
    if parameters:
        op["parameters"] = parameters
    return op


def _path_parameters(path: str) -> list[dict[str, Any]]:
    out = []
    for name, kind in re.findall(r"<(\w+):(\w+)>", path):
        out.append({"name": name, "in": "path", "required": True,
                    "schema": {"type": "integer" if kind == "int" else "string"}})
    return out


def openapi_path(route_path: str) -> str:
    """Sanic's ``/a/<id:str>`` as OpenAPI's ``/a/{id}``."""
    return "/" + re.sub(r"<(\w+):\w+>", r"{\1}", route_path.strip("/"))


def _dashboard_paths() -> dict[str, dict[str, Any]]:
    """The dashboard's endpoints (:mod:`handoff.web.dashboard`, docs/metrics.md)."""
    who = f"Right {DASHBOARD_RIGHT}"
    filters = [
        {"name": "since", "in": "query", "description": "ISO 8601 date or time (UTC unless "
         "given); default: 30 days before until", "schema": {"type": "string"}},
        {"name": "until", "in": "query", "description": "ISO 8601, exclusive; default: now",
         "schema": {"type": "string"}},
        {"name": "intent", "in": "query", "description": "the first customer intent",
         "schema": {"type": "string"}},
        {"name": "agent", "in": "query", "description": "conversations this agent owned or "
         "decided in", "schema": {"type": "string"}},
        {"name": "model", "in": "query", "description": "the model version",
         "schema": {"type": "string"}}]
    return {
        "/api/metrics": {"get": _operation(
            f"{who}: every Humans + Machines figure of the conversations created in the "
            "period (docs/metrics.md), and the model deploys of the period.",
            _json({"type": "object", "properties": {
                "filter": _OBJECT, "deploys": {"type": "array", "items": _OBJECT},
                **{m: _OBJECT for m in METRICS}}}),
            statuses=(400, 401, 403), parameters=filters)},
        "/api/metrics/<metric:str>": {"get": _operation(
            f"{who}: one figure ({', '.join(METRICS)}), with its splits and its series by "
            "day.",
            _json({"type": "object", "properties": {"filter": _OBJECT, "deploys": {
                "type": "array", "items": _OBJECT}}}),
            statuses=(400, 401, 403, 404), parameters=filters)},
        "/api/metrics/<metric:str>/csv": {"get": _operation(
            f"{who}: one figure as CSV, one metric,path,value row per number.",
            {"description": "OK", "content": {"text/csv": {"schema": {"type": "string"}}}},
            statuses=(400, 401, 403, 404), parameters=filters)},
    }


def _privacy_paths() -> dict[str, dict[str, Any]]:
    """Customers' data (:mod:`handoff.web.privacy`, docs/security.md): admins, right
    ``protect_data`` (``x-required-right``)."""
    who = f"Admins (right {PRIVACY_RIGHT})"
    export = _json({"type": "object", "properties": {
        "exported_at": {"type": "string"}, "masked": {"type": "array", "items": {
            "type": "string"}}, "customers": {"type": "array", "items": {
                "type": "object", "description": "the conversation with its messages, notes, "
                "corrections, events (mode changes) and contact, PII masked"}}}})
    erased = _json({"type": "object", "properties": {"erased": {"type": "array", "items": {
        "type": "object", "properties": {
            "conversation_id": {"type": "string"}, "messages": {"type": "integer"},
            "notes": {"type": "integer"}, "pending_replies": {"type": "integer"},
            "contacts": {"type": "integer"}, "corrections_masked": {"type": "integer"},
            "rasa": {"type": "string", "enum": ["erased", "none", "failed"]}}}}}})
    ids = {"type": "array", "items": {"type": "string"}, "description": "session ids"}
    reason = {"type": "string", "description": "why (audit-logged)"}
    paths: dict[str, dict[str, Any]] = {
        "/api/customers/<customer_id:str>/export": {"get": _operation(
            f"{who}: a customer's conversation (by session id) as JSON, PII masked; "
            "audit-logged.", export, statuses=(400, 401, 403, 404),
            parameters=[{"name": "reason", "in": "query", "schema": {"type": "string"}}])},
        "/api/customers/export": {"post": _operation(
            f"{who}: several customers' conversations as JSON, PII masked; audit-logged.",
            export, statuses=(400, 401, 403, 404),
            body=_body({"ids": ids, "reason": reason}, ["ids"]))},
        "/api/customers/<customer_id:str>/erase": {"post": _operation(
            f"{who}: erase a customer's conversation from the gateway's store (corrections "
            "kept masked) and Rasa's tracker; audit-logged. 503 when Rasa's part failed: "
            "run it again.", erased, statuses=(400, 401, 403, 404, 503),
            body=_body({"reason": reason}, ["reason"]))},
        "/api/customers/erase": {"post": _operation(
            f"{who}: erase several customers' conversations, all or none (404 names every "
            "unknown id); audit-logged.", erased, statuses=(400, 401, 403, 404, 503),
            body=_body({"ids": ids, "reason": reason}, ["ids", "reason"]))},
    }
    for ops in paths.values():
        for op in ops.values():
            op["x-required-right"] = PRIVACY_RIGHT
    return paths


def _spot_check_paths() -> dict[str, dict[str, Any]]:
    """The spot-checks' QA queue (:mod:`handoff.web.spot_checks`, docs/console.md)."""
    one = "/api/spot-checks/<spot_check_id:int>"
    return {
        "/api/spot-checks": {"get": _operation(
            "Right approve: the sampled bot-only conversations (status open, done or all), "
            "each with its bot messages and marks counted.",
            _json({"type": "object", "properties": {"spot_checks": {
                "type": "array", "items": _OBJECT}}}), statuses=(400, 401, 403),
            parameters=[
                {"name": "status", "in": "query", "schema": {
                    "type": "string", "enum": ["open", "done", "all"], "default": "open"}},
                {"name": "after_id", "in": "query", "schema": {"type": "integer"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer"}}])},
        one: {"get": _operation(
            "Right approve: one spot-check with its conversation's messages and marks.",
            _json({"type": "object", "properties": {
                "spot_check": _OBJECT, "messages": {"type": "array", "items": _OBJECT},
                "marks": {"type": "array", "items": _OBJECT}}}))},
        f"{one}/marks": {"post": _operation(
            "Right approve (and edit or relabel to correct): mark a bot message right, or correct it (edit: text; relabel: "
            "intent); a correction enters the trainers' queue.",
            _json({"type": "object", "properties": {"mark": _OBJECT, "correction": _OBJECT}},
                  "Created"), ok_status=201, statuses=(400, 401, 403, 404, 409, 503),
            body=_body({"message_id": {"type": "integer"},
                        "verdict": {"type": "string", "enum": ["right", "edit", "relabel"]},
                        "text": {"type": "string"}, "intent": {"type": "string"}},
                       ["message_id", "verdict"]))},
        f"{one}/finish": {"post": _operation(
            "Right approve: finish a spot-check whose bot messages are all marked.",
            _json({"type": "object", "properties": {"spot_check": _OBJECT}}),
            statuses=(401, 403, 404, 409))},
    }


def _users_paths() -> dict[str, dict[str, Any]]:
    """One's own login and the users managed (:mod:`handoff.web.login`,
    :mod:`handoff.web.users`; docs/security.md)."""
    user = _json({"type": "object", "properties": {"user": {"$ref": "#/components/schemas/User"}}})
    reason = {"reason": {"type": "string", "description": "why (audit-logged), 1-500 chars"}}
    login = _json({"type": "object", "properties": {
        "token": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"}}})
    return {
        "/api/logout": {"post": _operation(
            "Log out: every token of the user ends on the server and their /agent sockets are "
            "disconnected.", _json(_OBJECT), statuses=(401,))},
        "/api/me": {"get": _operation("The logged-in user, their tier and rights.", user,
                                      statuses=(401,))},
        "/api/me/password": {"post": _operation(
            "Change one's own password (the current one required); other logins end; "
            "answers a new token.", login, statuses=(400, 401),
            body=_body({"current_password": {"type": "string"},
                        "password": {"type": "string"}}, ["current_password", "password"]))},
        "/api/users": {
            "get": _operation(
                "Right manage_users: users by username, paginated (after, limit), with every "
                "tier's rights.",
                _json({"type": "object", "properties": {
                    "users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}},
                    "next": {"type": ["string", "null"]}, "tiers": _OBJECT}}),
                statuses=(400, 401, 403), parameters=[
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}}]),
            "post": _operation(
                "Right manage_users: create a user.", user, ok_status=201,
                statuses=(400, 401, 403, 409),
                body=_body({"username": {"type": "string"}, "password": {"type": "string"},
                            "tier": {"type": "string", "enum": list(TIERS)}, **reason},
                           ["username", "password", "tier", "reason"]))},
        "/api/users/<username:str>": {
            "get": _operation("Right manage_users: one user.", user),
            "patch": _operation(
                "Right manage_users: change the tier (effective at once, open sockets "
                "included), disable (ends the user's tokens and sockets) or re-enable.", user,
                statuses=(400, 401, 403, 404, 409),
                body=_body({"tier": {"type": "string", "enum": list(TIERS)},
                            "disabled": {"type": "boolean"}, **reason}, ["reason"]))},
        "/api/users/<username:str>/password": {"post": _operation(
            "Right manage_users: reset a user's password (their tokens and sockets end).",
            user, statuses=(400, 401, 403, 404),
            body=_body({"password": {"type": "string"}, **reason}, ["password", "reason"]))},
        "/api/users/<username:str>/unlock": {"post": _operation(
            "Right manage_users: lift the login limits (back-off, lockout) on a username.",
            _json({"type": "object", "properties": {
                "unlocked": {"type": "boolean"},
                "locked": {"type": "array", "items": {"type": "string"}}}}),
            statuses=(400, 401, 403), body=_body(reason, ["reason"]))},
        "/api/conversations/<conversation_id:str>/override": {"post": _operation(
            "Right override: take over, hand back or close anyone's conversation (a "
            "disabled owner's too), audit-logged with the owner and the reason.",
            _json({"type": "object", "properties": {
                "conversation": {"$ref": "#/components/schemas/RouterState"}}}),
            statuses=(400, 401, 403, 404, 409),
            body=_body({"action": {"type": "string", "enum": ["takeover", "handback", "close"]},
                        **reason}, ["action", "reason"]))},
        "/api/audit": {"get": _operation(
            "Right manage_users: the audit log, newest first (actor, action, target, "
            "before_id, limit).", _json({"type": "object", "properties": {
                "entries": {"type": "array", "items": _OBJECT},
                "next": {"type": ["integer", "null"]}}}),
            statuses=(400, 401, 403), parameters=[
                {"name": n, "in": "query", "schema": {"type": "string"}}
                for n in ("actor", "action", "target", "before_id", "limit")])},
    }


@cache
def openapi_document() -> dict[str, Any]:
    conversation = "/api/conversations/<conversation_id:str>"
    state = _json({"type": "object", "properties": {
        "conversation": {"$ref": "#/components/schemas/RouterState"}}})
    rasa_state = {"type": "string", "enum": ["unknown", "up", "slow", "down"]}
    liveness = {  # /api/health's states, also at the top of /api/health/detail
        "status": {"type": "string"},
        "store": {"type": "string", "enum": ["ok", "down"]},
        "redis": {"type": "string", "enum": ["ok", "down"]},
        "triage": {"type": "string", "enum": ["off", "loading", "ready"]}}
    paths: dict[str, dict[str, Any]] = {
        "/api/health": {"get": _operation(
            "Liveness and readiness without a login: the node answers, whether the store and "
            "Redis answer, triage off, loading or ready, Rasa's state. Details are in "
            "/api/health/detail.",
            _json({"type": "object", "properties": {
                **liveness, "rasa": {"type": "object", "properties": {"state": rasa_state}}}}),
            auth=False, statuses=())},
        "/api/health/detail": {"get": _operation(
            "For agents: the states of /api/health with Rasa's health as the gateway's probe "
            "sees it for each server, the admission control and the triage's thresholds "
            "(docs/supervision.md).",
            _json({"type": "object", "properties": {
                **liveness,
                "rasa": {"type": "object", "properties": {
                    "state": rasa_state,
                    "since": {"type": "string", "format": "date-time"},
                    "error": {"type": ["string", "null"]},
                    "failed_probes": {"type": "integer"},
                    "probe_ms": {"type": ["number", "null"]},
                    "probe": {"type": "string", "enum": ["on", "off"]},
                    "servers": {"type": "array", "items": {"type": "object", "description":
                        "each Rasa server's url and the figures above"}}}},
                "rasa_calls": {"type": "object", "description":
                    "The admission control's figures per Rasa server URL: calls running and "
                    "waiting now, admitted and made to wait since start (docs/performance.md, "
                    "\"Overload\").", "additionalProperties": {
                        "type": "object", "properties": {
                            k: {"type": "integer"}
                            for k in ("running", "waiting", "admitted", "waited")}}},
                "triage_thresholds": {"type": "object", "description":
                    "When triage is on: the review/human thresholds in use and, in fitted "
                    "mode, what they were fitted on (docs/triage.md, \"Thresholds\").",
                    "properties": {
                        "mode": {"type": "string", "enum": ["fixed", "fitted"]},
                        "review_threshold": {"type": "number"},
                        "human_threshold": {"type": "number"},
                        "floor_review_threshold": {"type": "number"},
                        "floor_human_threshold": {"type": "number"},
                        "target_review_share": {"type": "number"},
                        "target_human_share": {"type": "number"},
                        "review_share": {"type": "number"},
                        "human_share": {"type": "number"},
                        "messages": {"type": "integer"},
                        "fitted": {"type": "boolean"},
                        "source": {"type": "string"},
                        "model_id": {"type": ["string", "null"]},
                        "fitted_at": {"type": "string", "format": "date-time"}}}}}),
            statuses=(401, 403))},
        "/api/openapi.json": {"get": _operation("This document.", _json(_OBJECT), auth=False,
                                                statuses=())},
        "/api/login": {"post": _operation(
            "Log in; the token goes in Authorization: Bearer and in the /agent auth.",
            _json({"type": "object", "properties": {
                "token": {"type": "string"}, "expires_at": {"type": "string",
                                                            "format": "date-time"},
                "tier": {"type": "string", "enum": list(TIERS)},
                "rights": {"type": "array", "items": {"type": "string"}},
                "role": {"type": "string", "description": "the tier, under its old name"}}}),
            auth=False, statuses=(400, 401, 403, 429),
            body=_body({"username": {"type": "string"}, "password": {"type": "string"}},
                       ["username", "password"]))},
        "/api/conversations": {"get": _operation(
            "Conversations, riskiest first, then longest waiting.",
            _json({"type": "object", "properties": {"conversations": {
                "type": "array", "items": {"$ref": "#/components/schemas/Conversation"}}}}),
            statuses=(401, 403), parameters=[
                {"name": "mode", "in": "query", "schema": {
                    "type": "string", "enum": ["bot", "review", "human", "closed"]}},
                {"name": "queued", "in": "query", "schema": {"type": "boolean"}},
                {"name": "owner", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 200,
                                                            "maximum": 500}},
                {"name": "offset", "in": "query", "schema": {"type": "integer"}}])},
        conversation: {"get": _operation(
            "One conversation: its row, the router's state (mode, owner, pending reply) and "
            "every message with its NLU result and review decision, and the contact address "
            "the customer left while waiting (or null).",
            _json({"type": "object", "properties": {
                "conversation": {"$ref": "#/components/schemas/Conversation"},
                "router": {"$ref": "#/components/schemas/RouterState"},
                "messages": {"type": "array", "items": _OBJECT},
                "contact": {"type": ["object", "null"], "properties": {
                    "contact": {"type": "string"},
                    "left_at": {"type": "string", "format": "date-time"}}}}}))},
        f"{conversation}/notes": {
            "get": _operation("The conversation's private notes (never shown to customers).",
                              _json({"type": "object", "properties": {
                                  "notes": {"type": "array", "items": _OBJECT}}})),
            "post": _operation("Add a private note.", _json({"type": "object", "properties": {
                "note": _OBJECT}}, "Created"), ok_status=201, statuses=(400, 401, 403, 404),
                body=_body({"text": {"type": "string"}}, ["text"])),
        },
        f"{conversation}/whisper": {"post": _operation(
            "Whisper to the bot without taking over: set or correct a slot in Rasa's tracker "
            "({slot, value}), or run an action of the domain as the bot's next one ({action}); "
            "recorded as a slot_set / action_chosen correction. 400: an unknown slot or action; "
            "409: the bot is not serving the conversation or is answering now. In review the chosen action is held as a pending reply first.",
            _json({"type": "object", "properties": {"whisper": _OBJECT,
                                                    "correction": _OBJECT}}),
            statuses=(400, 401, 403, 404, 409, 502, 503),
            body=_body({"slot": {"type": "string"}, "value": {},
                        "action": {"type": "string"}}))},
        f"{conversation}/suggestions": {"get": _operation(
            "Triage's best replies for the conversation so far (domain responses and replies "
            "agents wrote before), each with its source and similarity.",
            _json({"type": "object", "properties": {"suggestions": {"type": "array", "items": {
                "type": "object", "properties": {"text": {"type": "string"},
                                                 "source": {"type": "string"},
                                                 "score": {"type": "number"}}}}}}))},
        "/api/domain": {"get": _operation(
            "The live model's intents, responses and actions (to relabel, replace or pick a "
            "response).", _json({"type": "object", "properties": {
                "intents": {"type": "array", "items": {"type": "string"}},
                "responses": {"type": "object"},
                "actions": {"type": "array", "items": {"type": "string"}},
                "slots": {"type": "array", "items": {"type": "string"}}}}),
            statuses=(401, 403, 502, 503))},
        "/api/presence": {
            "get": _operation(
                "Who can answer customers now: the opening hours, the agents logged in to the "
                "console and those available (not marked away) (docs/supervision.md).",
                _json(_PRESENCE), statuses=(401, 403)),
            "post": _operation(
                "Mark yourself available or away (also the /agent event presence).",
                _json(_PRESENCE), body=_body({"status": {"type": "string",
                                                         "enum": ["available", "away"]}},
                                             ["status"]),
                statuses=(400, 401, 403)),
        },
    }
    corrections = {"type": "array", "items": {"$ref": "#/components/schemas/Correction"}}
    paths["/api/corrections"] = {"get": _operation(
        "Trainers: correction records in creation order.", _json({"type": "object",
            "properties": {"corrections": corrections}}), statuses=(400, 401, 403),
        parameters=[{"name": n, "in": "query", "schema": {"type": t}} for n, t in (
            ("status", "string"), ("type", "string"), ("intent", "string"),
            ("agent", "string"), ("model_version", "string"), ("conversation_id", "string"),
            ("after_id", "integer"), ("limit", "integer"))])}
    paths["/api/corrections/<correction_id:int>/review"] = {"post": _operation(
        "Trainers: accept or reject a correction (audit-logged); 'after' edits it first, "
        "checked as the writer reads it (400 and nothing changes when it could not become "
        "training data), the original kept in the audit entry.", _json({"type": "object",
            "properties": {"correction": {"$ref": "#/components/schemas/Correction"}}}),
        statuses=(400, 401, 403, 404), body=_body({
            "status": {"type": "string", "enum": ["accepted", "rejected", "new"]},
            "note": {"type": "string"}, "after": {"type": "object"}}, ["status"]))}
    paths["/api/corrections/review"] = {"post": _operation(
        "Trainers: accept or reject several corrections at once (all exist, or nothing "
        "changes).", _json({"type": "object", "properties": {"corrections": corrections}}),
        statuses=(400, 401, 403, 404), body=_body({
            "ids": {"type": "array", "items": {"type": "integer"}},
            "status": {"type": "string", "enum": ["accepted", "rejected", "new"]},
            "note": {"type": "string"}}, ["ids", "status"]))}
    paths["/api/corrections/audit"] = {"get": _operation(
        "Trainers: the corrections' part of the audit log (correction_accepted, "
        "correction_rejected, correction_new, label_emerging_need), newest first.",
        _json({"type": "object", "properties": {
            "entries": {"type": "array", "items": {"type": "object"}},
            "next": {"type": ["integer", "null"]}}}),
        statuses=(400, 401, 403), parameters=[
            {"name": n, "in": "query", "schema": {"type": t}} for n, t in (
                ("actor", "string"), ("action", "string"), ("before_id", "integer"),
                ("limit", "integer"))])}
    paths["/api/corrections/groups"] = {"get": _operation(
        "Trainers: corrections of one review status counted by type and intent, largest "
        "group first.", _json({"type": "object", "properties": {"groups": {
            "type": "array", "items": {"type": "object", "properties": {
                "type": {"type": "string"}, "intent": {"type": ["string", "null"]},
                "count": {"type": "integer"},
                "ids": {"type": "array", "items": {"type": "integer"}}}}}}}),
        statuses=(400, 401, 403),
        parameters=[{"name": "status", "in": "query", "schema": {"type": "string"}}])}
    paths["/api/emerging-needs"] = {"get": _operation(
        "Trainers: clusters of recent customer messages the assistant was unsure of or that "
        "are unlike its training data, with a proposed intent.", _json({"type": "object"}),
        statuses=(400, 401, 403, 409),
        parameters=[{"name": "limit", "in": "query", "schema": {"type": "integer"}}])}
    paths["/api/emerging-needs/label"] = {"post": _operation(
        "Trainers: turn messages into accepted relabelled corrections (NLU examples of an "
        "existing or new intent).", _json({"type": "object", "properties": {
            "corrections": corrections}}, "Created"), ok_status=201,
        statuses=(400, 401, 403, 404), body=_body({
            "intent": {"type": "string"},
            "message_ids": {"type": "array", "items": {"type": "integer"}}},
            ["intent", "message_ids"]))}
    model = {"$ref": "#/components/schemas/ModelVersion"}
    retrain = {"type": ["object", "null"], "description": (
        "The running or last retraining: id, state (running | succeeded | refused | failed), "
        "started_by, started_at, finished_at, corrections, against, finetune, model_id, "
        "message, report (bot.retrain's), log (its last lines); with several gateway nodes "
        "the one any node runs or ran last, with node (the node that runs it)")}
    paths["/api/models"] = {"get": _operation(
        "Trainers: the model versions (newest first), which is live, and the last "
        "retraining.", _json({"type": "object", "properties": {
            "live": {"type": ["string", "null"]}, "models": {"type": "array", "items": model},
            "retrain": retrain, "deploy": {"type": ["object", "null"]},
            "can_deploy": {"type": "boolean"}}}),
        statuses=(401, 403))}
    paths["/api/retrain"] = {
        "post": _operation(
            "Trainers: retrain on the accepted corrections not trained on yet (through the "
            "supervisor); progress as retrain_progress and retrain_finished on /agent.",
            _json({"type": "object", "properties": {"retrain": retrain}}, "Started"),
            ok_status=202, statuses=(400, 401, 403, 409, 503),
            body=_body({"finetune": {"type": "boolean"}})),
        "get": _operation("Trainers: the running or last retraining, with its log.",
                          _json({"type": "object", "properties": {"retrain": retrain}}),
                          statuses=(401, 403))}
    deploy = {"type": "object", "properties": {"deploy": {"type": "object", "description": (
        "The deploy: model_id, file, state (running | succeeded | failed), rollback, "
        "started_by, started_at, finished_at, message; with several gateway nodes, node")}}}
    paths["/api/models/<model_id:str>/deploy"] = {"post": _operation(
        "Trainers: put a model live blue/green (a second Rasa server, then the switch), in "
        "the background (deploy_progress, deploy_finished on /agent); a model with "
        "regressions needs an override reason (audit-logged).", _json(deploy, "Started"),
        ok_status=202, statuses=(400, 401, 403, 404, 409, 503),
        body=_body({"override": {"type": "string"}}))}
    paths["/api/models/rollback"] = {"post": _operation(
        "Trainers: put the model live before the current one back, the same way.",
        _json(deploy, "Started"), ok_status=202, statuses=(401, 403, 409, 503))}
    paths[f"{conversation}/suggestions/rating"] = {"post": _operation(
        "Rate a suggested reply with one click: rating 1 (useful) or -1 (not); stored for the "
        "dashboard's agent enablement score.", _json({"type": "object", "properties": {
            "rating": _OBJECT}}, "Created"), ok_status=201, statuses=(400, 401, 403, 404),
        body=_body({"suggestion": {"type": "string"},
                    "rating": {"type": "integer", "enum": [1, -1]}}, ["suggestion", "rating"]))}
    paths.update(_dashboard_paths())
    paths.update(_privacy_paths())
    paths.update(_spot_check_paths())
    paths.update(_users_paths())
    for action in ACTIONS:
        path = f"{conversation}/{action.path}"
        paths[path] = {"post": _operation(
            f"{action.summary} Also the /agent event '{action.event}'.", state,
            statuses=(400, 401, 403, 404, 409),
            body=_body(dict(action.body)) if action.body else None)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Northwind handoff gateway", "version": "1",
                 "description": "The agents' API. Live updates and the same actions are on "
                                "the Socket.IO namespace /agent (docs/api.md)."},
        "paths": {openapi_path(p): {m: {**op, "parameters": _path_parameters(p)
                                        + op.get("parameters", [])}
                                    for m, op in ops.items()}
                  for p, ops in paths.items()},
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"], "properties": {
                    "error": {"type": "string"}, "message": {"type": "string"}}},
                "User": {"type": "object", "properties": {
                    "username": {"type": "string"}, "tier": {"type": "string"},
                    "disabled": {"type": "boolean"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "rights": {"type": "array", "items": {"type": "string"}}}},
                "Conversation": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "mode": {"type": "string", "enum": ["bot", "review", "human", "closed"]},
                    "owner": {"type": ["string", "null"]}, "queued": {"type": "boolean"},
                    "queue_reason": {"type": ["string", "null"]},
                    "risk": {"type": ["number", "null"]},
                    "effort_score": {"type": ["integer", "null"]},
                    "last_customer_text": {"type": ["string", "null"]},
                    "last_customer_at": {"type": ["string", "null"]}}},
                "Correction": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "conversation_id": {"type": "string"},
                    "type": {"type": "string"}, "before": {}, "after": {},
                    "tracker_events": {"type": "array", "items": {"type": "object"}},
                    "agent": {"type": "string"}, "model_version": {"type": ["string", "null"]},
                    "review_status": {"type": "string"},
                    "fixed_by_model": {"type": ["string", "null"]},
                    "tracker_status": {"type": "string",
                                       "enum": ["pending", "fetched", "failed"]},
                    "tracker_error": {"type": ["string", "null"]},
                    "tracker_attempts": {"type": "integer"}}},
                "ModelVersion": {"type": "object", "properties": {
                    "model_id": {"type": "string"}, "file": {"type": "string"},
                    "status": {"type": "string", "enum": ["candidate", "live", "retired"]},
                    "live": {"type": "boolean"}, "created_at": {"type": "string"},
                    "trained_at": {"type": ["string", "null"]},
                    "retrained_by": {"type": ["string", "null"]},
                    "corrections": {"type": ["array", "null"], "items": {"type": "integer"}},
                    "proof": {"type": ["object", "null"]},
                    "summary": {"type": ["string", "null"]},
                    "deployed_at": {"type": ["string", "null"]},
                    "deployed_by": {"type": ["string", "null"]},
                    "override": {"type": ["string", "null"]}}},
                "RouterState": {"type": "object", "properties": {
                    "id": {"type": "string"}, "mode": {"type": "string"},
                    "owner": {"type": ["string", "null"]},
                    "watchers": {"type": "array", "items": {"type": "string"}},
                    "queue_reason": {"type": ["string", "null"]},
                    "pending_reply": {"type": ["object", "null"]},
                    "busy": {"type": "boolean"}}},
            },
        },
    }
