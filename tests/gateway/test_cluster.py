"""What gateway nodes share through Redis (handoff/conversation/cluster.py), on the real Redis
with a key prefix of this test's own; the one-process stand-in beside it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from handoff.conversation import router as r
from handoff.conversation.cluster import JobBusy, LocalCluster, RedisCluster
from handoff.conversation.presence import OpeningHours, Presence
from handoff.conversation.rasa_client import RasaClient
from handoff.conversation.shell import Conversations
from handoff.conversation.waiting import Waiting
from handoff.learning.rollout import Rollout, switch_key
from handoff.store import Conversation, Store
from tests.conftest import free_port
from tests.gateway.conftest import REDIS_URL, redis_reachable
from tests.gateway.test_shell_rows import Quiet

pytestmark = pytest.mark.asyncio
redis = pytest.importorskip("redis")  # the gateway's lock file has it
SECRET = "the nodes' shared secret, 32 bytes or more"


@pytest_asyncio.fixture
async def nodes() -> AsyncIterator[tuple[RedisCluster, RedisCluster]]:
    redis_reachable()
    prefix = f"handoff-test-{uuid.uuid4().hex[:8]}"
    # Redis has held this prefix's keys for long: a lease missing is a node gone (a younger
    # memory is the case of test_no_live_node_is_judged_gone_after_redis_lost_its_keys)
    redis.Redis.from_url(REDIS_URL).set(f"{prefix}:since", "0")
    a = RedisCluster(REDIS_URL, prefix=prefix, node_id="a", lease=2)
    b = RedisCluster(REDIS_URL, prefix=prefix, node_id="b", lease=2)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


async def test_leases_say_who_is_alive_until_a_node_leaves(
    nodes: tuple[RedisCluster, RedisCluster]
) -> None:
    a, b = nodes
    assert await a.alive(["a", "b", "c"]) == {"a", "b"}
    await b.share_presence({"s3": "bob"}, ["bob"])
    await a.share_presence({"s1": "ann", "s2": "bob"}, [])
    # the union: bob's sockets on both nodes, and he is away (marked on b)
    assert await a.presence() == ({"s1": "ann", "s2": "bob", "s3": "bob"}, {"bob"})
    await b.close()  # a clean stop: its lease and presence go at once
    assert await a.alive(["a", "b"]) == {"a"}
    assert await a.presence() == ({"s1": "ann", "s2": "bob"}, set())


async def test_a_node_announces_its_presence_again_when_redis_lost_it(
    nodes: tuple[RedisCluster, RedisCluster]
) -> None:
    """What a Redis restarted without persistence leaves: none of the prefix's keys. Node b's
    next heartbeat takes its lease again and re-announces its presence, with nobody coming or
    going; a share that failed while Redis was away is sent by the next heartbeat too."""
    a, b = nodes
    await b.share_presence({"s3": "bob"}, [])
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.delete(*[key async for key in client.scan_iter(f"{a.prefix}:*")])
        assert await a.presence() == ({}, set())
        await b._beat()  # what its heartbeat task does every third of a lease
        await a._beat()
        assert await a.presence() == ({"s3": "bob"}, set())

        reachable, b.redis = b.redis, redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0")
        try:
            await b.share_presence({"s4": "bob"}, ["bob"])  # Redis away: not shared
        finally:
            await b.redis.aclose()
            b.redis = reachable
        assert await a.presence() == ({"s3": "bob"}, set())
        await b._beat()
        assert await a.presence() == ({"s4": "bob"}, {"bob"})
    finally:
        await client.aclose()


async def test_no_live_node_is_judged_gone_after_redis_lost_its_keys(
    nodes: tuple[RedisCluster, RedisCluster]
) -> None:
    """What a Redis restarted without persistence leaves: no lease at all, until each node
    beats again. Judging a node gone then would take over its Rasa turns and review timers
    while it runs them: node a (whose own lease is gone too) and a node c starting now (Redis's
    memory is younger than a lease) judge nobody gone for a full lease; after it, a node that
    never beat again is gone and b, beating, is not."""
    a, b = nodes
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    c = RedisCluster(REDIS_URL, prefix=a.prefix, node_id="c", lease=2)
    try:
        await client.delete(*[key async for key in client.scan_iter(f"{a.prefix}:*")])
        assert await client.get(f"{a.prefix}:node:b") is None
        assert await a.alive(["b", "gone"]) == {"b", "gone"}
        await c.start()
        assert await c.alive(["b", "gone"]) == {"b", "gone"}
        await a._beat()
        await b._beat()
        assert await a.alive(["b", "gone"]) == {"b", "gone"}  # still within the lease
        while (found := await a.alive(["b", "gone"])) != {"b"}:  # b's heartbeat task beats
            assert found == {"b", "gone"}, found
            await asyncio.sleep(0.1)
        assert await c.alive(["b", "gone"]) == {"b"}
    finally:
        await c.close()
        await client.aclose()


async def test_a_live_nodes_turn_is_not_taken_over_after_redis_lost_its_keys(
    nodes: tuple[RedisCluster, RedisCluster], tmp_path: Path
) -> None:
    """The conversation shells of nodes a and b on one store; b has a customer's turn out
    to a Rasa that never answers. Redis loses every key: a's look at the others' work (what
    it runs every third of a lease) leaves b's turn to b, before and after b beats again.
    Once b stops (its lease deleted), a takes the turn over, after the lease it waits."""
    a, b = nodes

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        writer.close()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    rasa = RasaClient(f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}", "t",
                      timeout=120)
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")
    await store.migrate()
    shell_a = Conversations(store, rasa, Quiet(), cluster=a)
    shell_b = Conversations(store, rasa, Quiet(), cluster=b)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await shell_b.open("c")
        await shell_b.customer_message("c", "where is my order 100002?", {})
        conv = await store.get_conversation("c")
        assert conv.node_id == "b" and conv.state is not None and conv.state["turn"]
        assert await shell_a.adopt_from_gone() == 0  # b is alive

        await client.delete(*[key async for key in client.scan_iter(f"{a.prefix}:*")])
        assert await shell_a.adopt_from_gone() == 0  # b's lease is gone, b is not
        await b._beat()
        await a._beat()
        assert await shell_a.adopt_from_gone() == 0
        assert (await store.get_conversation("c")).node_id == "b"

        await b.close()  # b stops: its lease goes at once, its turn is a's after the wait
        while not await shell_a.adopt_from_gone():
            assert (await store.get_conversation("c")).node_id == "b"
            await asyncio.sleep(0.1)
        conv = await store.get_conversation("c")
        assert (conv.node_id, conv.queued, conv.queue_reason) == (None, True,
                                                                  "rasa_unavailable")
    finally:
        await shell_a.close()
        await shell_b.close()
        await client.aclose()
        await rasa.close()
        await store.close()
        silent.close()


class ListCountingStore(Store):
    """The real store, counting its reads of conversation lists (the waiting queue's)."""

    lists = 0

    async def list_conversations(self, *args: Any, **kwargs: Any) -> list[Conversation]:
        self.lists += 1
        return await super().list_conversations(*args, **kwargs)


async def test_a_status_change_reads_the_queue_only_when_the_conversation_had_waited(
    nodes: tuple[RedisCluster, RedisCluster], tmp_path: Path
) -> None:
    """With several nodes, a change of status reads the waiting queue (to tell the waiting
    customers their places) only when the conversation was in it before: an agent putting a
    bot conversation in review moves nobody's place; taking a queued one over does."""
    a, _ = nodes
    store = ListCountingStore(f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")
    await store.migrate()
    rasa = RasaClient(f"http://127.0.0.1:{free_port()}", "t")  # no step here calls Rasa
    shell = Conversations(store, rasa, Quiet(), cluster=a)
    waiting = Waiting(shell, store, Presence(), OpeningHours.parse("", "UTC"), 120.0)
    shell.status_listeners.append(waiting.status_changed)
    try:
        await shell.open("bot-conversation")
        before = store.lists
        state = await shell.apply("bot-conversation", r.SetReview(agent_id="ann", on=True))
        assert state.mode is r.Mode.REVIEW
        assert store.lists == before  # nobody's place moved: the queue was not read

        await shell.open("queued")
        await shell.apply("queued", r.TriageFlag(detail="a rule", action=r.TriageAction.HUMAN,
                                                 by_rule=True))
        assert (await store.get_conversation("queued")).queued
        before = store.lists
        await shell.apply("queued", r.TakeOver(agent_id="bob"))
        assert store.lists > before  # it left the queue: the others' places were read again
    finally:
        await waiting.close()
        await shell.close()
        await rasa.close()
        await store.close()


async def test_a_conversation_lock_orders_steps_across_nodes(
    nodes: tuple[RedisCluster, RedisCluster]
) -> None:
    a, b = nodes
    order: list[str] = []

    async def step(node: RedisCluster, name: str) -> None:
        async with node.conversation_lock("c1"):
            order.append(f"{name} in")
            await asyncio.sleep(0.05)
            order.append(f"{name} out")

    await asyncio.gather(step(a, "1"), step(b, "2"), step(a, "3"))
    pairs = [(order[i], order[i + 1]) for i in range(0, 6, 2)]  # never two inside at once
    assert sorted(pairs) == [("1 in", "1 out"), ("2 in", "2 out"), ("3 in", "3 out")]
    async with a.conversation_lock("c2"), b.conversation_lock("c3"):
        pass  # other conversations do not wait


async def test_a_job_runs_on_one_node_at_a_time_and_a_claim_is_taken_once(
    nodes: tuple[RedisCluster, RedisCluster]
) -> None:
    a, b = nodes
    lease = await a.claim_job("deploy", "a deploy")
    with pytest.raises(JobBusy) as busy:
        await b.claim_job("deploy", "a deploy")
    assert busy.value.status == 409
    assert busy.value.to_dict() == {"error": "job_busy", "node": "a",
                                    "message": "a deploy is already running on gateway node a"}
    await asyncio.sleep(1.5)  # past a third of the lease: renewed, still held
    with pytest.raises(JobBusy):
        await b.claim_job("deploy", "a deploy")
    await lease.release()
    await (await b.claim_job("deploy", "a deploy")).release()
    assert [await a.once("offer:c1", 5), await b.once("offer:c1", 5)] == [True, False]


async def test_a_jobs_state_shows_on_every_node_and_as_failed_once_its_node_is_gone(
    nodes: tuple[RedisCluster, RedisCluster]
) -> None:
    a, b = nodes
    assert await b.job_state("deploy") is None
    running = {"model_id": "m2", "state": "running", "started_at": "2026-12-07T03:00:00+00:00"}
    await a.put_job_state("deploy", running)
    assert await b.job_state("deploy") == {**running, "node": "a"}
    await a.close()  # its lease goes: a deploy it ran cannot end any more
    assert await b.job_state("deploy") == {
        **running, "node": "a", "state": "failed",
        "message": "gateway node a stopped during it; it did not finish"}
    await b.put_job_state("deploy", {**running, "state": "succeeded"})
    assert (await b.job_state("deploy") or {})["state"] == "succeeded"


async def _held_server() -> tuple[asyncio.Server, asyncio.Event, str]:
    """An HTTP server that answers ``{}`` to each request once the event is set."""
    release = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, release, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_deploys_switch_waits_for_every_node_to_drain_and_names_the_silent_ones(
    nodes: tuple[RedisCluster, RedisCluster]
) -> None:
    """Node a deploys: node b switches at once and acknowledges once its request on the old
    server ended; node c is alive but never reads the switch (stalled): it is named once the
    drain timeout passed. Once c is gone, a switch waits for nobody but b."""
    a, b = nodes
    c = RedisCluster(REDIS_URL, prefix=a.prefix, node_id="c", lease=2)
    await c.start()
    server, release, old = await _held_server()
    deploying = Rollout(a, RasaClient(old, "t"), None, secret=SECRET)
    other = Rollout(b, RasaClient(old, "t"), None, secret=SECRET)
    other.start()
    try:
        await asyncio.sleep(0.2)  # b reads the stream from its end
        on_old = asyncio.create_task(other.rasa.status())  # b's request on the old server
        await asyncio.sleep(0.2)
        asyncio.get_running_loop().call_later(0.5, release.set)
        started = time.monotonic()
        assert await deploying.switch_others("http://127.0.0.1:9/", drain=1.5) == ["c"]
        assert 1.5 <= time.monotonic() - started < 4
        assert other.rasa.base_url == "http://127.0.0.1:9"
        assert await on_old == {}  # it finished where it was
        [key] = [k async for k in a.redis.scan_iter(a.key("rasa", "switch", "*"))]
        assert await a.redis.hgetall(key) == {"b": '{"drained": true}'}

        await c.close()
        started = time.monotonic()
        assert await deploying.switch_others("http://127.0.0.1:10", drain=5) == []
        assert time.monotonic() - started < 1  # b acknowledged at once: nothing ran there
        assert other.rasa.base_url == "http://127.0.0.1:10"

        # a switch to what is not an http(s) URL with a host is not followed, nor acknowledged
        for bad in ("ftp://127.0.0.2:5005", "127.0.0.2:5005", "http://:5005"):
            assert await deploying.switch_others(bad, drain=0.2) == ["b"], bad
        assert other.rasa.base_url == "http://127.0.0.1:10"
        assert await deploying.switch_others("http://127.0.0.2:11", drain=5) == []
        assert other.rasa.base_url == "http://127.0.0.2:11"  # any host the supervisor names

        # whoever writes to Redis without the nodes' secret cannot switch them: an entry
        # unsigned, signed with another secret, or signed but old (written again) is ignored
        stream = a.key("rasa", "switches")

        def entry(secret: str, at: float) -> dict[str, str]:
            message = json.dumps({"id": uuid.uuid4().hex, "url": "http://127.0.0.3:12",
                                  "node": "a", "drain": 0, "at": at})
            sig = hmac.new(switch_key(secret), message.encode(), hashlib.sha256).hexdigest()
            return {"m": message, "sig": sig}

        forged = [{"m": entry(SECRET, time.time())["m"]}, entry("x" * 40, time.time()),
                  entry(SECRET, time.time() - 700), {"m": "{", "sig": "0"}]
        for fields in forged:
            await a.redis.xadd(stream, fields)
        await asyncio.sleep(0.5)
        assert other.rasa.base_url == "http://127.0.0.2:11"
        await a.redis.xadd(stream, entry(SECRET, time.time()))  # the same, signed and recent
        for _ in range(50):
            if other.rasa.base_url == "http://127.0.0.3:12":
                break
            await asyncio.sleep(0.05)
        assert other.rasa.base_url == "http://127.0.0.3:12"
    finally:
        await other.close()
        await other.rasa.close()
        await deploying.rasa.close()
        server.close()
        with contextlib.suppress(Exception):
            await c.close()


async def test_one_process_is_alone() -> None:
    local = LocalCluster("me")
    assert await local.alive(["me", "other"]) == {"me"}
    assert await local.once("x", 1) and await local.once("x", 1)
    await local.share_presence({"s1": "ann"}, ["ann"])
    assert await local.presence() == ({"s1": "ann"}, {"ann"})
    await local.put_job_state("deploy", {"state": "running"})
    assert await local.job_state("deploy") is None  # its own job is the only one
