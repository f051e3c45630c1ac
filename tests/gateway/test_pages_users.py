"""The console's Users and Customers' data sections in Debian's Chromium (issue 15): an admin
creates a user, changes their tier and disables them, each with a reason the audit log keeps;
sections follow rights, also when the tier changes during the session; an admin exports and
erases a customer's data."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, expect

from handoff.errors import NotFound
from handoff.store import Store
from handoff.web.auth import create_user
from tests.gateway.clients import Widget
from tests.gateway.conftest import Gateway
from tests.gateway.test_pages import (  # noqa: F401 (fixtures)
    CHROMIUM, Console, PageWatch, Shots, _api, _password, agents, browser, shots, watch,
)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium)")


def _user(gateway: Gateway, username: str, tier: str) -> None:
    async def create() -> None:
        async with Store(gateway.database_url) as store:
            try:
                await store.get_user(username)
            except NotFound:
                await create_user(store, username, _password(username), tier)
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
        pool.submit(asyncio.run, create()).result()


def _admin(gateway: Gateway, username: str) -> None:
    _user(gateway, username, "admin")


def test_an_admin_manages_users_in_the_console(
    browser: Browser, gateway: Gateway, watch: PageWatch
) -> None:
    _admin(gateway, "ada")
    ada = Console(browser.new_context(), gateway, watch, "ada").login()
    page = ada.page
    nav = page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link", name="Users")).to_be_visible()
    users = page.locator("#admin")
    expect(users).to_be_visible()
    name = f"nina{uuid.uuid4().hex[:6]}"
    users.get_by_label("New user", exact=True).fill(name)
    users.get_by_label("Their first password", exact=True).fill("a fine password")
    users.get_by_label("Tier", exact=True).select_option("trainee")
    users.get_by_role("button", name="Create user").click()
    expect(page.locator("#alert")).to_contain_text("Reason")  # nothing without a reason
    users.get_by_label("Reason", exact=True).fill("new hire, week one")
    users.get_by_role("button", name="Create user").click()
    expect(users.get_by_role("status")).to_have_text(f"Created {name} (trainee).")
    users.get_by_label(f"Tier of {name}").select_option("agent")
    expect(users.get_by_role("status")).to_have_text(f"{name} is now agent.")
    users.get_by_role("button", name=f"Disable {name}").click()
    expect(users.get_by_role("status")).to_have_text(f"{name} is disabled.")
    expect(users.get_by_role("button", name=f"Enable {name}")).to_be_visible()

    headers = _api(gateway, "ada")
    user = requests.get(f"{gateway.url}/api/users/{name}", headers=headers, timeout=30).json()
    assert (user["user"]["tier"], user["user"]["disabled"]) == ("agent", True)
    audit = requests.get(f"{gateway.url}/api/audit", headers=headers, timeout=30,
                         params={"target": f"user:{name}"}).json()["entries"]
    assert [(e["actor"], e["action"]) for e in audit] == [
        ("ada", "user_disabled"), ("ada", "tier_changed"), ("ada", "user_created")]
    assert {e["details"]["reason"] for e in audit} == {"new hire, week one"}

    log = users.locator("#audit-log")  # the audit log view, filtered by action
    log.get_by_label("Action").fill("tier_changed")
    log.get_by_role("button", name="Show").click()
    entry = log.locator("tbody tr").filter(has_text=f"user:{name}")
    expect(entry).to_contain_text("reason: new hire, week one")
    expect(log.locator("tbody tr").filter(has_text="user_created")).to_have_count(0)


def test_sections_follow_rights_not_rank(
    browser: Browser, gateway: Gateway, watch: PageWatch, agents: dict[str, str]
) -> None:
    erin = Console(browser.new_context(), gateway, watch, "erin").login()  # tier agent
    nav = erin.page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link", name="Conversations")).to_be_visible()
    for hidden in ("Users", "Training", "Dashboard"):
        expect(nav.get_by_role("link", name=hidden)).to_be_hidden()
    expect(erin.page.locator("#whoami-role")).to_have_text("agent")
    erin.page.get_by_role("button", name="Log out").click()
    expect(erin.page.locator("#login-error")).to_have_text("You are logged out.")


def test_a_tier_change_and_a_disable_reach_an_open_console(
    browser: Browser, gateway: Gateway, watch: PageWatch
) -> None:
    """The console follows a tier change at once (the gateway pushes ``rights``), and
    disabling the user returns their console to the login page (the gateway closes the
    socket; the same happens at the next push after ``python -m handoff.web.auth disable``,
    which test_rights.py tests on the socket)."""
    _admin(gateway, "ada")
    name = f"tess{uuid.uuid4().hex[:6]}"
    _user(gateway, name, "trainee")
    tess = Console(browser.new_context(), gateway, watch, name).login()
    nav = tess.page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link", name="Conversations")).to_be_visible()
    for hidden in ("Training", "Dashboard", "Users"):
        expect(nav.get_by_role("link", name=hidden)).to_be_hidden()
    ada = _api(gateway, "ada")
    resp = requests.patch(f"{gateway.url}/api/users/{name}", headers=ada, timeout=30,
                          json={"tier": "trainer", "reason": "certified for training"})
    assert resp.status_code == 200, resp.text
    expect(tess.page.locator("#whoami-role")).to_have_text("trainer")  # no new login
    for shown in ("Training", "Dashboard"):
        expect(nav.get_by_role("link", name=shown)).to_be_visible()
    expect(nav.get_by_role("link", name="Users")).to_be_hidden()
    expect(tess.page.locator("#live")).to_have_text("live")

    resp = requests.patch(f"{gateway.url}/api/users/{name}", headers=ada, timeout=30,
                          json={"disabled": True, "reason": "left the team"})
    assert resp.status_code == 200, resp.text  # the gateway closes tess's socket at once
    expect(tess.page.locator("#login-error")).to_have_text(
        "Your session has ended. Please log in again.")


def test_an_admin_exports_and_erases_a_customers_data_in_the_console(
    browser: Browser, gateway: Gateway, watch: PageWatch, shots: Shots
) -> None:
    """Customers' data: the export downloads the conversation as JSON with the PII masked; an
    erasure asks first (Cancel erases nothing), then shows what it removed; both audit-logged."""
    _admin(gateway, "ada")

    async def customer() -> str:
        widget = await Widget(gateway.url).connect()
        try:
            return await widget.started("my e-mail is jane.doe@example.org, order 100002")
        finally:
            await widget.close()

    async def customer_texts(session_id: str) -> list[str]:
        async with Store(gateway.database_url) as store:
            return [m.text or "" for m in await store.list_messages(session_id)]

    def run(coroutine: Any) -> Any:
        with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
            return pool.submit(asyncio.run, coroutine).result()

    session_id = run(customer())
    ada = Console(browser.new_context(accept_downloads=True), gateway, watch, "ada").login()
    page = ada.page
    page.get_by_role("navigation", name="Sections").get_by_role(
        "link", name="Customers' data").click()
    section = page.locator("#privacy")
    expect(section).to_be_visible()
    section.get_by_label("Customer (session) id").fill(session_id)
    section.get_by_label("Reason").fill("request 12 by e-mail")
    with page.expect_download() as download:
        section.get_by_role("button", name="Export (JSON)").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert [c["id"] for c in exported["customers"]] == [session_id]
    assert "jane.doe@example.org" not in json.dumps(exported)
    expect(section.get_by_role("status")).to_contain_text(f"Exported {session_id}:")

    section.get_by_role("button", name="Erase…").click()
    confirm = section.get_by_role("alertdialog")
    expect(confirm).to_contain_text(f"Erase everything of {session_id}?")
    confirm.get_by_role("button", name="Cancel").click()
    expect(section.get_by_role("status")).to_have_text("Nothing was erased.")
    assert any("jane.doe@example.org" in t for t in run(customer_texts(session_id)))

    section.get_by_role("button", name="Erase…").click()
    shots(page, "confirm-erase", doc="console-customer-data")
    confirm.get_by_role("button", name="Erase for good").click()
    expect(section.get_by_role("status")).to_contain_text(
        re.compile(rf"Erased {session_id}: [1-9]\d* messages, 0 notes and 0 held replies "
                   r"deleted, 0 corrections masked; the assistant's tracker: erased\."))
    assert run(customer_texts(session_id)) == []
    audit = requests.get(f"{gateway.url}/api/audit", headers=_api(gateway, "ada"), timeout=30,
                         params={"target": f"conversation:{session_id}"}).json()["entries"]
    assert [(e["actor"], e["action"], e["details"]["reason"]) for e in audit] == [
        ("ada", "customer_erased", "request 12 by e-mail"),
        ("ada", "customer_exported", "request 12 by e-mail")]
