"""The agents' API end to end, on a real gateway in front of the real Rasa: relabelling, the
tracker history stored with corrections, review decisions marked on the transcript, racing
takeovers, every action as a ``/agent`` event, notes, the domain, the OpenAPI document, and a
restart while a reply waits for review."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import socketio

from bot.serve import Stack
from handoff.web.app import create_app
from handoff.web.auth import create_user, issue_token
from handoff.web.openapi import openapi_document, openapi_path
from handoff.conversation.rasa_client import RasaClient
from handoff.settings import load_settings
from handoff.store import Store
from tests.gateway.clients import WAIT, Widget, agent_console, agent_login, user_login
from tests.gateway.clients import api, gateway_store, widget  # noqa: F401 (fixtures)
from tests.gateway.conftest import Gateway, _start_gateway, _stop, corrections_with_tracker

pytestmark = pytest.mark.asyncio

REFUND_POLICY = "what is your return policy?"


def _tracker(stack: Stack, conversation_id: str) -> list[dict[str, Any]]:
    resp = requests.get(f"{stack.rasa_url}/conversations/{conversation_id}/tracker",
                        params={"token": stack.token, "include_events": "APPLIED"},
                        timeout=WAIT)
    resp.raise_for_status()
    events: list[dict[str, Any]] = resp.json()["events"]
    return events


async def _settled(api: httpx.AsyncClient, headers: dict[str, str], session_id: str) -> None:
    """Until no Rasa call of the conversation is out: an approved reply reaches the customer
    first and Rasa's tracker after (the answer to the decision does not wait for that)."""
    for _ in range(int(WAIT / 0.05)):
        resp = await api.get(f"/api/conversations/{session_id}", headers=headers)
        if not resp.json()["router"]["busy"]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"a Rasa call of {session_id} still out after {WAIT} s")


async def _review(api: httpx.AsyncClient, headers: dict[str, str], session_id: str) -> None:
    resp = await api.post(f"/api/conversations/{session_id}/review", headers=headers,
                          json={"on": True})
    assert resp.status_code == 200, resp.text


async def _decide(api: httpx.AsyncClient, headers: dict[str, str], session_id: str,
                  reply_id: int, body: dict[str, Any]) -> httpx.Response:
    return await api.post(f"/api/conversations/{session_id}/replies/{reply_id}/decision",
                          headers=headers, json=body)


async def test_relabel_repredicts_from_the_corrected_intent_without_a_duplicate_message(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient, rasa_stack: Stack
) -> None:
    erin = await agent_login(store, api, "erin")
    console, pending = await agent_console(gateway, erin, "pending_reply")
    try:
        session_id = await widget.started()
        await _review(api, erin, session_id)
        await widget.say(session_id, REFUND_POLICY)
        reply = (await asyncio.wait_for(pending.get(), WAIT))["reply"]
        assert reply["action"]["name"] == "utter_refund_policy"
        assert reply["parse"]["intent"] == "check_refund_policy"

        resp = await _decide(api, erin, session_id, reply["reply_id"],
                             {"type": "relabel", "intent": "delivery_options"})
        assert resp.status_code == 200, resp.text
        again = (await asyncio.wait_for(pending.get(), WAIT))["reply"]
        assert again["action"]["name"] == "utter_delivery_options"
        assert again["reply_id"] != reply["reply_id"]
        await widget.nothing()  # still held: nothing reached the customer

        resp = await _decide(api, erin, session_id, again["reply_id"], {"type": "approve"})
        assert resp.status_code == 200, resp.text
        kind, data = await widget.next()
        assert kind == "bot_uttered" and data["text"].startswith("We offer Standard delivery")

        await _settled(api, erin, session_id)
        events = _tracker(rasa_stack, session_id)
        users = [e for e in events if e["event"] == "user"]
        assert [(u["text"], u["parse_data"]["intent"]["name"]) for u in users] == [
            ("hi", "greet"), (REFUND_POLICY, "delivery_options")]  # once, corrected
        assert [e["text"] for e in events if e["event"] == "bot"][1:] == [data["text"]]

        corrections = await corrections_with_tracker(store, session_id)
        assert [(c.type, c.agent, c.tracker_status) for c in corrections] == [
            ("relabelled", "erin", "fetched"), ("approved", "erin", "fetched")]
        relabel = corrections[0]
        assert relabel.before["intent"] == "check_refund_policy"
        assert relabel.after["intent"] == "delivery_options"
        # the tracker as it was when erin decided: up to the customer's message, no reply yet
        kinds = [e["event"] for e in relabel.tracker_events]
        last_user = len(kinds) - 1 - kinds[::-1].index("user")
        assert "bot" not in kinds[last_user:] and kinds.count("user") == 2
        assert relabel.tracker_events[last_user]["text"] == REFUND_POLICY
        assert relabel.model_version and relabel.message_id is not None
        message = await store.get_message(relabel.message_id)
        assert (message.text, message.intent) == (REFUND_POLICY, "delivery_options")
    finally:
        await console.disconnect()


async def test_transcript_marks_each_decision_and_who_made_it(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    fay = await agent_login(store, api, "fay")
    console, pending = await agent_console(gateway, fay, "pending_reply")
    try:
        session_id = await widget.started()
        await _review(api, fay, session_id)
        await widget.say(session_id, REFUND_POLICY)
        reply = (await asyncio.wait_for(pending.get(), WAIT))["reply"]
        assert (await _decide(api, fay, session_id, reply["reply_id"],
                              {"type": "approve"})).status_code == 200
        await widget.next()
        await widget.say(session_id, "which payment methods do you accept")
        reply = (await asyncio.wait_for(pending.get(), WAIT))["reply"]
        assert (await _decide(api, fay, session_id, reply["reply_id"], {
            "type": "replace", "action": "utter_delivery_options"})).status_code == 200
        await widget.next()

        resp = await api.get(f"/api/conversations/{session_id}", headers=fay)
        body = resp.json()
        shown = [(m["sender"], m["action"], m["decision"], m["decided_by"], m["intent"])
                 for m in body["messages"]]
        assert shown == [
            ("customer", None, None, None, "greet"),
            ("bot", "utter_greet", None, None, None),
            ("customer", None, None, None, "check_refund_policy"),
            ("bot", "utter_refund_policy", "approved", "fay", None),
            ("customer", None, None, None, "check_payment_methods"),
            ("bot", "utter_delivery_options", "replaced", "fay", None),
        ]
        assert body["conversation"]["last_customer_text"] == "which payment methods do you accept"
        # the actions Rasa executed for each customer message, as the tracker has them
        assert [[a["name"] for a in m["actions"] or []] for m in body["messages"]
                if m["sender"] == "customer"] == [["utter_greet"], ["utter_refund_policy"],
                                                   ["utter_delivery_options"]]
        corrections = await corrections_with_tracker(store, session_id)
        assert all(c.tracker_events and c.tracker_status == "fetched" for c in corrections)
    finally:
        await console.disconnect()


async def test_two_agents_racing_to_take_over_one_wins_the_other_is_refused(
    widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    headers = [await agent_login(store, api, name) for name in ("gus", "hal")]
    for attempt in range(3):
        session_id = await widget.started()
        results = await asyncio.gather(*(
            api.post(f"/api/conversations/{session_id}/takeover", headers=h) for h in headers))
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 409], [r.text for r in results]
        winner = "gus" if results[0].status_code == 200 else "hal"
        loser = results[1] if winner == "gus" else results[0]
        assert loser.json()["error"] == "already_owned"
        conversation = await store.get_conversation(session_id)
        assert (conversation.mode, conversation.owner) == ("human", winner)
        notices = []
        while True:
            try:
                notices.append(await widget.next(timeout=1.0))
            except TimeoutError:
                break
        assert [n[1]["kind"] for n in notices if n[0] == "handoff_notice"] == ["agent_joined"]


async def test_every_action_is_also_an_agent_event_with_an_acknowledgement(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    ida = await agent_login(store, api, "ida")
    jon = await agent_login(store, api, "jon")
    console, _ = await agent_console(gateway, ida, "status")
    other, _ = await agent_console(gateway, jon, "status")

    async def ask(client: socketio.AsyncClient, event: str, data: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await client.call(event, data, namespace="/agent",
                                                   timeout=WAIT)
        return answer

    try:
        session_id = await widget.started()
        answer = await ask(console, "takeover", {"conversation_id": session_id})
        assert answer["conversation"]["mode"] == "human"
        assert answer["conversation"]["owner"] == "ida"
        assert (await widget.next())[0] == "handoff_notice"
        await widget.next()  # the notice's text

        answer = await ask(console, "message", {"conversation_id": session_id,
                                                "text": "Hello, Ida here."})
        assert answer["conversation"]["mode"] == "human"
        assert await widget.next() == ("bot_uttered", {
            "text": "Hello, Ida here.", "metadata": {"sender": "human", "agent": "ida"}})

        refused = await ask(other, "handback", {"conversation_id": session_id})
        assert (refused["status"], refused["error"]) == (403, "not_owner")
        for bad, code in (("nonsense", "bad_request"), ({"text": "x"}, "bad_request"),
                          ({"conversation_id": "no-such-conversation"}, "not_found")):
            answer = await ask(console, "handback", bad)
            assert answer["error"] == code, answer
        answer = await ask(console, "message", {"conversation_id": session_id, "text": ""})
        assert (answer["status"], answer["error"]) == (400, "bad_request")
        answer = await ask(console, "decision", {"conversation_id": session_id,
                                                 "reply_id": "1", "type": "approve"})
        assert answer["error"] == "bad_request"

        answer = await ask(console, "handback", {"conversation_id": session_id})
        assert answer["conversation"]["mode"] == "bot"
        conversation = await store.get_conversation(session_id)
        assert (conversation.mode, conversation.owner) == ("bot", None)
        audit = [e.action for e in await store.list_audit(target=f"conversation:{session_id}")]
        assert audit == ["handback", "message", "takeover"]  # newest first  # refusals change nothing
    finally:
        await console.disconnect()
        await other.disconnect()


async def test_an_agent_event_with_an_expired_login_is_refused(
    gateway: Gateway, widget: Widget, store: Store
) -> None:
    await create_user(store, "kim", "kim-password", "agent")
    token = issue_token("kim", 0, secret="test-secret-" + "x" * 40,
                        ttl=timedelta(seconds=2))
    console = socketio.AsyncClient()
    await console.connect(gateway.url, namespaces=["/agent"], transports=["websocket"],
                          auth={"token": token})
    try:
        session_id = await widget.started()
        await asyncio.sleep(3)
        answer = await console.call("takeover", {"conversation_id": session_id},
                                    namespace="/agent", timeout=WAIT)
        assert (answer["status"], answer["error"]) == (401, "token_expired")
        assert (await store.get_conversation(session_id)).owner is None
    finally:
        await console.disconnect()


async def test_notes_domain_and_conversation_list(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    lee = await agent_login(store, api, "lee")
    console, notes = await agent_console(gateway, lee, "note")
    try:
        session_id = await widget.session()
        await widget.say(session_id, "hello")
        await widget.next()
        resp = await api.post(f"/api/conversations/{session_id}/notes", headers=lee,
                              json={"text": "Customer <b>sounds</b> in a hurry."})
        assert resp.status_code == 201, resp.text
        pushed = await asyncio.wait_for(notes.get(), WAIT)
        assert pushed["note"]["text"] == "Customer <b>sounds</b> in a hurry."
        resp = await api.get(f"/api/conversations/{session_id}/notes", headers=lee)
        assert [(n["author"], n["text"]) for n in resp.json()["notes"]] == [
            ("lee", "Customer <b>sounds</b> in a hurry.")]
        for body in ({}, {"text": " "}, {"text": "x" * 4001}):
            resp = await api.post(f"/api/conversations/{session_id}/notes", headers=lee,
                                  json=body)
            assert resp.status_code == 400
        resp = await api.post("/api/conversations/nobody/notes", headers=lee,
                              json={"text": "hi"})
        assert resp.status_code == 404
        assert len(await store.list_notes(session_id)) == 1
        assert (await api.get(f"/api/conversations/{session_id}/notes")).status_code == 401

        resp = await api.get("/api/domain", headers=lee)
        domain = resp.json()
        assert "delivery_options" in domain["intents"] and "inform" in domain["intents"]
        assert domain["responses"]["utter_greet"][0]["text"]
        assert {"utter_delivery_options", "action_check_order_status"} <= set(
            domain["actions"]) or "utter_delivery_options" in domain["actions"]

        resp = await api.get("/api/conversations", headers=lee)
        listed = {c["id"]: c for c in resp.json()["conversations"]}
        assert listed[session_id]["last_customer_text"] == "hello"
        assert listed[session_id]["last_customer_at"]
        assert "state" not in listed[session_id]
    finally:
        await console.disconnect()


async def test_the_openapi_document_lists_exactly_the_apps_api_routes(
    gateway: Gateway, tmp_path: Path
) -> None:
    settings = load_settings({"HANDOFF_JWT_SECRET": "s" * 40, "HANDOFF_RASA_TOKEN": "t"}, env_file=None,
                             var_dir=tmp_path)
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    rasa = RasaClient("http://127.0.0.1:9", "t")
    try:
        app = create_app(settings, store, rasa)
        routes = {(openapi_path(route.path), method.lower())
                  for route in app.router.routes if route.path.startswith("api/")
                  for method in route.methods if method not in ("HEAD", "OPTIONS")}
    finally:
        await rasa.close()
        await store.close()
    document = openapi_document()
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert routes == documented
    for path, ops in document["paths"].items():
        for op in ops.values():
            assert op["summary"] and any(code.startswith("2") for code in op["responses"])
            names = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert names == set(part[1:-1] for part in path.split("/") if part.startswith("{"))
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        assert (await client.get("/api/openapi.json")).json() == document


async def test_a_restart_keeps_mode_owner_pending_reply_and_history(
    tmp_path: Path, rasa_stack: Stack
) -> None:
    gw = await asyncio.to_thread(_start_gateway, tmp_path, rasa_stack.rasa_url, rasa_stack.token)
    store = Store(gw.database_url)
    try:
        async with httpx.AsyncClient(base_url=gw.url, timeout=WAIT) as api:
            mia = await agent_login(store, api, "mia")
            console, pending = await agent_console(gw, mia, "pending_reply")
            widget = await Widget(gw.url).connect()
            session_id, secret = await widget.secure_session(f"restart-{uuid.uuid4().hex}")
            await widget.say(session_id, "hi")
            event, greeting = await widget.next()
            assert event == "bot_uttered"
            await _review(api, mia, session_id)
            await widget.say(session_id, REFUND_POLICY)
            reply = (await asyncio.wait_for(pending.get(), WAIT))["reply"]
            await console.disconnect()
            await widget.close()
        await asyncio.to_thread(_stop, gw.process)

        gw = await asyncio.to_thread(_start_gateway, tmp_path, rasa_stack.rasa_url,
                                     rasa_stack.token)
        async with httpx.AsyncClient(base_url=gw.url, timeout=WAIT) as api:
            mia = await agent_login(store, api, "mia")
            resp = await api.get(f"/api/conversations/{session_id}", headers=mia)
            body = resp.json()
            assert (body["router"]["mode"], body["router"]["owner"]) == ("review", "mia")
            assert body["router"]["pending_reply"]["reply_id"] == reply["reply_id"]
            assert [m["text"] for m in body["messages"]] == [
                "hi", greeting["text"], REFUND_POLICY]
            widget = await Widget(gw.url).connect()
            assert await widget.secure_session(session_id, secret) == (session_id, None)
            resp = await _decide(api, mia, session_id, reply["reply_id"], {"type": "approve"})
            assert resp.status_code == 200, resp.text
            kind, data = await widget.next()
            assert kind == "bot_uttered" and data["text"] == reply["action"]["messages"][0][
                "text"]
            await widget.close()
            messages = await store.list_messages(session_id)
            assert [(m.sender, m.decision) for m in messages] == [
                ("customer", None), ("bot", None), ("customer", None), ("bot", "approved")]
    finally:
        await store.close()
        await asyncio.to_thread(_stop, gw.process)


async def test_models_without_a_supervisor_show_the_live_model_and_refuse_to_retrain(
    gateway: Gateway, store: Store, api: httpx.AsyncClient, rasa_stack: Stack
) -> None:
    agent = await agent_login(store, api, "gus")
    trainer = await user_login(store, api, "tess", "trainer")
    assert (await api.get("/api/models", headers=agent)).status_code == 403
    resp = await api.get("/api/models", headers=trainer)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    live = requests.get(f"{rasa_stack.rasa_url}/status", params={"token": rasa_stack.token},
                        timeout=WAIT).json()
    assert body["live"] == live["model_id"] and body["can_deploy"] is False
    [model] = body["models"]
    assert (model["status"], model["deployed_by"], model["file"]) == (
        "live", "system", Path(live["model_file"]).name)
    for method, path in (("POST", "/api/retrain"), ("POST", "/api/models/rollback"),
                         ("POST", f"/api/models/{model['model_id']}/deploy")):
        resp = await api.request(method, path, headers=trainer, json={})
        assert resp.status_code == 503, (path, resp.text)
        assert resp.json()["error"] == "supervisor_unavailable"
    resp = await api.post("/api/models/nope/deploy", headers=trainer, json={})
    assert resp.status_code == 404
    resp = await api.post(f"/api/models/{model['model_id']}/deploy", headers=trainer,
                          json={"override": 7})
    assert resp.status_code == 400
