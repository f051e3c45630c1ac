"""Two real Rasa servers behind one gateway (``HANDOFF_RASA_URL=a,b``), sharing one SQLite
tracker store and the local Redis lock store. A conversation whose server hangs (SIGSTOP) during
its turn is told and queued, then answered by the other server at once; a conversation whose
server is killed (SIGKILL) carries on on the other with its whole tracker. ``long``: about 90 s
here, most of it the two servers loading their model (`pytest -m long`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import requests

from bench.load import Node, System, run_load
from bot.processes import Service
from bot.serve import Stack
from handoff.conversation.rasa_pool import ranked
from handoff.conversation.customer_protocol import NOTICE_TEXTS, RASA_DOWN_TEXT
from handoff.conversation.router import Notice
from tests.conftest import RASA_BIN, free_port
from tests.gateway.clients import WAIT, Widget, admin_login
from tests.gateway.conftest import Gateway, _start_gateway, _stop

pytestmark = [pytest.mark.asyncio, pytest.mark.long]


class Pool:
    def __init__(self, stack: Stack, second: Service, urls: list[str]) -> None:
        self.stack, self.second, self.urls = stack, second, urls

    def pid(self, url: str) -> int:
        server = self.stack.services[-1] if url == self.stack.rasa_url else self.second
        assert server.process is not None and server.process.poll() is None
        return server.process.pid


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, model_path: Any, shop_db: Any,
         ) -> Iterator[Pool]:
    tmp = tmp_path_factory.mktemp("rasa-pool")
    actions_port, port_a, port_b = free_port(), free_port(), free_port()
    endpoints = tmp / "endpoints.yml"
    endpoints.write_text(
        f'action_endpoint:\n  url: "http://127.0.0.1:{actions_port}/webhook"\n'
        f'tracker_store:\n  type: bot.tracker_store.SQLTrackerStore\n  dialect: "sqlite"\n  db: "{tmp / "tracker.db"}"\n'
        'lock_store:\n  type: "redis"\n  url: "127.0.0.1"\n  port: 6379\n  db: 0\n'
        f'  key_prefix: "pool{uuid.uuid4().hex[:8]}"\n')
    stack = Stack(rasa_bin=RASA_BIN, model=model_path, rasa_port=port_a,
                  actions_port=actions_port, token=secrets.token_urlsafe(16), log_dir=tmp,
                  endpoints=endpoints, env={"SHOP_DB_PATH": str(shop_db),
                                            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
                                            "TF_CPP_MIN_LOG_LEVEL": "2"})
    second = stack.rasa_service(port_b, model_path)
    second.start()  # loads beside the first
    try:
        stack.start(timeout=400)
        second.wait_until_ready(time.monotonic() + 400)
        yield Pool(stack, second, [stack.rasa_url, f"http://127.0.0.1:{port_b}"])
    finally:
        second.stop()
        stack.stop()


@pytest.fixture(scope="module")
def gateway(pool: Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _start_gateway(tmp_path_factory.mktemp("pool-gateway"), ",".join(pool.urls),
                        pool.stack.token, {"HANDOFF_RASA_PROBE_TIMEOUT": "1.5"})
    yield gw
    _stop(gw.process)


@contextlib.asynccontextmanager
async def _admin_api(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway's API as its admin (each server's state is in /api/health/detail)."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=WAIT) as client:
        client.headers.update(await admin_login(gateway, client))
        yield client


async def _health(api: httpx.AsyncClient) -> dict[str, Any]:
    resp = await api.get("/api/health/detail")
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


async def _until(api: httpx.AsyncClient, check: Any) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while not check(health := await _health(api)):
        assert time.monotonic() < deadline, health
        await asyncio.sleep(0.2)
    return health


async def _reply(widget: Widget) -> str:
    """The next bot text; a notice of an outage before it fails the test."""
    while True:
        name, data = await widget.next()
        assert name != "handoff_notice", data
        if name == "bot_uttered" and "text" in data:
            return str(data["text"])


def _said(url: str, token: str, sender: str) -> list[str]:
    resp = requests.get(f"{url}/conversations/{sender}/tracker",
                        params={"token": token, "include_events": "APPLIED"}, timeout=WAIT)
    resp.raise_for_status()
    return [e["text"] for e in resp.json()["events"] if e["event"] == "user"]


async def _states(api: httpx.AsyncClient) -> dict[str, str]:
    return {s["url"]: s["state"] for s in (await _health(api))["rasa"]["servers"]}


async def _calls(api: httpx.AsyncClient, url: str) -> int:
    admitted: int = (await _health(api))["rasa_calls"].get(url, {}).get("admitted", 0)
    return admitted


async def test_a_swarm_spreads_over_both_servers_and_the_trackers_hold_what_it_saw(
    pool: Pool, gateway: Gateway
) -> None:
    """The short version of ``bench/load.py --rasa 2``: 20 customers × 3 messages at once,
    two of them reviewed. Correctness goals only, never timings."""
    async with _admin_api(gateway) as api:
        await _until(api, lambda h: all(
            s["state"] in ("up", "slow") for s in h["rasa"]["servers"]))
    system = System(nodes=[Node(gateway.url, gateway.process.pid)], rasa_url=pool.urls[0],
                    rasa_token=pool.stack.token, admin_password=gateway.admin_password,
                    rasa_servers=[(url, pool.pid(url)) for url in pool.urls],
                    rasa_names=[pool.urls])
    report = await run_load(system, customers=20, messages=3, rate=0, review_share=0.1,
                            deadline=300)
    print("\n".join(report.lines()))
    assert report.queued_for_load == [] and report.unanswered == 0
    assert report.mismatched == [] and report.agent_failures == []
    assert report.human_queue == 0
    calls = list(report.rasa_calls.values())
    assert len(calls) == 2 and all(calls), report.rasa_calls  # both servers served turns
    assert sum(calls) >= 20 * 3  # every turn (and the approved replies' continuations)


async def test_a_turn_out_when_its_server_hangs_is_answered_by_the_other_server(
    pool: Pool, gateway: Gateway
) -> None:
    async with _admin_api(gateway) as api:
        await _until(api, lambda h: all(
            s["state"] in ("up", "slow") for s in h["rasa"]["servers"]))
        customer = await Widget(gateway.url).connect()
        cid = await customer.session()
        home, other = ranked(cid, pool.urls)
        pid = pool.pid(home)
        try:
            await customer.say(cid, "hi")
            assert (await _reply(customer)).startswith("Hi, I'm")
            os.killpg(pid, signal.SIGSTOP)
            await customer.say(cid, "where is my order 100002?")  # sent to the stopped one
            seen: list[tuple[str, Any]] = []
            while not (seen and seen[-1][0] == "bot_uttered"
                       and "100002" in seen[-1][1].get("text", "")):
                seen.append(await customer.next())
            assert (await _states(api))[home] == "down"
            notices = [data for name, data in seen if name == "handoff_notice"]
            assert notices == [  # told, and back with the assistant as soon as it was applied
                {"kind": "handoff_queued", "text": RASA_DOWN_TEXT},
                {"kind": "bot_back", "text": NOTICE_TEXTS[Notice.BOT_BACK]}]
            assert await _calls(api, other) >= 1
            assert _said(other, pool.stack.token, cid) == ["hi", "where is my order 100002?"]
        finally:
            os.killpg(pid, signal.SIGCONT)
            await customer.close()
        await _until(api, lambda h: all(  # the stopped server is found up again
            s["state"] in ("up", "slow") for s in h["rasa"]["servers"]))


async def test_a_conversation_carries_on_on_the_other_server_when_its_own_is_killed(
    pool: Pool, gateway: Gateway
) -> None:
    async with _admin_api(gateway) as api:
        health = await _until(api, lambda h: all(
            s["state"] in ("up", "slow") for s in h["rasa"]["servers"]))
        assert [s["url"] for s in health["rasa"]["servers"]] == pool.urls
        customer = await Widget(gateway.url).connect()
        try:
            cid = await customer.session()
            home, other = ranked(cid, pool.urls)
            before = {url: await _calls(api, url) for url in pool.urls}
            await customer.say(cid, "hi")
            assert (await _reply(customer)).startswith("Hi, I'm")
            await customer.say(cid, "where is my order 100002?")
            assert "100002" in await _reply(customer)
            assert await _calls(api, home) == before[home] + 2  # sticky
            assert await _calls(api, other) == before[other]

            os.killpg(pool.pid(home), signal.SIGKILL)
            health = await _until(api, lambda h: {s["url"]: s["state"] for s in
                                                  h["rasa"]["servers"]}[home] == "down")
            assert health["rasa"]["state"] in ("up", "slow")  # the pool is not down

            await customer.say(cid, "what is your return policy?")
            assert await _reply(customer)
            assert await _calls(api, other) == before[other] + 1
            assert await _calls(api, home) == before[home] + 2
            # one tracker: the other server carried on the conversation the first one began
            assert _said(other, pool.stack.token, cid) == [
                "hi", "where is my order 100002?", "what is your return policy?"]
        finally:
            await customer.close()
