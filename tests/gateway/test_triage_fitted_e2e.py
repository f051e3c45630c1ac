"""Fitted triage thresholds reaching a running gateway (real app, real model, real Rasa).

``HANDOFF_TRIAGE_THRESHOLDS=fitted``: the gateway process fits its thresholds on the live
model (Rasa's ``/status`` and ``/model/parse`` through the app's own wiring, ``_attach_triage``),
swaps them into the worker that judges each turn, reports them in ``/api/health/detail`` and writes
the fit to the audit log; a customer's message is then judged at the fitted thresholds, not
at the configured floors. tests/triage/test_calibration.py checks the fit itself and the
re-fit on a model change on a ``TriageLink`` alone.

The deploy path itself (``long``: ``python -m bot.serve`` starts a second Rasa server): a
trainer deploys a new model through the gateway's API, and the gateway re-fits its thresholds
on it (``Deploys.deploy`` -> ``TriageLink.rebuild`` -> ``calibrate``), reports and audits the
fit, and judges the next turns at them. The new model is the project's own archive under
another model id (to Rasa and the deploy path a model like any other; a training run would
add minutes and test nothing more here).
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from bot.serve import Stack
from handoff.store import Store
from tests.gateway.clients import Widget, user_login
from tests.gateway.clients import api, gateway_store  # noqa: F401 (fixtures)
from tests.gateway.conftest import Gateway, _start_gateway, _stop
from tests.gateway.test_deploys import System, _deploy, _live, serve_system

pytestmark = pytest.mark.asyncio
FLOOR = 0.01  # the configured review threshold: many messages would be held at it
# Everyday messages, some riskier than the floor (0.02-0.1 with the project's model)
CALM = ["my parcel is late", "thanks but no", "hm", "what is your return policy?"]
MISREAD = "Order 633271: wrong door number, it's 18 not 81"  # test_triage_e2e.py: held


@pytest.fixture(scope="module")
def gateway(rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose thresholds follow a target share: none of the calibration set (60 of
    the training data's examples, as the gateway picks them) to review by its score."""
    gw = _start_gateway(tmp_path_factory.mktemp("fitted-gateway"), rasa_stack.rasa_url,
                        rasa_stack.token, {
                            "HANDOFF_TRIAGE_ENABLED": "true",
                            "HANDOFF_TRIAGE_THRESHOLDS": "fitted",
                            "HANDOFF_TRIAGE_REVIEW_THRESHOLD": str(FLOOR),
                            "HANDOFF_TRIAGE_REVIEW_SHARE": "0",
                            "HANDOFF_TRIAGE_HUMAN_SHARE": "0.01",
                            "HANDOFF_TRIAGE_CALIBRATION_MESSAGES": "60",
                            "HANDOFF_TRIAGE_CALIBRATION_MIN": "40"})
    yield gw
    _stop(gw.process)


async def _fitted(api: httpx.AsyncClient, store: Store) -> dict[str, Any]:
    """The health's thresholds once the first fit is done (the model loads, then Rasa parses
    the calibration set, in the background)."""
    watcher = await user_login(store, api, "health-watcher", "trainee")
    for _ in range(480):
        health = (await api.get("/api/health/detail", headers=watcher)).json()
        if health["triage"] == "ready" and health["triage_thresholds"].get("fitted_at"):
            return dict(health["triage_thresholds"])
        await asyncio.sleep(0.25)
    raise AssertionError("the thresholds were not fitted")


async def _judged(gateway: Gateway | System, store: Store, text: str, answered: bool = True
                  ) -> tuple[str, dict[str, Any]]:
    """A new customer says ``text`` and gets the bot's reply (``answered``) or nothing; the
    conversation's id and the message's assessment, stored by the turn's own step."""
    widget = await Widget(gateway.url).connect()
    try:
        session_id = await widget.session()
        await widget.say(session_id, text)
        if answered:
            assert (await widget.next())[0] == "bot_uttered"
        else:
            await widget.nothing()
    finally:
        await widget.close()
    [message] = [m for m in await store.list_messages(session_id) if m.sender == "customer"]
    assert message.triage is not None
    return session_id, dict(message.triage)


async def test_a_running_gateway_judges_turns_at_the_thresholds_it_fitted_on_the_live_model(
    gateway: Gateway, rasa_stack: Stack, store: Store, api: httpx.AsyncClient
) -> None:
    state = await _fitted(api, store)
    async with httpx.AsyncClient() as rasa:
        live = (await rasa.get(f"{rasa_stack.rasa_url}/status",
                               params={"token": rasa_stack.token})).json()["model_id"]
    assert (state["mode"], state["fitted"], state["messages"], state["source"],
            state["model_id"]) == ("fitted", True, 60, "training data", live)
    assert (state["floor_review_threshold"], state["target_review_share"]) == (FLOOR, 0.0)
    review = state["review_threshold"]
    assert review > FLOOR  # raised above the floor to meet the share
    [audited] = await store.list_audit(action="triage_thresholds_fitted")
    assert (audited.actor, audited.target) == ("system", f"model:{live}")
    assert ((audited.details or {})["review_threshold"], (audited.details or {})["fitted_at"]) == (
        review, state["fitted_at"])

    # judged in the turn at the fitted thresholds: messages riskier than the floor but under
    # the fitted review threshold are answered by the bot, the conversation stays the bot's
    between = []
    for text in CALM:
        session_id, assessment = await _judged(gateway, store, text)
        conversation = await store.get_conversation(session_id)
        if FLOOR <= assessment["risk"] < review:
            between.append(text)
            assert assessment["action"] == "none", (text, assessment)
            assert (conversation.mode, conversation.queued) == ("bot", False), text
    assert between, "no message fell between the floor and the fitted threshold"
    # and one above it is held before it reaches the customer
    session_id, assessment = await _judged(gateway, store, MISREAD, answered=False)
    assert assessment["risk"] >= review and assessment["action"] == "review"
    conversation = await store.get_conversation(session_id)
    assert (conversation.mode, conversation.owner, conversation.queue_reason) == (
        "review", None, "triage")


def _as_new_model(source: Path, target: Path, model_id: str) -> None:
    """A copy of the Rasa model archive ``source`` whose metadata names another model id."""
    with tarfile.open(source, "r:gz") as old, tarfile.open(target, "w:gz") as new:
        for member in old:
            data = old.extractfile(member) if member.isfile() else None
            if data is not None and member.name.lstrip("./") == "metadata.json":
                metadata = json.loads(data.read())
                metadata["model_id"] = model_id
                raw = json.dumps(metadata).encode()
                member.size = len(raw)
                data = io.BytesIO(raw)
            new.addfile(member, data)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, shop_db: Path) -> Iterator[System]:
    """The whole system as `make run` starts it, triage's thresholds fitted (as the
    module's gateway above)."""
    yield from serve_system(tmp_path_factory.mktemp("fitted-system"), shop_db, {
        "HANDOFF_TRIAGE_ENABLED": "true", "HANDOFF_TRIAGE_THRESHOLDS": "fitted",
        "HANDOFF_TRIAGE_REVIEW_THRESHOLD": str(FLOOR), "HANDOFF_TRIAGE_REVIEW_SHARE": "0",
        "HANDOFF_TRIAGE_HUMAN_SHARE": "0.01", "HANDOFF_TRIAGE_CALIBRATION_MESSAGES": "60",
        "HANDOFF_TRIAGE_CALIBRATION_MIN": "40"})


@pytest_asyncio.fixture
async def system_store(system: System) -> AsyncIterator[Store]:
    s = Store(system.database_url)
    yield s
    await s.close()


@pytest.mark.long
@pytest.mark.timeout(1200)
async def test_a_deploy_refits_the_thresholds_on_the_new_model_and_turns_follow_them(
    system: System, system_store: Store
) -> None:
    store = system_store
    async with httpx.AsyncClient(base_url=system.url, timeout=900) as api:
        first = await _fitted(api, store)
        trainer = await user_login(store, api, "tom", "trainer")
        old_model = await _live(api, trainer)
        assert first["model_id"] == old_model
        new_model = uuid.uuid4().hex
        [archive] = (system.project / "models").glob("*.tar.gz")
        _as_new_model(archive, system.project / "models" / f"as-new-{new_model}.tar.gz",
                      new_model)
        assert new_model in {m["model_id"] for m in (await api.get(
            "/api/models", headers=trainer)).json()["models"]}  # found by the gateway

        await _deploy(system, api, trainer, new_model)
        assert await _live(api, trainer) == new_model
        state = (await api.get("/api/health/detail", headers=trainer)).json()["triage_thresholds"]
        assert (state["mode"], state["fitted"], state["model_id"]) == (
            "fitted", True, new_model)
        assert state["fitted_at"] >= first["fitted_at"]
        review = state["review_threshold"]
        assert review > FLOOR
        fits = await store.list_audit(action="triage_thresholds_fitted")
        assert [f.target for f in fits][:2] == [f"model:{new_model}", f"model:{old_model}"]
        assert (fits[0].details or {})["review_threshold"] == review

        between = []
        for text in CALM:
            session_id, assessment = await _judged(system, store, text)
            if FLOOR <= assessment["risk"] < review:
                between.append(text)
                assert assessment["action"] == "none", (text, assessment)
                assert (await store.get_conversation(session_id)).mode == "bot"
        assert between, "no message fell between the floor and the fitted threshold"
        _, assessment = await _judged(system, store, MISREAD, answered=False)
        assert assessment["risk"] >= review and assessment["action"] == "review"
