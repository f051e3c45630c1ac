"""The trainers' models API (rights ``review_corrections``, ``retrain``, ``deploy``: :mod:`handoff.web.rights`): retrain, deploy, roll back.

====================================  ==========================================================
``GET /api/models``                   the model versions (live, candidates, retired) with their
                                      proofs, the running or last retraining and deploy
``POST /api/retrain``                 ``{finetune?}``: retrain on the accepted corrections not
                                      trained on yet (202; :mod:`handoff.learning.retraining`)
``GET /api/retrain``                  the running or last retraining, with its output
``POST /api/models/{id}/deploy``      ``{override?}``: put a candidate live, blue/green (202;
                                      :mod:`handoff.learning.deploys`)
``POST /api/models/rollback``         put the model live before back (202)
====================================  ==========================================================

Without ``HANDOFF_SUPERVISOR_URL`` the list still shows the live model; retraining and
deploying answer 503.
"""

from __future__ import annotations

from typing import Any

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff.conversation.rasa_client import RasaError
from handoff.errors import BadRequest, NotFound
from handoff.learning.deploys import Deploys
from handoff.learning.retraining import Retraining, proof_line
from handoff.settings import Settings
from handoff.store import ModelVersion, Store, to_json
from handoff.web.http import json_body
from handoff.web.rights import current_user

__all__ = ["model_json", "register_models_api"]

MAX_OVERRIDE = 1000


def model_json(version: ModelVersion, live: str | None) -> dict[str, Any]:
    return {**to_json(version), "live": version.model_id == live,
            "summary": proof_line(version.proof) if version.proof else None}


def register_models_api(app: Sanic[Any, Any], *, settings: Settings, store: Store,
                        deploys: Deploys, retraining: Retraining) -> None:
    """Add the trainers' models endpoints to ``app`` (see the module docstring)."""

    async def trainer(request: Request) -> str:
        return current_user(request).username

    @app.get("/api/models", name="models")
    async def _models(request: Request) -> HTTPResponse:
        await trainer(request)
        try:
            live: str | None = (await deploys.live()).model_id
        except RasaError:
            live = None
        await deploys.discover()
        versions = await store.list_models()
        return json({"live": live, "models": [model_json(v, live) for v in versions],
                     "retrain": await retraining.view(), "deploy": await deploys.view(),
                     "can_deploy": deploys.supervisor is not None})

    @app.post("/api/retrain", name="retrain")
    async def _retrain(request: Request) -> HTTPResponse:
        who = await trainer(request)
        finetune = json_body(request).get("finetune", False)
        if not isinstance(finetune, bool):
            raise BadRequest("'finetune' must be true or false")
        return json({"retrain": await retraining.start(who, finetune)}, status=202)

    @app.get("/api/retrain", name="retrain_state")
    async def _retrain_state(request: Request) -> HTTPResponse:
        await trainer(request)
        return json({"retrain": await retraining.view()})

    @app.post("/api/models/<model_id:str>/deploy", name="deploy")
    async def _deploy(request: Request, model_id: str) -> HTTPResponse:
        who = await trainer(request)
        override = json_body(request).get("override")
        if override is not None and (not isinstance(override, str) or not override.strip()
                                     or len(override) > MAX_OVERRIDE):
            raise BadRequest(f"'override' must be a reason of 1 to {MAX_OVERRIDE} characters")
        try:
            await store.get_model(model_id)
        except NotFound:
            raise NotFound(f"no model {model_id}") from None
        job = await deploys.start_deploy(model_id, who, override.strip() if override else None)
        return json({"deploy": job}, status=202)

    @app.post("/api/models/rollback", name="rollback")
    async def _rollback(request: Request) -> HTTPResponse:
        who = await trainer(request)
        return json({"deploy": await deploys.start_rollback(who)}, status=202)
