"""The dashboard's API on a real gateway in front of the real Rasa: the seeded history of
``tests/gateway/metrics_seed.py`` served as JSON and CSV with exactly the values worked out by
hand in ``tests/gateway/test_metrics.py``, to leads only, bad filters refused; and a real
conversation (a turn through Rasa, a takeover, a rating, a close) recorded for the figures;
and the Prometheus text of ``GET /metrics``, parsed by the official parser, counting a real
turn."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from handoff.learning.metrics import METRICS
from handoff.store import Store
from tests.gateway.clients import Widget, agent_console, agent_login, user_login
from tests.gateway.clients import api, gateway_store, widget  # noqa: F401 (fixtures)
from tests.gateway.conftest import Gateway
from tests.gateway.metrics_seed import PERIOD, seed
from tests.gateway.test_metrics import ACC_M1, DEPLOYS, EXPECTED, _without_definitions

pytestmark = pytest.mark.asyncio


def _query(**extra: str) -> dict[str, str]:
    return {"since": PERIOD[0].isoformat(), "until": PERIOD[1].isoformat(), **extra}


async def test_the_api_serves_the_same_figures_to_leads_only(
    gateway: Gateway, store: Store, api: httpx.AsyncClient
) -> None:
    await seed(store)
    lead = await user_login(store, api, "tina", "trainer")
    resp = await api.get("/api/metrics", params=_query(), headers=lead)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert _without_definitions(body) == EXPECTED
    assert body["deploys"] == DEPLOYS
    one = await api.get("/api/metrics/accuracy", params=_query(agent="bob"), headers=lead)
    assert one.json()["accuracy"]["splits"]["model_version"] == {"m1": ACC_M1}
    assert set(one.json()) == {"filter", "deploys", "accuracy"}

    exported = await api.get("/api/metrics/resolution/csv", params=_query(), headers=lead)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["metric", "path", "value"]
    assert ["resolution", "success_rate", "0.5"] in rows
    assert ["resolution", "splits.intent.refund.success_rate", ""] in rows
    assert ["resolution", "series[1].containment_rate", "0.6667"] in rows

    agent = await agent_login(store, api, "kai")
    refused = await api.get("/api/metrics", params=_query(), headers=agent)
    assert refused.status_code == 403
    assert (await api.get("/api/metrics")).status_code == 401
    for params, status in ((_query(since="yesterday"), 400),
                           ({"since": PERIOD[1].isoformat(), "until": PERIOD[0].isoformat()},
                            400),
                           ({"since": "2020-01-01", "until": "2026-01-01"}, 400),
                           (_query(intent="x" * 201), 400)):
        bad = await api.get("/api/metrics", params=params, headers=lead)
        assert bad.status_code == status, (params, bad.text)
        assert bad.json()["error"] == "bad_request"
    unknown = await api.get("/api/metrics/happiness", headers=lead)
    assert unknown.status_code == 404


async def test_a_real_conversation_is_recorded_for_the_metrics(
    gateway: Gateway, store: Store, api: httpx.AsyncClient, widget: Widget
) -> None:
    """A customer's turn through the gateway and Rasa, an agent's takeover, a rated
    suggestion and the agent's close: the events and the rating the figures read."""
    started = datetime.now(timezone.utc)
    session = await widget.session()
    await widget.say(session, "where is my order?")
    while (await widget.next())[0] != "bot_uttered":
        pass
    lead = await user_login(store, api, "tina", "trainer")
    period = {"since": started.isoformat(),
              "until": (started + timedelta(minutes=10)).isoformat()}
    # the console's nine figure requests at once (one shared check of the summaries)
    figures = await asyncio.gather(*(api.get(f"/api/metrics/{name}", headers=lead,
                                             params=period) for name in METRICS))
    assert [r.status_code for r in figures] == [200] * len(METRICS)
    assert figures[METRICS.index("resolution")].json()["resolution"]["open"] == 1
    ana = await agent_login(store, api, "ana")
    taken = await api.post(f"/api/conversations/{session}/takeover", headers=ana)
    assert taken.status_code == 200, taken.text
    rated = await api.post(f"/api/conversations/{session}/suggestions/rating", headers=ana,
                           json={"suggestion": "response:utter_greet", "rating": 1})
    assert rated.status_code == 201, rated.text
    for body in ({"suggestion": "response:utter_greet", "rating": 5},
                 {"suggestion": "", "rating": 1}, {"rating": True}):
        refused = await api.post(f"/api/conversations/{session}/suggestions/rating",
                                 headers=ana, json=body)
        assert refused.status_code == 400, body
    closed = await api.post(f"/api/conversations/{session}/close", headers=ana)
    assert closed.status_code == 200, closed.text

    # the next request holds the takeover and the close made since
    resp = await api.get("/api/metrics", headers=lead, params={**period, "agent": "ana"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["resolution"]["agent_resolved"] == 1
    assert body["resolution"]["conversations"] == 1
    assert body["enablement"]["ratings"] == 1
    assert body["workload"]["agents"]["ana"]["conversations"] == 1
    assert body["resolution_time"]["handling"]["count"] == 1


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer, parsed by the official client's parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_prometheus_counts_a_real_turn(
    gateway: Gateway, api: httpx.AsyncClient, widget: Widget
) -> None:
    before = await api.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    was = _samples(before.text)
    families = {f.name for f in text_string_to_metric_families(before.text)}
    assert {"handoff_turns", "handoff_turn_seconds", "handoff_queue_length",
            "handoff_mode_transitions", "handoff_held_replies", "handoff_decisions",
            "handoff_decision_seconds", "handoff_triage_seconds", "handoff_retrain_seconds",
            "handoff_deploy_seconds", "handoff_socket_connections"} <= families
    assert was[("handoff_socket_connections", (("namespace", "/"),))] >= 1  # the widget

    session = await widget.session()
    await widget.say(session, "hello")
    while (await widget.next())[0] != "bot_uttered":
        pass
    await asyncio.sleep(0.2)  # the turn's time is observed once Rasa's answer is applied
    now = _samples((await api.get("/metrics")).text)
    assert now[("handoff_turns_total", ())] == was[("handoff_turns_total", ())] + 1
    for part in ("total", "rasa", "gateway"):
        key = ("handoff_turn_seconds_count", (("part", part),))
        assert now[key] == was.get(key, 0.0) + 1, part
    assert now[("handoff_turn_seconds_sum", (("part", "rasa"),))] > 0


async def test_prometheus_times_an_agents_click_and_what_it_waited_for(
    gateway: Gateway, store: Store, api: httpx.AsyncClient, widget: Widget
) -> None:
    """An agent's review event (and one refused: an unknown conversation) is timed to its
    acknowledgement with its read of the users; each wait for a conversation's lock is
    counted by who waited (the customer's message, Rasa's answer, the agent's events); the
    loop's lag is sampled from the start."""
    was = _samples((await api.get("/metrics")).text)
    session = await widget.session()
    await widget.say(session, "hello")
    while (await widget.next())[0] != "bot_uttered":
        pass
    headers = await agent_login(store, api, "lena")
    console, _ = await agent_console(gateway, headers, "status")
    try:
        taken = await console.call("review", {"conversation_id": session, "on": True},
                                   namespace="/agent", timeout=10)
        assert taken["conversation"]["owner"] == "lena", taken
        unknown = await console.call("review", {"conversation_id": "no-such-conversation",
                                                "on": True}, namespace="/agent", timeout=10)
        assert unknown["status"] == 404, unknown
    finally:
        await console.disconnect()
    await asyncio.sleep(0.2)  # Rasa's answer is applied after the customer saw it
    now = _samples((await api.get("/metrics")).text)

    def grew(name: str, **labels: str) -> float:
        key = (f"{name}_count", tuple(sorted(labels.items())))
        return now.get(key, 0.0) - was.get(key, 0.0)

    assert grew("handoff_agent_event_seconds", event="review", part="total") == 2
    assert grew("handoff_agent_event_seconds", event="review", part="users") == 2
    assert grew("handoff_lock_wait_seconds", waiter="customer") == 1
    assert grew("handoff_lock_wait_seconds", waiter="rasa") == 1
    assert grew("handoff_lock_wait_seconds", waiter="agent") == 2  # the unknown one waited too
    review = now[("handoff_agent_event_seconds_sum", (("event", "review"), ("part", "total")))]
    users = now[("handoff_agent_event_seconds_sum", (("event", "review"), ("part", "users")))]
    assert 0 < users < review
    assert now[("handoff_loop_lag_seconds_count", ())] > 0
