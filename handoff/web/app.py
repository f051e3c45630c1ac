"""The gateway's web app: ``create_app(settings, store, rasa) -> Sanic`` (no module-global app).

It only wires: the conversation wing (:class:`~handoff.conversation.shell.Conversations`, with
triage when it is on) and the learning wing (:class:`~handoff.learning.retraining.Retraining`,
:class:`~handoff.learning.deploys.Deploys`) over the given store and Rasa client, each handed
the one :class:`~handoff.web.notifier.SocketNotifier`, and the faces in front of them:

* **customers** on the default Socket.IO namespace, Rasa's socketio channel protocol
  (:mod:`handoff.web.customers`);
* **agents** on the JSON API and the ``/agent`` namespace (:mod:`handoff.web.agents`, login in
  :mod:`handoff.web.login`), **trainers** also on the corrections and models API
  (:mod:`handoff.web.trainers`, :mod:`handoff.web.models`), **leads** on the dashboard's
  figures (:mod:`handoff.web.dashboard`), all listed in the OpenAPI document
  at ``/api/openapi.json`` (:mod:`handoff.web.openapi`) and ``docs/api.md``;
* the pages: the demo shop with the widget, and the console (:mod:`handoff.web.pages`).

Prometheus scrapes ``GET /metrics`` (:func:`handoff.web.dashboard.register_prometheus`).

One Socket.IO server (``python-socketio``, ``async_mode="sanic"``, path ``/socket.io``).
Errors answer ``{"error", "message"}`` with the status of the exception (:mod:`handoff.errors`,
the router's errors; :func:`handoff.web.http.error_body`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import socketio
from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff.conversation import router as r
from handoff.conversation.rasa_client import RasaClient
from handoff.conversation.instruments import Instruments
from handoff.conversation.shell import Conversations
from handoff.conversation.triage_link import TriageLink
from handoff.errors import HandoffError
from handoff.learning.deploys import Deploys
from handoff.learning.retraining import Retraining
from handoff.learning.supervisor import Supervisor
from handoff.settings import Settings
from handoff.store import Store
from handoff.triage import TriageConfig
from handoff.web.agents import register_agent_api
from handoff.web.auth import FIRST_ADMIN, ensure_first_admin
from handoff.web.customers import register_customer_protocol
from handoff.web.dashboard import register_dashboard_api, register_prometheus
from handoff.web.http import error_body
from handoff.web.login import register_login
from handoff.web.login_limits import LoginLimits
from handoff.web.models import register_models_api
from handoff.web.notifier import SocketNotifier
from handoff.web.openapi import openapi_document
from handoff.web.pages import register_pages
from handoff.web.rights import check_surface, install as install_rights
from handoff.web.trainers import register_trainer_api
from handoff.web.users import register_users_api

__all__ = ["create_app"]

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 1_000_000


def create_app(settings: Settings, store: Store, rasa: RasaClient) -> Sanic[Any, Any]:
    """The gateway app over the given store and Rasa client (see the module docstring).
    On start it migrates the store and creates the first admin (password printed once)."""
    app = Sanic(f"handoff-{uuid.uuid4().hex[:8]}")
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.REQUEST_MAX_SIZE = MAX_REQUEST_BYTES
    # async_handlers=False: one client's events are handled one after another, in the order
    # sent (handlers are short: Rasa calls run as background tasks in Conversations).
    sio = socketio.AsyncServer(async_mode="sanic", cors_allowed_origins=settings.cors_allowed,
                               async_handlers=False)
    sio.attach(app, socketio_path="socket.io")
    notifier = SocketNotifier(sio)
    triage = TriageLink(TriageConfig.from_settings(settings)) if (
        settings.triage_enabled) else None
    instruments = Instruments()
    conversations = Conversations(store, rasa, notifier,
                                  review_timeout=settings.review_timeout, triage=triage,
                                  instruments=instruments)
    supervisor = (Supervisor(settings.supervisor_url, settings.rasa_token)
                  if settings.supervisor_url else None)
    deploys = Deploys(settings, store, rasa, supervisor, notifier, triage, instruments)
    retraining = Retraining(store, supervisor, notifier, deploys.live, instruments)
    app.ctx.notifier = notifier  # not the server: every emit goes through the notifier
    app.ctx.conversations = conversations
    app.ctx.deploys = deploys
    app.ctx.retraining = retraining
    app.ctx.store = store

    @app.before_server_start
    async def _start(_app: Sanic[Any, Any]) -> None:
        await store.migrate()
        if triage is not None:
            await triage.start()  # in the background: customers are served meanwhile
        await deploys.start()  # before any turn: the supervisor may have switched Rasa
        retraining.recover()  # in the background: a retraining a restart cut off
        if (stuck := await conversations.recover()):
            log.warning("%d conversation(s) waited for Rasa across a restart: queued", stuck)
        password = await ensure_first_admin(store)
        if password is not None:
            print(f"Created the first user: {FIRST_ADMIN} / {password}  (shown only this "
                  f"once; change it with python -m handoff.web.auth set-password --username "
                  f"{FIRST_ADMIN})", flush=True)

    @app.before_server_stop
    async def _stop(_app: Sanic[Any, Any]) -> None:
        await retraining.close()
        await deploys.close()
        await conversations.close()
        if triage is not None:
            await triage.close()

    @app.exception(HandoffError, r.RouterError)
    async def _error(request: Request, exc: Exception) -> HTTPResponse:
        body, status = error_body(exc)
        return json(body, status=status)

    @app.get("/api/health", name="health")
    async def _health(request: Request) -> HTTPResponse:
        return json({"status": "ok", "triage": "off" if triage is None else (
            "ready" if triage.ready else "loading")})

    @app.get("/api/openapi.json", name="openapi")
    async def _openapi(request: Request) -> HTTPResponse:
        return json(openapi_document())

    register_customer_protocol(sio, notifier, conversations=conversations,
                               max_chars=settings.max_message_chars)
    limits = LoginLimits(settings.login_max_failures, settings.login_ip_max_failures,
                         settings.login_backoff, settings.login_lockout)
    register_login(app, settings=settings, store=store, notifier=notifier, limits=limits,
                   instruments=instruments)
    register_users_api(app, settings=settings, store=store, notifier=notifier, limits=limits)
    register_agent_api(app, sio, notifier, settings=settings, store=store, rasa=rasa,
                       conversations=conversations)
    register_trainer_api(app, settings=settings, store=store, triage=triage)
    register_models_api(app, settings=settings, store=store, deploys=deploys,
                        retraining=retraining)
    register_dashboard_api(app, settings=settings, store=store)
    register_prometheus(app, settings=settings, store=store, notifier=notifier,
                        instruments=instruments)
    register_pages(app, settings)
    install_rights(app, settings=settings, store=store)
    check_surface(app, sio)  # Undeclared: a route or event is missing from the table
    return app
