"""Held replies for everyone, in Chromium: a reply triage holds in an unowned review shows its
decision card in every agent's console; the first decision wins and the other console says who
decided. The gateway runs triage with its policy rules only (its model is set to one that does
not exist, so it stays unloaded, as when the model fails at start-up): a review rule is what
holds the reply, which keeps this module's start fast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from bot.serve import Stack
from tests.gateway.conftest import Gateway, _start_gateway, _stop
from tests.gateway.test_pages import (  # noqa: F401 (fixtures)
    CHROMIUM, Scene, Shots, agents, browser, scene, shots, watch,
)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium)")
REVIEW_RULE_MESSAGE = "please delete my account"  # rules.yml: account_deletion (review)


@pytest.fixture(scope="module")
def gateway(rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _start_gateway(tmp_path_factory.mktemp("review-gateway"), rasa_stack.rasa_url,
                        rasa_stack.token, {"HANDOFF_TRIAGE_ENABLED": "true",
                                           "HANDOFF_TRIAGE_MODEL": "no-such-model-rules-only",
                                           "HANDOFF_REVIEW_TIMEOUT": "120"})
    yield gw
    _stop(gw.process)


def test_every_agent_sees_an_unowned_held_reply_and_the_first_decision_wins(
    scene: Scene, shots: Shots
) -> None:
    customer = scene.customer()
    erin = scene.console("erin")
    frank = scene.console("frank")
    customer.open()
    customer.say(REVIEW_RULE_MESSAGE)
    session_id = customer.session_id
    cards = []
    for console in (erin, frank):
        expect(console.row(session_id).locator(".badge.decide")).to_have_text("Needs decision")
        console.open(session_id)
        card = console.page.get_by_role("region", name="Pending reply")
        expect(card.get_by_role("heading")).to_have_text(
            "The bot's reply is held by triage: any agent may decide")
        expect(card.get_by_role("button", name="Approve")).to_be_visible()
        cards.append(card)
    shots(frank.page, "console-unowned-held-reply", doc="console-held-for-everyone")
    expect(customer.log.locator(".msg.bot")).to_have_count(0)  # held: nothing yet

    written = "Erin here: I can close your account for you; shall I go ahead?"
    cards[0].get_by_role("button", name="Write new").click()
    editor = cards[0].get_by_role("textbox", name="Write a new reply")
    editor.fill(written)
    editor.press("Control+Enter")
    expect(customer.last("bot")).to_have_text(written)

    # frank's card gives way to who decided; his buttons are gone
    expect(cards[1].get_by_role("status")).to_have_text(
        "erin decided this reply first (replaced with their own words).")
    expect(cards[1].get_by_role("button", name="Approve")).to_have_count(0)
    expect(frank.row(session_id)).to_contain_text("@erin")
    expect(frank.row(session_id).locator(".badge.decide")).to_have_count(0)
    shots(frank.page, "console-decided-by-another")
    expect(customer.log.locator(".msg.bot")).to_have_count(1)
