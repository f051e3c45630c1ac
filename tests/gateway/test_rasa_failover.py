"""Several Rasa servers, one of them dead (nothing listens on its port), the other the session's
real Rasa: a conversation whose first choice is the dead server is served by the live one at
once — without waiting for a probe to find the dead one down — by the gateway, by its client
on its own, and by the privacy command line (which used to send everything to the first URL).
A request that reached a server and failed there is never sent to another (it may have run)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
import pytest
from aiohttp import web

from bot.serve import Stack
from handoff.conversation.rasa_client import RasaClient, RasaUnavailable, RasaUnreachable
from handoff.conversation.rasa_pool import RasaPool, ranked
from handoff.store import Store
from tests.conftest import free_port
from tests.gateway.clients import WAIT, Widget
from tests.gateway.clients import gateway_store, widget  # noqa: F401 (fixtures)
from tests.gateway.conftest import GATEWAY_PYTHON, PROJECT_ROOT, Gateway, _start_gateway, _stop
from tests.gateway.test_privacy import SECRET, _chat, _tracker_texts

pytestmark = pytest.mark.asyncio


def dead_url() -> str:
    """A URL where nothing listens (a port free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"


def first_on(server: str, servers: list[str]) -> str:
    """A new conversation id whose first choice among ``servers`` is ``server``."""
    while True:
        candidate = uuid.uuid4().hex
        if ranked(candidate, servers)[0] == server:
            return candidate


async def test_a_request_a_server_refuses_goes_to_the_next_server_at_once(
    rasa_stack: Stack,
) -> None:
    dead = dead_url()
    servers = [dead, rasa_stack.rasa_url]
    rasa = RasaClient(dead, rasa_stack.token, timeout=WAIT, pool=servers)
    pool = RasaPool(rasa, servers, interval=0, timeout=1, slow=1)  # no probe: only refusals
    try:
        sender = first_on(dead, servers)
        assert pool.server_for(sender) == dead
        tracker = await rasa.tracker(sender)  # refused by the dead one, read on the live one
        assert tracker["sender_id"] == sender
        assert pool.skipped(dead) and not pool.skipped(rasa_stack.rasa_url)
        assert pool.server_for(first_on(dead, servers)) == rasa_stack.rasa_url
        assert not pool.down  # a refusal skips a server; only probes find one down
    finally:
        await rasa.close()


async def test_every_server_refusing_fails_once_each_and_says_so(rasa_stack: Stack) -> None:
    servers = [dead_url(), dead_url()]
    rasa = RasaClient(servers[0], rasa_stack.token, timeout=WAIT, pool=servers)
    pool = RasaPool(rasa, servers, interval=0, timeout=1, slow=1)
    try:
        with pytest.raises(RasaUnreachable, match="cannot connect to Rasa"):
            await rasa.erase("someone")
        assert all(pool.skipped(url) for url in servers)
    finally:
        await rasa.close()


async def test_a_request_that_reached_its_server_is_not_sent_to_another(
    rasa_stack: Stack,
) -> None:
    """A server that takes the connection and never answers (a hung Rasa): the request times
    out there and is not tried on the live server, since it may have run."""
    released = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # takes the request, answers nothing
        await released.wait()
        writer.close()

    hung = await asyncio.start_server(hang, "127.0.0.1", 0)
    hung_url = f"http://127.0.0.1:{hung.sockets[0].getsockname()[1]}"
    servers = [hung_url, rasa_stack.rasa_url]
    rasa = RasaClient(hung_url, rasa_stack.token, timeout=1.0, pool=servers)
    pool = RasaPool(rasa, servers, interval=0, timeout=1, slow=1)
    try:
        sender = first_on(hung_url, servers)
        with pytest.raises(RasaUnavailable) as failed:
            await rasa.erase(sender)
        assert failed.value.timed_out and not isinstance(failed.value, RasaUnreachable)
        assert not pool.skipped(hung_url)  # for the probe to judge, not a refusal
        assert _tracker_texts(rasa_stack, sender) == []  # nothing ran on the live one
    finally:
        released.set()
        await rasa.close()
        hung.close()
        await hung.wait_closed()


@pytest.fixture(scope="module")
def dead() -> str:
    return dead_url()


@pytest.fixture(scope="module")
def gateway(rasa_stack: Stack, dead: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway in front of a dead server and the real Rasa, its probe off: only the
    client's failover can route around the dead one."""
    gw = _start_gateway(tmp_path_factory.mktemp("failover"), f"{dead},{rasa_stack.rasa_url}",
                        rasa_stack.token, {"HANDOFF_RASA_PROBE_INTERVAL": "0"})
    yield gw
    _stop(gw.process)


async def test_the_gateway_answers_a_conversation_whose_server_is_dead_without_a_probe(
    gateway: Gateway, dead: str, rasa_stack: Stack,
) -> None:
    customer = await Widget(gateway.url).connect()
    try:
        cid = await customer.session(first_on(dead, [dead, rasa_stack.rasa_url]))
        for text, expected in (("hi", "Hi, I'm"), ("where is my order 100002?", "100002")):
            await customer.say(cid, text)
            name, data = await customer.next()
            assert name == "bot_uttered", (name, data)  # no notice, no queue
            assert expected in data["text"]
        assert [t for t in _tracker_texts(rasa_stack, cid) if t][0] == "hi"
    finally:
        await customer.close()


def _cli(gateway: Gateway, rasa_url: str, token: str,
         *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")},
           "HANDOFF_ENV_FILE": os.devnull, "HANDOFF_DATABASE_URL": gateway.database_url,
           "HANDOFF_RASA_URL": rasa_url, "HANDOFF_RASA_TOKEN": token,
           "HANDOFF_JWT_SECRET": "cli-secret-" + "x" * 40}
    return subprocess.run([str(GATEWAY_PYTHON), "-m", "handoff.conversation.privacy", *args],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


async def test_the_privacy_command_erases_through_the_live_server_when_the_first_is_dead(
    gateway: Gateway, widget: Widget, store: Store, rasa_stack: Stack,  # noqa: F811
) -> None:
    session_id = await _chat(store, widget, SECRET)
    assert SECRET in _tracker_texts(rasa_stack, session_id)
    dead = dead_url()
    while ranked(session_id, [dead, rasa_stack.rasa_url])[0] != dead:
        dead = dead_url()  # the dead one first in the list and in the conversation's order
    done = _cli(gateway, f"{dead},{rasa_stack.rasa_url}", rasa_stack.token,
                "erase", session_id, "--reason", "ticket 17", "--by", "ops")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rasa"] == "erased"
    assert f"Rasa at {dead} is down" in done.stderr
    assert not [t for t in _tracker_texts(rasa_stack, session_id) if t]
    assert await store.list_messages(session_id) == []


class CrashingRasa:
    """A Rasa server that answers its ``/status`` and dies in the middle of the first turn
    sent to it: the connection breaks (the request was sent: it is not retried elsewhere) and
    from then on nothing listens on its port, as with a Rasa killed mid-turn."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.url = ""
        self.crashed = asyncio.Event()

    async def start(self) -> CrashingRasa:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        if head.split(b" ", 2)[1].startswith(b"/status"):
            body = b'{"model_id": "crashing", "model_file": "crashing.tar.gz"}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
            writer.close()
            return
        if head.split(b" ", 2)[1].startswith(b"/webhooks/gateway"):
            writer.transport.abort()  # a turn (or its websocket): the process dies
            self.stop()
            return
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n"
                     b"Connection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    def stop(self) -> None:
        if self.server is not None and not self.crashed.is_set():
            self.crashed.set()
            self.server.close()


async def test_a_conversation_whose_server_dies_mid_turn_goes_on_with_another_server(
    rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The turn fails at once (before any probe finds the server down), so the conversation
    is queued and the customer told; once the probe finds that server down, the servers
    still up take it back: the customer gets the answer to the very message."""
    crashing = await CrashingRasa().start()
    servers = [crashing.url, rasa_stack.rasa_url]
    loop = asyncio.get_running_loop()
    gw = await loop.run_in_executor(None, lambda: _start_gateway(
        tmp_path_factory.mktemp("crash"), ",".join(servers), rasa_stack.token,
        # over HTTP, so the turn itself is what breaks (over the websocket the handshake
        # would, and aiohttp tries a handshake again: refused, it goes elsewhere unsent)
        {"HANDOFF_RASA_PROBE_INTERVAL": "0.5", "HANDOFF_RASA_PROBE_TIMEOUT": "2",
         "HANDOFF_RASA_TRANSPORT": "http"}))
    customer = await Widget(gw.url).connect()
    try:
        cid = await customer.session(first_on(crashing.url, servers))
        await customer.say(cid, "where is my order 100002?")
        notices: list[str] = []
        while True:  # a notice comes as handoff_notice and as the system's bot_uttered
            name, data = await customer.next()
            if name == "handoff_notice":
                notices.append(data["kind"])
            elif name == "bot_uttered" and (data.get("metadata") or {}).get("sender") != "system":
                break
        assert crashing.crashed.is_set()
        assert notices == ["handoff_queued", "bot_back"]
        assert "100002" in data["text"]  # the answer to the very message
        assert [t for t in _tracker_texts(rasa_stack, cid) if t][0] == (
            "where is my order 100002?")
    finally:
        await customer.close()
        crashing.stop()
        await loop.run_in_executor(None, _stop, gw.process)


class StatusOnly:
    """A Rasa server that answers its ``/status`` until it is stopped; then nothing listens."""

    async def start(self) -> StatusOnly:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            body = b'{"model_id": "status-only", "model_file": "status-only.tar.gz"}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def slow_turns(rasa_url: str, delay: float) -> AsyncIterator[str]:
    """The real Rasa behind a proxy that holds each turn ``delay`` seconds before passing it
    on (everything else at once): a Rasa busy with each turn for that long."""
    async with aiohttp.ClientSession() as session:
        async def forward(request: web.Request) -> web.Response:
            if request.path.startswith("/webhooks/gateway/turn"):
                await asyncio.sleep(delay)
            async with session.request(request.method, rasa_url + request.path_qs,
                                       headers={k: v for k, v in request.headers.items()
                                                if k.lower() != "host"},
                                       data=await request.read()) as answer:
                return web.Response(status=answer.status, body=await answer.read(),
                                    content_type=answer.content_type)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


async def test_a_turn_sent_on_after_a_refusal_is_not_failed_when_the_refusing_server_is_found_down(
    rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A turn refused by its server goes to the next one; the refusing server's probe then
    finds it down while the turn runs on the other: the turn is the other server's, and goes on
    (it used to be cancelled as "Rasa went down during the call" and the customer queued)."""
    first = await StatusOnly().start()
    loop = asyncio.get_running_loop()
    async with slow_turns(rasa_stack.rasa_url, 3.0) as slow:
        servers = [first.url, slow]
        gw = await loop.run_in_executor(None, lambda: _start_gateway(
            tmp_path_factory.mktemp("refused"), ",".join(servers), rasa_stack.token,
            {"HANDOFF_RASA_PROBE_INTERVAL": "0.3", "HANDOFF_RASA_PROBE_TIMEOUT": "2",
             "HANDOFF_RASA_TRANSPORT": "http"}))
        customer = await Widget(gw.url).connect()
        try:
            async with httpx.AsyncClient(base_url=gw.url, timeout=WAIT) as api:
                health = (await api.get("/api/health")).json()
                while health["rasa"]["state"] != "up":
                    await asyncio.sleep(0.1)
                    health = (await api.get("/api/health")).json()
                cid = await customer.session(first_on(first.url, servers))
                await first.stop()  # dies between two probes: its conversations' next turn
                await customer.say(cid, "where is my order 100002?")  # ... is refused
                name, data = await customer.next()
                assert name == "bot_uttered", (name, data)  # not queued: answered
                assert "100002" in data["text"]
                detail = (await api.get("/api/health")).json()["rasa"]
                assert detail["state"] == "up"  # the pool; the first server is down by now
        finally:
            await customer.close()
            await loop.run_in_executor(None, _stop, gw.process)
