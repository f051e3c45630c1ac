"""Thresholds that follow a target share: the fit on known scores (no model), and the gateway's
re-fit on the live model (the real encoder, the project's data and the real Rasa server)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bot.serve import Stack
from handoff.conversation.rasa_client import RasaClient
from handoff.conversation.triage_link import TriageLink
from handoff.settings import SettingsError, load_settings
from handoff.triage import Triage, TriageConfig
from handoff.triage.calibration import Shares, fit, route, threshold_for
from handoff.triage.scoring import Assessment, Reason, Thresholds

FLOORS = Thresholds(review=0.5, human=0.9)


def _a(risk: float, *codes: str, intent: str = "order_status") -> Assessment:
    reasons = tuple(Reason(code, code, 1.0 if code in ("rule:legal", "human_request") else 0.2)
                    for code in codes)
    return Assessment(risk, "none", reasons, {"intent": intent})


def test_the_fitted_thresholds_meet_the_shares_and_never_go_below_the_floors() -> None:
    # 100 messages with risks 0.00 .. 0.99; the top 20 also have an upset customer
    risky = [_a(i / 100, *(("negative_sentiment",) if i >= 80 else ())) for i in range(100)]
    calibration = fit(risky, FLOORS, Shares(review=0.15, human=0.05), min_messages=50)
    assert calibration.fitted and calibration.messages == 100
    assert calibration.thresholds == Thresholds(review=0.8401, human=0.9401)
    assert calibration.review_share == pytest.approx(0.15)
    assert calibration.human_share == pytest.approx(0.05)
    # a good model: few risky messages, so the floors stay (it does not hold more than needed)
    calm = [_a(0.1) for _ in range(95)] + [_a(0.95, "negative_sentiment") for _ in range(5)]
    calibration = fit(calm, FLOORS, Shares(review=0.15, human=0.10), min_messages=50)
    assert calibration.thresholds == FLOORS
    assert calibration.review_share == pytest.approx(0.05)


def test_ties_out_of_scope_rules_and_requests_do_not_move_the_thresholds() -> None:
    # ties at the cut stay below the threshold: the share is an upper bound
    assert threshold_for([0.7] * 30 + [0.1] * 70, 100, 0.15, 0.5) == 0.7001
    assert threshold_for([1.0] * 30, 100, 0.15, 0.5) == 1.0  # never above 1
    declined = [_a(0.95, intent="out_of_scope") for _ in range(40)]  # the bot declines them
    forced = [_a(1.0, "rule:legal") for _ in range(10)] + [_a(1.0, "human_request")] * 10
    calm = [_a(0.1) for _ in range(40)]
    calibration = fit(declined + forced + calm, FLOORS, Shares(0.15, 0.05), min_messages=50)
    assert calibration.thresholds == FLOORS
    assert route(forced[0], calibration.thresholds) == "human"  # rules are unaffected
    assert route(declined[0], calibration.thresholds) == "none"


def test_too_few_messages_keep_the_fixed_thresholds() -> None:
    calibration = fit([_a(0.99, "negative_sentiment") for _ in range(20)], FLOORS,
                      Shares(0.15, 0.05), min_messages=50)
    assert not calibration.fitted and calibration.thresholds == FLOORS
    assert calibration.human_share == 1.0  # measured all the same
    assert not fit([], FLOORS).fitted


def test_the_mode_and_shares_are_settings_and_bad_values_are_refused() -> None:
    base = {"HANDOFF_RASA_TOKEN": "t", "HANDOFF_JWT_SECRET": "s" * 32}
    config = TriageConfig.from_settings(load_settings(base, env_file=None))
    assert config.mode == "fitted" and config.shares == Shares(0.15, 0.05)
    config = TriageConfig.from_settings(load_settings(
        {**base, "HANDOFF_TRIAGE_THRESHOLDS": "fixed", "HANDOFF_TRIAGE_REVIEW_SHARE": "0.2"},
        env_file=None))
    assert config.mode == "fixed" and config.shares.review == 0.2
    for bad in ({"HANDOFF_TRIAGE_THRESHOLDS": "quantile"},
                {"HANDOFF_TRIAGE_HUMAN_SHARE": "1.5"}):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            load_settings({**base, **bad}, env_file=None)


@pytest.mark.asyncio
async def test_the_gateway_refits_on_the_live_model_after_a_model_change(
        triage: Triage, rasa_stack: Stack) -> None:
    """Fitted at start on the training data parsed by the real Rasa, re-fitted when another
    model goes live, not when the same one does; each change reported (the audit log)."""
    config = dataclasses.replace(TriageConfig(), mode="fitted", calibration_messages=60,
                                 calibration_min=40, shares=Shares(review=0.02, human=0.01),
                                 thresholds=Thresholds(review=0.05, human=0.9))
    saved = triage.thresholds
    link = TriageLink(config, load=lambda _: triage)
    rasa = RasaClient(rasa_stack.rasa_url, rasa_stack.token)
    live = {"model_id": str((await rasa.status())["model_id"])}
    reported: list[dict[str, Any]] = []

    async def model_of() -> str | None:
        return live["model_id"]

    async def on_fitted(state: dict[str, Any]) -> None:
        reported.append(state)

    link.attach(parse=rasa.parse, model_of=model_of, on_fitted=on_fitted)
    try:
        assert link.thresholds_state["mode"] == "fitted"
        await link.start()
        assert await link.wait_ready()
        assert link._calibration is not None
        first = await link._calibration  # started by the load, off the event loop
        assert first is not None and first["fitted"] and first["messages"] == 60
        assert first["source"] == "training data" and first["model_id"] == live["model_id"]
        assert first["review_threshold"] >= 0.05 and first["human_threshold"] >= 0.9
        state = link.thresholds_state
        assert state["review_threshold"] == triage.thresholds.review == \
            first["review_threshold"]
        assert state["target_review_share"] == 0.02 and state["fitted_at"]
        assert len(reported) == 1
        await link.model_live(live["model_id"])  # the same model: nothing to do
        assert len(reported) == 1
        live["model_id"] = "another-model"
        await link.model_live("another-model")
        assert len(reported) == 2 and reported[1]["model_id"] == "another-model"
        assert link.thresholds_state["model_id"] == "another-model"
    finally:
        await link.close()
        await rasa.close()
        triage.thresholds = saved
