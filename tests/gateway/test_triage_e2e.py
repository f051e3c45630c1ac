"""Triage inside the running gateway (real model, real Rasa): policy rules before Rasa, the
assessment after it stored and pushed, replies held for any agent by an unowned review and
released after the review timeout, and suggested replies."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bot.serve import Stack
from handoff.store import Store
from tests.gateway.clients import WAIT, Widget, agent_console, agent_login, user_login
from tests.gateway.clients import api, gateway_store, widget  # noqa: F401 (fixtures)
from tests.gateway.conftest import Gateway, _start_gateway, _stop, stored_correction

pytestmark = pytest.mark.asyncio
REVIEW_TIMEOUT = 4
THRESHOLD = 0.3  # lower than the default 0.5, so that an angry message crosses it


@pytest.fixture(scope="module")
def gateway(rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with triage on (the shared fixture has it off) and a short review timeout."""
    gw = _start_gateway(tmp_path_factory.mktemp("triage-gateway"), rasa_stack.rasa_url,
                        rasa_stack.token, {"HANDOFF_TRIAGE_ENABLED": "true",
                                           "HANDOFF_REVIEW_TIMEOUT": str(REVIEW_TIMEOUT),
                                           # exact thresholds: not fitted to a share
                                           "HANDOFF_TRIAGE_THRESHOLDS": "fixed",
                                           "HANDOFF_TRIAGE_REVIEW_THRESHOLD": str(THRESHOLD)})
    yield gw
    _stop(gw.process)


async def _ready(api: httpx.AsyncClient) -> None:
    """Wait until triage's model has loaded (the gateway serves customers meanwhile)."""
    for _ in range(240):
        if (await api.get("/api/health")).json()["triage"] == "ready":
            return
        await asyncio.sleep(0.5)
    raise AssertionError("triage did not become ready")


async def _next(queue: asyncio.Queue[dict[str, Any]], conversation_id: str) -> dict[str, Any]:
    while True:
        item = await asyncio.wait_for(queue.get(), WAIT)
        if item.get("conversation_id") == conversation_id:
            return item


async def test_a_legal_threat_goes_to_a_person_before_the_bot_answers(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    session_id = await widget.session()
    await widget.say(session_id, "If this isn't fixed I will take legal action against you")
    assert await widget.next() == ("handoff_notice", {
        "kind": "handoff_queued",
        "text": "A member of our team will be with you shortly; please stay in this chat."})
    assert (await widget.next())[0] == "bot_uttered"  # the notice's text, from the system
    # no agent is logged in: told so and offered a choice (docs/supervision.md)
    assert (await widget.next())[1]["metadata"] == {"sender": "system"}
    assert (await widget.next())[0] == "handoff_offer"
    assert (await widget.next())[0] == "queue_position"
    await widget.nothing()  # and nothing from the bot
    conversation = await store.get_conversation(session_id)
    assert (conversation.mode, conversation.queue_reason) == ("bot", "policy_rule")
    assert "legal" in conversation.state["queue_detail"].lower()


MISREAD = "Order 633271: wrong door number, it's 18 not 81"
"""A change of the delivery address the model reads as inform (0.95, change_shipping_address
0.05); triage's embeddings disagree."""


async def test_a_misread_is_held_before_it_reaches_the_customer(
    gateway: Gateway, rasa_stack: Stack, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    await _ready(api)
    vic = await agent_login(store, api, "vic")
    console, pending = await agent_console(gateway, vic, "pending_reply")
    try:
        session_id = await widget.session()
        await widget.say(session_id, MISREAD)
        held = await _next(pending, session_id)
        assert held["owner"] is None
        assert held["reply"]["parse"]["intent"] == "inform"
        assert held["reply"]["action"]["name"] == "utter_inform_what_for"
        await widget.nothing()  # the misread's reply never reached the customer
        conversation = await store.get_conversation(session_id)
        assert (conversation.mode, conversation.owner, conversation.queue_reason) == (
            "review", None, "triage")
        assert [m.sender for m in await store.list_messages(session_id)] == ["customer"]
        # Rasa's reply was taken back (rewind) and the message logged again as it was read,
        # entities and all: the tracker holds it once, with no reply yet
        async with httpx.AsyncClient() as rasa:
            tracker = (await rasa.get(
                f"{rasa_stack.rasa_url}/conversations/{session_id}/tracker",
                params={"token": rasa_stack.token})).json()
        said = [e for e in tracker["events"] if e["event"] in ("user", "bot", "rewind")]
        assert [e["event"] for e in said] == ["user", "bot", "rewind", "user"]
        assert said[-1]["parse_data"]["intent"]["name"] == "inform"
        assert tracker["slots"].get("order_id") == "633271"
        # the agent relabels it; the customer gets the answer to what they meant
        resp = await api.post(
            f"/api/conversations/{session_id}/replies/{held['reply']['reply_id']}/decision",
            headers=vic, json={"type": "relabel", "intent": "change_shipping_address"})
        assert resp.status_code == 200, resp.text
        held = await _next(pending, session_id)
        assert held["owner"] == "vic"
        assert held["reply"]["action"]["name"] != "utter_inform_what_for"
    finally:
        await console.disconnect()


async def test_a_review_rule_holds_the_reply_for_any_agent_then_releases_it(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    nia = await agent_login(store, api, "nia")
    console, pending = await agent_console(gateway, nia, "pending_reply")
    try:
        session_id = await widget.session()
        await widget.say(session_id, "please delete my account")
        held = await _next(pending, session_id)
        assert (held["owner"], held["release_in"]) == (None, REVIEW_TIMEOUT)
        assert held["reply"]["action"]["name"] == "utter_delete_account" or held["reply"][
            "action"]["name"].startswith(("utter_", "action_"))
        conversation = await store.get_conversation(session_id)
        assert (conversation.mode, conversation.owner, conversation.queue_reason) == (
            "review", None, "triage")
        await widget.nothing()  # held: the customer has nothing yet
        kind, data = await widget.next(timeout=REVIEW_TIMEOUT + WAIT)  # released unchanged
        assert kind == "bot_uttered"
        expected = held["reply"]["action"]["messages"]
        if expected:
            assert data["text"] == expected[0]["text"]

        # the next reply is held again; an agent who decides owns the conversation
        await widget.say(session_id, "what is your return policy?")
        held = await _next(pending, session_id)
        resp = await api.post(
            f"/api/conversations/{session_id}/replies/{held['reply']['reply_id']}/decision",
            headers=nia, json={"type": "approve"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["conversation"]["owner"] == "nia"
        assert (await widget.next())[0] == "bot_uttered"
    finally:
        await console.disconnect()


async def test_two_agents_decide_the_same_unowned_held_reply_and_the_first_wins(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    wes = await agent_login(store, api, "wes")
    xia = await agent_login(store, api, "xia")
    wes_console, wes_held = await agent_console(gateway, wes, "pending_reply")
    xia_console, xia_held = await agent_console(gateway, xia, "pending_reply")
    decided: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_decided(data: dict[str, Any]) -> None:
        await decided.put(data)

    xia_console.on("reply_decided", on_decided, namespace="/agent")
    try:
        session_id = await widget.session()
        await widget.say(session_id, "please delete my account")  # a review rule
        held = await _next(wes_held, session_id)
        assert held == await _next(xia_held, session_id)  # both see the decision card
        reply_id = held["reply"]["reply_id"]

        async def decide(console: Any, body: dict[str, Any]) -> dict[str, Any]:
            answer: dict[str, Any] = await console.call(
                "decision", {"conversation_id": session_id, "reply_id": reply_id, **body},
                namespace="/agent", timeout=WAIT)
            return answer

        # both decide at once; the conversation's lock orders them: the first one wins
        first, second = await asyncio.gather(
            decide(wes_console, {"type": "write", "text": "Wes here: I can help with that."}),
            decide(xia_console, {"type": "approve"}))
        winner, loser = ("wes", second) if "conversation" in first else ("xia", first)
        assert (loser["status"], loser["error"], loser["owner"]) == (
            409, "decided_by_other", winner)
        assert _next_decided_by(await _next(decided, session_id)) == (reply_id, winner)
        kind, data = await widget.next()
        assert kind == "bot_uttered"  # one answer only: the winner's
        await widget.nothing()
        conversation = await store.get_conversation(session_id)
        assert (conversation.mode, conversation.owner) == ("review", winner)
        [correction] = await store.list_corrections(conversation_id=session_id)
        assert correction.agent == winner
    finally:
        await wes_console.disconnect()
        await xia_console.disconnect()


def _next_decided_by(push: dict[str, Any]) -> tuple[int, str]:
    return push["reply_id"], push["agent"]


async def test_an_out_of_scope_question_gets_the_bots_refusal_not_an_agent(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    await _ready(api)
    yan = await agent_login(store, api, "yan")
    console, risks = await agent_console(gateway, yan, "risk")
    try:
        session_id = await widget.session()
        await widget.say(session_id, "who painted the mona lisa")
        kind, data = await widget.next()
        assert kind == "bot_uttered" and "not something I can help with" in data["text"]
        pushed = await _next(risks, session_id)
        assert pushed["measures"]["intent"] == "out_of_scope"
        assert pushed["action"] == "none"  # scored and shown to agents, not held
        conversation = await store.get_conversation(session_id)
        assert (conversation.mode, conversation.queue_reason) == ("bot", None)
    finally:
        await console.disconnect()


async def test_each_message_is_assessed_stored_and_pushed_with_its_reasons(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    oli = await agent_login(store, api, "oli")
    console, risks = await agent_console(gateway, oli, "risk")
    try:
        session_id = await widget.session()
        await _ready(api)
        thresholds = (await api.get("/api/health/detail", headers=oli)).json()["triage_thresholds"]
        assert thresholds == {"mode": "fixed", "review_threshold": THRESHOLD,
                              "human_threshold": 0.9, "floor_review_threshold": THRESHOLD,
                              "floor_human_threshold": 0.9}
        await widget.say(session_id, "this is absolutely terrible, nothing works and I am "
                                     "furious with you")
        pushed = await _next(risks, session_id)
        assert pushed["risk"] >= THRESHOLD and pushed["action"] == "review"
        codes = {reason["code"] for reason in pushed["reasons"]}
        assert "negative_sentiment" in codes
        for _ in range(50):  # crossing the threshold: the conversation goes to review
            conversation = await store.get_conversation(session_id)
            if conversation.mode == "review":
                break
            await asyncio.sleep(0.1)
        assert (conversation.mode, conversation.owner, conversation.queue_reason) == (
            "review", None, "triage")
        assert conversation.risk == pushed["risk"]
        assert conversation.triage and conversation.triage["history"]["sentiments"]
        [message] = [m for m in await store.list_messages(session_id)
                     if m.sender == "customer"]
        assert message.triage is not None and message.triage["risk"] == pushed["risk"]

        second = await Widget(gateway.url).connect()
        calm = await second.session()
        await second.say(calm, "what is your return policy?")
        pushed = await _next(risks, calm)
        await second.close()
        assert pushed["risk"] < 0.2 and pushed["action"] == "none"
        resp = await api.get("/api/conversations", headers=oli)
        order = [c["id"] for c in resp.json()["conversations"]]
        assert order.index(session_id) < order.index(calm)  # riskiest first
    finally:
        await console.disconnect()


async def test_suggested_replies_come_from_the_domain_and_from_agents(
    gateway: Gateway, widget: Widget, store: Store, api: httpx.AsyncClient
) -> None:
    pam = await agent_login(store, api, "pam")
    session_id = await widget.session()
    await _ready(api)
    await widget.say(session_id, "can I send back shoes that don't fit?")
    await widget.next()
    resp = await api.get(f"/api/conversations/{session_id}/suggestions", headers=pam)
    suggestions = resp.json()["suggestions"]
    assert len(suggestions) == 3
    assert "response:utter_refund_policy" in [s["source"] for s in suggestions]
    assert all(set(s) == {"text", "source", "score"} for s in suggestions)

    # a person's own reply becomes a suggestion for the next conversation like it
    assert (await api.post(f"/api/conversations/{session_id}/takeover",
                           headers=pam)).status_code == 200
    own = "Shoes that don't fit can go back for free within 30 days; I've emailed you a label."
    resp = await api.post(f"/api/conversations/{session_id}/messages", headers=pam,
                          json={"text": own, "suggestion": "response:utter_refund_policy"})
    assert resp.status_code == 200, resp.text
    audit = await store.list_audit(target=f"conversation:{session_id}", action="message")
    assert audit[0].details == {"suggestion": "response:utter_refund_policy"}
    second = await Widget(gateway.url).connect()
    other = await second.session()
    await second.say(other, "can I send back shoes that don't fit?")
    for _ in range(20):
        resp = await api.get(f"/api/conversations/{other}/suggestions", headers=pam)
        if resp.status_code == 200 and "agent:pam" in [  # 404 until the message is stored
                s["source"] for s in resp.json()["suggestions"]]:
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(resp.json())
    await second.close()
    bad = await api.post(f"/api/conversations/{session_id}/messages", headers=pam,
                         json={"text": "hi", "suggestion": 7})
    assert bad.status_code == 400


async def test_trainers_review_corrections_and_label_emerging_needs(
    gateway: Gateway, store: Store, api: httpx.AsyncClient
) -> None:
    rex = await agent_login(store, api, "rex")
    tia = await user_login(store, api, "tia", "trainer")
    await _ready(api)
    console, risks = await agent_console(gateway, rex, "risk")
    asked = ["do you offer gift wrapping?", "can you gift wrap my present",
             "is gift wrapping available for orders", "could the parcel be gift wrapped?"]
    try:
        sessions = []
        for text in asked:
            customer = await Widget(gateway.url).connect()
            session_id = await customer.session()
            await customer.say(session_id, text)
            await _next(risks, session_id)
            sessions.append(session_id)
            await customer.close()
    finally:
        await console.disconnect()

    assert (await api.get("/api/emerging-needs", headers=rex)).status_code == 403
    resp = await api.get("/api/emerging-needs", headers=tia)
    assert resp.status_code == 200, resp.text
    cluster = next(c for c in resp.json()["clusters"]
                   if {m["text"] for m in c["members"]} >= set(asked[:3]))
    assert cluster["size"] >= 3 and cluster["proposed_intent"]
    ids = [m["message_id"] for m in cluster["members"]]

    for bad in ({"intent": "Gift Wrapping", "message_ids": ids}, {"intent": "gift_wrapping"},
                {"intent": "gift_wrapping", "message_ids": [True]}):
        assert (await api.post("/api/emerging-needs/label", headers=tia,
                               json=bad)).status_code == 400
    assert (await api.post("/api/emerging-needs/label", headers=tia, json={
        "intent": "gift_wrapping", "message_ids": [10**9]})).status_code == 404
    resp = await api.post("/api/emerging-needs/label", headers=tia,
                          json={"intent": "gift_wrapping", "message_ids": ids})
    assert resp.status_code == 201, resp.text
    made = resp.json()["corrections"]
    assert [(c["type"], c["review_status"], c["after"]["intent"], c["agent"]) for c in made] == [
        ("relabelled", "accepted", "gift_wrapping", "tia")] * len(ids)

    resp = await api.get("/api/corrections", headers=tia,
                         params={"status": "accepted", "type": "relabelled"})
    listed = {c["id"] for c in resp.json()["corrections"]}
    assert {c["id"] for c in made} <= listed
    assert (await api.get("/api/corrections", headers=rex)).status_code == 403
    assert (await api.get("/api/corrections", headers=tia,
                          params={"status": "maybe"})).status_code == 400
    first = made[0]["id"]
    resp = await api.post(f"/api/corrections/{first}/review", headers=tia,
                          json={"status": "rejected", "note": "not a real need"})
    assert resp.json()["correction"]["review_status"] == "rejected"
    assert (await api.post("/api/corrections/999999/review", headers=tia,
                           json={"status": "accepted"})).status_code == 404
    assert (await api.post(f"/api/corrections/{first}/review", headers=tia,
                           json={"status": "done"})).status_code == 400


async def test_trainers_group_edit_and_bulk_review_corrections(
    store: Store, api: httpx.AsyncClient
) -> None:
    uma = await user_login(store, api, "uma", "trainer")
    await store.upsert_conversation("for-review")
    made = [await store.add_correction(
        "for-review", type="relabelled", agent="ann", before={"intent": "greet"},
        after={"intent": intent}) for intent in ("thank", "thank", "goodbye")]
    resp = await api.get("/api/corrections/groups", headers=uma)
    groups = {(g["type"], g["intent"]): g for g in resp.json()["groups"]}
    assert groups[("relabelled", "thank")]["ids"][-2:] == [made[0].id, made[1].id]
    assert groups[("relabelled", "goodbye")]["count"] >= 1

    edited = {"intent": "goodbye", "text": "bye for now"}
    resp = await api.post(f"/api/corrections/{made[2].id}/review", headers=uma,
                          json={"status": "accepted", "after": edited})
    assert resp.status_code == 200 and resp.json()["correction"]["after"] == edited
    assert (await api.post(f"/api/corrections/{made[2].id}/review", headers=uma, json={
        "status": "accepted", "after": "not an object"})).status_code == 400

    ids = [made[0].id, made[1].id]
    refused = await api.post("/api/corrections/review", headers=uma,
                             json={"ids": [*ids, 10**9], "status": "rejected"})
    assert refused.status_code == 404
    assert {(await stored_correction(store, i)).review_status for i in ids} == {"new"}
    resp = await api.post("/api/corrections/review", headers=uma,
                          json={"ids": ids, "status": "rejected", "note": "duplicates"})
    assert [c["review_status"] for c in resp.json()["corrections"]] == ["rejected"] * 2
    for bad in ({"ids": [], "status": "rejected"}, {"ids": ids, "status": "maybe"}):
        assert (await api.post("/api/corrections/review", headers=uma,
                               json=bad)).status_code == 400


async def _made(store: Store, conversation_id: str) -> dict[str, int]:
    """Corrections of each type the trainers' filters tell apart, in a conversation of their own."""
    await store.upsert_conversation(conversation_id)
    turn = [{"event": "action", "name": "action_listen"},
            {"event": "user", "text": "hi", "parse_data": {"intent": {"name": "greet"}}}]
    greet = {"action_name": "utter_greet", "messages": [{"text": "Hey! How can I help?"}],
             "intent": "greet"}
    made = {
        "relabelled": await store.add_correction(
            conversation_id, type="relabelled", agent="ann", model_version="m1",
            before={"intent": "greet"}, after={"intent": "thank", "text": "cheers"}),
        "edited": await store.add_correction(
            conversation_id, type="edited", agent="bob", model_version="m2", before=greet,
            after={**greet, "messages": [{"text": "Hello! What can I do for you?"}]},
            tracker_events=turn),
        "written": await store.add_correction(
            conversation_id, type="written", agent="ann", model_version="m2", before=greet,
            after={"action_name": "action_agent_reply", "messages": [{"text": "Hi, I'm Ann."}],
                   "intent": "greet"}, tracker_events=turn),
    }
    return {kind: c.id for kind, c in made.items()}


async def test_trainers_filter_the_corrections_by_type_intent_agent_and_model(
    store: Store, api: httpx.AsyncClient
) -> None:
    uma = await user_login(store, api, "uma", "trainer")
    made = await _made(store, "for-filters")

    async def ids(**params: str) -> list[int]:
        resp = await api.get("/api/corrections", headers=uma,
                             params={"conversation_id": "for-filters", **params})
        assert resp.status_code == 200, resp.text
        return [c["id"] for c in resp.json()["corrections"]]

    assert await ids() == list(made.values())
    assert await ids(type="edited") == [made["edited"]]
    assert await ids(intent="thank") == [made["relabelled"]]
    assert await ids(intent="greet") == [made["edited"], made["written"]]
    assert await ids(agent="ann") == [made["relabelled"], made["written"]]
    assert await ids(model_version="m2") == [made["edited"], made["written"]]
    assert await ids(agent="ann", model_version="m2", type="written") == [made["written"]]
    assert await ids(agent="nobody") == []
    for bad in ({"intent": "Thank You"}, {"type": "guessed"}, {"agent": "a" * 201},
                {"status": "maybe"}):
        resp = await api.get("/api/corrections", headers=uma, params=bad)
        assert resp.status_code == 400, bad


async def test_trainers_edit_before_accepting_and_read_the_audit_of_their_reviews(
    store: Store, api: httpx.AsyncClient
) -> None:
    uma = await user_login(store, api, "uma", "trainer")
    ann = await user_login(store, api, "ann", "agent")
    made = await _made(store, "for-edits")
    stored = {kind: await stored_correction(store, i) for kind, i in made.items()}

    # edits the writer would refuse: 400, and nothing changes
    edited_after = stored["edited"].after
    for kind, after in (
            ("relabelled", {"intent": "Not An Intent", "text": "cheers"}),
            ("relabelled", {"intent": "thank"}),  # no customer text left to learn from
            ("edited", {**edited_after, "messages": [{"text": "  "}]}),
            ("edited", {**edited_after, "edited_as": "sideways"}),
            ("edited", {**edited_after, "written_as": "story"}),
            ("written", {**stored["written"].after, "written_as": "new_intent",
                         "intent": "Bad Intent"})):
        resp = await api.post(f"/api/corrections/{made[kind]}/review", headers=uma,
                              json={"status": "accepted", "after": after})
        assert resp.status_code == 400, (kind, after, resp.text)
        assert "cannot become training data" in resp.json()["message"]
        assert await stored_correction(store, made[kind]) == stored[kind]

    relabel = {"intent": "goodbye", "text": "cheers"}
    resp = await api.post(f"/api/corrections/{made['relabelled']}/review", headers=uma,
                          json={"status": "accepted", "after": relabel, "note": "a farewell"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["correction"]["after"] == relabel
    policy = {**edited_after, "messages": [{"text": "Hello! How may I help?"}],
              "edited_as": "policy_changed"}
    resp = await api.post(f"/api/corrections/{made['edited']}/review", headers=uma,
                          json={"status": "accepted", "after": policy})
    assert resp.status_code == 200, resp.text
    assert resp.json()["correction"]["review_status"] == "accepted"

    # bulk: one unknown id and nothing changes; then all of them
    refused = await api.post("/api/corrections/review", headers=uma,
                             json={"ids": [made["written"], 10**9], "status": "accepted"})
    assert refused.status_code == 404
    assert (await stored_correction(store, made["written"])).review_status == "new"
    resp = await api.post("/api/corrections/review", headers=uma,
                          json={"ids": [made["written"]], "status": "rejected"})
    assert [c["review_status"] for c in resp.json()["corrections"]] == ["rejected"]

    resp = await api.get("/api/corrections/audit", headers=uma, params={"actor": "uma"})
    assert resp.status_code == 200, resp.text
    entries = resp.json()["entries"]
    mine = {e["target"]: e for e in entries
            if e["target"] in {f"correction:{i}" for i in made.values()}}
    assert [(e["action"], e["target"]) for e in entries[:3]] == [
        ("correction_rejected", f"correction:{made['written']}"),
        ("correction_accepted", f"correction:{made['edited']}"),
        ("correction_accepted", f"correction:{made['relabelled']}")]
    assert mine[f"correction:{made['relabelled']}"]["details"] == {
        "note": "a farewell", "after": relabel,
        "original_after": {"intent": "thank", "text": "cheers"}}
    assert mine[f"correction:{made['edited']}"]["details"]["original_after"] == edited_after
    assert {e["actor"] for e in entries} == {"uma"}
    only = (await api.get("/api/corrections/audit", headers=uma,
                          params={"action": "correction_rejected"})).json()["entries"]
    assert only and {e["action"] for e in only} == {"correction_rejected"}
    assert (await api.get("/api/corrections/audit", headers=uma,
                          params={"action": "login"})).status_code == 400
    assert (await api.get("/api/corrections/audit", headers=ann)).status_code == 403
