"""The store and Redis restarted under a serving gateway (issue 17; docs/deploy.md, "When
PostgreSQL or Redis restarts").

The machine's shared PostgreSQL and Redis are never touched: each test module starts a private
PostgreSQL cluster (``initdb``/``pg_ctl``, as user ``nobody`` when the tests run as root) and a
private ``redis-server``, each on a free port in a temporary folder, and restarts them on the
same port and data folder while real gateway processes (``python -m handoff``) serve in front
of the session's real Rasa. Skipped only when the binaries are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from playwright.async_api import async_playwright, expect

from bot.serve import Stack
from handoff.store import Store
from tests.conftest import free_port
from tests.gateway.clients import WAIT, Widget, agent_login
from tests.gateway.conftest import Gateway, _start_gateway, _stop
from tests.gateway.test_multinode import Console, _bot_text
from tests.gateway.test_pages import CHROMIUM, CHROMIUM_ARGS, ORDER_QUESTION, WAIT_MS

pytestmark = pytest.mark.asyncio

LEASE = 3  # seconds, as in test_multinode


# --------------------------------------------------------------------------- private servers


def _as_nobody() -> list[str]:
    """PostgreSQL refuses to run as root: run it as ``nobody`` then."""
    return ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own, on a free loopback port (trust auth)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="handoff-faults-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "nobody")
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-N")

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*_as_nobody(), *argv], capture_output=True, text=True,
                              timeout=60, cwd=self.root)
        if done.returncode:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr}")

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                  str(self.root / "log"), "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                  "-c fsync=off", "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A ``redis-server`` of this test's own on a free loopback port (nothing saved: a
    restart loses everything, as a Redis used only as a cache and bus does)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="handoff-faults-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        redis = pytest.importorskip("redis")
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def restart_postgres(postgres: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The module's PostgreSQL, running again after the test whatever happened in it."""
    yield postgres
    with contextlib.suppress(RuntimeError):
        postgres.start()


@pytest.fixture
def restart_redis(redis_server: PrivateRedis) -> Iterator[PrivateRedis]:
    yield redis_server
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()


@pytest.fixture(scope="module")
def nodes(rasa_stack: Stack, postgres: PrivatePostgres, redis_server: PrivateRedis,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway]]:
    """Gateway nodes A and B on the private PostgreSQL and Redis."""
    tmp = tmp_path_factory.mktemp("faults")
    env = {"HANDOFF_DATABASE_URL": postgres.url, "HANDOFF_REDIS_URL": redis_server.url,
           "HANDOFF_REDIS_PREFIX": "faults", "HANDOFF_NODE_LEASE": str(LEASE)}
    started: list[Gateway] = []
    try:
        for name in ("a", "b"):
            (tmp / name).mkdir()
            started.append(_start_gateway(tmp / name, rasa_stack.rasa_url, rasa_stack.token,
                                          {**env, "HANDOFF_NODE_ID": f"node-{name}"}))
        yield started[0], started[1]
    finally:
        for gateway in started:
            _stop(gateway.process)


@pytest_asyncio.fixture
async def store(postgres: PrivatePostgres) -> AsyncIterator[Store]:
    s = Store(postgres.url)
    yield s
    await s.close()


# --------------------------------------------------------------------------- helpers


async def _health_says(gateway: Gateway, field: str, value: str,
                       timeout: float = 20.0) -> dict[str, Any]:
    """``/api/health`` once its ``field`` reads ``value`` (it is probed when asked)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        while True:
            body: dict[str, Any] = (await client.get("/api/health")).json()
            if body.get(field) == value or time.monotonic() > deadline:
                assert body.get(field) == value, (body, gateway.log_tail())
                return body
            await asyncio.sleep(0.2)


async def _logged_in(gateway: Gateway, headers: dict[str, str], until: str | None = None,
                     timeout: float = 20.0) -> list[str]:
    """Who ``/api/presence`` says is logged in (all nodes), once it includes ``until``."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        while True:
            resp = await client.get("/api/presence", headers=headers)
            assert resp.status_code == 200, resp.text
            names: list[str] = resp.json()["presence"]["logged_in"]
            if until is None or until in names or time.monotonic() > deadline:
                assert until is None or until in names, (names, gateway.log_tail())
                return names
            await asyncio.sleep(0.2)


async def _send(widget: Widget, session_id: str, text: str) -> Any:
    """``user_uttered`` as the gateway's widget sends it: the acknowledgement's value."""
    return await widget.sio.call("user_uttered", {"message": text, "session_id": session_id},
                                 timeout=WAIT)


# --------------------------------------------------------------------------- PostgreSQL


async def test_postgresql_restarted_refuses_clearly_loses_nothing_and_recovers(
    nodes: tuple[Gateway, Gateway], restart_postgres: PrivatePostgres, store: Store
) -> None:
    """While the database is down a customer's message is refused in its acknowledgement
    (``service_unavailable``, retryable) and ``/api/health`` says ``store: down``; once it is
    back the same gateway serves again, and every acknowledged message is stored."""
    a, _ = nodes
    widget = await Widget(a.url).connect()
    try:
        cid = await widget.session()
        assert await _send(widget, cid, "where is my order 100002?") is None
        before = await _bot_text(widget)
        assert (await _health_says(a, "store", "ok"))["status"] == "ok"

        restart_postgres.stop()
        await _health_says(a, "store", "down")
        refused = await _send(widget, cid, "and where is 100008?")
        assert refused["error"] == "service_unavailable", refused
        assert "database" in refused["message"]
        assert (await widget.next())[0] == "error"  # Rasa's clients: the error event as before

        restart_postgres.start()
        await _health_says(a, "store", "ok")
        assert await _send(widget, cid, "and where is 100008?") is None  # resent
        after = await _bot_text(widget)
        said = [m.text for m in await store.list_messages(cid)]
        assert said == ["where is my order 100002?", before, "and where is 100008?", after]
    finally:
        await widget.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
async def test_the_widget_sends_a_message_refused_while_the_database_is_down_again_once(
    nodes: tuple[Gateway, Gateway], restart_postgres: PrivatePostgres, store: Store
) -> None:
    """The customer's widget in Chromium on node A. A message written while the database is
    down is refused (``service_unavailable``); the widget keeps it, marked "Not sent yet" with
    the reason and a "Retry now" button, and sends it again by itself (back-off) once the
    database is back: it is answered, and stored exactly once."""
    a, _ = nodes
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            await page.goto(f"{a.url}/")
            await page.get_by_role("button", name="Open chat with Northwind Goods").click()
            box = page.get_by_role("textbox", name="Message", exact=True)
            log = page.locator("#northwind-chat .log")
            await box.fill("hi")
            await box.press("Enter")
            await expect(log.locator(".msg.bot .text").last).to_contain_text(
                "Hi, I'm the Northwind", timeout=WAIT_MS)
            session_id = await page.evaluate("window.__northwindChat.sessionId")

            restart_postgres.stop()
            await _health_says(a, "store", "down")
            await box.fill(ORDER_QUESTION)
            await box.press("Enter")
            mine = log.locator(".msg.customer").last
            await expect(mine).to_contain_text(
                "Not sent yet \u2014 the chat has a technical problem", timeout=WAIT_MS)
            await expect(mine.get_by_role("button", name="Send this message again now")
                         ).to_be_visible()
            await expect(mine.locator(".text")).to_have_text(ORDER_QUESTION)
            await page.screenshot(path=str(_artifacts() / "widget-refused.png"))

            restart_postgres.start()  # nothing more from the test: the widget sends it again
            await expect(log.locator(".msg.bot .text").last).to_contain_text(
                "Order 100002 (", timeout=WAIT_MS)
            await expect(mine).not_to_contain_text("Not sent")
            await expect(log.locator(".msg.note")).to_have_count(0)  # the reason was on it
            said = [m.text for m in await store.list_messages(session_id)
                    if m.sender == "customer"]
            assert said == ["hi", ORDER_QUESTION]
            assert problems == []
        finally:
            await browser.close()


def _artifacts() -> Path:
    folder = Path(__file__).resolve().parents[2] / "test-artifacts" / "faults"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------- Redis


async def test_redis_restarted_pushes_resume_and_those_made_meanwhile_arrive_once(
    nodes: tuple[Gateway, Gateway], restart_redis: PrivateRedis, store: Store
) -> None:
    """An agent on node B reviews a customer on node A. Redis stops (losing everything);
    ``/api/health`` says ``redis: down`` meanwhile. During the outage the agent's edited reply
    is sent from B and the customer writes again on A: neither push can cross. Once Redis is
    back, with no gateway restarted and nothing reloaded, the customer gets the reply and the
    console the customer's message, each exactly once (they were kept in the sending node's
    outbox); node A knows again that the agent is logged in on B (B announces its presence
    again by itself: nobody came or went); and pushes made afterwards arrive as before."""
    a, b = nodes
    async with httpx.AsyncClient(base_url=b.url, timeout=WAIT) as api_b:
        headers = await agent_login(store, api_b, "rosa")
        console = await Console().connect(b.url, headers)
        widget = await Widget(a.url).connect()
        try:
            cid = await widget.session()
            await widget.say(cid, "where is my order 100002?")
            await _bot_text(widget)
            seen = await console.until("message", cid, sender="customer")
            assert seen["text"] == "where is my order 100002?"
            await _health_says(b, "redis", "ok")
            assert "rosa" in await _logged_in(a, headers)
            resp = await api_b.post(f"/api/conversations/{cid}/review", headers=headers,
                                    json={"on": True})
            assert resp.status_code == 200, resp.text
            await widget.say(cid, "what is your return policy?")
            held = await console.until("pending_reply", cid)  # held on A, seen on B

            restart_redis.stop()
            await _health_says(a, "redis", "down")
            await _health_says(b, "redis", "down")
            edited = "Returns are free within 60 days (sent during the outage)."
            resp = await api_b.post(
                f"/api/conversations/{cid}/replies/{held['reply']['reply_id']}/decision",
                headers=headers, json={"type": "edit", "text": edited})
            assert resp.status_code == 200, resp.text  # made on B for a customer on A
            await widget.say(cid, "and what about exchanges?")  # on A for a console on B
            restart_redis.start()
            await _health_says(a, "redis", "ok")
            await _health_says(b, "redis", "ok")

            customer_saw = [await widget.next()]
            while customer_saw[-1] != ("bot_uttered", {"text": edited}):
                customer_saw.append(await widget.next())
            agent_saw = [await console.pushed.get()]
            while not (agent_saw[-1][0] == "message" and agent_saw[-1][1]["text"] == (
                    "and what about exchanges?")):
                agent_saw.append(await asyncio.wait_for(console.pushed.get(), WAIT))
            await _logged_in(a, headers, until="rosa")

            # afterwards: a takeover and a message from B, a customer's message from A; what
            # was sent during the outage came once (a second copy would come before these)
            resp = await api_b.post(f"/api/conversations/{cid}/takeover", headers=headers)
            assert resp.status_code == 200, resp.text
            resp = await api_b.post(f"/api/conversations/{cid}/messages", headers=headers,
                                    json={"text": "Rosa here, from node B."})
            assert resp.status_code == 200, resp.text
            while customer_saw[-1] != ("bot_uttered", {  # after the agent's notices
                    "text": "Rosa here, from node B.",
                    "metadata": {"sender": "human", "agent": "rosa"}}):
                customer_saw.append(await widget.next())
            await widget.say(cid, "thanks Rosa")
            while not (agent_saw[-1][0] == "message" and agent_saw[-1][1]["text"] == (
                    "thanks Rosa")):
                agent_saw.append(await asyncio.wait_for(console.pushed.get(), WAIT))
            assert customer_saw.count(("bot_uttered", {"text": edited})) == 1, customer_saw
            assert [data["text"] for event, data in agent_saw if event == "message" and data[
                "conversation_id"] == cid and data["sender"] == "customer"] == [
                "and what about exchanges?", "thanks Rosa"], agent_saw
            conv = await store.get_conversation(cid)
            assert (conv.mode, conv.owner) == ("human", "rosa")
        finally:
            await widget.close()
            await console.sio.disconnect()
