"""Overload, end to end with the session's real Rasa (stopped with SIGSTOP for a few seconds to
play a Rasa that is slow to answer, then continued, always):

- the short version of the load benchmark (bench/load.py): 20 customers sending 3 messages
  each at once, two of them reviewed by a scripted agent, through an admission control of one
  call in flight; then 200 idle customer sockets. Only the correctness goals are asserted — no
  conversation queued for a person because of load, no unanswered message, every Rasa tracker
  equal to what its customer saw, every agent action accepted, every idle socket given its
  session — never a timing (the figures are printed; docs/performance.md has the long runs);

- a busy Rasa: the calls beyond ``HANDOFF_RASA_CALLS_IN_FLIGHT`` wait their turn in the
  gateway, the customers are told after ``HANDOFF_REPLY_NOTICE_AFTER`` seconds that the reply
  is on its way, and then get it; nobody is queued for a person;
- a Rasa turn that ends after the gateway stopped waiting (``HANDOFF_RASA_TIMEOUT``): the
  reply the customer never got does not enter Rasa's tracker (the channel's deadline)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bench.load import OPEN_LIMITS, Node, System, idle_lines, run_idle, run_load
from bot.serve import Stack
from handoff.conversation.customer_protocol import REPLY_DELAYED
from tests.gateway.clients import WAIT, Widget, admin_login
from tests.gateway.conftest import Gateway, _start_gateway, _stop
from tests.gateway.test_rasa_outage import _rasa_pid

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def busy_gateway(rasa_stack: Stack,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _start_gateway(tmp_path_factory.mktemp("busy"), rasa_stack.rasa_url, rasa_stack.token,
                        {**OPEN_LIMITS, "HANDOFF_RASA_CALLS_IN_FLIGHT": "1",
                         "HANDOFF_REPLY_NOTICE_AFTER": "1", "HANDOFF_RASA_TIMEOUT": "60"})
    yield gw
    _stop(gw.process)


@pytest.fixture(scope="module")
def impatient_gateway(rasa_stack: Stack,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # gives a turn up after 2.5 s; the channel does not save one that ends after 2 s
    gw = _start_gateway(tmp_path_factory.mktemp("impatient"), rasa_stack.rasa_url,
                        rasa_stack.token, {"HANDOFF_RASA_TIMEOUT": "2.5"})
    yield gw
    _stop(gw.process)


async def tracker_bot_texts(stack: Stack, sender: str) -> list[str]:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        resp = await client.get(f"{stack.rasa_url}/conversations/{sender}/tracker",
                                params={"token": stack.token, "include_events": "APPLIED"})
    resp.raise_for_status()
    return [e["text"] for e in resp.json()["events"] if e["event"] == "bot"]


async def drain(widget: Widget) -> list[tuple[str, Any]]:
    """Everything the widget received so far."""
    out = []
    while not widget.events.empty():
        out.append(widget.events.get_nowait())
    return out


def bot_texts(events: list[tuple[str, Any]]) -> list[str]:
    return [data["text"] for name, data in events if name == "bot_uttered"
            and (data.get("metadata") or {}).get("sender") != "system"]


async def test_a_busy_rasa_makes_customers_wait_with_a_notice_not_queue_for_a_person(
    busy_gateway: Gateway, rasa_stack: Stack
) -> None:
    widgets = [await Widget(busy_gateway.url).connect() for _ in range(3)]
    pid = _rasa_pid(rasa_stack)
    try:
        sessions = [await w.started("hello") for w in widgets]
        await asyncio.sleep(0.3)
        for w in widgets:
            await drain(w)
        before = {sid: await tracker_bot_texts(rasa_stack, sid) for sid in sessions}
        seen: dict[str, list[str]] = {}
        os.killpg(pid, signal.SIGSTOP)
        try:
            for w, sid in zip(widgets, sessions):
                await w.say(sid, "what is your return policy?")
            await asyncio.sleep(2.5)  # a notice after 1 s; one call out, two waiting
            async with httpx.AsyncClient(base_url=busy_gateway.url, timeout=WAIT) as api:
                health = (await api.get("/api/health/detail",
                                        headers=await admin_login(busy_gateway, api))).json()
        finally:
            os.killpg(pid, signal.SIGCONT)
        calls = health["rasa_calls"][rasa_stack.rasa_url]
        assert (calls["running"], calls["waiting"]) == (1, 2), calls
        assert health["rasa"]["state"] != "down"  # busy is not hung
        for w, sid in zip(widgets, sessions):
            events = [await w.next()]
            while not bot_texts(events):
                events.append(await w.next())
            await asyncio.sleep(0.3)
            events += await drain(w)
            kinds = [data["kind"] for name, data in events if name == "handoff_notice"]
            assert kinds == ["reply_delayed"], events
            assert ("handoff_notice", dict(REPLY_DELAYED)) == events[0]
            seen[sid] = bot_texts(events)
            assert len(seen[sid]) >= 1
        async with httpx.AsyncClient(base_url=busy_gateway.url, timeout=WAIT) as api:
            calls = (await api.get("/api/health/detail", headers=await admin_login(
                busy_gateway, api))).json()["rasa_calls"][rasa_stack.rasa_url]
        assert calls["waited"] >= 2 and calls["running"] == calls["waiting"] == 0, calls
        for sid in sessions:  # the tracker holds what the customer saw
            assert await tracker_bot_texts(rasa_stack, sid) == before[sid] + seen[sid]
    finally:
        os.killpg(pid, signal.SIGCONT)  # never leave the session's Rasa stopped
        for w in widgets:
            await w.close()


async def test_a_reply_rasa_finishes_after_the_gateway_gave_up_is_not_in_the_tracker(
    impatient_gateway: Gateway, rasa_stack: Stack
) -> None:
    widget = await Widget(impatient_gateway.url).connect()
    pid = _rasa_pid(rasa_stack)
    try:
        sid = await widget.started("hello")
        await asyncio.sleep(0.3)
        await drain(widget)
        greeting = await tracker_bot_texts(rasa_stack, sid)
        assert greeting
        await widget.say(sid, "what is your return policy?")
        os.killpg(pid, signal.SIGSTOP)  # the turn is out: Rasa finishes it only after 4 s
        try:
            await asyncio.sleep(4.0)
        finally:
            os.killpg(pid, signal.SIGCONT)
        events = [await widget.next()]
        while events[-1][0] != "handoff_notice":  # the gateway gave up: a person will answer
            events.append(await widget.next())
        assert events[-1][1]["kind"] == "handoff_queued", events
        await asyncio.sleep(1.5)  # Rasa ends the late turn meanwhile
        events += await drain(widget)
        assert bot_texts(events) == []  # the customer never got the bot's reply ...
        assert await tracker_bot_texts(rasa_stack, sid) == greeting  # ... nor did the tracker
    finally:
        os.killpg(pid, signal.SIGCONT)
        await widget.close()


async def test_a_swarm_of_customers_is_answered_and_the_trackers_hold_what_they_saw(
    busy_gateway: Gateway, rasa_stack: Stack
) -> None:
    system = System(nodes=[Node(busy_gateway.url, busy_gateway.process.pid)],
                    rasa_url=rasa_stack.rasa_url, rasa_token=rasa_stack.token,
                    admin_password=busy_gateway.admin_password)
    report = await run_load(system, customers=20, messages=3, rate=0, review_share=0.1,
                            deadline=240)
    print("\n".join(report.lines()))
    assert report.queued_for_load == []
    assert report.unanswered == 0
    assert report.mismatched == []
    assert report.agent_failures == []
    assert len(report.bot_latency) == 18 * 3 + 2  # the reviewed ones' first turns too
    assert len(report.review_latency) == 2 * 2  # held, approved by the agent, sent
    assert len(report.takeover_ack) == 2
    assert report.human_queue == 0
    assert "gateway 1" in report.memory


async def test_idle_customer_sockets_all_get_their_session(busy_gateway: Gateway) -> None:
    figures = await run_idle(Node(busy_gateway.url, busy_gateway.process.pid), 200, batch=50)
    print("\n".join(idle_lines(figures)))
    assert figures["sockets"] == figures["confirmed"] == 200 and figures["failed"] == 0
