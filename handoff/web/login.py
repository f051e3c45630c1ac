"""``POST /api/login``: a username and password for a token (:mod:`handoff.web.auth`).

The answer is ``{token, expires_at, role}``; the token goes into ``Authorization: Bearer`` on
HTTP and into ``auth={"token": ...}`` on the ``/agent`` Socket.IO namespace. Every login is
audit-logged.
"""

from __future__ import annotations

from typing import Any

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff.errors import BadRequest
from handoff.settings import Settings
from handoff.store import Store
from handoff.web.auth import authenticate, issue_token, verify_token
from handoff.web.http import json_body

__all__ = ["register_login"]


def register_login(app: Sanic[Any, Any], *, settings: Settings, store: Store) -> None:
    """Add ``POST /api/login`` to ``app``."""

    @app.post("/api/login", name="login")
    async def _login(request: Request) -> HTTPResponse:
        body = json_body(request)
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
