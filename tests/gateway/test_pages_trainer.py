"""The trainer's panel in Debian's Chromium against a gateway with triage on: recent unclear
customer messages appear as a cluster, and one action turns it into NLU examples; the
corrections queue filtered, reviewed in bulk and edited before accepting, with what each choice
writes shown, and the review log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, expect

from bot.serve import Stack
from handoff.store import Store
from tests.gateway.clients import Widget
from tests.gateway.conftest import Gateway, _start_gateway, _stop
from tests.gateway.test_pages import (  # noqa: F401 (fixtures)
    CHROMIUM, Console, PageWatch, Shots, _api, agents, browser, shots, watch,
)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium)")
MARKUP = "can you <b>gift wrap</b> it? <img src=x onerror=alert(1)>"  # shown as typed
ASKED = ["do you offer gift wrapping?", "can you gift wrap my present",
         "is gift wrapping available for orders", MARKUP]


@pytest.fixture(scope="module")
def gateway(rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _start_gateway(tmp_path_factory.mktemp("trainer-gateway"), rasa_stack.rasa_url,
                        rasa_stack.token, {"HANDOFF_TRIAGE_ENABLED": "true",
                                           "HANDOFF_TRIAGE_THRESHOLDS": "fixed"})
    deadline = time.monotonic() + 120
    while requests.get(f"{gw.url}/api/health", timeout=10).json()["triage"] != "ready":
        assert time.monotonic() < deadline, "triage did not become ready"
        time.sleep(0.5)
    yield gw
    _stop(gw.process)


async def _customers_ask(url: str) -> None:
    for text in ASKED:
        customer = await Widget(url).connect()
        session_id = await customer.session()
        await customer.say(session_id, text)
        await customer.next()  # the bot answered: the message is parsed and triaged
        await customer.close()


def test_a_trainer_turns_an_emerging_need_into_nlu_examples(
    browser: Browser, gateway: Gateway, watch: PageWatch, shots: Shots
) -> None:
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
        pool.submit(asyncio.run, _customers_ask(gateway.url)).result()
    tina = Console(browser.new_context(), gateway, watch, "tina").login()
    panel = tina.page.locator("#trainer")
    need = panel.locator("article.need").filter(has_text="gift wrap")
    for _ in range(20):  # the last assessments may still be on their way
        if need.count():
            break
        panel.get_by_role("button", name="Refresh").click()
        # one load at a time: a slower one finishing later would redraw the form under us
        expect(panel.locator("#needs")).not_to_contain_text("Looking for emerging needs")
        tina.page.wait_for_timeout(500)
    expect(need).to_be_visible()
    # the customer's markup is text in the panel, not elements (PageWatch fails on the alert
    # or the request for /x that an inserted <img src=x> would make)
    expect(need.locator("li").filter(has_text=MARKUP)).to_have_count(1)
    assert need.locator("b, img").count() == 0
    shots(tina.page, "trainer-emerging-needs", doc="console-trainer")
    need.get_by_label("Intent for these messages").fill("gift_wrapping")
    need.get_by_role("button", name="Make NLU examples").click()
    expect(need.get_by_role("status")).to_contain_text("NLU examples queued for training")
    made = requests.get(f"{gateway.url}/api/corrections", timeout=30,
                        params={"status": "accepted", "type": "relabelled"},
                        headers=_api(gateway, "tina")).json()["corrections"]
    assert {c["after"]["text"] for c in made} >= set(ASKED)
    assert {c["after"]["intent"] for c in made} == {"gift_wrapping"}


MODEL = "m-review-1"  # the filter that keeps this test's corrections apart from the others'
TURN = [{"event": "action", "name": "action_listen"},
        {"event": "user", "text": "hi", "parse_data": {"intent": {"name": "greet"}}}]
GREET = {"action_name": "utter_greet", "messages": [{"text": "Hey! How can I help?"}],
         "intent": "greet"}


async def _corrections(url: str) -> dict[str, int]:
    async with Store(url) as store:
        await store.upsert_conversation("console-review")

        async def add(kind: Any, before: Any, after: Any, events: Any = None) -> int:
            made = await store.add_correction(
                "console-review", type=kind, agent="rita", model_version=MODEL, before=before,
                after=after, tracker_events=events)
            return made.id

        return {
            "thanks": await add("relabelled", {"intent": "greet"},
                                {"intent": "thank", "text": "cheers, that helped"}),
            "markup": await add("relabelled", {"intent": "greet"},
                                {"intent": "goodbye", "text": MARKUP}),
            "edited": await add("edited", GREET, {**GREET, "messages": [
                {"text": "Hello! What can I do for you?"}]}, TURN),
            "written": await add("written", GREET, {
                "action_name": "action_agent_reply", "messages": [{"text": "Hi, I'm Rita."}],
                "intent": "greet"}, TURN),
        }


def test_a_trainer_filters_bulk_reviews_and_edits_corrections_before_accepting(
    browser: Browser, gateway: Gateway, watch: PageWatch, shots: Shots
) -> None:
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
        made = pool.submit(asyncio.run, _corrections(gateway.database_url)).result()
    tina = Console(browser.new_context(), gateway, watch, "tina").login()
    panel = tina.page.locator("#trainer")
    filters = panel.get_by_role("form", name="Filter the corrections")
    filters.get_by_label("Model").fill(MODEL)
    filters.get_by_role("button", name="Filter").click()
    rows = panel.locator("#correction-queue li.correction")
    expect(rows).to_have_count(4)
    filters.get_by_label("Type").select_option("relabelled")
    filters.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="goodbye")).to_contain_text(MARKUP)  # text, not elements
    assert panel.locator("#correction-queue b, #correction-queue img").count() == 0
    expect(rows.first.locator(".effect")).to_have_text(
        "Accept writes: an NLU example of thank (data/corrections/nlu.yml).")

    panel.get_by_label("Select all").check()  # bulk: both relabels accepted in one request
    panel.get_by_role("button", name="Accept selected").click()
    expect(panel.locator("#bulk-status")).to_have_text("2 accepted.")
    expect(rows).to_have_count(0)

    filters.get_by_label("Type").select_option("")
    filters.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(2)
    edited = rows.filter(has_text="utter_greet \u2192 utter_greet")
    edited.get_by_role("button", name="Edit\u2026").click()
    form = edited.locator(".edit-correction form")
    expect(form.get_by_role("note")).to_contain_text("a variation: the edited text is added "
                                                     "to utter_greet")
    form.get_by_label("Learn the edit as").select_option("policy_changed")
    expect(form.get_by_role("note")).to_have_text(
        "Will write: policy changed: the response utter_greet is replaced in domain.yml by the "
        "edited text, for every conversation.")
    form.get_by_label("Reply text").fill("Hello! How may I help you today?")
    shots(tina.page, "trainer-edit-before-accepting", doc="console-trainer-review")
    form.get_by_role("button", name="Accept edited").click()
    expect(rows).to_have_count(1)

    written = rows.first  # an intent the writer would refuse: an error, nothing changes
    written.get_by_role("button", name="Edit\u2026").click()
    form = written.locator(".edit-correction form")
    expect(form.get_by_role("note")).to_contain_text("this conversation only: a story")
    form.get_by_label("Learn the reply as").select_option("new_intent")
    form.get_by_label("Intent").fill("Opening Hours")
    form.get_by_role("button", name="Accept edited").click()
    expect(tina.page.locator("#alert")).to_contain_text("cannot become training data")
    expect(rows).to_have_count(1)
    written.get_by_role("button", name="Reject", exact=True).click()
    expect(rows).to_have_count(0)

    headers = _api(gateway, "tina")
    found = {c["id"]: c for c in requests.get(
        f"{gateway.url}/api/corrections", timeout=30, headers=headers,
        params={"model_version": MODEL, "status": "accepted"}).json()["corrections"]}
    assert set(found) == {made["thanks"], made["markup"], made["edited"]}
    assert found[made["edited"]]["after"]["edited_as"] == "policy_changed"
    assert found[made["edited"]]["after"]["messages"][0]["text"] == (
        "Hello! How may I help you today?")
    rejected = requests.get(f"{gateway.url}/api/corrections", timeout=30, headers=headers,
                            params={"model_version": MODEL, "status": "rejected"}).json()
    assert [c["id"] for c in rejected["corrections"]] == [made["written"]]
    assert rejected["corrections"][0]["after"].get("written_as") is None

    log = panel.locator("#review-log")
    log.get_by_label("Action").select_option("correction_accepted")
    log.get_by_role("button", name="Show").click()
    entry = log.locator("tbody tr").filter(has_text=f"correction:{made['edited']}")
    expect(entry).to_contain_text("tina")
    expect(entry).to_contain_text("edited: greet utter_greet")
    expect(log.locator("tbody tr").filter(has_text="correction_rejected")).to_have_count(0)
    shots(tina.page, "trainer-review-log")
