"""The console's Users section in Debian's Chromium (issue 15): an admin creates a user, changes
their tier and disables them, each with a reason the audit log keeps; sections follow rights."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from playwright.sync_api import Browser, expect

from handoff.errors import NotFound
from handoff.store import Store
from handoff.web.auth import create_user
from tests.gateway.conftest import Gateway
from tests.gateway.test_pages import (  # noqa: F401 (fixtures)
    CHROMIUM, Console, PageWatch, _api, _password, agents, browser, watch,
)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium)")


def _admin(gateway: Gateway, username: str) -> None:
    async def create() -> None:
        async with Store(gateway.database_url) as store:
            try:
                await store.get_user(username)
            except NotFound:
                await create_user(store, username, _password(username), "admin")
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
        pool.submit(asyncio.run, create()).result()


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
