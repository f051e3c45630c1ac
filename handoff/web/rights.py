"""Who may do what: rights, the certification tiers that group them, and the one action table
in which every HTTP route and every ``/agent`` event declares the right it needs.

Rights are data, not ranks. A user has one tier (``users.tier``), assigned by an admin; the
tier's rights are :data:`TIER_RIGHTS`. The gateway checks them in one place:

* HTTP: :func:`install` adds a request middleware that looks the route's name up in
  :data:`ROUTE_RIGHTS`, checks the bearer token and the user's *current* tier, and leaves the
  user in ``request.ctx.user`` (:func:`current_user`);
* ``/agent`` Socket.IO: :func:`guard` wraps every event handler the same way (the token and the
  tier are checked again on every event, so a change takes effect at once);
* a ``decision`` needs the right of its type as well (:data:`DECISION_RIGHTS`).

:func:`check_surface` refuses to start an app with a route or an ``/agent`` event that the table
does not declare. Customers (the default namespace) need no login: :data:`CUSTOMER_EVENTS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Final

import socketio
from sanic import Sanic
from sanic.request import Request

from handoff.conversation import router as r
from handoff.conversation.instruments import Instruments
from handoff.errors import Forbidden, HandoffError, Unauthorized
from handoff.settings import Settings
from handoff.store import TIERS, Store, User
from handoff.web.auth import user_from_token, user_of_claims, verify_token
from handoff.web.http import check_storable, error_body

__all__ = [
    "AUTHENTICATED", "CUSTOMER_EVENTS", "DECISION_RIGHTS", "EVENT_RIGHTS", "PUBLIC", "RIGHTS",
    "ROUTE_RIGHTS", "TIER_RIGHTS", "Undeclared", "check_surface", "current_user", "guard",
    "has_right", "install", "require_right", "rights_of",
]

log = logging.getLogger(__name__)

RIGHTS: Final = (
    "watch",               # read conversations, notes, suggestions; hear the live pushes
    "approve",             # approve a held bot reply; review mode on or off
    "edit",                # edit, write or replace a held bot reply
    "relabel",             # relabel the intent of a held reply
    "takeover",            # take over, write to the customer, hand back, close (one's own)
    "whisper",             # add internal notes; whisper to the bot (set a slot, pick its action)
    "review_corrections",  # accept, reject or edit corrections; label emerging needs; their audit
    "retrain",             # train a new model; see the models
    "deploy",              # deploy a model or roll back
    "view_metrics",        # the dashboard's figures
    "override",            # take over, hand back or close anyone's conversation
    "manage_users",        # users, tiers, the audit log; lift login lockouts
    "protect_data",        # export and erase a customer's data
)

PUBLIC: Final = "public"  # no login: pages, login, health
AUTHENTICATED: Final = "authenticated"  # any valid login, whatever the tier (logout, me)

_TRAINEE = ("watch", "approve", "whisper")
_AGENT = (*_TRAINEE, "edit", "relabel", "takeover")
_REVIEWER = (*_AGENT, "review_corrections")
_TRAINER = (*_REVIEWER, "retrain", "deploy", "view_metrics")
_LEAD = (*_AGENT, "view_metrics", "override")

TIER_RIGHTS: Final[Mapping[str, frozenset[str]]] = {
    "trainee": frozenset(_TRAINEE),
    "agent": frozenset(_AGENT),
    "reviewer": frozenset(_REVIEWER),
    "trainer": frozenset(_TRAINER),
    "lead": frozenset(_LEAD),
    "admin": frozenset(RIGHTS),
}
assert tuple(TIER_RIGHTS) == TIERS, "the store's tiers and the rights' tiers differ"

# Every HTTP route by its name (``name=`` of the route) and the right it needs.
ROUTE_RIGHTS: Final[Mapping[str, str]] = {
    # pages and public endpoints
    "health": PUBLIC, "openapi": PUBLIC, "login": PUBLIC, "page_shop": PUBLIC,
    "page_console": PUBLIC, "widget_js": PUBLIC, "vendor": PUBLIC, "static": PUBLIC,
    "prometheus": PUBLIC,  # its own bearer token (HANDOFF_METRICS_TOKEN) when set
    "handle_request": PUBLIC,  # the Socket.IO endpoint: /agent checks EVENT_RIGHTS itself
    # one's own session
    "logout": AUTHENTICATED, "me": AUTHENTICATED, "me_password": AUTHENTICATED,
    # agents
    "conversations": "watch", "conversation": "watch", "notes": "watch",
    "suggestions": "watch", "rate_suggestion": "watch", "domain": "watch",
    "add_note": "whisper", "whisper": "whisper",
    "action_watch": "watch", "action_takeover": "takeover", "action_handback": "takeover",
    "action_close": "takeover", "action_message": "takeover", "action_review": "approve",
    "action_decision": "approve",  # and the right of the decision's type
    "override": "override",
    "presence": "watch", "set_presence": "watch",  # available / away (docs/supervision.md)
    "health_detail": "watch",  # Rasa's servers, admission, triage thresholds
    # spot-checks: marking right needs approve; a correcting mark also the right of its type
    "spot_checks": "approve", "spot_check": "approve", "spot_check_mark": "approve",
    "spot_check_finish": "approve",
    # trainers
    "corrections": "review_corrections", "correction_groups": "review_corrections",
    "review_correction": "review_corrections", "review_corrections": "review_corrections",
    "emerging_needs": "review_corrections", "label_emerging_need": "review_corrections",
    "correction_audit": "review_corrections",
    "models": "retrain", "retrain": "retrain", "retrain_state": "retrain",
    "deploy": "deploy", "rollback": "deploy",
    "metrics_all": "view_metrics", "metrics_one": "view_metrics", "metrics_csv": "view_metrics",
    # admins
    "users": "manage_users", "create_user": "manage_users", "user": "manage_users",
    "update_user": "manage_users", "reset_password": "manage_users", "audit": "manage_users",
    "unlock_user": "manage_users",
    # customers' data (docs/security.md, "Customers' data")
    "customer_export": "protect_data", "customers_export": "protect_data",
    "customer_erase": "protect_data", "customers_erase": "protect_data",
}

# Every ``/agent`` event and the right it needs (``connect``: any valid login).
EVENT_RIGHTS: Final[Mapping[str, str]] = {
    "connect": AUTHENTICATED, "disconnect": AUTHENTICATED,
    "watch": "watch", "takeover": "takeover", "handback": "takeover", "close": "takeover",
    "message": "takeover", "review": "approve", "decision": "approve",
    "presence": "watch", "whisper": "whisper",
}

# A decision needs, besides ``approve``, the right of its type.
DECISION_RIGHTS: Final[Mapping[str, str]] = {
    "approve": "approve", "edit": "edit", "write": "edit", "replace": "edit",
    "relabel": "relabel",
}

# The customers' events on the default namespace: no login, only their session.
CUSTOMER_EVENTS: Final = frozenset({
    "connect", "disconnect", "session_request", "user_uttered", "survey_answer",
    "end_conversation", "handoff_choice",
})

_known = set(RIGHTS) | {PUBLIC, AUTHENTICATED}
assert set(ROUTE_RIGHTS.values()) <= _known and set(EVENT_RIGHTS.values()) <= _known


class Undeclared(RuntimeError):
    """A route or event is missing from the action table: the app does not start."""


def rights_of(tier: str) -> frozenset[str]:
    """The rights of a tier (none for an unknown name)."""
    return TIER_RIGHTS.get(tier, frozenset())


def has_right(user: User, right: str) -> bool:
    """Whether ``user`` (enabled) may do what needs ``right``."""
    if right == PUBLIC:
        return True
    if user.disabled:
        return False
    return right == AUTHENTICATED or right in rights_of(user.tier)


def require_right(user: User, right: str) -> None:
    """``Forbidden`` (403, ``{"right": ...}``) unless ``user`` has ``right``."""
    if not has_right(user, right):
        raise Forbidden(f"this needs the right {right!r}, which the tier {user.tier!r} lacks",
                        right=right)


def route_name(app: Sanic[Any, Any], full: str) -> str:
    """``health`` for Sanic's ``<app name>.health``."""
    prefix = f"{app.name}."
    return full[len(prefix):] if full.startswith(prefix) else full


def check_surface(app: Sanic[Any, Any], sio: socketio.AsyncServer) -> None:
    """``Undeclared`` if a route of ``app`` or an event of ``sio`` is not in the table."""
    missing = sorted({route_name(app, route.name) for route in app.router.routes}
                     - set(ROUTE_RIGHTS))
    handlers: Mapping[str, Mapping[str, Any]] = sio.handlers
    missing += sorted(f"/agent {e}" for e in set(handlers.get("/agent", {})) - set(EVENT_RIGHTS))
    missing += sorted(f"/ {e}" for e in set(handlers.get("/", {})) - CUSTOMER_EVENTS)
    if missing:
        raise Undeclared("not in the action table (handoff/web/rights.py): " + ", ".join(missing))


def bearer(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>``; ``Unauthorized`` without one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <token> (POST /api/login)")
    return token.strip()


def install(app: Sanic[Any, Any], *, settings: Settings, store: Store) -> None:
    """The one HTTP check: before every handler, the right its route declares."""

    @app.on_request
    async def _authorise(request: Request) -> None:
        request.ctx.user = None
        if request.route is None:
            return  # 404 or 405: Sanic answers
        right = ROUTE_RIGHTS.get(route_name(app, request.route.name))
        if right is None:  # check_surface makes this impossible; refuse rather than allow
            raise Forbidden("this route declares no right")
        if right == PUBLIC:
            return
        user = await user_from_token(store, bearer(request), secret=settings.jwt_secret)
        require_right(user, right)
        request.ctx.user = user


def current_user(request: Request) -> User:
    """The user the middleware checked for this request (routes that need a right only)."""
    user: User | None = getattr(request.ctx, "user", None)
    if user is None:
        raise Unauthorized("send Authorization: Bearer <token> (POST /api/login)")
    return user


EventHandler = Callable[[User, str, Any], Awaitable[dict[str, Any]]]
# the notifier's SocketNotifier.event_users: the user read now, the event's pushes reusing it
EventUsers = Callable[[str], AbstractAsyncContextManager[User | None]]


def guard(sio: socketio.AsyncServer, namespace: str, event: str, handler: EventHandler, *,
          store: Store, settings: Settings, event_users: EventUsers | None = None,
          instruments: Instruments | None = None,
          ) -> Callable[[str, Any], Awaitable[dict[str, Any]]]:
    """The one ``/agent`` event check: the socket's token and the user's current tier against
    the event's right, then ``handler(user, sid, data)``; with ``event_users`` the user is read
    through it, together with the users the event's pushes check (one read, not one per push:
    :meth:`~handoff.web.notifier.SocketNotifier.event_users`). Refusals are acknowledged as
    ``{"error", "message", "status"}``, as the HTTP answer would be: a payload that cannot be
    stored (a lone surrogate) is a 400, and anything unexpected a 500 ``internal_error`` with
    one log line; no event goes unanswered. ``instruments``: the event's time to its
    acknowledgement, and its read of the users, go to ``handoff_agent_event_seconds``."""
    right = EVENT_RIGHTS[event]  # KeyError: declare the event first
    timed = (instruments.agent_event_seconds.labels(event, "total"),
             instruments.agent_event_seconds.labels(event, "users")) if instruments else None

    async def checked(sid: str, data: Any = None) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            session = await sio.get_session(sid, namespace=namespace)
            if event_users is None:
                user = await user_from_token(store, session["token"],
                                             secret=settings.jwt_secret)
                require_right(user, right)
                return await handler(user, sid, check_storable(data, f"{event}'s payload"))
            claims = verify_token(session["token"], secret=settings.jwt_secret)
            # a person waits on this event: its reads and writes go before the customers'
            with store.ahead():
                asked = time.perf_counter()
                async with event_users(claims.username) as found:
                    if timed is not None:
                        timed[1].observe(time.perf_counter() - asked)
                    user = user_of_claims(claims, found)
                    require_right(user, right)
                    return await handler(user, sid, check_storable(data, f"{event}'s payload"))
        except (HandoffError, r.RouterError) as exc:
            body, status = error_body(exc)
            return {**body, "status": status}
        except Exception as exc:  # noqa: BLE001 - answered (never silence), logged in one line
            log.warning("/agent %s failed: %s: %.200s", event, type(exc).__name__, exc)
            return {"error": "internal_error", "status": 500,
                    "message": f"the gateway could not handle this {event}"}
        finally:
            if timed is not None:
                timed[0].observe(time.perf_counter() - started)

    return checked


def tiers_json() -> dict[str, list[str]]:
    """Every tier and its rights, for the API and the console."""
    return {tier: sorted(rights) for tier, rights in TIER_RIGHTS.items()}


def describe(rights: Iterable[str]) -> list[str]:
    """Rights in the order of :data:`RIGHTS`."""
    given = set(rights)
    return [right for right in RIGHTS if right in given]
