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
  figures (:mod:`handoff.web.dashboard`), **admins** on customers' data, exported and erased
  (:mod:`handoff.web.privacy`; stored PII masked after its retention period by
  :class:`~handoff.conversation.privacy.RetentionJob`), reviewers on the spot-checks' QA
  queue (:mod:`handoff.web.spot_checks`), all listed in the OpenAPI document
  at ``/api/openapi.json`` (:mod:`handoff.web.openapi`) and ``docs/api.md``;
* the pages: the demo shop with the widget, and the console (:mod:`handoff.web.pages`).

Prometheus scrapes ``GET /metrics`` (:func:`handoff.web.dashboard.register_prometheus`).

One Socket.IO server (``python-socketio``, ``async_mode="sanic"``, path ``/socket.io``).
Errors answer ``{"error", "message"}`` with the status of the exception (:mod:`handoff.errors`,
the router's errors; :func:`handoff.web.http.error_body`).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import socketio
from sanic import Sanic
from sanic.exceptions import SanicException
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff.conversation import router as r
from handoff.conversation.admission import Admission
from handoff.conversation.cluster import PushBus, RedisCluster, make_cluster
from handoff.conversation.rasa_client import RasaClient
from handoff.conversation.instruments import Instruments
from handoff.conversation.privacy import CustomerData, RetentionJob
from handoff.conversation.rasa_pool import RasaPool
from handoff.conversation.presence import OpeningHours, Presence
from handoff.conversation.shell import Conversations
from handoff.conversation.waiting import Waiting
from handoff.conversation.triage_link import TriageLink
from handoff.errors import HandoffError
from handoff.learning.deploys import Deploys
from handoff.learning.metrics import refresh_summaries
from handoff.learning.refresh import SharedRefresh
from handoff.learning.retraining import Retraining
from handoff.learning.spot_checks import SPOT_CHECK_CATCH_UP, SpotCheckRule, SpotChecks
from handoff.learning.supervisor import Supervisor
from handoff.settings import Settings, SettingsError, project_path, write_private
from handoff.store import Store, User
from handoff.triage import TriageConfig
from handoff.web.agents import register_agent_api
from handoff.web.auth import FIRST_ADMIN, ensure_first_admin
from handoff.web.customers import register_customer_protocol
from handoff.web.dashboard import register_dashboard_api, register_prometheus
from handoff.web.guard import GuardedServer, Limits
from handoff.web.http import error_body
from handoff.web.origins import Origins, guard_api, guard_namespace
from handoff.web.login import register_login
from handoff.web.login_limits import LoginLimits
from handoff.web.models import register_models_api
from handoff.web.notifier import AGENT_NAMESPACE, SocketNotifier
from handoff.web.openapi import openapi_document
from handoff.web.pages import register_pages
from handoff.web.privacy import register_privacy_api
from handoff.web.rights import check_surface, install as install_rights
from handoff.web.spot_checks import register_spot_check_api
from handoff.web.whisper import register_whisper_api
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
    # Frames above max_frame_bytes are refused before they are buffered: by Sanic's WebSocket
    # (close 1009) and by engine.io's long-polling (413); binary attachments are refused by
    # GuardedServer (docs/security.md).
    app.config.WEBSOCKET_MAX_SIZE = settings.max_frame_bytes
    # Engine.IO pings every socket itself (25 s, answered within 20 s or closed): Sanic's own
    # websocket keepalive ping would be a second ping and a task more per idle socket
    # (about 2 KB of the 48 KB an idle customer costs; docs/performance.md, "Idle sockets").
    app.config.update(WEBSOCKET_PING_INTERVAL=None)  # (typed int; Sanic takes None: no ping)
    origins = Origins(settings.cors_origins, settings.console_origins)
    cluster = make_cluster(settings.redis_url, prefix=settings.redis_prefix,
                           node_id=settings.node_id, lease=settings.node_lease)
    # several nodes: every push goes through Redis to the node that holds the socket
    manager = (PushBus(settings.redis_url, stream=cluster.push_stream)
               if isinstance(cluster, RedisCluster) else None)
    sio = GuardedServer(async_mode="sanic", cors_allowed_origins=origins.widget_allows,
                        async_handlers=False, max_http_buffer_size=settings.max_frame_bytes,
                        **({"client_manager": manager} if manager is not None else {}))
    sio.attach(app, socketio_path="socket.io")

    async def agents_users(names: Collection[str]) -> dict[str, User]:
        """The users of the agents' sockets, on the agents' connections (Store.ahead): the
        check before a push does not queue behind a burst of customers' transactions."""
        with store.ahead():
            return await store.users_by_name(names)

    notifier = SocketNotifier(sio, cluster, agents_users)
    triage = TriageLink(TriageConfig.from_settings(settings),
                        embedding_cache=settings.triage_embedding_cache) if (
        settings.triage_enabled) else None
    instruments = Instruments()
    spot_checks = SpotChecks(store, SpotCheckRule.from_settings(settings))
    conversations = Conversations(store, rasa, notifier,
                                  review_timeout=settings.review_timeout, triage=triage,
                                  instruments=instruments,
                                  on_ended=spot_checks.conversation_ended, cluster=cluster)
    conversations.admission = Admission(settings.rasa_calls_in_flight,
                                        settings.reply_notice_after)
    # one probe and one admission queue per Rasa server; several: sticky per conversation
    health = RasaPool(rasa, rasa.pool or (rasa.base_url,), interval=settings.rasa_probe_interval,
                      timeout=settings.rasa_probe_timeout, slow=settings.rasa_slow_seconds,
                      failures=settings.rasa_probe_failures,
                      answering=conversations.admission.answered)
    if settings.rasa_probe_interval > 0:
        conversations.health = health
        health.on_change(conversations.rasa_health_changed)
    try:
        hours = OpeningHours.parse(settings.opening_hours, settings.opening_timezone)
    except ValueError as exc:
        raise SettingsError(f"HANDOFF_OPENING_HOURS / HANDOFF_OPENING_TIMEZONE: {exc}") from None
    presence = Presence()
    waiting = Waiting(conversations, store, presence, hours, settings.queue_offer_after)
    conversations.status_listeners.append(waiting.status_changed)
    supervisor = (Supervisor(settings.supervisor_url, settings.rasa_token)
                  if settings.supervisor_url else None)
    deploys = Deploys(settings, store, rasa, supervisor, notifier, triage, instruments,
                      cluster=cluster)
    if triage is not None:
        _attach_triage(triage, rasa, store)
    retraining = Retraining(store, supervisor, notifier, deploys.live, instruments,
                            cluster=cluster)
    app.ctx.notifier = notifier  # not the server: every emit goes through the notifier
    app.ctx.conversations = conversations
    app.ctx.deploys = deploys
    app.ctx.retraining = retraining
    app.ctx.store = store
    app.ctx.cluster = cluster
    customer_data = CustomerData(store, rasa, kinds=settings.pii_kind_list,
                                 conversations=conversations)
    retention = RetentionJob(store, retention_days=settings.pii_retention_days,
                             interval=settings.pii_mask_interval, kinds=settings.pii_kind_list,
                             cluster=cluster, rasa=rasa)
    app.ctx.rasa_health = health
    summaries = SharedRefresh(functools.partial(refresh_summaries, store))

    @app.before_server_start
    async def _start(_app: Sanic[Any, Any]) -> None:
        await store.migrate()
        await cluster.start()  # this node's lease, before it looks at the others' work
        if triage is not None:
            await triage.start()  # in the background: customers are served meanwhile
        await deploys.start()  # before any turn: the supervisor may have switched Rasa
        health.start()  # Rasa's health, probed in the background (off with interval 0)
        retraining.recover()  # in the background: a retraining a restart cut off
        if settings.pii_retention_days:
            retention.start()  # masks stored PII past its retention, one pass per interval
        if (stuck := await conversations.recover()):
            log.warning("%d conversation(s) waited for Rasa across a restart: queued", stuck)
        # conversations that ended while the last run stopped were not sampled: now they are
        app.add_task(spot_checks.catch_up(datetime.now(UTC) - SPOT_CHECK_CATCH_UP),
                     name="spot-check-catch-up")
        app.add_task(instruments.sample_loop_lag(), name="loop-lag")
        conversations.watch_nodes(settings.node_lease / 3)  # several nodes only
        waiting.watch(settings.node_lease / 3)  # likewise
        password = await ensure_first_admin(store)
        if password is not None:  # into a 0600 file: a log may be readable by others
            path = project_path(settings.first_admin_password_file)
            write_private(path, password + "\n")
            print(f"Created the first user: {FIRST_ADMIN}, password in {path} (readable by "
                  f"this user only; change it with python -m handoff.web.auth set-password "
                  f"--username {FIRST_ADMIN})", flush=True)

    @app.before_server_stop
    async def _stop(_app: Sanic[Any, Any]) -> None:
        await retention.close()
        await summaries.close()
        await health.close()
        await waiting.close()
        await retraining.close()
        await deploys.close()
        await conversations.close()
        if triage is not None:
            await triage.close()
        await cluster.close()  # the lease last: the other nodes take over from here

    @app.exception(HandoffError, r.RouterError)
    async def _error(request: Request, exc: Exception) -> HTTPResponse:
        body, status = error_body(exc)
        return json(body, status=status)

    @app.exception(SanicException)
    async def _http_error(request: Request, exc: SanicException) -> HTTPResponse:
        """Sanic's own refusals (no such route, a method the route does not take, a body too
        large) in the API's one error shape instead of Sanic's."""
        status = int(getattr(exc, "status_code", 500) or 500)
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                408: "request_timeout", 413: "payload_too_large"}.get(status, "http_error")
        return json({"error": code, "message": str(exc) or code.replace("_", " ")},
                    status=status, headers=getattr(exc, "headers", None) or None)

    async def _liveness() -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok", "triage": "off" if triage is None else (
            "ready" if triage.ready else "loading"), "rasa": {"state": health.as_json()["state"]},
            "store": "ok" if await store.answers() else "down"}
        if manager is not None:  # ok: Redis answers and this node hears the others' pushes
            body["redis"] = "ok" if manager.listening and await cluster.answers() else "down"
        return body

    @app.get("/api/health", name="health")
    async def _health(request: Request) -> HTTPResponse:
        """For load balancers and probes, without a login: states only, no URL, error text,
        model or threshold (those are in ``/api/health/detail``, for agents)."""
        return json(await _liveness())

    @app.get("/api/health/detail", name="health_detail")
    async def _health_detail(request: Request) -> HTTPResponse:
        body = await _liveness()
        body["rasa"] = health.as_json()
        body["rasa_calls"] = conversations.admission.as_json()
        if triage is not None:
            body["triage_thresholds"] = triage.thresholds_state
        return json(body)

    @app.get("/api/openapi.json", name="openapi")
    async def _openapi(request: Request) -> HTTPResponse:
        return json(openapi_document())

    register_customer_protocol(sio, notifier, conversations=conversations,
                               max_chars=settings.max_message_chars, waiting=waiting,
                               sessions=settings.customer_sessions,
                               limits=Limits.from_settings(settings), instruments=instruments)
    login_limits = LoginLimits(store, settings.login_max_failures,
                               settings.login_ip_max_failures, settings.login_backoff,
                               settings.login_lockout)
    register_login(app, settings=settings, store=store, notifier=notifier, limits=login_limits,
                   instruments=instruments)
    register_users_api(app, settings=settings, store=store, notifier=notifier,
                       limits=login_limits)
    register_agent_api(app, sio, notifier, settings=settings, store=store, rasa=rasa,
                       conversations=conversations, waiting=waiting)
    guard_namespace(sio, AGENT_NAMESPACE, origins)
    guard_api(app, origins)
    register_trainer_api(app, settings=settings, store=store, triage=triage)
    register_models_api(app, settings=settings, store=store, deploys=deploys,
                        retraining=retraining)
    register_dashboard_api(app, settings=settings, store=store, refresh=summaries)
    register_privacy_api(app, settings=settings, store=store, data=customer_data)
    register_spot_check_api(app, settings=settings, store=store, rasa=rasa)
    register_whisper_api(app, sio, settings=settings, store=store, conversations=conversations)
    register_prometheus(app, settings=settings, store=store, notifier=notifier,
                        instruments=instruments)
    register_pages(app, settings)
    install_rights(app, settings=settings, store=store)
    check_surface(app, sio)  # Undeclared: a route or event is missing from the table
    return app


def _attach_triage(triage: TriageLink, rasa: RasaClient, store: Store) -> None:
    """Fitted triage thresholds (docs/triage.md): Rasa's NLU and live model, the stored
    customer messages, and an audit entry for each change."""
    async def model_of() -> str | None:
        model_id = (await rasa.status()).get("model_id")
        return model_id if isinstance(model_id, str) else None

    async def recent(limit: int) -> list[str]:
        return [m.text for m in await store.recent_customer_messages(limit=limit,
                                                                      assessed=False)
                if m.text]

    async def on_fitted(state: dict[str, Any]) -> None:
        await store.audit("system", "triage_thresholds_fitted",
                          target=f"model:{state.get('model_id')}", details=state)

    triage.attach(parse=rasa.parse, model_of=model_of, recent=recent, on_fitted=on_fitted)
