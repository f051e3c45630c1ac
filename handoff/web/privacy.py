"""The customers' data API: an admin exports and erases a customer's conversations
(docs/security.md, "Customers' data"; :mod:`handoff.conversation.privacy` does the work).

Each route needs the right ``protect_data`` (:data:`REQUIRED_RIGHT`, also in the OpenAPI
document as ``x-required-right``), which only the ``admin`` tier has by default
(:mod:`handoff.web.rights`). A customer is named by their session id (the conversation's id):

* ``GET /api/customers/{customer_id}/export`` — the conversation as JSON, PII masked
  (``?reason=`` goes to the audit log with the export);
* ``POST /api/customers/export`` ``{"ids": [...], "reason"?}`` — several at once;
* ``POST /api/customers/{customer_id}/erase`` ``{"reason"}`` — erase it from the gateway's
  store and Rasa's tracker;
* ``POST /api/customers/erase`` ``{"ids": [...], "reason"}`` — several at once, all or none
  (an unknown id: 404 naming every unknown one, nothing erased).

Every export and erasure is audit-logged: who, when, why, what.
"""

from __future__ import annotations

from typing import Any, Final

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff.conversation.privacy import MAX_REASON, CustomerData
from handoff.errors import BadRequest
from handoff.settings import Settings
from handoff.store import Store
from handoff.web.http import json_body
from handoff.web.rights import current_user

__all__ = ["REQUIRED_RIGHT", "register_privacy_api"]

REQUIRED_RIGHT: Final = "protect_data"  # declared in handoff.web.rights.ROUTE_RIGHTS


def _ids(body: dict[str, Any]) -> list[str]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids:
        raise BadRequest("'ids' must be a non-empty list of customer (session) ids")
    return ids


def _reason(value: Any, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON:
        raise BadRequest(f"'reason' must be a non-empty string of at most {MAX_REASON} "
                         "characters (it goes to the audit log)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("'reason' must be valid Unicode text (no lone surrogates)") from None
    return value


def register_privacy_api(app: Sanic[Any, Any], *, settings: Settings, store: Store,
                         data: CustomerData) -> None:
    """Add the customers' data endpoints to ``app`` (see the module docstring)."""

    async def protector(request: Request) -> str:
        return current_user(request).username  # the rights middleware checked protect_data

    async def export(who: str, ids: list[str], reason: str | None) -> HTTPResponse:
        exported = await data.export(ids)
        for cid in dict.fromkeys(ids):
            await store.audit(who, "customer_exported", target=f"conversation:{cid}",
                              details={"reason": reason, "masked": list(data.kinds)})
        return json(exported)

    @app.get("/api/customers/<customer_id:str>/export", name="customer_export")
    async def _export_one(request: Request, customer_id: str) -> HTTPResponse:
        """Export one customer's conversation, PII masked. Right: protect_data."""
        who = await protector(request)
        return await export(who, [customer_id], _reason(request.args.get("reason"), False))

    @app.post("/api/customers/export", name="customers_export")
    async def _export_many(request: Request) -> HTTPResponse:
        """Export several customers' conversations, PII masked. Right: protect_data."""
        who = await protector(request)
        body = json_body(request)
        return await export(who, _ids(body), _reason(body.get("reason"), False))

    @app.post("/api/customers/<customer_id:str>/erase", name="customer_erase")
    async def _erase_one(request: Request, customer_id: str) -> HTTPResponse:
        """Erase one customer's conversation (store and Rasa). Right: protect_data."""
        who = await protector(request)
        reason = _reason(json_body(request).get("reason"), True)
        assert reason is not None
        return json(await data.erase([customer_id], actor=who, reason=reason))

    @app.post("/api/customers/erase", name="customers_erase")
    async def _erase_many(request: Request) -> HTTPResponse:
        """Erase several customers' conversations, all or none. Right: protect_data."""
        who = await protector(request)
        body = json_body(request)
        reason = _reason(body.get("reason"), True)
        assert reason is not None
        return json(await data.erase(_ids(body), actor=who, reason=reason))
