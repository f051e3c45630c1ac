"""Spot-checks end to end on a real gateway (sampling everything: share 1.0) in front of the
real Rasa: a customer's bot-only conversation ends and is sampled; through the API a reviewer
marks its bot replies right or corrects them; the correction enters the trainers' queue, is
accepted and exported as the contract's record (the ``long`` test also has bot/'s writer write
it into training data); the accuracy figure counts the marks. And in Chromium, the console's Spot-checks section, with a customer text that would
be HTML if it were inserted as HTML."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from playwright.sync_api import Browser, expect

from contracts.correction_record import Snapshot, parse_record
from handoff.learning.corrections import export_records
from handoff.store import Store
from tests.conftest import Stack
from tests.gateway.clients import Widget, agent_login, api, gateway_store, user_login  # noqa: F401
from tests.gateway.conftest import Gateway, _start_gateway, _stop
from tests.gateway.glyphs import missing_glyphs
from tests.gateway.test_pages import (  # noqa: F401 (fixtures)
    CHROMIUM, XSS, Console, PageWatch, Shots, _api, agents, browser, shots, watch,
)
from tests.test_corrections_writer import project_copy, write

EDITED_GREETING = "Hello from Northwind Goods! Ask me about an order, a refund or an invoice."


@pytest.fixture(scope="module")
def gateway(rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """This module's gateway samples every bot-only conversation that ends."""
    gw = _start_gateway(tmp_path_factory.mktemp("spot-gateway"), rasa_stack.rasa_url,
                        rasa_stack.token, {"HANDOFF_SPOT_CHECK_SHARE": "1.0"})
    yield gw
    _stop(gw.process)


async def _turn(widget: Widget, api: httpx.AsyncClient, headers: dict[str, str],
                session_id: str, text: str) -> None:
    """Say ``text`` and wait until the bot has answered it all."""
    await widget.say(session_id, text)
    while (await widget.next())[0] != "bot_uttered":
        pass
    deadline = time.monotonic() + 60
    while (await api.get(f"/api/conversations/{session_id}", headers=headers)).json()[
            "router"]["busy"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def _sampled(api: httpx.AsyncClient, headers: dict[str, str],
                   session_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        found = [c for c in (await api.get("/api/spot-checks", headers=headers)).json()[
            "spot_checks"] if c["conversation_id"] == session_id]
        if found:
            return found[0]
        assert time.monotonic() < deadline, "the ended conversation was not sampled"
        await asyncio.sleep(0.05)


async def _ended_and_sampled(api: httpx.AsyncClient, headers: dict[str, str],
                             *texts: str) -> tuple[str, dict[str, Any]]:
    """A customer says ``texts``, each answered by the bot, and ends the conversation; returns
    its session id and its spot-check once sampled."""
    widget = await Widget(str(api.base_url)).connect()
    try:
        session_id = await widget.session()
        for text in texts:
            await _turn(widget, api, headers, session_id, text)
        await widget.emit("end_conversation", {"session_id": session_id})
        while (await widget.next())[0] != "survey_request":
            pass
        return session_id, await _sampled(api, headers, session_id)
    finally:
        await widget.close()


@pytest.mark.asyncio
async def test_an_ended_bot_conversation_is_sampled_checked_and_its_correction_written(
    api: httpx.AsyncClient, store: Store, tmp_path: Path,  # noqa: F811
) -> None:
    rita = await agent_login(store, api, "rita")
    tina = await user_login(store, api, "tina-spot", "trainer")
    session_id, check = await _ended_and_sampled(api, rita, "hi", "where is my order 100002?")
    assert (check["status"], check["probability"], check["intent"], check["marked"]) == (
        "open", 1.0, "greet", 0)
    assert (await api.get("/api/spot-checks")).status_code == 401  # the agent role at least

    url = f"/api/spot-checks/{check['id']}"
    detail = (await api.get(url, headers=rita)).json()
    bots = [m for m in detail["messages"] if m["sender"] == "bot"]
    assert check["bot_messages"] == len(bots) >= 2 and detail["marks"] == []
    greeting = bots[0]
    assert greeting["action"] == "utter_greet"
    order_reply = next(m for m in bots if m["seq"] > greeting["seq"] + 1)

    # bad input: a clear error, nothing stored
    for body, status in (({"message_id": greeting["id"], "verdict": "maybe"}, 400),
                         ({"message_id": greeting["id"], "verdict": "edit"}, 400),
                         ({"message_id": greeting["id"], "verdict": "relabel",
                           "intent": "Not An Intent"}, 400),
                         ({"message_id": detail["messages"][0]["id"], "verdict": "right"}, 404)):
        resp = await api.post(f"{url}/marks", headers=rita, json=body)
        assert resp.status_code == status, resp.text
    assert (await api.get(url, headers=rita)).json()["marks"] == []

    edit = await api.post(f"{url}/marks", headers=rita, json={
        "message_id": greeting["id"], "verdict": "edit", "text": EDITED_GREETING})
    assert edit.status_code == 201, edit.text
    correction = edit.json()["correction"]
    assert (correction["type"], correction["review_status"], correction["agent"],
            correction["tracker_status"]) == ("edited", "new", "rita", "fetched")
    events = correction["tracker_events"]
    assert [e.get("text") for e in events if e["event"] == "user"] == ["hi"]
    assert not any(e["event"] == "action" and e.get("name") == "utter_greet" for e in events)
    again = await api.post(f"{url}/marks", headers=rita, json={
        "message_id": greeting["id"], "verdict": "right"})
    assert again.status_code == 409
    relabel = await api.post(f"{url}/marks", headers=rita, json={
        "message_id": order_reply["id"], "verdict": "relabel", "intent": "track_refund"})
    assert relabel.status_code == 201, relabel.text
    relabelled = relabel.json()["correction"]
    assert relabelled["after"]["intent"] == "track_refund"
    assert [e.get("text") for e in relabelled["tracker_events"] if e["event"] == "user"][
        -1] == "where is my order 100002?"
    unfinished = await api.post(f"{url}/finish", headers=rita)
    left = len(bots) - 2
    assert unfinished.status_code == (409 if left else 200)
    for m in bots:
        if m["id"] not in (greeting["id"], order_reply["id"]):
            assert (await api.post(f"{url}/marks", headers=rita, json={
                "message_id": m["id"], "verdict": "right"})).status_code == 201
    if left:
        done = await api.post(f"{url}/finish", headers=rita)
        assert done.status_code == 200 and done.json()["spot_check"]["status"] == "done"
    assert (await api.get("/api/spot-checks", headers=rita)).json()["spot_checks"] == []

    # the corrections are in the trainers' queue like any other
    queue = (await api.get("/api/corrections", params={"conversation_id": session_id},
                           headers=tina)).json()["corrections"]
    assert [(c["id"], c["type"]) for c in queue] == [(correction["id"], "edited"),
                                                     (relabelled["id"], "relabelled")]
    # the accuracy figure's spot-check split: len(bots) checked, two corrected
    figure = (await api.get("/api/metrics/accuracy", headers=tina)).json()["accuracy"]
    spot = figure["spot_checks"]
    assert (spot["checked"], spot["right"]) == (len(bots), len(bots) - 2)
    assert spot["splits"]["action"]["utter_greet"] == {"checked": 1, "right": 0,
                                                      "accuracy": 0.0}

    # accepted and exported: each record passes the contract's parser, the one bot/'s writer
    # reads them with (the long test below runs the writer itself)
    for c in (correction, relabelled):
        assert (await api.post(f"/api/corrections/{c['id']}/review", headers=tina,
                               json={"status": "accepted"})).status_code == 200
    export = export_records(await store.list_corrections(conversation_id=session_id,
                                                         review_status="accepted"))
    assert export.refused == {}
    records = {r["id"]: parse_record(r) for r in export.records}
    relabel_record = records[relabelled["id"]]
    assert (relabel_record.type, relabel_record.text, relabel_record.after.intent) == (  # type: ignore[union-attr]
        "relabelled", "where is my order 100002?", "track_refund")
    assert records[correction["id"]].after == Snapshot("utter_greet", [EDITED_GREETING],
                                                       "greet")


@pytest.mark.long
@pytest.mark.asyncio
async def test_a_spot_check_correction_is_written_by_bots_writer(
    api: httpx.AsyncClient, store: Store, tmp_path: Path,  # noqa: F811
) -> None:
    rita = await agent_login(store, api, "rita")
    tina = await user_login(store, api, "tina-spot", "trainer")
    session_id, check = await _ended_and_sampled(api, rita, "hi")
    url = f"/api/spot-checks/{check['id']}"
    detail = (await api.get(url, headers=rita)).json()
    greeting = next(m for m in detail["messages"] if m["sender"] == "bot")
    edit = await api.post(f"{url}/marks", headers=rita, json={
        "message_id": greeting["id"], "verdict": "edit", "text": EDITED_GREETING})
    assert edit.status_code == 201, edit.text
    correction = edit.json()["correction"]
    assert (await api.post(f"/api/corrections/{correction['id']}/review", headers=tina,
                           json={"status": "accepted"})).status_code == 200
    export = export_records(await store.list_corrections(conversation_id=session_id,
                                                         review_status="accepted"))
    project = project_copy(tmp_path)
    report = write(project, export.records, "--skip-training")
    assert report["ok"] and report["stage"] == "done", report
    responses = (project / "data" / "corrections" / "responses.yml").read_text()
    assert EDITED_GREETING in responses  # a new variation of utter_greet
    tests_written = "\n".join(p.read_text() for p in (project / "tests").rglob("*.yml"))
    assert f"correction {correction['id']}: edited utter_greet" in tests_written


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_the_console_lists_spot_checks_and_marks_each_reply(
    browser: Browser, gateway: Gateway, watch: PageWatch, shots: Shots,  # noqa: F811
) -> None:
    async def customer() -> str:
        widget = await Widget(gateway.url).connect()
        try:
            session_id = await widget.session()
            await widget.say(session_id, XSS)
            while (await widget.next())[0] != "bot_uttered":
                pass
            await widget.emit("end_conversation", {"session_id": session_id})
            while (await widget.next())[0] != "survey_request":
                pass
            return session_id
        finally:
            await widget.close()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
        session_id = pool.submit(asyncio.run, customer()).result()
    headers = _api(gateway, "erin")
    deadline = time.monotonic() + 30
    while not any(c["conversation_id"] == session_id for c in requests.get(
            f"{gateway.url}/api/spot-checks", headers=headers, timeout=30).json()["spot_checks"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    erin = Console(browser.new_context(viewport={"width": 1300, "height": 900}), gateway,
                   watch, "erin").login()
    page = erin.page
    page.get_by_role("navigation", name="Sections").get_by_role("link",
                                                                name="Spot-checks").click()
    section = page.locator("#spot-checks")
    expect(section).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    section.locator("button.spot-item", has_text=session_id).click()
    transcript = section.get_by_role("list", name="Spot-checked transcript")
    expect(transcript.locator("li.customer .text")).to_have_text(XSS)  # text, not an <img>
    assert section.locator("img").count() == 0
    finish = section.locator("#spot-finish")
    expect(finish).to_be_disabled()
    bots = transcript.locator("li.bot")
    count = bots.count()
    assert count >= 1
    # the first reply corrected (relabel), the others right
    first = bots.nth(0)
    first.get_by_role("button", name="Correct\u2026").click()
    first.get_by_label("Correction").select_option("relabel")
    first.get_by_label("Intent the customer meant").fill("out_of_scope")
    first.get_by_role("button", name="Save correction").click()
    expect(transcript.locator("li.bot").nth(0).locator(".verdict")).to_have_text(
        "corrected: relabelled by erin")
    for i in range(1, count):
        transcript.locator("li.bot").nth(i).get_by_role("button", name="Right").click()
        expect(transcript.locator("li.bot").nth(i).locator(".verdict")).to_have_text(
            "right by erin")
    expect(finish).to_be_enabled()
    assert missing_glyphs(page) == []
    shots(page, "spot-check-marked", doc="console-spot-checks")
    finish.click()
    expect(section.locator("#spot-detail")).to_have_text("Spot-check finished.")
    expect(section.locator("button.spot-item", has_text=session_id)).to_have_count(0)
