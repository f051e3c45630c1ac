"""The trainer's panel in Debian's Chromium against a gateway with triage on: recent unclear
customer messages appear as a cluster, and one action turns it into NLU examples."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from playwright.sync_api import Browser, expect

from bot.serve import Stack
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
                        rasa_stack.token, {"HANDOFF_TRIAGE_ENABLED": "true"})
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
