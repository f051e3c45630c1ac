"""The console's Dashboard in Debian's Chromium, on a real gateway whose store holds the seeded
history of ``tests/gateway/metrics_seed.py``: a trainer sees every figure as a chart over the
period, the two model deploys marked on the time axis, a figure's definition one click away,
and an intent filter changes the charts (to the values worked out by hand in
``tests/gateway/test_metrics.py``). Screenshot: ``docs/screenshots/console-dashboard.png``
(with ``UPDATE_DOC_SCREENSHOTS=1``). And an agent rates a suggestion in one click, which the
Dashboard's enablement figure counts."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from handoff.store import Store
from tests.gateway.clients import Widget
from tests.gateway.conftest import Gateway
from tests.gateway.metrics_seed import seed
from tests.gateway.test_metrics import EXPECTED
from tests.gateway.test_pages import (  # noqa: F401 (fixtures)
    CHROMIUM, Console, PageWatch, Shots, _api, agents, browser, shots, watch,
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)")


async def _seed(url: str) -> None:
    async with Store(url) as store:
        await seed(store)


def _data(page: Page, metric: str) -> Any:
    """The datasets (label → values) and the deploy marks of a metric's chart, as drawn."""
    return page.evaluate("""(metric) => {
        const chart = Chart.getChart(document.querySelector(`[data-metric="${metric}"] canvas`));
        return {labels: chart.data.labels,
                data: Object.fromEntries(chart.data.datasets.map((d) => [d.label, d.data])),
                marks: chart.options.plugins.deployMarks.marks};
    }""", metric)


def _apply(page: Page, **values: str) -> None:
    """Set the filters, apply them and wait for every figure (each has its own request)."""
    form = page.get_by_role("form", name="Filters")
    for name, value in values.items():
        form.locator(f'[name="{name}"]').fill(value)
    form.get_by_role("button", name="Apply").click()
    expect(page.locator("#dash-grid")).to_have_attribute("aria-busy", "false")


def test_the_dashboard_charts_the_figures_and_a_filter_changes_them(
    browser: Browser, gateway: Gateway, watch: PageWatch, shots: Shots
) -> None:
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
        pool.submit(asyncio.run, _seed(gateway.database_url)).result()
    tina = Console(browser.new_context(viewport={"width": 1400, "height": 1500}), gateway,
                   watch, "tina").login()
    page = tina.page
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Dashboard").click()
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    _apply(page, since="2026-11-02", until="2026-11-04")
    status = page.locator("#dash-status")
    expect(status).to_contain_text("7 conversations created 2026-11-02")
    expect(status).to_contain_text("2 deploy(s) marked")

    resolution = _data(page, "resolution")
    assert resolution == {
        "labels": ["2026-11-02", "2026-11-03"],
        "data": {"success rate": [50, 50], "containment rate": [25, 66.7],
                 "handoff rate": [75, 33.3]},
        "marks": [{"index": 0, "label": "m1"}, {"index": 1, "label": "m2"}]}
    assert _data(page, "effort")["data"] == {"mean": [5.3333, 2]}
    assert _data(page, "learning")["labels"] == ["m1", "m2"]
    # the queue: every 5-minute bucket's point as the API gives it, both series
    points = EXPECTED["queue"]["points"]
    assert _data(page, "queue") == {
        "labels": [f"{p['at'][:10]} {p['at'][11:16]}" for p in points],
        "data": {"longest": [p["longest"] for p in points], "mean": [p["mean"] for p in points]},
        "marks": [{"index": 0, "label": "m1"}, {"index": 288, "label": "m2"}]}  # D1, D2 00:00
    expect(page.locator('[data-metric="queue"] .dash-sub')).to_have_text(
        "waiting now \u00b7 per 5 min")
    expect(page.locator('[data-metric="enablement"] .dash-sub')).to_have_text(
        "decision 20 s (median) \u00b7 1 relabel \u00b7 1 whisper \u00b7 ratings 67%")
    card = page.locator('[data-metric="resolution"]')
    expect(card.locator(".dash-figure")).to_have_text("50%")
    definition = card.get_by_text("Success rate = resolved")
    expect(definition).to_be_hidden()
    card.get_by_text("Definition", exact=True).click()
    expect(definition).to_be_visible()
    shots(page, "dashboard", doc="console-dashboard")

    # c1, c4 on day 1 (one contained), c6, c7 on day 2 (both contained; c6 was reopened)
    _apply(page, intent="track_order")
    expect(status).to_contain_text("4 conversations created")
    assert _data(page, "resolution")["data"] == {
        "success rate": [50, 50], "containment rate": [50, 100], "handoff rate": [50, 0]}
    assert _data(page, "effort")["data"] == {"mean": [5.5, 2]}  # c1 7, c4 4; c6 2
    shots(page, "dashboard-intent")


async def _customer_says(url: str, text: str, session_id: str | None = None,
                         secret: str | None = None) -> tuple[str, str | None]:
    """The customer's session and its secret (needed to come back to it on a new connection:
    docs/security.md)."""
    customer = await Widget(url).connect()
    try:
        session, issued = await customer.secure_session(session_id, secret)
        await customer.say(session, text)
        if session_id is None:  # the bot answers; once an agent owns it, nobody does at once
            while (await customer.next())[0] != "bot_uttered":
                pass
        else:
            await asyncio.sleep(0.5)
        return session, issued or secret
    finally:
        await customer.close()


def test_an_agent_rates_a_suggestion_in_one_click(
    browser: Browser, gateway: Gateway, watch: PageWatch
) -> None:
    started = datetime.now(timezone.utc)
    with ThreadPoolExecutor(1) as pool:
        session, secret = pool.submit(asyncio.run, _customer_says(gateway.url, "hello")).result()
    erin = Console(browser.new_context(), gateway, watch, "erin").login()
    taken = requests.post(f"{gateway.url}/api/conversations/{session}/takeover", timeout=30,
                          headers=_api(gateway, "erin"))
    assert taken.status_code == 200, taken.text
    erin.open(session)
    # a question answered by a response: Rasa's prediction (its text) is erin's suggestion
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _customer_says(gateway.url, "what is your return policy?",
                                                session, secret)).result()
    useful = erin.page.locator("#suggestion-list").get_by_role("button", name="Useful suggestion")
    expect(useful.first).to_be_visible()
    useful.first.click()
    expect(useful.first).to_have_attribute("aria-pressed", "true")
    figures = requests.get(f"{gateway.url}/api/metrics/enablement", timeout=30,
                           headers=_api(gateway, "tina"),
                           params={"since": started.isoformat(), "agent": "erin"}).json()
    assert (figures["enablement"]["ratings"], figures["enablement"]["rated_useful"]) == (1, 1)
