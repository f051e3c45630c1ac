"""A hung Rasa, end to end: the session's real Rasa server is stopped (SIGSTOP) for a few
seconds under a gateway with the default probe settings, then continued (SIGCONT, always).

One outage covers Rasa's health (the probe finds the hang long before the turn timeout,
/api/health says so, the customer is told, agents get ``rasa_health``) and the recovery when
Rasa is back (the queued conversation returns to the bot, the outage's messages are in Rasa's
tracker once each and unanswered, the bot answers the latest; a conversation an agent took
stays the agent's).
The SIGKILL of Rasa under ``python -m bot.serve`` is test_supervision_serve.py (``long``)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from bot.serve import Stack
from handoff.conversation.customer_protocol import NOTICE_TEXTS, RASA_DOWN_TEXT
from handoff.conversation.router import Notice
from handoff.store import Store
from tests.gateway.clients import (  # noqa: F401 (gateway_store: the fixture store)
    WAIT, Widget, agent_console, agent_login, gateway_store,
)
from tests.gateway.conftest import Gateway, _start_gateway, _stop

pytestmark = pytest.mark.asyncio

ORDER_QUESTION = "where is my order 100002?"
HUNG = "I have a question"


@pytest.fixture(scope="module")
def gateway(rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # the default probe (0.5 s apart, 1.5 s each, down after 2 failures: at most 4 s), and a
    # turn timeout far longer, so that only the probe can tell the customer in time
    gw = _start_gateway(tmp_path_factory.mktemp("outage"), rasa_stack.rasa_url,
                        rasa_stack.token, {"HANDOFF_RASA_PROBE_TIMEOUT": "1.5",
                                           "HANDOFF_RASA_TIMEOUT": "120"})
    yield gw
    _stop(gw.process)


def _rasa_pid(stack: Stack) -> int:
    server = next(s for s in stack.services if s.name.startswith("Rasa server"))
    assert server.process is not None and server.process.poll() is None
    return server.process.pid


def _tracker_said(stack: Stack, sender: str) -> list[tuple[str, str]]:
    """Who said what in the tracker, (``user`` | ``bot``, text), leaving out what was reverted
    (a turn the gateway gave up on when Rasa hung, taken back when Rasa is back)."""
    resp = requests.get(f"{stack.rasa_url}/conversations/{sender}/tracker",
                        params={"token": stack.token, "include_events": "APPLIED"},
                        timeout=WAIT)
    resp.raise_for_status()
    return [(e["event"], e["text"]) for e in resp.json()["events"]
            if e["event"] in ("user", "bot")]


async def _health(api: httpx.AsyncClient) -> dict[str, Any]:
    resp = await api.get("/api/health/detail")
    assert resp.status_code == 200, resp.text
    rasa: dict[str, Any] = resp.json()["rasa"]
    return rasa


async def _until_health(api: httpx.AsyncClient, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while (health := await _health(api))["state"] not in states:
        assert time.monotonic() < deadline, health
        await asyncio.sleep(0.1)
    return health


async def _next_of(widget: Widget, event: str) -> Any:
    while True:
        name, data = await widget.next()
        if name == event:
            return data


async def test_a_hung_rasa_is_found_by_the_probe_and_the_bot_resumes_when_it_is_back(
    gateway: Gateway, rasa_stack: Stack, store: Store
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=WAIT) as api:
        alice = await agent_login(store, api, "alice")
        api.headers.update(alice)
        health = await _until_health(api, {"up", "slow"})
        assert health["probe"] == "on" and health["error"] is None
        console, pushes = await agent_console(gateway, alice, "rasa_health")
        customer = await Widget(gateway.url).connect()
        other = await Widget(gateway.url).connect()
        pid = _rasa_pid(rasa_stack)
        try:
            cid = await customer.session()
            other_id = await other.session()
            await customer.say(cid, "hi")
            assert (await _next_of(customer, "bot_uttered"))["text"].startswith("Hi, I'm")

            os.killpg(pid, signal.SIGSTOP)
            try:
                stopped_at = time.monotonic()
                await customer.say(cid, HUNG)  # its turn hangs in the stopped Rasa
                # the probe finds the hang; the customer is told, long before the 120 s timeout
                notice = await _next_of(customer, "handoff_notice")
                told_after = time.monotonic() - stopped_at
                assert notice == {"kind": "handoff_queued", "text": RASA_DOWN_TEXT}
                assert (await _next_of(customer, "bot_uttered")) == {
                    "text": RASA_DOWN_TEXT, "metadata": {"sender": "system"}}
                health = await _health(api)
                assert health["state"] == "down" and health["failed_probes"] >= 2
                assert "did not answer" in health["error"]
                down = await asyncio.wait_for(pushes.get(), WAIT)
                assert down["state"] == "down"
                print(f"customer told {told_after:.1f} s after Rasa stopped")
                conv = await store.get_conversation(cid)
                assert (conv.mode, conv.queue_reason) == ("bot", "rasa_unavailable")

                await customer.say(cid, ORDER_QUESTION)  # kept for when Rasa is back
                await other.say(other_id, "hello?")  # fails at once: Rasa is known down
                assert (await _next_of(other, "handoff_notice"))["text"] == RASA_DOWN_TEXT
                resp = await api.post(f"/api/conversations/{other_id}/takeover", headers=alice)
                assert resp.status_code == 200, resp.text
                await asyncio.sleep(1)  # nothing but the customer's place in the queue
                while not customer.events.empty():
                    assert customer.events.get_nowait()[0] == "queue_position"
            finally:
                os.killpg(pid, signal.SIGCONT)

            await _until_health(api, {"up", "slow"})
            back = await asyncio.wait_for(pushes.get(), WAIT)
            assert back["state"] in ("up", "slow")
            # back with the bot: told, then the latest message answered with the whole context
            assert await _next_of(customer, "handoff_notice") == {
                "kind": "bot_back", "text": NOTICE_TEXTS[Notice.BOT_BACK]}
            answer = await _next_of(customer, "bot_uttered")
            while answer.get("metadata", {}).get("sender") == "system":
                answer = await _next_of(customer, "bot_uttered")
            assert answer["text"].startswith("Order 100002 ")
            conv = await store.get_conversation(cid)
            assert (conv.mode, conv.queue_reason, conv.owner) == ("bot", None, None)
            said = _tracker_said(rasa_stack, cid)
            assert [text for who, text in said if who == "user"] == ["hi", HUNG, ORDER_QUESTION]
            # no reply to the hung message: the customer never got one (the late turn that
            # Rasa finished after SIGCONT, if it got the request, is reverted)
            assert said[said.index(("user", HUNG)) + 1] == ("user", ORDER_QUESTION)
            # the customer the agent took stays with the agent
            other_conv = await store.get_conversation(other_id)
            assert (other_conv.mode, other_conv.owner) == ("human", "alice")
            assert [m.sender for m in await store.list_messages(other_id)] == [
                "customer", "system", "system"]  # the notices: Rasa down, an agent joined
        finally:
            os.killpg(pid, signal.SIGCONT)  # never leave the session's Rasa stopped
            await customer.close()
            await other.close()
            await console.disconnect()
