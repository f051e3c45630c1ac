"""The dashboard's figures (docs/metrics.md) from a seeded history whose every expected value is
worked out by hand below (the timeline is in ``tests/gateway/metrics_seed.py``), computed from
the store on SQLite and PostgreSQL, and narrowed by each filter. The API serving the same
values is ``tests/gateway/test_metrics_api.py``."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from handoff.learning.metrics import METRICS, compute_metrics, refresh_summaries
from handoff.learning.refresh import SharedRefresh
from handoff.store import Store
from handoff.store.database import now
from handoff.store.metrics import MetricFilter, QueueBucket
from handoff.store.schema import (
    conversation_summaries,
    summary_days,
    summary_people,
    summary_replies,
)
from tests.gateway.metrics_seed import D1, D2, PERIOD, seed

pytestmark = pytest.mark.asyncio

DAY1, DAY2 = D1.date().isoformat(), D2.date().isoformat()


def _effort(mean: float | None, answers: int, closed: int, rate: float | None) -> dict[str, Any]:
    return {"mean": mean, "answers": answers, "closed": closed, "response_rate": rate}


def _summary(count: int, mean: float | None, median: float | None) -> dict[str, Any]:
    return {"count": count, "mean": mean, "median": median}


def _acc(reviewed: int, approved: int, accuracy: float | None) -> dict[str, Any]:
    return {"reviewed": reviewed, "approved": approved, "accuracy": accuracy}


def _used(actions: int, used: int, share: float | None) -> dict[str, Any]:
    return {"actions": actions, "used_suggestion": used, "suggestion_use": share}


def _senti(n: int, start: float | None, end: float | None,
           change: float | None) -> dict[str, Any]:
    return {"conversations": n, "start": start, "end": end, "change": change}


def _queue_points(waiting: dict[tuple[str, str], tuple[int, float]]) -> list[dict[str, Any]]:
    """Every 5 minutes of the two days: the queue's longest and mean length, ``waiting``
    (day, HH:MM) or nobody."""
    return [{"at": f"{day}T{m // 60:02d}:{m % 60:02d}:00+00:00",
             **dict(zip(("longest", "mean"),
                        waiting.get((day, f"{m // 60:02d}:{m % 60:02d}"), (0, 0.0))))}
            for day in (DAY1, DAY2) for m in range(0, 1440, 5)]


def _res(conversations: int, closed: int, open_: int, agent: int, bot: int, abandoned: int,
         after: int, reopened: int, success: float | None, abandonment: float | None,
         containment: float | None, handoff: float | None) -> dict[str, Any]:
    return {"conversations": conversations, "closed": closed, "open": open_,
            "agent_resolved": agent, "bot_resolved": bot, "abandoned": abandoned,
            "ended_after_handoff": after, "reopened": reopened, "success_rate": success,
            "abandonment_rate": abandonment, "containment_rate": containment,
            "handoff_rate": handoff}


# Outcomes (c8: never a customer message, c9: outside the period — in no figure):
#   c1 bot_resolved   m1 track_order  effort 7  120 s   bot only
#   c2 agent_resolved m1 human_handoff effort 5  601 s  queue wait 180 s, alice handles 420 s
#   c3 abandoned      m1 cancel_order            left the queue after 300 s
#   c4 ended_after_handoff m1 track_order effort 4      bob handles 119 s
#   c5 open           m2 refund      still queued; involved (carol relabelled)
#   c6 reopened       m2 track_order effort 2
#   c7 bot_resolved   m2 track_order            60 s   bot only
# Day 1 = c1..c4 = model m1, day 2 = c5..c7 = model m2.
EFFORT_M1 = _effort(5.3333, 3, 4, 0.75)  # 7, 5, 4 of c1..c4 (4 closed)
EFFORT_M2 = _effort(2.0, 1, 2, 0.5)  # 2 of c6 (c6, c7 closed; c5 open)
RES_M1 = _res(4, 4, 0, 1, 1, 1, 1, 0, 0.5, 0.25, 0.25, 0.75)  # escalated: c2, c3, c4
RES_M2 = _res(3, 2, 1, 0, 1, 0, 0, 1, 0.5, 0.0, 0.6667, 0.3333)  # escalated: c5
ACC_M1 = _acc(2, 1, 0.5)  # r1 approved, r2 edited
ACC_M2 = _acc(1, 0, 0.0)  # r3 relabelled (discarded by carol); r4 still pending
EXPECTED: dict[str, Any] = {
    "effort": {
        **_effort(4.5, 4, 6, 0.6667),  # (7 + 5 + 4 + 2) / 4; 4 answers of 6 closed
        "distribution": {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1, "6": 0, "7": 1},
        "splits": {
            "involvement": {"bot_only": _effort(4.5, 2, 4, 0.5),  # c1 7, c6 2; c1 c3 c6 c7
                            "with_agent": _effort(4.5, 2, 2, 1.0)},  # c2 5, c4 4; c5 open
            "intent": {"cancel_order": _effort(None, 0, 1, 0.0),
                       "human_handoff": _effort(5.0, 1, 1, 1.0),
                       "refund": _effort(None, 0, 0, None),
                       "track_order": _effort(4.3333, 3, 4, 0.75)},  # 7, 4, 2 of c1 c4 c6 c7
            "model_version": {"m1": EFFORT_M1, "m2": EFFORT_M2}},
        "series": [{"day": DAY1, **EFFORT_M1}, {"day": DAY2, **EFFORT_M2}],
    },
    "resolution_time": {
        **_summary(3, 260.3333, 120.0),  # c1 120, c2 601, c7 60
        "queue_wait": _summary(1, 180.0, 180.0),  # c2: 11:00:01 → 11:03:01
        "queue_left": 1,  # c3
        "handling": _summary(2, 269.5, 269.5),  # alice 420 (c2), bob 119 (c4)
        "splits": {
            "involvement": {"bot_only": _summary(2, 90.0, 90.0), "with_agent":
                            _summary(1, 601.0, 601.0)},
            "intent": {"cancel_order": _summary(0, None, None),
                       "human_handoff": _summary(1, 601.0, 601.0),
                       "refund": _summary(0, None, None),
                       "track_order": _summary(2, 90.0, 90.0)}},
        "series": [{"day": DAY1, **_summary(2, 360.5, 360.5)},
                   {"day": DAY2, **_summary(1, 60.0, 60.0)}],
    },
    "resolution": {
        # 7 conversations, 6 closed, 3 resolved (c1 c2 c7), 1 abandoned (c3), escalated 4
        **_res(7, 6, 1, 1, 2, 1, 1, 1, 0.5, 0.1667, 0.4286, 0.5714),
        "splits": {
            "intent": {"cancel_order": _res(1, 1, 0, 0, 0, 1, 0, 0, 0.0, 1.0, 0.0, 1.0),
                       "human_handoff": _res(1, 1, 0, 1, 0, 0, 0, 0, 1.0, 0.0, 0.0, 1.0),
                       "refund": _res(1, 0, 1, 0, 0, 0, 0, 0, None, None, 0.0, 1.0),
                       "track_order": _res(4, 4, 0, 0, 2, 0, 1, 1, 0.5, 0.0, 0.75, 0.25)},
            "model_version": {"m1": RES_M1, "m2": RES_M2}},
        "series": [{"day": DAY1, **RES_M1}, {"day": DAY2, **RES_M2}],
    },
    "accuracy": {
        **_acc(3, 1, 0.3333),
        "splits": {
            "intent": {"cancel_order": _acc(1, 0, 0.0), "refund": _acc(1, 0, 0.0),
                       "track_order": _acc(1, 1, 1.0)},
            "action": {"utter_cancel": _acc(1, 0, 0.0), "utter_order_status": _acc(1, 1, 1.0),
                       "utter_refund": _acc(1, 0, 0.0)},
            "model_version": {"m1": ACC_M1, "m2": ACC_M2}},
        "series": [{"day": DAY1, **ACC_M1}, {"day": DAY2, **ACC_M2}],
        # none of these conversations was spot-checked (tests/gateway/test_spot_checks.py)
        "spot_checks": {"checked": 0, "right": 0, "accuracy": None,
                        "splits": {"intent": {}, "action": {}, "model_version": {}},
                        "series": []},
    },
    "enablement": {
        # alice's message (suggestion), bob's two decisions (one with), carol's relabel
        **_used(4, 2, 0.5),
        "decision_latency": _summary(3, 20.0, 20.0),  # 10, 30, 20 s
        "relabels": 1, "relabel_share": 0.3333,
        "ratings": 3, "rated_useful": 2, "rating_score": 0.6667,
        "whispers": 1, "whispered_slots": 1, "whispered_actions": 0,  # bob's slot in c4
        "splits": {"agent": {"alice": _used(1, 1, 1.0), "bob": _used(2, 1, 0.5),
                             "carol": _used(1, 0, 0.0)}},
        "series": [{"day": DAY1, **_used(3, 2, 0.6667)}, {"day": DAY2, **_used(1, 0, 0.0)}],
    },
    "sentiment": {
        # two or more sentiments: c1 -0.2→0.6, c2 -0.5→0.5, c4 0.1→-0.3, c7 0.2→0.4
        **_senti(4, -0.1, 0.3, 0.4),
        "splits": {"involvement": {"bot_only": _senti(2, 0.0, 0.5, 0.5),
                                   "with_agent": _senti(2, -0.2, 0.1, 0.3)}},
        "series": [{"day": DAY1, **_senti(3, -0.2, 0.2667, 0.4667)},
                   {"day": DAY2, **_senti(1, 0.2, 0.4, 0.2)}],
    },
    "learning": {"models": [
        # m1: bot messages c1 ×2, c4 ×2; held r1 r2; corrected: c4's edit; closed c1..c4
        {"model_version": "m1", "deployed_at": D1.isoformat(), "corrections_learnt": 0,
         "corrections_fixed": 0, "bot_turns": 4, "held": 2, "corrected": 1, "held_share": 0.5,
         "corrected_share": 0.25, "closed": 4, "bot_resolution_rate": 0.25},
        # m2: bot messages c5, c6, c7 ×2; held r3 r4; corrected: c5's relabel; closed c6 c7
        {"model_version": "m2", "deployed_at": D2.isoformat(), "corrections_learnt": 1,
         "corrections_fixed": 1, "bot_turns": 4, "held": 2, "corrected": 1, "held_share": 0.5,
         "corrected_share": 0.25, "closed": 2, "bot_resolution_rate": 0.5,
         "change": {"held_share": 0.0, "corrected_share": 0.0, "bot_resolution_rate": 0.25}},
    ]},
    "workload": {"agents": {
        "alice": {"conversations": 1, "decisions": 0, "messages": 1, "handling_seconds": 420.0},
        "bob": {"conversations": 1, "decisions": 2, "messages": 0, "handling_seconds": 119.0},
        "carol": {"conversations": 0, "decisions": 1, "messages": 0, "handling_seconds": 0.0}}},
    "queue": {
        "length": 1,  # c5 still waits
        "bucket_seconds": 300,  # two days in 576 buckets of 5 minutes
        "points": _queue_points({
            (DAY1, "11:00"): (1, 0.6),  # c2 waits 11:00:01 → 11:03:01: 180 s of 300
            (DAY1, "12:00"): (1, 0.9933),  # c3 waits 12:00:02 → 12:05:02: 298 s
            (DAY1, "12:05"): (1, 0.0067),  # … and 2 s of the next
            (DAY2, "09:00"): (1, 0.9967),  # c5 waits from 09:00:01 to the period's end
            **{(DAY2, f"{m // 60:02d}:{m % 60:02d}"): (1, 1.0) for m in range(545, 1440, 5)}}),
        "series": [{"day": DAY1, "longest": 1}, {"day": DAY2, "longest": 1}]},
}
DEPLOYS = [{"at": D1.isoformat(), "model_version": "m1", "by": "system"},
           {"at": D2.isoformat(), "model_version": "m2", "by": "tina"}]


def _without_definitions(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: {f: v for f, v in fig.items() if f != "definition"}
            for k, fig in figures.items() if k not in ("filter", "deploys")}


async def test_every_figure_equals_the_value_worked_out_by_hand(store: Store) -> None:
    await seed(store)
    figures = await compute_metrics(store, MetricFilter(*PERIOD))
    assert _without_definitions(figures) == EXPECTED
    assert figures["deploys"] == DEPLOYS
    assert figures["effort"]["definition"] == "docs/metrics.md#effort"


async def test_the_filters_narrow_the_cohort(store: Store) -> None:
    await seed(store)
    track = await compute_metrics(store, MetricFilter(*PERIOD, intent="track_order"),
                                  ("resolution",))
    # c1 bot_resolved, c4 ended_after_handoff, c6 reopened, c7 bot_resolved
    assert {k: v for k, v in track["resolution"].items() if k not in (
        "definition", "splits", "series")} == EXPECTED["resolution"]["splits"]["intent"][
        "track_order"]
    bob = await compute_metrics(store, MetricFilter(*PERIOD, agent="bob"), ("accuracy",))
    assert bob["accuracy"]["splits"]["model_version"] == {"m1": ACC_M1}  # only c4
    m2 = await compute_metrics(store, MetricFilter(*PERIOD, model="m2"), ("effort",))
    assert {k: m2["effort"][k] for k in EFFORT_M2} == EFFORT_M2
    day2 = await compute_metrics(store, MetricFilter(D2, PERIOD[1]), ("resolution",))
    assert day2["resolution"]["series"] == [{"day": DAY2, **RES_M2}]
    assert day2["deploys"] == DEPLOYS[1:]


async def test_the_write_path_records_changes_and_sentiment(store: Store) -> None:
    """``save_step`` writes a conversation event only when the mode, owner or queue changes,
    with its cause and actor; ``set_triage`` copies the sentiment into its column."""
    await store.upsert_conversation("w")
    step = {"owner": None, "queue_reason": None, "state": None}
    saved = await store.save_step(
        "w", expected_version=1, mode="bot", queued=False, cause="CustomerMessage",
        appended=[{"sender": "customer", "text": "hello", "client_message_id": "m1"}], **step)
    await store.save_step("w", expected_version=2, mode="human", owner="ann", queued=False,
                          queue_reason=None, state=None, cause="TakeOver", actor="ann")
    await store.save_step("w", expected_version=3, mode="closed", queued=False,
                          cause="Close", actor="ann", **step)
    events = await store.metric_events(MetricFilter(
        saved.conversation.created_at, saved.conversation.created_at + timedelta(seconds=60)))
    assert [(e.cause, e.actor, e.mode_from, e.mode, e.owner) for e in events] == [
        ("TakeOver", "ann", "bot", "human", "ann"), ("Close", "ann", "human", "closed", None)]
    await store.set_triage("w", risk=0.1, triage={}, client_message_id="m1",
                           assessment={"risk": 0.1, "measures": {"sentiment": -0.42}})
    [message] = await store.list_messages("w")
    assert message.sentiment == -0.42
    await store.set_triage("w", risk=0.1, triage={}, client_message_id="m1",
                           assessment={"risk": 0.1, "measures": {"sentiment": "bad"}})
    assert (await store.list_messages("w"))[0].sentiment is None


async def _recounted(store: Store, f: MetricFilter, *names: str) -> dict[str, Any]:
    """The figures computed from nothing: every summary dropped first."""
    async with store._tx(write=True) as conn:
        await conn.execute(sa.delete(conversation_summaries))
    return await compute_metrics(store, f, *[names] if names else [])


async def test_the_summaries_follow_each_write_and_equal_a_full_recount(store: Store) -> None:
    """The dashboard reads one summary per conversation (docs/metrics.md, "Speed"); each write
    a figure depends on makes that conversation's summary stale, a read recomputes only the
    stale ones, and the figures always equal those computed from nothing."""
    await seed(store)
    assert _without_definitions(await compute_metrics(store, MetricFilter(*PERIOD))) == EXPECTED
    assert await refresh_summaries(store, *PERIOD) == 0  # nothing changed: nothing recomputed
    await store.set_effort_score("c7", 1)  # a late survey answer on an old conversation
    assert await refresh_summaries(store, *PERIOD) == 1
    figures = await compute_metrics(store, MetricFilter(*PERIOD), ("effort",))
    assert figures["effort"]["answers"] == 5 and figures["effort"]["mean"] == 3.8
    assert figures == await _recounted(store, MetricFilter(*PERIOD), "effort")

    start = now()
    live = MetricFilter(start - timedelta(minutes=1), start + timedelta(hours=1))
    await store.upsert_conversation("w")
    step = {"owner": None, "queue_reason": None, "state": None}
    await store.save_step(
        "w", expected_version=1, mode="bot", queued=False, cause="CustomerMessage",
        appended=[{"sender": "customer", "text": "my parcel is late", "client_message_id": "a",
                   "intent": "track_order"}], **step)
    first = await compute_metrics(store, live)
    assert first["resolution"]["open"] == 1 and first["sentiment"]["conversations"] == 0
    writes = [
        store.set_triage("w", risk=0.5, triage={}, client_message_id="a",
                         assessment={"risk": 0.5, "measures": {"sentiment": -0.5}}),
        store.save_step("w", expected_version=2, mode="bot", queued=True,
                        queue_reason="customer", state=None, owner=None, cause="CustomerMessage",
                        appended=[{"sender": "customer", "text": "a person please",
                                   "client_message_id": "b"}]),
        store.set_triage("w", risk=0.2, triage={}, client_message_id="b",
                         assessment={"risk": 0.2, "measures": {"sentiment": 0.25}}),
        store.save_step("w", expected_version=3, mode="human", owner="ann", queued=False,
                        queue_reason=None, state=None, cause="TakeOver", actor="ann"),
        store.save_step("w", expected_version=4, mode="closed", queued=False, cause="Close",
                        actor="ann", **step),
        store.set_effort_score("w", 6),
    ]
    for write in writes:
        await write
        assert await refresh_summaries(store, live.since, live.until) == 1
        assert await refresh_summaries(store, live.since, live.until) == 0
    ended = MetricFilter(live.since, now())  # a period that is over: the queue's mean is
    figures = await compute_metrics(store, ended)  # taken to its end, not to a moving now
    assert figures["resolution"]["agent_resolved"] == 1
    assert figures["sentiment"]["change"] == 0.75
    assert figures["effort"]["mean"] == 6.0
    queued = [p for p in figures["queue"]["points"] if p["longest"]]
    assert figures["queue"]["length"] == 0 and len(queued) in (1, 2)  # 1 or 2 buckets
    assert figures["workload"]["agents"]["ann"]["conversations"] == 1
    assert figures == await _recounted(store, ended)


async def test_concurrent_requests_share_one_check_of_the_summaries(store: Store) -> None:
    """The console asks for its nine figures at once: one check of the summaries serves them
    all (``SharedRefresh``, docs/metrics.md "Speed"), and each gets its exact figure."""
    await seed(store)
    shared = SharedRefresh(functools.partial(refresh_summaries, store))
    f = MetricFilter(*PERIOD)
    figures = await asyncio.gather(*(compute_metrics(store, f, (name,), refresh=shared)
                                     for name in METRICS))
    assert shared.checks == 1
    for name, one in zip(METRICS, figures):
        assert _without_definitions(one)[name] == EXPECTED[name]


async def test_a_check_begun_before_a_write_is_never_shared_with_a_later_request(
        store: Store) -> None:
    """A request made after a write committed never waits on a check that scanned before it:
    it gets a check of its own, so its figures hold the write (here a survey answer)."""
    await seed(store)
    scanned, go_on = asyncio.Event(), asyncio.Event()

    async def first_one_paused(since: datetime, until: datetime) -> int:
        n = await refresh_summaries(store, since, until)  # the real scan and recomputation
        if not scanned.is_set():
            scanned.set()
            await go_on.wait()  # the first check holds here, after its scan
        return n

    shared = SharedRefresh(first_one_paused)
    f = MetricFilter(*PERIOD)
    before = asyncio.create_task(compute_metrics(store, f, ("effort",), refresh=shared))
    await scanned.wait()
    await store.set_effort_score("c7", 1)  # committed after the first check's scan
    after = asyncio.create_task(compute_metrics(store, f, ("effort",), refresh=shared))
    await asyncio.sleep(0)  # the later request is waiting now
    go_on.set()
    assert (await before)["effort"]["answers"] in (4, 5)  # it began before the write
    figure = (await after)["effort"]
    assert figure["answers"] == 5 and figure["mean"] == 3.8
    assert shared.checks == 2


async def _counted_days(store: Store) -> list[str]:
    async with store._tx(write=False) as conn:
        return sorted(day for (day,) in await conn.execute(
            sa.select(summary_days.c.day).where(summary_days.c.outcome.is_(None))))


async def test_whole_days_are_counted_once_and_again_after_a_write(store: Store) -> None:
    """The summary groups of whole UTC days are kept in ``summary_days`` (docs/metrics.md,
    "Speed"): built by the first read, deleted with any summary of that day written again,
    and always equal to the groups counted from the summaries."""
    await seed(store)
    whole = MetricFilter(*PERIOD)
    assert await _counted_days(store) == []
    await compute_metrics(store, whole, ("resolution",))
    assert await _counted_days(store) == [DAY1, DAY2]
    await store.set_effort_score("c7", 1)  # c7 began on day 2
    assert await refresh_summaries(store, *PERIOD) == 1
    assert await _counted_days(store) == [DAY1]
    cut = MetricFilter(D1 + timedelta(hours=10), PERIOD[1] + timedelta(hours=5))
    for f in (whole, cut, MetricFilter(*PERIOD, intent="track_order"),
              MetricFilter(*PERIOD, model="m2")):
        assert Counter(map(tuple, await store.summary_groups(f))) == Counter(
            map(tuple, await store._groups(f)))
    assert await _counted_days(store) == [DAY1, DAY2]
    figures = await compute_metrics(store, whole)
    assert figures["effort"]["answers"] == 5 and figures["effort"]["mean"] == 3.8
    assert figures == await _recounted(store, whole)


async def test_a_day_rewritten_between_its_count_and_its_read_is_not_lost(
        store: Store) -> None:
    """A summary written just after ``summary_days`` was found counted, and before its rows
    were read, deletes that day's rows: the read sees the day without its marker and counts it
    from the summaries, so the figure holds the day, and the write."""
    await seed(store)
    whole = MetricFilter(*PERIOD)
    await compute_metrics(store, whole, ("effort",))
    assert await _counted_days(store) == [DAY1, DAY2]
    count_days = store._count_days

    async def counted_then_written(days: Sequence[str]) -> None:
        await count_days(days)
        await store.set_effort_score("c7", 1)  # c7 began on day 2
        assert await refresh_summaries(store, *PERIOD) == 1  # day 2's rows deleted
    store._count_days = counted_then_written  # type: ignore[method-assign]
    figures = await compute_metrics(store, whole, ("effort",))
    assert figures["effort"]["answers"] == 5 and figures["effort"]["mean"] == 3.8


def _ms(buckets: list[QueueBucket]) -> list[tuple[int, int, int, float]]:
    """Buckets with their offsets to the millisecond (SQLite's times are Julian days)."""
    return [(b.bucket, b.longest, b.steps, round(b.offsets, 3)) for b in buckets]


def _replayed(stays: list[Any], seconds: int) -> list[QueueBucket]:
    """``MetricsStore.queue_buckets`` of these stays (conversation, place, start, end),
    replayed here one change at a time."""
    changes = sorted([(start, cid, 2 * k, 1) for cid, k, start, _ in stays]
                     + [(end, cid, 2 * k + 1, -1) for cid, k, _, end in stays if end])
    buckets: dict[int, QueueBucket] = {}
    length = 0
    for at, _, _, step in changes:
        length += step
        b = int(at.timestamp() // seconds)
        old = buckets.get(b, QueueBucket(b, length, 0, 0.0))
        buckets[b] = QueueBucket(b, max(old.longest, length), old.steps + step,
                                 old.offsets + step * (at.timestamp() - b * seconds))
    return [buckets[b] for b in sorted(buckets)]


async def test_the_rows_kept_with_the_summaries_follow_the_cohort(store: Store) -> None:
    """The queue stays and held replies kept with the summaries carry their conversation's
    facts, so the intent and model filters select them without the summaries: they select
    exactly the rows of the cohort's conversations."""
    await seed(store)
    s = conversation_summaries
    for f in (MetricFilter(*PERIOD), MetricFilter(*PERIOD, model="m1"),
              MetricFilter(*PERIOD, intent="refund"),
              MetricFilter(D1 + timedelta(hours=11, minutes=30), PERIOD[1])):
        await refresh_summaries(store, f.since, f.until)
        cohort = [s.c.created_at >= f.since, s.c.created_at < f.until]
        cohort += [s.c.intent == f.intent] if f.intent else []
        cohort += [s.c.model_version == f.model] if f.model else []
        async with store._tx(write=False) as conn:
            counted = sa.select(s.c.conversation_id).where(*cohort, s.c.started_at.is_not(None))
            rows = list(await conn.execute(sa.select(
                summary_people.c.conversation_id, summary_people.c.ord,
                summary_people.c.start_at, summary_people.c.end_at).where(
                summary_people.c.kind == "stay", summary_people.c.conversation_id.in_(counted))))
            stays = {cid for cid, *_ in rows}
            replies = (await conn.execute(sa.select(sa.func.count()).where(
                summary_replies.c.conversation_id.in_(
                    sa.select(s.c.conversation_id).where(*cohort))))).scalar_one()
        assert _ms(await store.queue_buckets(f, 300, PERIOD[1])) == _ms(_replayed(rows, 300))
        assert sum(r.n for r in await store.reply_groups(f)) == replies
    assert stays == {"c3", "c5"} and replies == 4  # from 11:30 on day 1: r1 r2 (c4), r3 r4 (c5)

