"""Users managed (right ``manage_users``): list, create, change tier, disable, re-enable, reset
a password, and read the audit log. Every change is audit-logged with who did it and why
(``reason``), and takes effect on open ``/agent`` sockets at once: a tier change re-joins their
rooms to the new rights, disabling or a password reset ends every token of the user and closes
their sockets.

:class:`UserAdmin` does the changes, for the HTTP API here and for the command line
(``python -m handoff.web.auth``).
"""

from __future__ import annotations

from typing import Any, Final

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff.errors import BadRequest, Conflict
from handoff.settings import Settings
from handoff.store import TIERS, Store, User, to_json
from handoff.web.auth import change_password, check_username, create_user
from handoff.web.http import int_arg, json_body
from handoff.web.login import password_field, user_json
from handoff.web.login_limits import LoginLimits
from handoff.web.notifier import SocketNotifier
from handoff.web.rights import current_user, has_right, tiers_json

__all__ = ["UserAdmin", "register_users_api"]

MAX_REASON: Final = 500
MAX_PAGE: Final = 200


def reason_field(body: dict[str, Any]) -> str:
    """The ``reason`` of a change: required, 1 to 500 characters."""
    value = body.get("reason")
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON:
        raise BadRequest(f"'reason' must say why, in 1 to {MAX_REASON} characters")
    return value.strip()


def tier_field(value: object) -> str:
    if not isinstance(value, str) or value not in TIERS:
        raise BadRequest(f"'tier' must be one of {', '.join(TIERS)}")
    return value


class UserAdmin:
    """The changes an admin makes to users, each audit-logged as ``actor`` with ``reason``;
    ``notifier`` (None on the command line) applies them to open sockets."""

    def __init__(self, store: Store, notifier: SocketNotifier | None = None) -> None:
        self.store = store
        self.notifier = notifier

    async def _audit(self, actor: str, action: str, username: str, reason: str,
                     **details: Any) -> None:
        await self.store.audit(actor, action, target=f"user:{username}",
                               details={"reason": reason, **details})

    async def create(self, actor: str, username: str, password: str, tier: str,
                     reason: str) -> User:
        user = await create_user(self.store, username, password, tier_field(tier))
        await self._audit(actor, "user_created", username, reason, tier=tier)
        return user

    async def set_tier(self, actor: str, username: str, tier: str, reason: str) -> User:
        before = await self.store.get_user(username)
        user = await self.store.update_user(username, tier=tier_field(tier))
        await self._audit(actor, "tier_changed", username, reason, before=before.tier,
                          after=user.tier)
        if self.notifier is not None:
            await self.notifier.reauthorise(username, user.tier)
        return user

    async def set_disabled(self, actor: str, username: str, disabled: bool,
                           reason: str) -> User:
        user = await self.store.update_user(username, disabled=disabled,
                                            bump_token_version=disabled)
        await self._audit(actor, "user_disabled" if disabled else "user_enabled", username,
                          reason)
        if disabled and self.notifier is not None:
            await self.notifier.disconnect_user(username)
        return user

    async def reset_password(self, actor: str, username: str, password: str,
                             reason: str) -> User:
        user = await change_password(self.store, username, password)
        await self._audit(actor, "password_reset", username, reason)
        if self.notifier is not None:
            await self.notifier.disconnect_user(username)
        return user


def register_users_api(app: Sanic[Any, Any], *, settings: Settings, store: Store,
                       notifier: SocketNotifier, limits: LoginLimits) -> None:
    """Add the users and audit endpoints to ``app`` (see the module docstring)."""
    admin = UserAdmin(store, notifier)

    @app.get("/api/users", name="users")
    async def _users(request: Request) -> HTTPResponse:
        after = request.args.get("after") or None
        limit = int_arg(request, "limit", 50, MAX_PAGE) or 1
        found = await store.list_users(after=after, limit=limit + 1)
        page = found[:limit]
        return json({"users": [user_json(u) for u in page],
                     "next": page[-1].username if len(found) > limit else None,
                     "tiers": tiers_json()})

    @app.post("/api/users", name="create_user")
    async def _create(request: Request) -> HTTPResponse:
        body = json_body(request)
        username = check_username(body.get("username"))
        user = await admin.create(current_user(request).username, username,
                                  password_field(body, "password"), tier_field(body.get("tier")),
                                  reason_field(body))
        return json({"user": user_json(user)}, status=201)

    @app.get("/api/users/<username:str>", name="user")
    async def _user(request: Request, username: str) -> HTTPResponse:
        return json({"user": user_json(await store.get_user(username))})

    @app.patch("/api/users/<username:str>", name="update_user")
    async def _update(request: Request, username: str) -> HTTPResponse:
        """``{tier?, disabled?, reason}``: change the tier, disable or re-enable."""
        actor = current_user(request)
        body = json_body(request)
        reason = reason_field(body)
        tier = tier_field(body["tier"]) if "tier" in body else None
        disabled = body.get("disabled")
        if disabled is not None and not isinstance(disabled, bool):
            raise BadRequest("'disabled' must be true or false")
        if tier is None and disabled is None:
            raise BadRequest("send 'tier' or 'disabled' (and 'reason')")
        user = await store.get_user(username)  # 404 before anything changes
        if username == actor.username and (disabled or (tier is not None and not has_right(
                User(user.username, "", tier, user.created_at, False), "manage_users"))):
            raise Conflict("you cannot disable yourself or give up your own manage_users "
                           "right: ask another admin")
        if tier is not None and tier != user.tier:
            user = await admin.set_tier(actor.username, username, tier, reason)
        if disabled is not None and disabled != user.disabled:
            user = await admin.set_disabled(actor.username, username, disabled, reason)
        return json({"user": user_json(user)})

    @app.post("/api/users/<username:str>/password", name="reset_password")
    async def _reset(request: Request, username: str) -> HTTPResponse:
        body = json_body(request)
        await store.get_user(username)
        user = await admin.reset_password(current_user(request).username, username,
                                          password_field(body, "password"), reason_field(body))
        return json({"user": user_json(user)})

    @app.post("/api/users/<username:str>/unlock", name="unlock_user")
    async def _unlock(request: Request, username: str) -> HTTPResponse:
        """Lift the login limits on a username (``{reason}``); ``{unlocked}``: whether any
        were in force."""
        reason = reason_field(json_body(request))
        unlocked = await limits.unlock(username)
        await store.audit(current_user(request).username, "login_unlocked",
                          target=f"user:{username}",
                          details={"reason": reason, "unlocked": unlocked})
        return json({"unlocked": unlocked, "locked": await limits.locked_names()})

    @app.get("/api/audit", name="audit")
    async def _audit(request: Request) -> HTTPResponse:
        """The audit log, newest first; filters ``actor``, ``action``, ``target``; paging with
        ``before_id`` and ``limit``."""
        limit = int_arg(request, "limit", 100, MAX_PAGE) or 1
        entries = await store.list_audit(
            actor=request.args.get("actor") or None, action=request.args.get("action") or None,
            target=request.args.get("target") or None,
            before_id=int_arg(request, "before_id", None, 2**62), limit=limit)
        return json({"entries": [to_json(e) for e in entries],
                     "next": entries[-1].id if len(entries) == limit else None})
