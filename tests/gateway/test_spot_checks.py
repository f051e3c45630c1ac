"""Spot-check sampling and marks without a gateway: the sampling rule (pure), the sampler with
an injected random source over the real store (SQLite and PostgreSQL), the marks and the
corrections they store, and the "AI response accuracy with agent oversight" figure's
spot-check split worked out by hand. The API, the writer and the console against the real
gateway are tests/gateway/test_spot_checks_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from handoff.errors import BadRequest, Conflict, NotFound
from handoff.learning.metrics import compute_metrics
from handoff.learning.spot_checks import SpotCheckRule, SpotChecks, correction_of, turn_events
from handoff.settings import SettingsError, load_settings, parse_weights
from handoff.store import Store
from handoff.store.database import now
from handoff.store.metrics import MetricFilter
from handoff.store.schema import conversation_events, conversations, messages
from handoff.store.spot_checks import ConversationTraits

RULE = SpotCheckRule(share=0.1, intent_weights={"track_refund": 3.0, "greet": 0.0},
                     model_weights={"m2": 2.0}, low_ces_weight=5.0)


def _traits(intents: tuple[str, ...] = ("track_order",), models: tuple[str, ...] = ("m1",),
            ces: int | None = None, *, closed: bool = True, bot_only: bool = True,
            bots: int = 1) -> ConversationTraits:
    return ConversationTraits(closed=closed, bot_only=bot_only, intents=intents, models=models,
                              effort_score=ces, bot_messages=bots)


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(("traits", "expected"), [
    (_traits(), 0.1),  # no weight applies
    (_traits(("greet",)), 0.0),  # weight 0: never
    (_traits(("greet", "track_refund")), 0.3),  # the largest weight of its intents
    (_traits(("track_order",), ("m2",)), 0.2),  # by model version
    (_traits(ces=3), 0.5),  # a low CES (3 or less)
    (_traits(ces=4), 0.1),  # not low
    (_traits(("track_refund",), ("m2",), 1), 1.0),  # 0.1 × 3 × 2 × 5, capped at 1
    (_traits(closed=False), 0.0),  # still open
    (_traits(bot_only=False), 0.0),  # an agent was involved
    (_traits(bots=0), 0.0),  # nothing the bot said to check
])
def test_the_rule_weighs_intent_model_and_low_ces(traits: ConversationTraits,
                                                  expected: float) -> None:
    assert RULE.probability(traits) == pytest.approx(expected)


def test_weights_are_parsed_and_a_bad_one_stops_the_start(tmp_path: Path) -> None:
    assert parse_weights(" track_refund=3, greet=0 ,") == {"track_refund": 3.0, "greet": 0.0}
    assert parse_weights("") == {}
    base = {"HANDOFF_RASA_TOKEN": "t", "HANDOFF_JWT_SECRET": "s" * 32}
    settings = load_settings({**base, "HANDOFF_SPOT_CHECK_SHARE": "0.5",
                              "HANDOFF_SPOT_CHECK_MODEL_WEIGHTS": "20261205-101500=4"},
                             env_file=None, var_dir=tmp_path)
    rule = SpotCheckRule.from_settings(settings)
    assert (rule.share, rule.model_weights, rule.low_ces_weight) == (
        0.5, {"20261205-101500": 4.0}, 20.0)
    with pytest.raises(SettingsError) as caught:
        load_settings({**base, "HANDOFF_SPOT_CHECK_INTENT_WEIGHTS": "greet=lots",
                       "HANDOFF_SPOT_CHECK_MODEL_WEIGHTS": "m1",
                       "HANDOFF_SPOT_CHECK_SHARE": "1.5"}, env_file=None, var_dir=tmp_path)
    for problem in ("HANDOFF_SPOT_CHECK_INTENT_WEIGHTS='greet=lots': the weight of 'greet' "
                    "must be a number", "HANDOFF_SPOT_CHECK_MODEL_WEIGHTS='m1': expected "
                    "name=weight", "HANDOFF_SPOT_CHECK_SHARE='1.5': must be at most 1"):
        assert problem in str(caught.value)


def test_the_tracker_is_cut_before_the_checked_action() -> None:
    t0 = now().timestamp()
    events = [{"event": "action", "name": "action_listen", "timestamp": t0},
              {"event": "user", "text": "hi", "timestamp": t0 + 1},
              {"event": "action", "name": "utter_greet", "timestamp": t0 + 2},
              {"event": "bot", "text": "Hello", "timestamp": t0 + 2},
              {"event": "action", "name": "utter_ask", "timestamp": t0 + 3},
              {"event": "action", "name": "action_listen", "timestamp": t0 + 3},
              {"event": "user", "text": "later", "timestamp": t0 + 9}]
    stored = now().fromtimestamp(t0 + 4, tz=now().tzinfo)
    assert turn_events(events, stored, "utter_greet") == events[:2]
    assert turn_events(events, stored, "utter_ask") == events[:4]


# --------------------------------------------------------------------------- the store


async def _conversation(store: Store, cid: str, turns: Iterable[tuple[str, str, str]], *,
                        mode: str = "closed", agent: str | None = None,
                        effort: int | None = None) -> list[int]:
    """A conversation with (intent, action, model) turns: a customer message and the bot's
    answer each; with ``agent`` an agent owned it once. Returns the bot messages' ids."""
    at = now() - timedelta(minutes=5)
    ids: list[int] = []
    async with store._tx(write=True) as conn:
        await conn.execute(sa.insert(conversations).values(
            id=cid, created_at=at, updated_at=at, mode=mode, queued=False, version=1,
            last_seq=0, effort_score=effort, closed_at=at if mode == "closed" else None))
        seq = 0
        for intent, action, model in turns:
            for sender in ("customer", "bot"):
                seq += 1
                row = (await conn.execute(sa.insert(messages).values(
                    conversation_id=cid, seq=seq, sender=sender, created_at=at,
                    text=f"{sender} {intent}", intent=intent if sender == "customer" else None,
                    action=action if sender == "bot" else None,
                    model_version=model if sender == "bot" else None,
                ).returning(messages.c.id))).one()
                if sender == "bot":
                    ids.append(int(row[0]))
        if agent is not None:
            await conn.execute(sa.insert(conversation_events).values(
                conversation_id=cid, created_at=at, cause="TakeOver", actor=agent,
                mode_from="bot", mode="human", owner=agent, queued=False))
    return ids


def _draws(*values: float) -> Callable[[], float]:
    """A random source that gives these draws and fails when asked for more."""
    it = iter(values)
    return lambda: next(it)




@pytest.mark.asyncio
async def test_sampling_is_decided_once_with_the_injected_draw(store: Store) -> None:
    await _conversation(store, "refund", [("track_refund", "utter_refund", "m1")])
    await _conversation(store, "chat", [("track_order", "utter_status", "m1")])
    await _conversation(store, "helped", [("track_order", "utter_status", "m1")], agent="ann")
    await _conversation(store, "open", [("track_order", "utter_status", "m1")], mode="bot")
    sampler = SpotChecks(store, RULE, random=_draws(0.25, 0.5))
    refund = await sampler.decide("refund")  # p = 0.1 × 3 = 0.3 > 0.25
    assert refund is not None and (refund.status, refund.draw, refund.probability) == (
        "open", 0.25, pytest.approx(0.3))
    assert refund.reason == {"share": 0.1, "intent": 3.0, "model": 1.0, "low_ces": 1.0}
    assert (refund.intent, refund.model_version) == ("track_refund", "m1")
    chat = await sampler.decide("chat")  # p = 0.1 < 0.5
    assert chat is not None and chat.status == "skipped"
    assert await sampler.decide("helped") is None  # an agent took it: not bot-only
    assert await sampler.decide("open") is None  # not ended
    assert await store.spot_check_of("helped") is None
    # decided once: asked again, no new draw (the source has none left) and nothing changes
    assert await sampler.decide("refund") == refund
    assert await sampler.decide("chat") == chat
    # the survey arrives with a low score: the same draw, 0.5, is not below 0.1 × 5 = 0.5
    await store.set_effort_score("chat", 3)
    again = await sampler.decide("chat")
    assert again is not None and (again.status, again.draw) == ("skipped", 0.5)
    # a weight that takes it over the draw: the same row opens
    strict = SpotChecks(store, SpotCheckRule(share=0.1, low_ces_weight=6.0), random=_draws())
    opened = await strict.decide("chat")
    assert opened is not None and (opened.id, opened.status, opened.draw, opened.effort_score) == (
        chat.id, "open", 0.5, 3)
    assert [c.conversation_id for c, _, _ in await store.list_spot_checks()] == [
        "refund", "chat"]


@pytest.mark.asyncio
async def test_a_starting_gateway_samples_what_ended_while_it_stopped(store: Store) -> None:
    """The sampling runs in the background when a conversation ends; a gateway stopping then
    cancels it. At start, those ended within the window and never decided are sampled."""
    await _conversation(store, "missed", [("track_order", "utter_status", "m1")])
    await _conversation(store, "decided", [("greet", "utter_greet", "m1")])
    await _conversation(store, "helped", [("track_order", "utter_status", "m1")], agent="ann")
    await _conversation(store, "open", [("track_order", "utter_status", "m1")], mode="bot")
    sampler = SpotChecks(store, SpotCheckRule(share=1.0), random=_draws(0.5, 0.5))
    await sampler.decide("decided")
    since = now() - timedelta(hours=1)
    assert await store.closed_without_spot_check(since) == ["missed", "helped"]
    assert await store.closed_without_spot_check(now()) == []  # before the window
    assert await sampler.catch_up(since) == 2  # one draw left: "helped" takes none
    missed = await store.spot_check_of("missed")
    assert missed is not None and missed.status == "open"
    assert await store.spot_check_of("helped") is None and await store.spot_check_of("open") is None
    assert await store.closed_without_spot_check(since) == ["helped"]  # never bot-only


@pytest.mark.asyncio
async def test_marks_store_corrections_and_feed_the_accuracy_figure(store: Store) -> None:
    first, second = await _conversation(store, "c1", [("track_refund", "utter_refund", "m1"),
                                                      ("track_order", "utter_status", "m1")])
    [third] = await _conversation(store, "c2", [("greet", "utter_greet", "m2")])
    sampler = SpotChecks(store, SpotCheckRule(share=1.0), random=_draws(0.0, 0.9))
    one, two = await sampler.decide("c1"), await sampler.decide("c2")
    assert one is not None and two is not None and one.status == two.status == "open"
    [(_, bots, marked), _] = await store.list_spot_checks()
    assert (bots, marked) == (2, 0)

    await store.mark_spot_check(one.id, first, verdict="right", reviewer="rita",
                                intent="track_refund", action="utter_refund", model_version="m1")
    with pytest.raises(Conflict):
        await store.mark_spot_check(one.id, first, verdict="right", reviewer="rita",
                                    intent=None, action=None, model_version=None)
    with pytest.raises(NotFound):  # c2's message is not c1's
        await store.mark_spot_check(one.id, third, verdict="right", reviewer="rita",
                                    intent=None, action=None, model_version=None)
    with pytest.raises(BadRequest):  # a correction needs its record
        await store.mark_spot_check(one.id, second, verdict="edited", reviewer="rita",
                                    intent=None, action=None, model_version=None)
    with pytest.raises(Conflict, match="1 bot message"):
        await store.finish_spot_check(one.id, "rita")
    _, msgs = await store.spot_check_messages(one.id)
    bot = next(m for m in msgs if m.id == second)
    customer = next(m for m in msgs if m.seq == bot.seq - 1)
    record = correction_of("edited", bot, customer, [{"event": "user", "text": "x"}],
                           text="Your order ships today.")
    mark, correction = await store.mark_spot_check(
        one.id, second, verdict="edited", reviewer="rita", intent="track_order",
        action="utter_status", model_version="m1", correction=record)
    assert correction is not None and mark.correction_id == correction.id
    assert (correction.type, correction.review_status, correction.tracker_status,
            correction.agent, correction.message_id) == ("edited", "new", "fetched", "rita",
                                                         customer.id)
    assert correction.after["messages"] == [{"text": "Your order ships today."}]
    assert correction.before["action_name"] == "utter_status"
    assert [c.id for c in await store.list_corrections(review_status="new")] == [correction.id]
    done = await store.finish_spot_check(one.id, "rita")
    assert (done.status, done.finished_by) == ("done", "rita")
    with pytest.raises(Conflict):
        await store.mark_spot_check(one.id, first, verdict="right", reviewer="rita",
                                    intent=None, action=None, model_version=None)
    await store.mark_spot_check(two.id, third, verdict="right", reviewer="sam", intent="greet",
                                action="utter_greet", model_version="m2")

    # by hand: 3 spot-checked replies, 2 marked right
    period = MetricFilter(now() - timedelta(days=1), now() + timedelta(minutes=1))
    figure = (await compute_metrics(store, period, ("accuracy",)))["accuracy"]["spot_checks"]

    def acc(checked: int, right: int, share: float) -> dict[str, Any]:
        return {"checked": checked, "right": right, "accuracy": share}

    assert figure == {
        **acc(3, 2, 0.6667),
        "splits": {
            "intent": {"greet": acc(1, 1, 1.0), "track_order": acc(1, 0, 0.0),
                       "track_refund": acc(1, 1, 1.0)},
            "action": {"utter_greet": acc(1, 1, 1.0), "utter_refund": acc(1, 1, 1.0),
                       "utter_status": acc(1, 0, 0.0)},
            "model_version": {"m1": acc(2, 1, 0.5), "m2": acc(1, 1, 1.0)}},
        "series": [{"day": now().date().isoformat(), **acc(3, 2, 0.6667)}],
    }
    narrowed = await compute_metrics(store, MetricFilter(period.since, period.until,
                                                         model="m2"), ("accuracy",))
    assert narrowed["accuracy"]["spot_checks"]["checked"] == 1


@pytest.mark.asyncio
async def test_the_end_and_the_survey_deciding_at_once_make_one_decision(store: Store) -> None:
    """The close and a quick survey answer both ask for the decision: serialized on the
    conversation's row, the later one finds the first's and keeps its draw."""
    await _conversation(store, "both", [("track_order", "utter_status", "m1")])
    sampler = SpotChecks(store, SpotCheckRule(share=0.5), random=_draws(0.9, 0.8))
    one, two = await asyncio.gather(sampler.decide("both"), sampler.decide("both"))
    assert one is not None and two is not None
    assert (one.id, one.status, one.draw) == (two.id, "skipped", two.draw)
    assert len(await store.list_spot_checks(status="skipped")) == 1
