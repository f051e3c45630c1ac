"""handoff.conversation.rasa_pool: which Rasa server a conversation's requests go to — sticky,
spread, moved off a server its probe finds down, and the pool down only when every server is —
with real probes against real sockets (a server that answers ``/status``, one that refuses)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from handoff.conversation.rasa_client import RasaClient
from handoff.conversation.rasa_pool import RasaPool, ranked
from handoff.settings import SettingsError, load_settings
from tests.conftest import free_port

STATUS = b'{"model_id": "m"}'


async def _status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(STATUS)).encode() + b"\r\nConnection: close\r\n\r\n" + STATUS)
    await writer.drain()
    writer.close()


@pytest_asyncio.fixture
async def rasa_up() -> AsyncIterator[Callable[[], Awaitable[tuple[str, asyncio.Server]]]]:
    servers: list[asyncio.Server] = []

    async def start() -> tuple[str, asyncio.Server]:
        server = await asyncio.start_server(_status, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", server

    yield start
    for server in servers:
        server.close()


def _pool(rasa: RasaClient, urls: list[str]) -> RasaPool:
    return RasaPool(rasa, urls, interval=0, timeout=1, slow=1, failures=1)


async def _probe(pool: RasaPool) -> dict[str, str]:
    for health in pool.healths.values():
        await health.probe()
    return {url: h.state for url, h in pool.healths.items()}


def test_rendezvous_is_sticky_spreads_and_moves_only_the_servers_own() -> None:
    servers = [f"http://rasa-{n}:5005" for n in range(3)]
    conversations = [f"conv-{n}" for n in range(600)]
    first = {c: ranked(c, servers)[0] for c in conversations}
    assert first == {c: ranked(c, list(reversed(servers)))[0] for c in conversations}
    assert all(n > 150 for n in Counter(first.values()).values())  # about 200 each
    without = {c: ranked(c, servers[1:])[0] for c in conversations}
    assert {c for c in conversations if without[c] != first[c]} == {
        c for c in conversations if first[c] == servers[0]}  # only the removed server's move


@pytest.mark.asyncio
async def test_a_conversation_sticks_to_a_healthy_server_and_moves_when_it_is_down(
    rasa_up: Callable[[], Awaitable[tuple[str, asyncio.Server]]]
) -> None:
    (a, server_a), (b, _) = await rasa_up(), await rasa_up()
    async with RasaClient(a, "t", pool=[a, b]) as rasa:
        pool = _pool(rasa, [a, b])
        assert await _probe(pool) == {a: "up", b: "up"}
        on_a = next(c for c in (f"conv-{n}" for n in range(100)) if ranked(c, [a, b])[0] == a)
        on_b = next(c for c in (f"conv-{n}" for n in range(100)) if ranked(c, [a, b])[0] == b)
        assert [rasa.server_for(on_a) for _ in range(3)] == [a, a, a]  # routed by the pool
        assert rasa.server_for(on_b) == b

        server_a.close()
        await server_a.wait_closed()
        assert await _probe(pool) == {a: "down", b: "up"}
        assert not pool.down and pool.as_json()["state"] == "up"
        assert rasa.server_for(on_a) == b and rasa.server_for(on_b) == b
        assert [s["state"] for s in pool.as_json()["servers"]] == ["down", "up"]
        assert "cannot connect" in (pool.error or "")


@pytest.mark.asyncio
async def test_a_server_that_refused_is_skipped_until_its_probe_answers(
    rasa_up: Callable[[], Awaitable[tuple[str, asyncio.Server]]]
) -> None:
    (a, _), (b, _) = await rasa_up(), await rasa_up()
    async with RasaClient(a, "t", pool=[a, b]) as rasa:
        pool = _pool(rasa, [a, b])
        assert rasa.unreachable is not None  # the client tells the pool of refusals
        on_a = next(c for c in (f"conv-{n}" for n in range(100)) if ranked(c, [a, b])[0] == a)
        rasa.unreachable(a)
        assert pool.skipped(a) and not pool.skipped(b)
        assert rasa.server_for(on_a) == b and not pool.down
        assert await pool.probe_all() == {a: "up", b: "up"}  # it answers: back at once
        assert not pool.skipped(a) and rasa.server_for(on_a) == a
        rasa.unreachable("http://not-in-the-pool:5005")  # ignored
        assert list(pool.healths) == [a, b]


@pytest.mark.asyncio
async def test_the_pool_is_down_only_when_every_server_is() -> None:
    a, b = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    async with RasaClient(a, "t", pool=[a, b]) as rasa:
        pool = _pool(rasa, [a, b])
        changes: list[tuple[str, str, str]] = []

        async def changed(server: str, previous: str, state: str) -> None:
            changes.append((server, previous, state))

        pool.on_change(changed)
        assert await _probe(pool) == {a: "down", b: "down"}
        assert pool.down and pool.as_json()["state"] == "down"
        assert changes == [(a, "unknown", "down"), (b, "unknown", "down")]
        cid = "conv-1"
        assert rasa.server_for(cid) == ranked(cid, [a, b])[0]  # its first choice: it fails


@pytest.mark.asyncio
async def test_one_server_is_the_server_in_service_as_before(
    rasa_up: Callable[[], Awaitable[tuple[str, asyncio.Server]]]
) -> None:
    (a, _), (b, _) = await rasa_up(), await rasa_up()
    async with RasaClient(a, "t") as rasa:
        pool = _pool(rasa, [a])
        assert rasa.route is None and rasa.server_for("conv-1") == a
        rasa.switch(b)  # a blue/green deploy: the probe and the requests follow
        assert pool.server_for("conv-1") == b and pool.servers() == [b]
        await pool.health(b).probe()
        assert pool.as_json()["servers"] == [{"url": b, **pool.health(b).as_json()}]


def test_rasa_url_takes_a_list_and_refuses_what_it_cannot_serve() -> None:
    env = {"HANDOFF_RASA_TOKEN": "t", "HANDOFF_JWT_SECRET": "s" * 32}
    one = load_settings({**env, "HANDOFF_RASA_URL": "http://a:5005/"}, env_file=None)
    assert (one.rasa_url, one.rasa_urls) == ("http://a:5005", ("http://a:5005",))
    two = load_settings({**env, "HANDOFF_RASA_URL": " http://a:5005, http://b:5005/"},
                        env_file=None)
    assert two.rasa_urls == ("http://a:5005", "http://b:5005")
    for bad, says in (("http://a:5005,http://a:5005", "names a URL twice"),
                      ("http://a:5005,", r"expected an http\(s\) URL"),
                      ("http://a:5005,ftp://b", r"expected an http\(s\) URL")):
        with pytest.raises(SettingsError, match=says):
            load_settings({**env, "HANDOFF_RASA_URL": bad}, env_file=None)
    with pytest.raises(SettingsError, match="HANDOFF_SUPERVISOR_URL: a deploy switches one"):
        load_settings({**env, "HANDOFF_RASA_URL": "http://a:5005,http://b:5005",
                       "HANDOFF_SUPERVISOR_URL": "http://127.0.0.1:5099"}, env_file=None)
