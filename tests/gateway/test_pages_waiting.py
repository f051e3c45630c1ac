"""Nobody waits in silence, in Chromium: with no agent logged in, a customer who asks for a
person sees why nobody answers, their place in the queue, and the choice; leaving an e-mail
address stores it with the conversation (the socket version: test_waiting.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import expect

from bot.serve import Stack
from tests.gateway.conftest import Gateway, _start_gateway, _stop
from tests.gateway.glyphs import missing_glyphs
from tests.gateway.test_pages import (  # noqa: F401 (fixtures)
    CHROMIUM, Scene, Shots, _api, agents, browser, scene, shots, watch,
)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def gateway(rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _start_gateway(tmp_path_factory.mktemp("waiting-pages"), rasa_stack.rasa_url,
                        rasa_stack.token)
    yield gw
    _stop(gw.process)


def test_with_no_agent_the_widget_shows_the_offer_and_the_place_in_the_queue(
    scene: Scene, gateway: Gateway, shots: Shots
) -> None:
    customer = scene.customer()
    customer.open()
    customer.say("I want to talk to a human")
    expect(customer.last("system")).to_have_text(
        "No member of our team is available right now. You can keep waiting, continue with the "
        "assistant, or leave an e-mail address or phone number and we will get back to you.")
    expect(customer.widget.locator("#nw-sub")).to_have_text(
        "Waiting for a member of our team \u2014 you are number 1 in the queue")
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
