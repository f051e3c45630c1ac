"""Hypothesis fuzz of the agents' side against the real gateway and Rasa (issue 15): every HTTP
route of the OpenAPI document (the few that start real work or end the fuzzer's login left
out, tests/gateway/agent_fuzz.py) and every ``/agent`` event, with bodies of every shape, on
real conversations whose customers keep talking. Whatever is sent: never a 5xx, every refusal
a clear ``{error, message}``, no traceback in the gateway's log, and the store consistent
afterwards (:func:`~tests.gateway.agent_fuzz.assert_store_consistent`), with one audit row for
every action that succeeded. The default run sends a few hundred cases; ``-m long`` 10,000."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
import socketio
from hypothesis import HealthCheck, given, settings, strategies as st

from handoff.store import Store
from tests.gateway.agent_fuzz import (EVENT_CASES, FUZZER, REAL, assert_store_consistent,
                                      audit_counts, audited_as, http_audited_as, http_cases,
                                      real)
from tests.gateway.clients import WAIT, Widget, agent_console, agent_login, user_login
from tests.gateway.clients import api, gateway_store  # noqa: F401 (fixtures)
from tests.gateway.conftest import Gateway

pytestmark = pytest.mark.asyncio

SPEAK_EVERY = 25  # cases between two customer messages (bot turns, held replies in review)
NEW_CONVERSATION_EVERY = 500  # cases between two new conversations


def drawn(strategy: st.SearchStrategy[Any], n: int, derandomize: bool) -> list[Any]:
    """``n`` examples of ``strategy`` (drawn synchronously, in a thread of its own: drawing
    thousands takes longer than the sockets' ping timeout; the gateway is then called in the
    test's own event loop, one connection for the whole run)."""
    seen: list[Any] = []

    @settings(max_examples=n, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: Any) -> None:
        seen.append(example)

    collect()
    assert len(seen) == n
    return seen


@dataclass
class Customers:
    """Real conversations for the fuzz, each with its customer still connected; they speak in
    turn (:meth:`speak`) so that the fuzz meets bot turns and held replies."""

    gateway: Gateway
    widgets: list[tuple[Widget, str]] = field(default_factory=list)
    turn: itertools.count[int] = field(default_factory=itertools.count)

    async def add(self) -> None:
        widget = await Widget(self.gateway.url).connect()
        self.widgets.append((widget, await widget.started("where is my order 100002?")))

    def pick(self, n: int) -> str:
        return self.widgets[n % len(self.widgets)][1]

    async def speak(self) -> None:
        widget, session_id = self.widgets[next(self.turn) % len(self.widgets)]
        await widget.say(session_id, "I want to talk to a person about my refund")

    async def close(self) -> None:
        for widget, _ in self.widgets:
            await widget.close()


@pytest_asyncio.fixture
async def customers(gateway: Gateway) -> AsyncIterator[Customers]:
    found = Customers(gateway)
    for _ in range(3):
        await found.add()
    yield found
    await found.close()


def clear_refusal(body: Any, status: int, case: Any) -> None:
    assert status < 500, (case, status, body)
    if status >= 400:
        assert isinstance(body, dict), (case, body)
        assert isinstance(body.get("error"), str) and body["error"], (case, body)
        assert isinstance(body.get("message"), str) and body["message"], (case, body)
        assert body["error"] != "internal_error", (case, body)


async def settled(store: Store, gateway: Gateway) -> None:
    """Wait until no conversation changes for a moment (Rasa's turns end), then check the
    log."""
    for _ in range(100):
        before = [(c.id, c.version, c.last_seq) for c in await store.list_conversations()]
        await asyncio.sleep(0.3)
        if before == [(c.id, c.version, c.last_seq) for c in await store.list_conversations()]:
            break
    log = gateway.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "Exception occurred" not in log, gateway.log_tail()


async def http_fuzz(gateway: Gateway, store: Store, api: httpx.AsyncClient,
                    customers: Customers, n: int, derandomize: bool) -> Counter[str]:
    """``n`` generated requests; how many answered with each status."""
    admin = await user_login(store, api, FUZZER, "admin")
    trainee = await user_login(store, api, "fuzz-trainee", "trainee")
    spec = (await api.get("/api/openapi.json")).json()["paths"]
    cases = await asyncio.to_thread(drawn, st.tuples(http_cases(spec), st.sampled_from(
        ["admin"] * 6 + ["trainee", "nobody"])), n, derandomize)
    expected = await audit_counts(store)
    statuses: Counter[str] = Counter()
    for i, ((method, template, path, body, query), who) in enumerate(cases):
        if i and i % SPEAK_EVERY == 0:
            await customers.speak()
        if i and i % NEW_CONVERSATION_EVERY == 0:
            await customers.add()
        cid = customers.pick(i)
        headers = {"admin": admin, "trainee": trainee, "nobody": {}}[who]
        content = None if body is None else json.dumps(real(body, cid)).encode()
        resp = await api.request(method.upper(), real(path, cid), params=query,
                                 content=content, headers={
                                     **headers, "content-type": "application/json"})
        statuses[str(resp.status_code)] += 1
        answer = resp.json() if resp.headers.get("content-type", "").startswith(
            "application/json") else None
        clear_refusal(answer, resp.status_code, (method, path, body, query, who))
        if resp.status_code < 300 and who == "admin" and isinstance(answer, dict):
            action = http_audited_as(method, template, real(body, cid), answer)
            if action:
                expected[action] += 1
    await settled(store, gateway)
    await assert_store_consistent(store, audited=expected)
    return statuses


async def event_fuzz(gateway: Gateway, store: Store, api: httpx.AsyncClient,
                     customers: Customers, n: int, derandomize: bool) -> Counter[str]:
    """``n`` generated ``/agent`` events on one admin's socket; how many were refused with
    each code (``ok``: done)."""
    headers = await user_login(store, api, FUZZER, "admin")
    console = socketio.AsyncClient()
    await console.connect(gateway.url, namespaces=["/agent"], transports=["websocket"],
                          auth={"token": headers["Authorization"].split()[1]})
    cases = await asyncio.to_thread(drawn, EVENT_CASES, n, derandomize)
    expected = await audit_counts(store)
    answers: Counter[str] = Counter()
    previous: Any = None
    try:
        for i, (event, data) in enumerate(cases):
            assert console.connected, f"the agent's socket closed after {previous!r}"
            previous = (event, data)
            if i and i % SPEAK_EVERY == 0:
                await customers.speak()
            if i and i % NEW_CONVERSATION_EVERY == 0:
                await customers.add()
            try:
                answer = await console.call(event, real(data, customers.pick(i)),
                                            namespace="/agent", timeout=WAIT)
            except socketio.exceptions.TimeoutError:
                raise AssertionError(f"no answer to {event} {data!r}") from None
            assert isinstance(answer, dict), (event, data, answer)
            if "error" in answer:
                clear_refusal(answer, answer["status"], (event, data))
                answers[answer["error"]] += 1
                continue
            answers["ok"] += 1
            action = audited_as(event, answer)
            if action:
                expected[action] += 1
        assert console.connected  # nothing the fuzz sent closed the agent's socket
    finally:
        await console.disconnect()
    await settled(store, gateway)
    await assert_store_consistent(store, audited=expected)
    return answers


async def test_a_lone_surrogate_in_a_note_or_an_event_is_a_clear_400(
        gateway: Gateway, store: Store, api: httpx.AsyncClient) -> None:
    headers = await agent_login(store, api, "fuzz-agent")
    customer = await Widget(gateway.url).connect()
    try:
        conversation = await customer.started("hello")
    finally:
        await customer.close()
    raw = b'{"text": "note \\ud800 here"}'
    for path in ("notes", "messages"):
        resp = await api.post(f"/api/conversations/{conversation}/{path}", headers={
            **headers, "content-type": "application/json"}, content=raw)
        assert resp.status_code == 400, resp.text
        assert "surrogate" in resp.json()["message"]
    assert await store.list_notes(conversation) == []
    console, _ = await agent_console(gateway, headers, "status")  # the same on /agent
    try:
        for data in ({"conversation_id": "\ud800"},
                     {"conversation_id": conversation, "text": "note \ud800 here"}):
            answer = await console.call("close", data, namespace="/agent", timeout=WAIT)
            assert (answer["status"], answer["error"]) == (400, "bad_request"), answer
            assert "surrogate" in answer["message"]
    finally:
        await console.disconnect()
    assert (await store.get_conversation(conversation)).mode == "bot"


async def test_fuzzed_agent_requests_are_answered_or_refused_clearly(
        gateway: Gateway, store: Store, api: httpx.AsyncClient, customers: Customers) -> None:
    statuses = await http_fuzz(gateway, store, api, customers, 200, derandomize=True)
    assert statuses["200"] + statuses["201"] > 20, statuses  # the fuzz reaches the handlers
    # which refusals a derandomized draw meets follows the OpenAPI document's shape; every
    # right's 403 is checked route by route in test_rights' matrix
    assert {"400", "401", "404"} <= set(statuses), statuses


async def test_fuzzed_agent_events_are_answered_or_refused_clearly(
        gateway: Gateway, store: Store, api: httpx.AsyncClient, customers: Customers) -> None:
    answers = await event_fuzz(gateway, store, api, customers, 200, derandomize=True)
    assert answers["ok"] >= 5 and answers["bad_request"] > 10, answers  # reaches the handlers


@pytest.mark.long
@pytest.mark.timeout(7200)
async def test_fuzzed_agent_requests_and_events_long(
        gateway: Gateway, store: Store, api: httpx.AsyncClient, customers: Customers) -> None:
    started = time.monotonic()
    statuses = await http_fuzz(gateway, store, api, customers, 5_000, derandomize=False)
    answers = await event_fuzz(gateway, store, api, customers, 5_000, derandomize=False)
    print(f"agent fuzz: {sum(statuses.values())} HTTP requests {dict(statuses)}, "
          f"{sum(answers.values())} /agent events {dict(answers)}, "
          f"{time.monotonic() - started:.0f} s")
