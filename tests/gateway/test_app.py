"""The gateway end to end: ``python -m handoff`` in a subprocess on a free port, over a real
SQLite file, in front of the real Rasa + action server (``rasa_stack``), with python-socketio's
``AsyncClient`` as the customer's widget and as the agent console, and httpx for the agent API.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import socketio

from bot.serve import Stack
from handoff.errors import NotFound
from handoff.store import Store
from tests.conftest import free_port
from tests.gateway.clients import WAIT, Widget
from tests.gateway.clients import api, gateway_store, widget  # noqa: F401 (fixtures)
from tests.gateway.clients import agent_console as _console
from tests.gateway.clients import agent_login as _agent
from tests.gateway.conftest import Gateway, _start_gateway, _stop, stored_pending_replies

pytestmark = pytest.mark.asyncio

ORDER_QUESTION = "where is my order 100002?"


def _rest_answer(stack: Stack, text: str) -> list[dict[str, Any]]:
    """What the same Rasa says to a fresh customer over its own REST channel."""
    resp = requests.post(f"{stack.rasa_url}/webhooks/rest/webhook",
                         json={"sender": f"rest-{time.monotonic_ns()}", "message": text},
                         timeout=WAIT)
    resp.raise_for_status()
    messages: list[dict[str, Any]] = resp.json()
    return [{k: v for k, v in m.items() if k != "recipient_id"} for m in messages]


# --------------------------------------------------------------------------- customer protocol


async def test_session_request_confirms_a_new_session_id(widget: Widget, store: Store) -> None:
    session_id = await widget.session(None)
    assert re.fullmatch(r"[0-9a-f]{32}", session_id)
    with pytest.raises(NotFound):  # nothing is kept until the customer speaks
        await store.get_conversation(session_id)
    await widget.say(session_id, "hi")
    assert (await widget.next())[0] == "bot_uttered"
    conversation = await store.get_conversation(session_id)
    assert (conversation.mode, conversation.owner, conversation.last_seq) == ("bot", None, 2)


async def test_bot_turn_answers_with_the_shops_reply(
    widget: Widget, store: Store, rasa_stack: Stack
) -> None:
    session_id = await widget.session()
    await widget.say(session_id, ORDER_QUESTION)
    event, payload = await widget.next()
    expected = _rest_answer(rasa_stack, ORDER_QUESTION)
    assert expected and expected[0]["text"].startswith("Order 100002 ")
    assert (event, payload) == ("bot_uttered", expected[0])
    await widget.nothing()
    messages = await store.list_messages(session_id)
    assert [(m.seq, m.sender, m.text) for m in messages] == [
        (1, "customer", ORDER_QUESTION), (2, "bot", expected[0]["text"])]
    assert messages[0].intent == "track_order"
    assert messages[1].action == "action_track_order"


async def test_reconnect_with_the_same_session_id_keeps_the_conversation(
    gateway: Gateway, store: Store
) -> None:
    first = await Widget(gateway.url).connect()
    session_id, secret = await first.secure_session()
    assert secret is not None
    await first.say(session_id, "hi")
    event, greeting = await first.next()
    assert event == "bot_uttered" and greeting["text"].startswith("Hi, I'm the Northwind")
    await first.close()

    second = await Widget(gateway.url).connect()
    try:
        assert await second.secure_session(session_id, secret) == (session_id, None)
        await second.say(session_id, ORDER_QUESTION)
        event, answer = await second.next()
        assert event == "bot_uttered" and answer["text"].startswith("Order 100002 ")
    finally:
        await second.close()
    messages = await store.list_messages(session_id)
    assert [(m.seq, m.sender) for m in messages] == [
        (1, "customer"), (2, "bot"), (3, "customer"), (4, "bot")]
    assert [m.text for m in messages if m.sender == "customer"] == ["hi", ORDER_QUESTION]
    assert len([c for c in await store.list_conversations() if c.id == session_id]) == 1


@pytest.mark.parametrize("payload, code", [
    ("just a string", "bad_payload"),
    ({"message": 42, "session_id": "S"}, "bad_payload"),
    ({"message": "   ", "session_id": "S"}, "empty_message"),
    ({"message": "x" * 2001, "session_id": "S"}, "message_too_long"),
    ({"message": "hi", "session_id": "S", "metadata": "{not json"}, "bad_metadata"),
    ({"message": "hi", "session_id": "someone-else"}, "session_mismatch"),
    ({"message": "hi", "session_id": "S", "message_id": "not an id!" + "x" * 60},
     "bad_message_id"),
])
async def test_malformed_or_oversized_messages_get_an_error_and_store_nothing(
    widget: Widget, store: Store, payload: Any, code: str
) -> None:
    session_id = await widget.session()
    if isinstance(payload, dict) and payload.get("session_id") == "S":
        payload = {**payload, "session_id": session_id}
    await widget.sio.emit("user_uttered", payload)
    event, error = await widget.next()
    assert event == "error"
    assert error["code"] == code and isinstance(error["message"], str)
    await widget.nothing()
    with pytest.raises(NotFound):
        await store.get_conversation(session_id)


async def test_metadata_as_a_json_string_is_accepted(widget: Widget, store: Store) -> None:
    session_id = await widget.session()
    await widget.sio.emit("user_uttered", {"message": "hi", "session_id": session_id,
                                           "customData": '{"language": "en"}'})
    event, _ = await widget.next()
    assert event == "bot_uttered"
    messages = await store.list_messages(session_id)
    assert messages[0].metadata == {"language": "en"}


async def test_customer_emitting_agent_events_gets_nothing(
    widget: Widget, store: Store
) -> None:
    session_id = await widget.session()
    for event in ("takeover", "message", "decision", "handback", "close"):
        await widget.sio.emit(event, {"conversation_id": session_id, "text": "I am an agent"})
    await widget.nothing()
    with pytest.raises(NotFound):  # nothing changed: nothing is kept before the first message
        await store.get_conversation(session_id)


# --------------------------------------------------------------------------- agents


async def test_takeover_and_agent_message_reach_the_customer_as_from_a_human(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    alice = await _agent(store, api, "alice")
    console = socketio.AsyncClient()
    pushed: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def on_any(event: str, data: Any = None) -> None:
        await pushed.put((event, data))

    console.on("*", on_any, namespace="/agent")
    await console.connect(gateway.url, namespaces=["/agent"], transports=["websocket"],
                          auth={"token": alice["Authorization"].split()[1]})
    try:
        session_id = await widget.session()
        await widget.say(session_id, ORDER_QUESTION)
        assert (await widget.next())[0] == "bot_uttered"

        resp = await api.post(f"/api/conversations/{session_id}/takeover", headers=alice)
        assert resp.status_code == 200, resp.text
        assert resp.json()["conversation"]["mode"] == "human"
        assert resp.json()["conversation"]["owner"] == "alice"
        assert await widget.next() == ("handoff_notice", {
            "kind": "agent_joined",
            "text": "A member of our customer-service team has joined the chat."})
        assert await widget.next() == ("bot_uttered", {
            "text": "A member of our customer-service team has joined the chat.",
            "metadata": {"sender": "system"}})

        resp = await api.post(f"/api/conversations/{session_id}/messages", headers=alice,
                              json={"text": "Hello, I'm Alice. How can I help?"})
        assert resp.status_code == 200, resp.text
        assert await widget.next() == ("bot_uttered", {
            "text": "Hello, I'm Alice. How can I help?",
            "metadata": {"sender": "human", "agent": "alice"}})

        events: list[tuple[str, Any]] = []
        while not any(e == "status" and d["conversation_id"] == session_id for e, d in events):
            events.append(await asyncio.wait_for(pushed.get(), WAIT))
        status = next(d for e, d in events if e == "status" and d["conversation_id"] == session_id)
        assert status == {"conversation_id": session_id, "mode": "human", "owner": "alice",
                          "queue_reason": None, "queue_detail": None}

        resp = await api.get(f"/api/conversations/{session_id}", headers=alice)
        assert resp.status_code == 200
        detail = resp.json()
        assert detail["router"]["mode"] == "human"
        assert [(m["sender"], m["text"]) for m in detail["messages"]][-2:] == [
            ("system", "A member of our customer-service team has joined the chat."),
            ("agent", "Hello, I'm Alice. How can I help?")]
        assert detail["messages"][-1]["decided_by"] == "alice"
    finally:
        await console.disconnect()


async def test_second_agents_takeover_is_refused_with_409(
    widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    alice = await _agent(store, api, "alice")
    bob = await _agent(store, api, "bob")
    session_id = await widget.started()  # a conversation from the first message
    assert (await api.post(f"/api/conversations/{session_id}/takeover",
                           headers=alice)).status_code == 200
    resp = await api.post(f"/api/conversations/{session_id}/takeover", headers=bob)
    assert resp.status_code == 409
    assert resp.json() == {"error": "already_owned", "message": "conversation is owned by alice",
                           "owner": "alice"}
    conversation = await store.get_conversation(session_id)
    assert (conversation.mode, conversation.owner) == ("human", "alice")
    resp = await api.post(f"/api/conversations/{session_id}/messages", headers=bob,
                          json={"text": "me too"})
    assert resp.status_code == 403
    assert resp.json()["error"] == "not_owner"


async def test_unauthenticated_api_calls_get_401(api: httpx.AsyncClient, widget: Widget) -> None:
    session_id = await widget.session()
    resp = await api.get("/api/conversations")
    assert resp.status_code == 401
    assert resp.json()["error"] == "unauthorized"
    resp = await api.post(f"/api/conversations/{session_id}/takeover")
    assert resp.status_code == 401
    resp = await api.get("/api/conversations", headers={"Authorization": "Bearer nonsense"})
    assert resp.status_code == 401
    assert resp.json()["error"] == "token_invalid"
    resp = await api.post("/api/login", json={"username": "admin", "password": "wrong"})
    assert resp.status_code == 401
    assert resp.json() == {"error": "invalid_credentials", "message": "wrong username or password"}


async def test_admin_logs_in_with_the_printed_password_and_lists_conversations(
    gateway: Gateway, api: httpx.AsyncClient, widget: Widget
) -> None:
    session_id = await widget.started()  # a conversation from the first message
    assert gateway.admin_password
    resp = await api.post("/api/login", json={"username": "admin",
                                              "password": gateway.admin_password})
    assert resp.status_code == 200 and resp.json()["role"] == "admin"
    headers = {"Authorization": f"Bearer {resp.json()['token']}"}
    resp = await api.get("/api/conversations", headers=headers)
    assert resp.status_code == 200
    assert session_id in [c["id"] for c in resp.json()["conversations"]]
    resp = await api.get("/api/conversations/no-such-conversation", headers=headers)
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"


async def test_agent_namespace_refuses_a_connection_without_a_valid_token(
    gateway: Gateway,
) -> None:
    for auth in (None, {"token": "nonsense"}):
        client = socketio.AsyncClient()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(gateway.url, namespaces=["/agent"], transports=["websocket"],
                                 auth=auth, wait_timeout=5)
        await client.disconnect()


# --------------------------------------------------------------------------- Rasa down


async def test_rasa_down_queues_the_conversation_and_keeps_the_message(
    tmp_path: Path, rasa_stack: Stack
) -> None:
    gw = await asyncio.to_thread(_start_gateway, tmp_path,
                                 f"http://127.0.0.1:{free_port()}", rasa_stack.token)
    widget = await Widget(gw.url).connect()
    store = Store(gw.database_url)
    try:
        session_id = await widget.session()
        await widget.say(session_id, ORDER_QUESTION)
        event, notice = await widget.next()
        assert (event, notice["kind"]) == ("handoff_notice", "handoff_queued")
        assert await widget.next() == ("bot_uttered", {
            "text": notice["text"], "metadata": {"sender": "system"}})
        conversation = await store.get_conversation(session_id)
        assert (conversation.mode, conversation.queued, conversation.queue_reason) == (
            "bot", True, "rasa_unavailable")
        # no agent is logged in: told so at once, and offered a choice (docs/supervision.md)
        assert (await widget.next())[0] == "bot_uttered"
        event, offer = await widget.next()
        assert (event, offer["reason"]) == ("handoff_offer", "no_agent")
        # the assistant is offered only once the probe has not found Rasa down yet
        assert offer["options"] in (["wait", "contact"], ["wait", "bot", "contact"])
        messages = await store.list_messages(session_id)
        assert [(m.sender, m.text) for m in messages] == [
            ("customer", ORDER_QUESTION), ("system", notice["text"]), ("system", offer["text"])]
    finally:
        await widget.close()
        await store.close()
        await asyncio.to_thread(_stop, gw.process)


# --------------------------------------------------------------------------- review (edit gate)


async def test_review_holds_the_bot_reply_until_the_owner_approves_or_edits(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    carol = await _agent(store, api, "carol")
    console, pending = await _console(gateway, carol, "pending_reply")
    try:
        session_id = await widget.started()  # a conversation from the first message
        resp = await api.post(f"/api/conversations/{session_id}/review", headers=carol,
                              json={"on": True})
        assert resp.status_code == 200 and resp.json()["conversation"]["mode"] == "review"

        await widget.say(session_id, "hi")
        held = await asyncio.wait_for(pending.get(), WAIT)
        assert held["conversation_id"] == session_id
        reply = held["reply"]
        assert reply["action"]["name"] == "utter_greet"
        greeting = reply["action"]["messages"][0]["text"]
        assert greeting.startswith("Hi, I'm the Northwind")
        await widget.nothing()  # held: the customer sees nothing yet

        resp = await api.post(
            f"/api/conversations/{session_id}/replies/{reply['reply_id']}/decision",
            headers=carol, json={"type": "approve"})
        assert resp.status_code == 200, resp.text
        assert await widget.next() == ("bot_uttered", {"text": greeting})

        await widget.say(session_id, ORDER_QUESTION)
        reply = (await asyncio.wait_for(pending.get(), WAIT))["reply"]
        stale = await api.post(f"/api/conversations/{session_id}/replies/999/decision",
                               headers=carol, json={"type": "approve"})
        assert stale.status_code == 409 and stale.json()["error"] == "stale_reply"
        resp = await api.post(
            f"/api/conversations/{session_id}/replies/{reply['reply_id']}/decision",
            headers=carol, json={"type": "write", "text": "Let me check that order for you."})
        assert resp.status_code == 200, resp.text
        assert await widget.next() == ("bot_uttered", {"text": "Let me check that order for you."})

        corrections = await store.list_corrections(conversation_id=session_id)
        assert [(c.type, c.agent) for c in corrections] == [
            ("approved", "carol"), ("written", "carol")]
        replies = await stored_pending_replies(store, session_id)
        assert [(p.action, p.status, p.decision) for p in replies][:1] == [
            ("utter_greet", "decided", "approved")]
    finally:
        await console.disconnect()


async def test_closed_conversation_tells_the_customer_and_refuses_more_messages(
    widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    alice = await _agent(store, api, "alice")
    session_id = await widget.started()  # a conversation from the first message
    resp = await api.post(f"/api/conversations/{session_id}/close", headers=alice)
    assert resp.status_code == 200 and resp.json()["conversation"]["mode"] == "closed"
    assert await widget.next() == ("handoff_notice", {
        "kind": "closed", "text": "This conversation has ended. Thank you for contacting us."})
    assert (await widget.next())[0] == "bot_uttered"
    assert await widget.next() == ("survey_request", {
        "question": "How easy was it to get your issue resolved?", "scale": [1, 7],
        "labels": {"1": "Very difficult", "7": "Very easy"}})
    stored = len(await store.list_messages(session_id))
    await widget.say(session_id, "hello?")
    event, error = await widget.next()
    assert (event, error["code"]) == ("error", "conversation_closed")
    assert len(await store.list_messages(session_id)) == stored
    resp = await api.post(f"/api/conversations/{session_id}/takeover", headers=alice)
    assert resp.status_code == 409 and resp.json()["error"] == "conversation_closed"
    resp = await api.post(f"/api/conversations/{session_id}/review", headers=alice,
                          json={"on": "yes"})
    assert resp.status_code == 400 and resp.json()["error"] == "bad_request"


async def test_customer_ends_the_chat_and_answers_the_effort_survey(
    widget: Widget, store: Store
) -> None:
    session_id = await widget.started()  # a conversation from the first message
    await widget.emit("survey_answer", {"session_id": session_id, "score": 6})
    event, error = await widget.next()
    assert (event, error["code"]) == ("error", "conflict")  # not ended yet
    await widget.emit("end_conversation", {"session_id": "someone-else"})
    event, error = await widget.next()
    assert (event, error["code"]) == ("error", "session_mismatch")
    assert (await store.get_conversation(session_id)).mode == "bot"

    await widget.emit("end_conversation", {"session_id": session_id})
    assert (await widget.next())[0] == "handoff_notice"
    assert (await widget.next())[0] == "bot_uttered"
    assert (await widget.next())[0] == "survey_request"
    assert (await store.get_conversation(session_id)).mode == "closed"
    for bad in (0, 8, 3.5, "5", True, None):
        await widget.emit("survey_answer", {"session_id": session_id, "score": bad})
        event, error = await widget.next()
        assert (event, error["code"]) == ("error", "bad_score")
    assert (await store.get_conversation(session_id)).effort_score is None
    await widget.emit("survey_answer", {"session_id": session_id, "score": 6})
    assert await widget.next() == ("survey_thanks", {})
    assert (await store.get_conversation(session_id)).effort_score == 6


async def test_a_turn_cut_off_by_a_restart_is_queued_on_the_next_start(
    tmp_path: Path, rasa_stack: Stack
) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        writer.close()
        await writer.wait_closed()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    rasa_url = f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")
    try:
        gw = await asyncio.to_thread(_start_gateway, tmp_path, rasa_url, rasa_stack.token)
        widget = await Widget(gw.url).connect()
        session_id = await widget.session()
        await widget.say(session_id, ORDER_QUESTION)
        for _ in range(100):  # the message is stored and its Rasa call is out
            try:
                conversation = await store.get_conversation(session_id)
            except NotFound:  # made at the first message: not yet
                await asyncio.sleep(0.05)
                continue
            if conversation.state and conversation.state["turn"]:
                break
            await asyncio.sleep(0.05)
        await widget.close()
        await asyncio.to_thread(_stop, gw.process)
        assert (await store.get_conversation(session_id)).state["turn"]["call_id"] == 1

        gw = await asyncio.to_thread(_start_gateway, tmp_path, rasa_url, rasa_stack.token)
        await asyncio.to_thread(_stop, gw.process)
        conversation = await store.get_conversation(session_id)
        assert (conversation.queued, conversation.queue_reason) == (True, "rasa_unavailable")
        assert conversation.state is not None and conversation.state["turn"] is None
        messages = await store.list_messages(session_id)
        # the notice, and (no agent logged in) the offer to wait, go back to the bot or leave
        # a contact (docs/supervision.md)
        assert [m.sender for m in messages] == ["customer", "system", "system"]
        assert messages[2].payload == {"offer": "no_agent"}
        assert messages[0].text == ORDER_QUESTION
    finally:
        await store.close()
        silent.close()
        await silent.wait_closed()


async def test_asking_for_a_person_queues_the_conversation(
    widget: Widget, store: Store, rasa_stack: Stack
) -> None:
    session_id = await widget.session()
    await widget.say(session_id, "I want to talk to a human")
    expected = [m for m in _rest_answer(rasa_stack, "I want to talk to a human") if "text" in m]
    event, said = await widget.next()
    assert (event, said) == ("bot_uttered", expected[0])  # the marker payload is not shown
    assert await widget.next() == ("handoff_notice", {"kind": "handoff_queued", "text": None})
    # no agent is logged in: the customer is told so at once and offered a choice
    event, told = await widget.next()
    assert (event, told["metadata"]) == ("bot_uttered", {"sender": "system"})
    event, offer = await widget.next()
    assert (event, offer["reason"], offer["text"]) == ("handoff_offer", "no_agent", told["text"])
    event, place = await widget.next()  # others of this module may wait too
    assert event == "queue_position" and place["position"] == offer["position"] >= 1
    await widget.nothing()
    conversation = await store.get_conversation(session_id)
    assert (conversation.mode, conversation.queued, conversation.queue_reason) == (
        "bot", True, "bot_handoff_marker")


async def test_long_polling_with_upgrade_works_like_rasa_webchat(gateway: Gateway) -> None:
    widget = await Widget(gateway.url, ["polling", "websocket"]).connect()
    try:
        session_id, secret = await widget.secure_session()
        await widget.say(session_id, ORDER_QUESTION)
        event, answer = await widget.next()
        assert event == "bot_uttered" and answer["text"].startswith("Order 100002 ")
    finally:
        await widget.close()
    polling = await Widget(gateway.url, ["polling"]).connect()
    try:
        assert polling.sio.transport() == "polling"
        assert await polling.secure_session(session_id, secret) == (session_id, None)
        await polling.say(session_id, "hi")
        event, greeting = await polling.next()
        assert event == "bot_uttered" and greeting["text"].startswith("Hi, I'm the Northwind")
    finally:
        # Python's polling client would wait out its pending long-poll (30 s) after the close
        # packet; a browser drops it, and so does this
        await polling.sio.eio.disconnect(abort=True)


async def test_a_message_sent_again_under_its_message_id_is_stored_and_answered_once(
    widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    """What a widget does when an acknowledgement is lost: it sends the same message again
    under the same ``message_id``. The gateway acknowledges the resend and stores and runs the
    message once, also after the conversation has ended; a refusal names the message."""
    session_id = await widget.session()
    uttered = {"message": ORDER_QUESTION, "session_id": session_id, "message_id": "w1-1"}
    assert await widget.sio.call("user_uttered", uttered, timeout=WAIT) is None
    assert await widget.sio.call("user_uttered", uttered, timeout=WAIT) is None  # resent
    said = [(m.sender, m.text, m.client_message_id) for m in await store.list_messages(session_id)]
    assert said == [("customer", ORDER_QUESTION, "c-w1-1")]
    hello = {"message": "hi", "session_id": session_id, "message_id": "w1-hi"}
    assert await widget.sio.call("user_uttered", hello, timeout=WAIT) is None
    event, reply = await widget.next()  # one turn for the message sent twice, then the next
    assert event == "bot_uttered" and reply["text"].startswith("Order 100002 ")
    event, greeting = await widget.next()
    assert event == "bot_uttered" and greeting["text"].startswith("Hi, I'm the Northwind")
    said = await store.list_messages(session_id)
    assert [m.text for m in said if m.sender == "customer"] == [ORDER_QUESTION, "hi"]
    assert [m.text for m in said if m.sender == "bot"] == [reply["text"], greeting["text"]]

    too_long = {"message": "x" * 2001, "session_id": session_id, "message_id": "w1-2"}
    refused = await widget.sio.call("user_uttered", too_long, timeout=WAIT)
    assert refused == {"error": "message_too_long", "message": refused["message"],
                       "message_id": "w1-2"}
    assert await widget.next() == ("error", {"code": "message_too_long",
                                             "message": refused["message"], "message_id": "w1-2"})

    alice = await _agent(store, api, "alice")
    resp = await api.post(f"/api/conversations/{session_id}/close", headers=alice)
    assert resp.status_code == 200, resp.text
    assert await widget.sio.call("user_uttered", uttered, timeout=WAIT) is None  # stored before
    late = {**uttered, "message": "one more thing", "message_id": "w1-3"}
    refused = await widget.sio.call("user_uttered", late, timeout=WAIT)
    assert (refused["error"], refused["message_id"]) == ("conversation_closed", "w1-3")
    assert [m.text for m in await store.list_messages(session_id)
            if m.sender == "customer"] == [ORDER_QUESTION, "hi"]


async def test_messages_sent_back_to_back_are_answered_in_order(
    widget: Widget, store: Store
) -> None:
    session_id = await widget.session()
    await widget.say(session_id, "hi")
    await widget.say(session_id, ORDER_QUESTION)
    first, second = await widget.next(), await widget.next()
    assert first[1]["text"].startswith("Hi, I'm the Northwind")
    assert second[1]["text"].startswith("Order 100002 ")
    messages = await store.list_messages(session_id)
    seq = {(m.sender, m.text): m.seq for m in messages}
    assert len(messages) == len(seq) == 4
    assert seq[("customer", "hi")] < seq[("customer", ORDER_QUESTION)]
    assert seq[("customer", "hi")] < seq[("bot", first[1]["text"])]
    assert seq[("bot", first[1]["text"])] < seq[("bot", second[1]["text"])]
    assert seq[("customer", ORDER_QUESTION)] < seq[("bot", second[1]["text"])]


async def test_review_edit_and_replace_reach_customer_and_tracker_then_handback(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient, rasa_stack: Stack
) -> None:
    dave = await _agent(store, api, "dave")
    console, pending = await _console(gateway, dave, "pending_reply")

    async def tracker_says_last(conversation_id: str, text: str) -> None:
        """The tracker's last bot utterance becomes ``text`` (the decision's events reach the
        tracker in the background, beside the push to the customer)."""
        deadline = time.monotonic() + WAIT
        while True:
            resp = requests.get(
                f"{rasa_stack.rasa_url}/conversations/{conversation_id}/tracker",
                params={"token": rasa_stack.token}, timeout=WAIT)
            resp.raise_for_status()
            texts = [e.get("text") for e in resp.json()["events"] if e["event"] == "bot"]
            if texts and texts[-1] == text:
                return
            assert time.monotonic() < deadline, texts
            await asyncio.sleep(0.1)

    async def decide(session_id: str, reply_id: Any, body: dict[str, Any]) -> None:
        resp = await api.post(f"/api/conversations/{session_id}/replies/{reply_id}/decision",
                              headers=dave, json=body)
        assert resp.status_code == 200, resp.text

    try:
        session_id = await widget.started()  # a conversation from the first message
        resp = await api.post(f"/api/conversations/{session_id}/review", headers=dave,
                              json={"on": True})
        assert resp.status_code == 200, resp.text

        await widget.say(session_id, "what is your return policy?")
        reply = (await asyncio.wait_for(pending.get(), WAIT))["reply"]
        assert reply["action"]["name"] == "utter_refund_policy"
        await widget.nothing()
        edited = "You can return most items within 60 days of delivery."
        await decide(session_id, reply["reply_id"], {"type": "edit", "text": edited})
        assert await widget.next() == ("bot_uttered", {"text": edited})
        await tracker_says_last(session_id, edited)  # what the customer really saw

        await widget.say(session_id, "which payment methods do you accept")
        reply = (await asyncio.wait_for(pending.get(), WAIT))["reply"]
        assert reply["action"]["name"] == "utter_payment_methods"
        await decide(session_id, reply["reply_id"],
                     {"type": "replace", "action": "utter_delivery_options"})
        kind, data = await widget.next()
        assert kind == "bot_uttered" and data["text"].startswith("We offer Standard delivery")
        await tracker_says_last(session_id, data["text"])

        corrections = await store.list_corrections(conversation_id=session_id)
        assert [(c.type, c.agent) for c in corrections] == [
            ("edited", "dave"), ("replaced", "dave")]
        assert corrections[0].after is not None and edited in str(corrections[0].after)

        resp = await api.post(f"/api/conversations/{session_id}/handback", headers=dave)
        assert resp.status_code == 200, resp.text
        assert resp.json()["conversation"]["mode"] == "bot"
        # the bot answers again by itself, in the same conversation
        await widget.say(session_id, "thanks!")
        seen: list[tuple[str, Any]] = []
        while not seen or seen[-1][0] != "bot_uttered" or "sender" in seen[-1][1].get(
                "metadata", {}):
            seen.append(await widget.next())
        assert seen[-1] == ("bot_uttered", {
            "text": "You're welcome! Is there anything else I can help you with?"})
    finally:
        await console.disconnect()
