"""handoff.conversation.triage_link: the gateway's use of triage, with the real engine (no Rasa needed)."""

from __future__ import annotations

import pytest

from handoff.conversation import router as r
from handoff.triage import Triage, TriageConfig
from handoff.conversation.triage_link import TriageLink

pytestmark = pytest.mark.asyncio


def _link(triage: Triage) -> TriageLink:
    return TriageLink(TriageConfig(), load=lambda config: triage)


async def test_rules_flag_before_rasa_with_human_winning(triage: Triage) -> None:
    link = _link(triage)
    assert link.rules_flag("where is my order?") is None
    flag = link.rules_flag("please delete my account")
    assert flag is not None and flag.action is r.TriageAction.REVIEW
    assert "delete my account" in flag.detail
    flag = link.rules_flag("delete my account or I will file a chargeback")
    assert flag is not None and flag.action is r.TriageAction.HUMAN


async def test_a_new_model_rebuilds_the_index_and_suggestions_go_on(triage: Triage) -> None:
    link = _link(triage)
    await link.start()
    assert await link.wait_ready()
    try:
        assert not link.model_changed(None) and not link.model_changed("model-a")
        assert not link.model_changed("model-a")
        before = triage.index
        assert link.model_changed("model-b")
        await link.rebuild()
        assert triage.index is not before  # swapped in, built from the same project data
        found = await link.suggestions(["what is your return policy?"])
        assert "response:utter_refund_policy" in [s.source for s in found]
    finally:
        await link.close()
