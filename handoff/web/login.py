"""One's own login: ``POST /api/login``, ``POST /api/logout``, ``GET /api/me`` and
``POST /api/me/password`` (:mod:`handoff.web.auth`).

Login answers ``{token, expires_at, tier, rights, role}`` (``role``: the tier under its old
name, for older clients); the token goes into ``Authorization: Bearer`` on HTTP and into
``auth={"token": ...}`` on the ``/agent`` Socket.IO namespace. Logging out ends every token of
the user on the server (their token version moves on) and disconnects their ``/agent`` sockets.
Logins, logouts and password changes are audit-logged.
"""

from __future__ import annotations

from typing import Any

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff.conversation.instruments import Instruments
from handoff.errors import BadRequest, Unauthorized
from handoff.settings import Settings
from handoff.store import Store, User
from handoff.web.auth import (InvalidCredentials, authenticate, change_password, issue_token,
                              verify_password, verify_token)
from handoff.web.http import json_body
from handoff.web.login_limits import LoginLimits, TooManyAttempts
from handoff.web.notifier import SocketNotifier
from handoff.web.rights import current_user, describe, rights_of

__all__ = ["register_login", "user_json"]

MAX_PASSWORD_CHARS = 1024


def user_json(user: User) -> dict[str, Any]:
    """A user as the API shows it (never the hash)."""
    return {"username": user.username, "tier": user.tier, "disabled": user.disabled,
            "created_at": user.created_at.isoformat(),
            "rights": describe(rights_of(user.tier))}


def password_field(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or len(value) > MAX_PASSWORD_CHARS:
        raise BadRequest(f"{key!r} must be a string of at most {MAX_PASSWORD_CHARS} characters")
    return value


def register_login(app: Sanic[Any, Any], *, settings: Settings, store: Store,
                   notifier: SocketNotifier, limits: LoginLimits,
                   instruments: Instruments) -> None:
    """Add the login, logout and ``/api/me`` endpoints to ``app``; wrong passwords count
    against ``limits`` (:mod:`handoff.web.login_limits`)."""

    @app.post("/api/login", name="login")
    async def _login(request: Request) -> HTTPResponse:
        body = json_body(request)
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise BadRequest("send {username, password}")
        ip = request.remote_addr or request.ip
        try:
            await limits.check(username, ip)
        except TooManyAttempts:
            instruments.login_failures.labels("limited").inc()
            raise
        try:
            user = await authenticate(store, username, password)
        except InvalidCredentials:
            instruments.login_failures.labels("password").inc()
            if await limits.failed(username, ip):
                instruments.login_failures.labels("locked").inc()
                await store.audit("system", "login_locked", target=f"user:{username}",
                                  details={"ip": ip})
            raise
        await limits.succeeded(username)
        token = issue_token(user.username, user.token_version, secret=settings.jwt_secret,
                            ttl=settings.token_lifetime)
        claims = verify_token(token, secret=settings.jwt_secret)
        await store.audit(user.username, "login")
        return json({"token": token, "expires_at": claims.expires_at.isoformat(),
                     "tier": user.tier, "role": user.tier,
                     "rights": describe(rights_of(user.tier))})

    @app.post("/api/logout", name="logout")
    async def _logout(request: Request) -> HTTPResponse:
        user = current_user(request)
        await store.update_user(user.username, bump_token_version=True)
        sockets = await notifier.disconnect_user(user.username)
        await store.audit(user.username, "logout", target=f"user:{user.username}",
                          details={"sockets": sockets})
        return json({"logged_out": True})

    @app.get("/api/me", name="me")
    async def _me(request: Request) -> HTTPResponse:
        return json({"user": user_json(current_user(request))})

    @app.post("/api/me/password", name="me_password")
    async def _me_password(request: Request) -> HTTPResponse:
        """A new password for oneself, given the current one; every other login ends."""
        user = current_user(request)
        body = json_body(request)
        current, new = password_field(body, "current_password"), password_field(body, "password")
        if not await verify_password(user.password_hash, current):
            raise Unauthorized("the current password is wrong")
        changed = await change_password(store, user.username, new)
        await notifier.disconnect_user(user.username)
        await store.audit(user.username, "password_changed", target=f"user:{user.username}")
        token = issue_token(changed.username, changed.token_version,
                            secret=settings.jwt_secret, ttl=settings.token_lifetime)
        claims = verify_token(token, secret=settings.jwt_secret)
        return json({"token": token, "expires_at": claims.expires_at.isoformat()})
