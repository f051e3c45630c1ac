"""Several gateway nodes on one PostgreSQL store and one Redis (docs/deploy.md).

Real processes (``python -m handoff``, as tests/gateway/conftest.py starts one) on loopback
ports, sharing a fresh PostgreSQL database and a Redis key prefix of their own, in front of the
session's real Rasa: a customer connected to node A and an agent on node B (watch, review,
edit, takeover, handback); two agents on the two nodes racing for one conversation; a review
timeout that fires once; a node that starts while another has a Rasa call out, and the work of
a node that is killed taken over by one alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import sqlalchemy as sa
import socketio

from bot.serve import Stack
from handoff.errors import NotFound
from handoff.store import Store
from tests.gateway.clients import WAIT, Widget, agent_login
from tests.gateway.conftest import (PG_ADMIN_DSN, REDIS_URL, Gateway, _pg_admin, _start_gateway,
                                    _stop, redis_reachable)

pytestmark = pytest.mark.asyncio
redis = pytest.importorskip("redis")  # the gateway's lock file has it

REVIEW_TIMEOUT = 3
OFFER_AFTER = 2
LEASE = 3  # seconds: a killed node is found gone within about this


@dataclass
class Cluster:
    a: Gateway  # triage's policy rules on (an unowned review and its timer)
    b: Gateway
    env: dict[str, str]
    database_url: str
    prefix: str
    tmp: Path


@pytest.fixture(scope="module")
def cluster(rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Nodes A and B on a new PostgreSQL database and a Redis prefix of their own."""
    redis_reachable()
    name, database_url = fresh_database("handoff_nodes")
    prefix = f"handoff-test-{uuid.uuid4().hex[:8]}"
    tmp = tmp_path_factory.mktemp("nodes")
    env = {"HANDOFF_DATABASE_URL": database_url, "HANDOFF_REDIS_URL": REDIS_URL,
           "HANDOFF_REDIS_PREFIX": prefix, "HANDOFF_NODE_LEASE": str(LEASE),
           "HANDOFF_REVIEW_TIMEOUT": str(REVIEW_TIMEOUT),
           "HANDOFF_QUEUE_OFFER_AFTER": str(OFFER_AFTER)}
    started: list[Gateway] = []
    try:
        (tmp / "a").mkdir()
        started.append(_start_gateway(tmp / "a", rasa_stack.rasa_url, rasa_stack.token, {
            **env, "HANDOFF_NODE_ID": "node-a", "HANDOFF_TRIAGE_ENABLED": "true",
            # only the policy rules decide here: the risk score never crosses these
            "HANDOFF_TRIAGE_THRESHOLDS": "fixed", "HANDOFF_TRIAGE_REVIEW_THRESHOLD": "1",
            "HANDOFF_TRIAGE_HUMAN_THRESHOLD": "1"}))
        (tmp / "b").mkdir()
        started.append(_start_gateway(tmp / "b", rasa_stack.rasa_url, rasa_stack.token,
                                      {**env, "HANDOFF_NODE_ID": "node-b"}))
        yield Cluster(started[0], started[1], env, database_url, prefix, tmp)
    finally:
        stop_nodes(started, prefix, name)


def fresh_database(stem: str) -> tuple[str, str]:
    """A new PostgreSQL database named ``<stem>_<random>``: its name and its asyncpg URL."""
    name = f"{stem}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(PG_ADMIN_DSN, f'CREATE DATABASE "{name}"'))
    return name, sa.make_url(PG_ADMIN_DSN).set(
        drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


def stop_nodes(started: list[Gateway], prefix: str, database: str) -> None:
    """Stop the gateway nodes, then remove their Redis keys and their PostgreSQL database."""
    for gateway in started:
        _stop(gateway.process)
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    asyncio.run(_pg_admin(PG_ADMIN_DSN, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@pytest_asyncio.fixture
async def store(cluster: Cluster) -> AsyncIterator[Store]:
    s = Store(cluster.database_url)
    yield s
    await s.close()


class Console:
    """An agent's console on one node: every ``/agent`` push, in order."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient()
        self.pushed: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.sio.on("*", self._any, namespace="/agent")

    async def _any(self, event: str, data: Any = None) -> None:
        await self.pushed.put((event, data))

    async def connect(self, url: str, headers: dict[str, str]) -> Console:
        await self.sio.connect(url, namespaces=["/agent"], transports=["websocket"],
                               auth={"token": headers["Authorization"].split()[1]})
        return self

    async def until(self, event: str, conversation_id: str,
                    **match: Any) -> dict[str, Any]:
        """The next ``event`` about the conversation whose fields have the ``match`` values."""
        while True:
            name, data = await asyncio.wait_for(self.pushed.get(), WAIT)
            if name == event and isinstance(data, dict) and data.get(
                    "conversation_id") == conversation_id and all(
                    data.get(k) == v for k, v in match.items()):
                return data


async def _bot_text(widget: Widget) -> str:
    """The next bot reply the customer sees (notices from the system skipped)."""
    while True:
        event, data = await widget.next()
        if event == "bot_uttered" and "sender" not in (data.get("metadata") or {}):
            return str(data["text"])


@contextlib.asynccontextmanager
async def _agent_on_b(cluster: Cluster, store: Store, username: str
                      ) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], Console,
                                               Widget]]:
    """An agent logged in on node B with their console there, and a customer's widget on A."""
    async with httpx.AsyncClient(base_url=cluster.b.url, timeout=WAIT) as api_b:
        headers = await agent_login(store, api_b, username)
        console = await Console().connect(cluster.b.url, headers)
        widget = await Widget(cluster.a.url).connect()
        try:
            yield api_b, headers, console, widget
        finally:
            await widget.close()
            await console.sio.disconnect()


async def test_a_customer_on_node_a_and_an_agent_on_node_b(
    cluster: Cluster, store: Store
) -> None:
    async with _agent_on_b(cluster, store, "nina") as (api_b, nina, console, widget):
        cid = await widget.session()
        await widget.say(cid, "where is my order 100002?")
        first = await _bot_text(widget)
        # watch: B's agent sees the customer's message and the bot's reply made on A
        said = await console.until("message", cid, sender="customer")
        assert said["text"] == "where is my order 100002?"
        assert (await console.until("message", cid, sender="bot"))["text"] == first

        resp = await api_b.post(f"/api/conversations/{cid}/review", headers=nina,
                                json={"on": True})
        assert resp.status_code == 200, resp.text
        await widget.say(cid, "what is your return policy?")
        held = await console.until("pending_reply", cid)  # review: held on A, seen on B
        assert held["owner"] == "nina"
        assert held["reply"]["action"]["name"] == "utter_refund_policy"
        await widget.nothing()
        edited = "You can return most items within 60 days of delivery."
        resp = await api_b.post(
            f"/api/conversations/{cid}/replies/{held['reply']['reply_id']}/decision",
            headers=nina, json={"type": "edit", "text": edited})
        assert resp.status_code == 200, resp.text
        assert await widget.next() == ("bot_uttered", {"text": edited})  # edit: to A

        resp = await api_b.post(f"/api/conversations/{cid}/takeover", headers=nina)
        assert resp.status_code == 200, resp.text
        assert (await widget.next())[1]["kind"] == "agent_joined"
        assert (await widget.next())[0] == "bot_uttered"  # the notice's text
        resp = await api_b.post(f"/api/conversations/{cid}/messages", headers=nina,
                                json={"text": "Hello, I'm Nina from node B."})
        assert resp.status_code == 200, resp.text
        assert await widget.next() == ("bot_uttered", {
            "text": "Hello, I'm Nina from node B.",
            "metadata": {"sender": "human", "agent": "nina"}})
        await widget.say(cid, "thanks Nina")
        heard = await console.until("message", cid, sender="customer")
        assert heard["text"] == "thanks Nina"  # the customer on A, heard on B

        resp = await api_b.post(f"/api/conversations/{cid}/handback", headers=nina)
        assert resp.status_code == 200, resp.text
        await widget.say(cid, "thanks!")
        assert await _bot_text(widget) == (
            "You're welcome! Is there anything else I can help you with?")
        conv = await store.get_conversation(cid)
        assert (conv.mode, conv.owner, conv.node_id) == ("bot", None, None)


async def test_two_agents_on_two_nodes_race_for_one_conversation(
    cluster: Cluster, store: Store
) -> None:
    async with httpx.AsyncClient(base_url=cluster.a.url, timeout=WAIT) as api_a, \
            httpx.AsyncClient(base_url=cluster.b.url, timeout=WAIT) as api_b:
        olga = await agent_login(store, api_a, "olga")
        paul = await agent_login(store, api_b, "paul")
        for _ in range(3):
            widget = await Widget(cluster.a.url).connect()
            try:
                cid = await widget.started()
                answers = await asyncio.gather(
                    api_a.post(f"/api/conversations/{cid}/takeover", headers=olga),
                    api_b.post(f"/api/conversations/{cid}/takeover", headers=paul))
                codes = sorted(a.status_code for a in answers)
                assert codes == [200, 409], [a.text for a in answers]
                won = next(a for a in answers if a.status_code == 200)
                lost = next(a for a in answers if a.status_code == 409)
                owner = won.json()["conversation"]["owner"]
                assert lost.json() == {"error": "already_owned", "owner": owner,
                                       "message": f"conversation is owned by {owner}"}
                conv = await store.get_conversation(cid)
                assert (conv.mode, conv.owner) == ("human", owner)
            finally:
                await widget.close()


async def test_a_logout_on_one_node_closes_the_consoles_on_the_others(
    cluster: Cluster, store: Store
) -> None:
    async with httpx.AsyncClient(base_url=cluster.b.url, timeout=WAIT) as api_b:
        sara = await agent_login(store, api_b, "sara")
        console_a = await Console().connect(cluster.a.url, sara)
        await asyncio.sleep(0.5)  # node A has shared its presence
        presence = (await api_b.get("/api/presence", headers=sara)).json()["presence"]
        assert "sara" in presence["logged_in"]  # her console is on A: B knows of it
        resp = await api_b.post("/api/logout", headers=sara)
        assert resp.status_code == 200, resp.text
        for _ in range(100):
            if not console_a.sio.connected:
                break
            await asyncio.sleep(0.1)
        assert not console_a.sio.connected
        [entry] = [e for e in await store.list_audit(actor="sara") if e.action == "logout"]
        assert entry.details == {"sockets": 1}


async def test_an_agent_on_node_b_counts_for_a_customer_waiting_on_a_who_is_offered_once(
    cluster: Cluster, store: Store
) -> None:
    """Presence is the union over the nodes: with an agent logged in on B, the customer who asks
    for a person on A is not told "nobody is available"; after the wait the offer comes once,
    though A's timer and B's look at the due offers both find it due."""
    async with _agent_on_b(cluster, store, "uma") as (api_b, uma, _, widget):
        presence = (await api_b.get("/api/presence", headers=uma)).json()["presence"]
        assert "uma" in presence["available"]
        cid = await widget.session()
        await widget.say(cid, "I want to talk to a human")
        seen: list[tuple[str, Any]] = []
        while not seen or seen[-1][0] != "handoff_offer":  # after the wait
            seen.append(await widget.next())
        with contextlib.suppress(asyncio.TimeoutError):
            while True:  # and all that comes while B looks for due offers twice more
                seen.append(await widget.next(timeout=2 * LEASE / 3 + 1))
        offers = [data for event, data in seen if event == "handoff_offer"]
        assert [o["reason"] for o in offers] == ["long_wait"], seen
        conv = await store.get_conversation(cid)
        assert (conv.queued, conv.queue_reason) == (True, "policy_rule")  # A's rules: human
        told = [m for m in await store.list_messages(cid) if (m.payload or {}).get("offer")]
        assert [m.payload for m in told] == [{"offer": "long_wait"}]


async def test_a_review_timeout_fires_once(cluster: Cluster, store: Store) -> None:
    """A rule holds the reply for any agent (an unowned review, its timer on node A); an agent
    on B watches. When the timeout passes the customer gets the reply once, the store has it
    once, and the conversation's node is cleared."""
    async with _agent_on_b(cluster, store, "rita") as (_, _, console, widget):
        cid = await widget.started()
        await widget.say(cid, "please delete my account")
        held = await console.until("pending_reply", cid)
        assert (held["owner"], held["release_in"]) == (None, REVIEW_TIMEOUT)
        assert (await store.get_conversation(cid)).node_id == "node-a"
        text = await _bot_text(widget)  # released after the timeout
        await asyncio.sleep(2 * LEASE / 3 + 0.5)  # B looked at the nodes' work twice more
        assert widget.events.empty(), widget.events.get_nowait()
        sent = [m for m in await store.list_messages(cid)
                if m.sender == "bot" and m.text == text]
        assert len(sent) == 1
        conv = await store.get_conversation(cid)
        assert (conv.mode, conv.node_id) == ("review", None)
        assert conv.state is not None and conv.state["turn"] is None


async def test_a_node_starting_leaves_a_live_nodes_turn_and_takes_over_a_killed_ones(
    cluster: Cluster, store: Store, rasa_stack: Stack
) -> None:
    """Node S talks to a Rasa that never answers, so its customer's turn stays out. Node T
    starting does not fail it (S is alive); once S is killed, one of the nodes alive finds it
    gone within the lease and queues the customer, who is told."""
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        writer.close()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    silent_url = f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"
    nodes: list[Gateway] = []
    try:
        (cluster.tmp / "s").mkdir()
        s = await asyncio.to_thread(_start_gateway, cluster.tmp / "s", silent_url,
                                    rasa_stack.token, {
                                        **cluster.env, "HANDOFF_NODE_ID": "node-s",
                                        "HANDOFF_RASA_PROBE_INTERVAL": "0"})
        nodes.append(s)
        widget = await Widget(s.url).connect()
        cid = await widget.session()
        await widget.say(cid, "where is my order 100002?")
        conv = None
        for _ in range(600):  # the message is stored and its Rasa call is out
            with contextlib.suppress(NotFound):  # made at the first message: not yet
                conv = await store.get_conversation(cid)
            if conv is not None and conv.state and conv.state["turn"]:
                break
            await asyncio.sleep(0.05)
        assert conv is not None and conv.node_id == "node-s", (conv, s.log_tail())
        call_id = conv.state["turn"]["call_id"] if conv.state else None
        assert call_id == 1

        (cluster.tmp / "t").mkdir()
        nodes.append(await asyncio.to_thread(_start_gateway, cluster.tmp / "t",
                                             rasa_stack.rasa_url, rasa_stack.token,
                                             {**cluster.env, "HANDOFF_NODE_ID": "node-t"}))
        await asyncio.sleep(LEASE / 3 + 0.5)  # T has looked at the others' work
        conv = await store.get_conversation(cid)
        assert (conv.node_id, conv.queued) == ("node-s", False), (
            conv, s.log_tail(), nodes[1].log_tail())
        assert conv.state is not None and conv.state["turn"]["call_id"] == 1

        os.killpg(s.process.pid, signal.SIGKILL)  # no goodbye: its lease runs out
        s.process.wait(timeout=10)
        await widget.close()
        for _ in range(int((LEASE * 3 + 5) / 0.1)):
            conv = await store.get_conversation(cid)
            if conv.queued:
                break
            await asyncio.sleep(0.1)
        assert (conv.queued, conv.queue_reason, conv.node_id) == (
            True, "rasa_unavailable", None), (conv, nodes[1].log_tail(), cluster.a.log_tail())
        assert conv.state is not None and conv.state["turn"] is None
        messages = await store.list_messages(cid)  # the notice is stored with the step
        assert [m.sender for m in messages][:2] == ["customer", "system"]
        # one of the nodes alive took it over (each looks), and said so in its log
        took = [gw for gw in (cluster.a, cluster.b, nodes[1])
                if "gateway node node-s stopped" in gw.log_path.read_text()]
        assert len(took) == 1, [gw.log_tail() for gw in (cluster.a, cluster.b, nodes[1])]
    finally:
        for node in nodes:
            _stop(node.process)
        silent.close()

