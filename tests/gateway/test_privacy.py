"""Customers' data end to end, on a real gateway in front of the real Rasa: an admin exports a
customer's conversation (PII masked) and erases it from the gateway's store and Rasa's tracker;
another customer is untouched; an agent gets 403, an unknown customer a clear 404
(docs/security.md, "Customers' data")."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import requests

from bot.serve import Stack
from handoff.conversation.privacy import RetentionJob
from handoff.conversation.rasa_client import RasaClient
from handoff.store import Store
from tests.gateway.clients import WAIT, Widget, agent_login, user_login
from tests.gateway.clients import api, gateway_store, widget  # noqa: F401 (fixtures)
from tests.gateway.conftest import GATEWAY_PYTHON, PROJECT_ROOT, Gateway
from tests.gateway.test_metrics_api import _samples

pytestmark = pytest.mark.asyncio

SECRET = "where is my order 100002? I am jane.doe@mail.test"
OTHER = "where is my order 100008? call me on +44 20 7946 0958"


def _tracker_texts(stack: Stack, sender: str) -> list[str]:
    resp = requests.get(f"{stack.rasa_url}/conversations/{sender}/tracker",
                        params={"token": stack.token, "include_events": "ALL"}, timeout=WAIT)
    resp.raise_for_status()
    return [e.get("text") or "" for e in resp.json()["events"] if e["event"] in ("user", "bot")]


async def _chat(store: Store, widget: Widget, text: str) -> str:
    """A customer's conversation with one answered turn; its session id."""
    session_id = await widget.started(text)  # the conversation exists from this message on
    deadline = time.monotonic() + WAIT
    while not any(m.sender == "bot" for m in await store.list_messages(session_id)):
        assert time.monotonic() < deadline, "the bot's answer was not stored"
        await asyncio.sleep(0.05)
    return session_id


async def test_an_admin_exports_and_erases_one_customer_and_only_them(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient, rasa_stack: Stack
) -> None:
    other_widget = await Widget(gateway.url).connect()
    try:
        mine, theirs = await asyncio.gather(_chat(store, widget, SECRET),
                                            _chat(store, other_widget, OTHER))
    finally:
        await other_widget.close()
    assert SECRET in _tracker_texts(rasa_stack, mine)
    admin = await user_login(store, api, "dpo", "admin")
    agent = await agent_login(store, api, "agnes")

    # who may: an agent gets 403, no token 401, and nothing changes
    for headers, status in ((agent, 403), ({}, 401)):
        resp = await api.get(f"/api/customers/{mine}/export", headers=headers)
        assert resp.status_code == status, resp.text
        resp = await api.post(f"/api/customers/{mine}/erase", headers=headers,
                              json={"reason": "not allowed"})
        assert resp.status_code == status, resp.text
    # an unknown customer: a clear 404; a bad body: 400; nothing changes
    resp = await api.post("/api/customers/erase", headers=admin,
                          json={"ids": [mine, "no-such-session"], "reason": "request 12"})
    assert resp.status_code == 404, resp.text
    assert resp.json()["unknown"] == ["no-such-session"]
    assert "no-such-session" in resp.json()["message"]
    for body in ("{}", '{"reason": " "}', '{"reason": "\\ud800"}'):  # a lone surrogate
        resp = await api.post(f"/api/customers/{mine}/erase", content=body,
                              headers={**admin, "Content-Type": "application/json"})
        # a lone surrogate is refused for the whole body, before the route reads its reason
        word = "surrogate" if "ud800" in body else "reason"
        assert resp.status_code == 400 and word in resp.json()["message"], resp.text
    resp = await api.post("/api/customers/export", headers=admin, json={"ids": "x"})
    assert resp.status_code == 400 and "ids" in resp.json()["message"], resp.text
    assert [m.text for m in await store.list_messages(mine)][0] == SECRET

    # the export: the conversation, PII masked
    resp = await api.get(f"/api/customers/{mine}/export", headers=admin,
                         params={"reason": "subject access request 12"})
    assert resp.status_code == 200, resp.text
    [exported] = resp.json()["customers"]
    assert exported["id"] == mine
    texts = [m["text"] for m in exported["messages"]]
    assert texts[0] == "where is my order 104233? I am customer@example.com"
    assert "100002" not in resp.text and "jane.doe" not in resp.text
    resp = await api.post("/api/customers/export", headers=admin, json={"ids": [mine, theirs]})
    assert [c["id"] for c in resp.json()["customers"]] == [mine, theirs]

    # the erasure
    closed = ("handoff_mode_transitions_total", (("from_mode", "bot"), ("to_mode", "closed")))
    was = _samples((await api.get("/metrics")).text).get(closed, 0.0)
    resp = await api.post(f"/api/customers/{mine}/erase", headers=admin,
                          json={"reason": "erasure request 12"})
    assert resp.status_code == 200, resp.text
    # its close is a mode change like any other: recorded (no agent resolved it) and counted
    last = (await store.metric_events([mine]))[-1]
    assert (last.cause, last.actor, last.mode_from, last.mode, last.owner, last.queued) == (
        "customer_erased", None, "bot", "closed", None, False)
    assert _samples((await api.get("/metrics")).text)[closed] == was + 1
    [done] = resp.json()["erased"]
    assert done["conversation_id"] == mine and done["rasa"] == "erased"
    assert done["messages"] >= 2
    assert await store.list_messages(mine) == []
    conv = await store.get_conversation(mine)
    assert conv.mode == "closed" and conv.erased_at is not None
    assert not [t for t in _tracker_texts(rasa_stack, mine) if t]
    # the customer writing again is not stored, nor sent to Rasa
    await widget.say(mine, "still there? jane.doe@mail.test")
    await asyncio.sleep(0.5)
    assert await store.list_messages(mine) == []
    assert not [t for t in _tracker_texts(rasa_stack, mine) if t]
    # the other customer is untouched
    assert [m.text for m in await store.list_messages(theirs)][0] == OTHER
    assert OTHER in _tracker_texts(rasa_stack, theirs)
    # audited: who, why
    audit = {(e.action, e.actor, (e.details or {}).get("reason"))
             for e in await store.list_audit(target=f"conversation:{mine}")}
    assert audit == {("customer_exported", "dpo", "subject access request 12"),
                     ("customer_exported", "dpo", None),
                     ("customer_erased", "dpo", "erasure request 12")}


async def test_the_routes_are_in_the_openapi_document_with_their_right(
    api: httpx.AsyncClient,
) -> None:
    doc = (await api.get("/api/openapi.json")).json()
    ops: list[dict[str, Any]] = [op for path, item in doc["paths"].items()
                                 if path.startswith("/api/customers") for op in item.values()]
    assert len(ops) == 4 and {op["x-required-right"] for op in ops} == {"protect_data"}


def _cli(gateway: Gateway, stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")},
           "HANDOFF_ENV_FILE": os.devnull, "HANDOFF_DATABASE_URL": gateway.database_url,
           "HANDOFF_RASA_URL": stack.rasa_url, "HANDOFF_RASA_TOKEN": stack.token,
           "HANDOFF_JWT_SECRET": "cli-secret-" + "x" * 40}
    return subprocess.run([str(GATEWAY_PYTHON), "-m", "handoff.conversation.privacy", *args],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


async def test_operators_export_and_erase_from_the_command_line(
    gateway: Gateway, widget: Widget, store: Store, rasa_stack: Stack
) -> None:
    session_id = await _chat(store, widget, SECRET)
    done = _cli(gateway, rasa_stack, "export", session_id)
    assert done.returncode == 0, done.stderr
    [exported] = json.loads(done.stdout)["customers"]
    assert exported["messages"][0]["text"] == "where is my order 104233? I am customer@example.com"
    done = _cli(gateway, rasa_stack, "erase", session_id, "no-such-session", "--reason", "r")
    assert (done.returncode, done.stderr) == (
        2, "error: no customer conversation 'no-such-session'\n")
    done = _cli(gateway, rasa_stack, "erase", session_id, "--reason", "ticket 7", "--by", "ops")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rasa"] == "erased"
    assert await store.list_messages(session_id) == []
    assert not [t for t in _tracker_texts(rasa_stack, session_id) if t]
    [entry] = await store.list_audit(action="customer_erased", target=f"conversation:{session_id}")
    assert (entry.actor, (entry.details or {})["reason"]) == ("ops", "ticket 7")


CARD = "my card is 4111 1111 1111 1111, e-mail jane.doe@mail.test"


async def test_the_retention_job_masks_rasas_tracker_too(
    gateway: Gateway, widget: Widget, store: Store, rasa_stack: Stack
) -> None:
    """Past the retention period the job masks the stored transcript, then the conversation's
    tracker in Rasa (the channel's /mask): the card number and the e-mail address are gone
    from both, the masked text is in the tracker instead; done once, not again."""
    session_id = await _chat(store, widget, CARD)
    other_widget = await Widget(gateway.url).connect()
    try:
        other = await _chat(store, other_widget, OTHER)
    finally:
        await other_widget.close()
    assert CARD in _tracker_texts(rasa_stack, session_id)
    rasa = RasaClient(rasa_stack.rasa_url, rasa_stack.token, timeout=WAIT)
    job = RetentionJob(store, retention_days=1, interval=3600,
                       kinds=("email", "phone", "card", "order"), rasa=rasa)
    later = datetime.now(timezone.utc) + timedelta(days=2)  # past the retention period
    try:
        await job.run_once(at=later)
        assert (session_id, None) in await store.trackers_to_mask(later - timedelta(days=1))
        assert await job.mask_trackers(at=later) >= 2  # this test's two, and any older ones
        assert await store.trackers_to_mask(later - timedelta(days=1)) == []
        assert await job.mask_trackers(at=later) == 0  # masked once, not again
    finally:
        await rasa.close()
    stored = [m.text for m in await store.list_messages(session_id) if m.sender == "customer"]
    tracker = _tracker_texts(rasa_stack, session_id)
    assert stored[0] in tracker  # the tracker holds the same masked text as the store
    dumped = json.dumps(requests.get(
        f"{rasa_stack.rasa_url}/conversations/{session_id}/tracker",
        params={"token": rasa_stack.token}, timeout=WAIT).json())
    for secret in ("4111 1111 1111 1111", "jane.doe@mail.test"):
        assert secret not in dumped and secret not in stored[0]
    assert "+44 20 7946 0958" not in json.dumps(_tracker_texts(rasa_stack, other))  # old too
