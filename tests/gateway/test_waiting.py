"""Nobody waits in silence, end to end over real sockets (a gateway on the session's Rasa):
with no agent logged in a customer who asks for a person is told so at once and offered to keep
waiting, continue with the bot or leave a contact address (stored with the conversation); with
an agent available the same offer comes after HANDOFF_QUEUE_OFFER_AFTER. Presence: logged in
to the console and not marked away. Then the same in Chromium (the widget's offer, place in the
queue and contact form; the console's Available/Away), on the same gateway. Opening hours and
presence: pure tests at the end."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import requests
from playwright.sync_api import expect

from bot.serve import Stack
from handoff.conversation.presence import OpeningHours, Presence
from handoff.store import Store
from tests.gateway.clients import (  # noqa: F401 (gateway_store: the fixture store)
    WAIT, Widget, agent_console, agent_login, gateway_store,
)
from tests.gateway.conftest import Gateway, _start_gateway, _stop
from tests.gateway.glyphs import missing_glyphs
from tests.gateway.test_pages import (  # noqa: F401 (fixtures)
    CHROMIUM, Scene, Shots, _api, agents, browser, scene, shots, watch,
)

ASK_FOR_A_PERSON = "I want to talk to a human"
ORDER_QUESTION = "where is my order 100002?"


@pytest.fixture(scope="module")
def gateway(rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _start_gateway(tmp_path_factory.mktemp("waiting"), rasa_stack.rasa_url,
                        rasa_stack.token, {"HANDOFF_QUEUE_OFFER_AFTER": "3"})
    yield gw
    _stop(gw.process)


async def _next_of(widget: Widget, event: str) -> Any:
    while True:
        name, data = await widget.next()
        if name == event:
            return data


async def _ask_for_a_person(widget: Widget) -> str:
    cid = await widget.session()
    await widget.say(cid, ASK_FOR_A_PERSON)
    assert (await _next_of(widget, "handoff_notice"))["kind"] == "handoff_queued"
    return cid


@pytest.mark.asyncio
async def test_with_no_agent_the_customer_is_told_at_once_and_chooses(
    gateway: Gateway, store: Store
) -> None:
    widget = await Widget(gateway.url).connect()
    try:
        cid = await _ask_for_a_person(widget)
        text = ("No member of our team is available right now. You can keep waiting, "
                "continue with the assistant, or leave an e-mail address or phone number and "
                "we will get back to you.")
        assert await widget.next() == ("bot_uttered", {"text": text,
                                                       "metadata": {"sender": "system"}})
        assert await widget.next() == ("handoff_offer", {
            "reason": "no_agent", "position": 1, "options": ["wait", "bot", "contact"],
            "text": text})
        assert await widget.next() == ("queue_position", {"position": 1, "waiting": 1})

        # a bad address is refused and changes nothing
        await widget.emit("handoff_choice", {"session_id": cid, "choice": "contact",
                                             "contact": "<b>call me</b>"})
        assert await widget.next() == ("error", {
            "code": "bad_request",
            "message": "'contact' must be an e-mail address or a phone number"})
        assert await store.get_contact(cid) is None
        await widget.emit("handoff_choice", {"session_id": cid, "choice": "contact",
                                             "contact": " ann@example.com "})
        assert (await _next_of(widget, "bot_uttered"))["text"] == (
            "Thank you: we will get back to you at ann@example.com. You keep your place in the "
            "queue too.")
        contact = await store.get_contact(cid)
        assert contact is not None and contact["contact"] == "ann@example.com"
        await widget.emit("handoff_choice", {"session_id": cid, "choice": "wait"})
        assert (await _next_of(widget, "bot_uttered"))["text"] == (
            "Thank you for waiting: you are number 1 in the queue.")
        assert (await store.get_conversation(cid)).queue_reason == "bot_handoff_marker"

        # continue with the bot: out of the queue, and the bot answers again
        await widget.emit("handoff_choice", {"session_id": cid, "choice": "bot"})
        assert await _next_of(widget, "handoff_notice") == {
            "kind": "bot_back", "text": "You are back with the assistant."}
        conv = await store.get_conversation(cid)
        assert (conv.mode, conv.queued) == ("bot", False)
        await widget.say(cid, ORDER_QUESTION)
        answer = await _next_of(widget, "bot_uttered")
        while answer.get("metadata") == {"sender": "system"}:  # the bot_back notice's text
            answer = await _next_of(widget, "bot_uttered")
        assert answer["text"].startswith("Order 100002 ")
        await widget.emit("handoff_choice", {"session_id": cid, "choice": "bot"})
        assert await widget.next() == ("error", {
            "code": "conflict", "message": "this conversation is not waiting for a person"})
    finally:
        await widget.close()


@pytest.mark.asyncio
async def test_presence_and_the_offer_after_a_wait(gateway: Gateway, store: Store) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=WAIT) as api:
        olga = await agent_login(store, api, "olga")
        console, pushes = await agent_console(gateway, olga, "presence")
        contacts: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        console.on("contact_left", contacts.put, namespace="/agent")
        first = await Widget(gateway.url).connect()
        second = await Widget(gateway.url).connect()
        try:
            resp = await api.get("/api/presence", headers=olga)
            assert resp.json() == {"presence": {"open": True, "opening_hours": None,
                                                "logged_in": ["olga"], "available": ["olga"]}}

            # olga is available: no offer at once, but one after the configured wait (3 s)
            cid = await _ask_for_a_person(first)
            assert (await first.next()) == ("queue_position", {"position": 1, "waiting": 1})
            await first.nothing()
            offer = await _next_of(first, "handoff_offer")
            assert (offer["reason"], offer["position"]) == ("long_wait", 1)
            assert offer["text"].startswith("Sorry for the wait: our team is busy right now.")

            # away: the next customer is told at once; the first keeps its place
            answer = await console.call("presence", {"status": "away"}, namespace="/agent")
            assert answer["presence"]["available"] == []
            assert (await asyncio.wait_for(pushes.get(), WAIT))["logged_in"] == ["olga"]
            resp = await api.post("/api/presence", headers=olga, json={"status": "lunch"})
            assert resp.status_code == 400
            other = await _ask_for_a_person(second)
            assert (await _next_of(second, "handoff_offer"))["reason"] == "no_agent"
            assert (await _next_of(second, "queue_position")) == {"position": 2, "waiting": 2}
            await second.emit("handoff_choice", {"session_id": other, "choice": "contact",
                                                 "contact": "+44 20 7946 0958"})
            left = await asyncio.wait_for(contacts.get(), WAIT)
            assert (left["conversation_id"], left["contact"]) == (other, "+44 20 7946 0958")

            # olga takes the first: the second moves up
            resp = await api.post(f"/api/conversations/{cid}/takeover", headers=olga)
            assert resp.status_code == 200, resp.text
            assert (await _next_of(second, "queue_position")) == {"position": 1, "waiting": 1}
        finally:
            await first.close()
            await second.close()
            await console.disconnect()
        for _ in range(100):  # the gateway hears the disconnect a moment later
            resp = await api.get("/api/presence", headers=olga)
            if resp.json()["presence"]["logged_in"] == []:
                break
            await asyncio.sleep(0.1)
        assert resp.json()["presence"]["logged_in"] == []


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="Debian's chromium is not installed (apt-get install chromium)")
def test_with_no_agent_the_widget_shows_the_offer_and_the_place_in_the_queue(
    scene: Scene, gateway: Gateway, shots: Shots
) -> None:
    customer = scene.customer()
    customer.open()
    customer.say("I want to talk to a human")
    expect(customer.last("system")).to_have_text(
        "No member of our team is available right now. You can keep waiting, continue with the "
        "assistant, or leave an e-mail address or phone number and we will get back to you.")
    # the socket tests above left one customer waiting
    expect(customer.widget.locator("#nw-sub")).to_have_text(re.compile(
        "^Waiting for a member of our team \u2014 you are number [12] in the queue$"))
    choice = customer.widget.get_by_role("group", name="What would you like to do?")
    expect(choice.get_by_role("button")).to_have_text([
        "Keep waiting", "Continue with the assistant", "Leave an e-mail or phone number"])
    shots(customer.page, "widget-no-agent-offer", doc="widget-no-agent-offer")
    assert missing_glyphs(customer.page) == []

    choice.get_by_role("button", name="Leave an e-mail or phone number").click()
    field = choice.get_by_role("textbox", name="E-mail address or phone number")
    field.fill("ann@example.com")
    choice.get_by_role("button", name="Send").click()
    expect(customer.last("system")).to_have_text(
        "Thank you: we will get back to you at ann@example.com. You keep your place in the "
        "queue too.")
    for button in choice.get_by_role("button").all():
        expect(button).to_be_disabled()
    shots(customer.page, "widget-contact-left")

    erin = _api(gateway, "erin")
    detail = requests.get(f"{gateway.url}/api/conversations/{customer.session_id}",
                          headers=erin, timeout=30).json()
    assert detail["contact"]["contact"] == "ann@example.com"
    assert detail["conversation"]["queue_reason"] == "bot_handoff_marker"

    # an agent logs in: available; a click marks her away, another available again
    console = scene.console("erin")
    button = console.page.get_by_role("button", name="Available")
    expect(button).to_have_attribute("aria-pressed", "false")
    button.click()
    away = console.page.get_by_role("button", name="Away")
    expect(away).to_have_attribute("aria-pressed", "true")
    presence = requests.get(f"{gateway.url}/api/presence", headers=erin, timeout=30).json()
    assert (presence["presence"]["logged_in"], presence["presence"]["available"]) == (
        ["erin"], [])
    shots(console.page, "console-away")
    away.click()
    expect(console.page.get_by_role("button", name="Available")).to_be_visible()


def test_opening_hours_are_read_and_bad_ones_refused() -> None:
    hours = OpeningHours.parse("mon-fri 09:00-17:30, sat 10:00-14:00", "Europe/Berlin")
    at = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)  # a Monday, 09:30 in Berlin
    assert hours.is_open(at)
    assert not hours.is_open(datetime(2026, 12, 7, 16, 30, tzinfo=UTC))  # 17:30 there
    assert hours.is_open(datetime(2026, 12, 12, 12, 0, tzinfo=UTC))  # Saturday 13:00
    assert not hours.is_open(datetime(2026, 12, 13, 12, 0, tzinfo=UTC))  # Sunday
    assert OpeningHours.parse("").is_open(at)  # empty: always open
    for bad, message in (("weekdays 9-5", "expected e.g."), ("mon 18:00-09:00", "ends before"),
                         ("mon 25:00-26:00", "bad time")):
        with pytest.raises(ValueError, match=message):
            OpeningHours.parse(bad)
    with pytest.raises(ValueError, match="unknown time zone"):
        OpeningHours.parse("", "Mars/Olympus")


def test_presence_is_per_login_and_away_ends_with_the_last_socket() -> None:
    presence = Presence()
    presence.connected("s1", "ann")
    presence.connected("s2", "ann")
    presence.connected("s3", "bob")
    presence.set_away("ann", True)
    assert (presence.logged_in(), presence.available()) == (["ann", "bob"], ["bob"])
    presence.disconnected("s1")
    assert presence.available() == ["bob"]  # still one of ann's consoles, still away
    presence.disconnected("s2")
    presence.connected("s4", "ann")
    assert presence.available() == ["ann", "bob"]  # a new login starts available
