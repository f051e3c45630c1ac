"""A short hypothesis fuzz of the agents' API against the real gateway (issue 15): whatever the
body of a note, a message or a decision, the answer is a clear 4xx, never a 5xx; a lone
surrogate gives 400 and stores nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from handoff.store import Store
from tests.gateway.clients import Widget, agent_login
from tests.gateway.clients import api, gateway_store  # noqa: F401 (fixtures)
from tests.gateway.conftest import Gateway

pytestmark = pytest.mark.asyncio

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                     st.text(max_size=50), st.just("\ud800"), st.just("x" * 5000))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
_BODIES = st.one_of(
    st.dictionaries(st.sampled_from(["text", "type", "on", "suggestion", "action", "intent",
                                     "rating", "reply_id", "x"]), _VALUES, max_size=4),
    _VALUES)
_PATHS = ["notes", "messages", "watch", "review", "replies/1/decision", "suggestions/rating",
          "takeover", "handback", "close"]


async def test_a_lone_surrogate_in_a_note_is_a_clear_400(
        gateway: Gateway, store: Store, api: httpx.AsyncClient) -> None:
    headers = await agent_login(store, api, "fuzz-agent")
    customer = await Widget(gateway.url).connect()
    try:
        conversation = await customer.session()
        await customer.say(conversation, "hello")
        await customer.next()
    finally:
        await customer.close()
    raw = b'{"text": "note \\ud800 here"}'
    for path in ("notes", "messages"):
        resp = await api.post(f"/api/conversations/{conversation}/{path}", headers={
            **headers, "content-type": "application/json"}, content=raw)
        assert resp.status_code == 400, resp.text
        assert "surrogate" in resp.json()["message"]
    assert await store.list_notes(conversation) == []


async def test_fuzzed_agent_bodies_never_answer_5xx(
        gateway: Gateway, store: Store, api: httpx.AsyncClient) -> None:
    headers = await agent_login(store, api, "fuzz-agent")
    customer = await Widget(gateway.url).connect()
    try:
        conversation = await customer.session()
    finally:
        await customer.close()
    seen: list[tuple[str, Any, int]] = []

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(_PATHS), body=_BODIES)
    def case(path: str, body: Any) -> None:
        seen.append((path, body, 0))

    case()  # hypothesis draws synchronously; the gateway is called below, in the test's loop
    for path, body, _ in seen:
        content = json.dumps(body).encode()  # \ud800 goes over the wire as an escape
        resp = await api.post(f"/api/conversations/{conversation}/{path}",
                              headers={**headers, "content-type": "application/json"},
                              content=content)
        assert resp.status_code < 500, (path, body, resp.text)
        assert set(resp.json()) >= ({"error", "message"} if resp.status_code >= 400 else set())
    assert len(seen) == 60
