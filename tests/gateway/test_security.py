"""The customer side of security (issue 15, docs/security.md), against the real gateway and
Rasa: sessions that cannot be hijacked, nothing kept until the customer speaks, bounded frames,
no binary attachments, rate limits, malformed input answered without a traceback."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from hypothesis import HealthCheck, given, settings

from bot.serve import Stack
from handoff.__main__ import configure_logging
from handoff.errors import NotFound
from handoff.settings import Settings
from handoff.store import Store
from tests.gateway.clients import WAIT, Widget, agent_login, user_login
from tests.gateway.clients import api, gateway_store, widget  # noqa: F401 (fixtures)
from tests.gateway.conftest import Gateway, _start_gateway, _stop
from tests.gateway.agent_fuzz import assert_store_consistent
from tests.gateway.fuzz import CASES, Fuzzer

SHOP = "https://shop.example"  # a page allowed to embed the widget (HANDOFF_CORS_ORIGINS)
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def gateway(rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """This module's gateway: the defaults, a shop elsewhere that embeds the widget, and the
    per-IP limits lifted (every client of the tests is 127.0.0.1; the fuzz opens many)."""
    gw = _start_gateway(tmp_path_factory.mktemp("gateway"), rasa_stack.rasa_url,
                        rasa_stack.token, {"HANDOFF_CORS_ORIGINS": SHOP,
                                           "HANDOFF_IP_MESSAGE_BURST": "100000",
                                           "HANDOFF_IP_CONNECT_BURST": "100000"})
    yield gw
    _stop(gw.process)

pytestmark = pytest.mark.asyncio

ORDER_QUESTION = "where is my order 100002?"


async def test_a_second_client_with_only_the_session_id_gets_a_new_conversation(
    gateway: Gateway, store: Store
) -> None:
    first = await Widget(gateway.url).connect()
    thief = await Widget(gateway.url).connect()
    guesser = await Widget(gateway.url).connect()
    try:
        session_id, secret = await first.secure_session()
        assert secret is not None and len(secret) >= 40
        await first.say(session_id, ORDER_QUESTION)
        event, answer = await first.next()
        assert event == "bot_uttered" and answer["text"].startswith("Order 100002 ")

        # the session id alone (a plain Rasa client after a reload, or a thief) starts anew
        other = await thief.session(session_id)
        assert other != session_id
        wrong, wrong_secret = await guesser.secure_session(session_id, "not-the-secret")
        assert wrong not in (session_id, other) and wrong_secret is not None
        for intruder, own in ((thief, other), (guesser, wrong)):
            await intruder.say(session_id, "give me the address")  # not its session
            event, error = await intruder.next()
            assert (event, error["code"]) == ("error", "session_mismatch")
        await thief.say(other, "hi")
        event, greeting = await thief.next()
        assert event == "bot_uttered" and greeting["text"].startswith("Hi, I'm the Northwind")

        # the first customer goes on; nothing of it reaches the others
        await first.sio.emit("session_request", {"session_id": session_id})  # same socket
        assert await first.next() == ("session_confirm", session_id)
        await first.say(session_id, "hi")
        event, _ = await first.next()
        assert event == "bot_uttered"
        await thief.nothing()
        await guesser.nothing()
    finally:
        for w in (first, thief, guesser):
            await w.close()

    texts = [m.text for m in await store.list_messages(session_id) if m.sender == "customer"]
    assert texts == [ORDER_QUESTION, "hi"]
    assert [m.text for m in await store.list_messages(other)] == [
        "hi", greeting["text"]]
    with pytest.raises(NotFound):  # the guesser never spoke in its own session
        await store.get_conversation(wrong)
    stored = await store.customer_session_hash(session_id)
    assert stored is not None and secret not in stored  # kept hashed

    # with the secret, a new connection (the widget after a reload) resumes the conversation
    again = await Widget(gateway.url).connect()
    try:
        assert await again.secure_session(session_id, secret) == (session_id, None)
        await again.say(session_id, ORDER_QUESTION)
        event, answer = await again.next()
        assert event == "bot_uttered" and answer["text"].startswith("Order 100002 ")
    finally:
        await again.close()
    assert len(await store.list_messages(session_id)) == 6


async def test_session_requests_alone_keep_nothing(gateway: Gateway, store: Store) -> None:
    before = len(await store.list_conversations())
    widget = await Widget(gateway.url).connect()
    try:
        ids = [await widget.session() for _ in range(200)]
        ids += [await widget.session(f"chosen-{n}") for n in range(3)]
    finally:
        await widget.close()
    assert len(set(ids)) == 203
    assert ids[-3:] == ["chosen-0", "chosen-1", "chosen-2"]  # a client's own new ids are kept
    assert len(await store.list_conversations()) == before
    for session_id in ids[::20]:
        assert await store.customer_session_hash(session_id) is None


# --------------------------------------------------------------------------- bounds and limits


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _refusals(api: httpx.AsyncClient, code: str) -> float:
    resp = await api.get("/metrics")
    found = re.search(rf'^handoff_customer_refusals_total{{code="{code}"}} (\S+)$', resp.text,
                      re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_flood_from_one_connection_is_cut_off_with_errors(
    gateway: Gateway, store: Store, api: httpx.AsyncClient
) -> None:
    counted = await _refusals(api, "rate_limited")
    widget = await Widget(gateway.url).connect()
    gone = asyncio.Event()
    widget.sio.on("disconnect", lambda *_: gone.set())
    session_id = await widget.started()
    for n in range(60):
        await widget.say(session_id, f"flood {n}")
    await asyncio.wait_for(gone.wait(), WAIT)
    refused = []
    while not widget.events.empty():
        event, data = widget.events.get_nowait()
        if event == "error":
            refused.append(data)
    assert len(refused) == 20  # the burst's worth of refusals in a row, then cut off
    assert {r["code"] for r in refused} == {"rate_limited"}
    assert "at most 2 a second" in refused[0]["message"]
    await widget.close()
    await asyncio.sleep(0.5)
    stored = [m for m in await store.list_messages(session_id) if m.sender == "customer"]
    assert 1 < len(stored) < 41  # the greeting's "hi" and the burst, not the flood
    assert await _refusals(api, "rate_limited") == counted + 20


async def test_several_connections_from_one_address_share_its_message_limit(
    rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Three connections from 127.0.0.1, each well within its own burst (20), together past
    the address's burst of 6 at a rate too slow to refill: the 7th message on is refused with
    ``rate_limited`` naming the address, counted, and not stored."""
    gw = await asyncio.to_thread(_start_gateway, tmp_path_factory.mktemp("per-ip"),
                                 rasa_stack.rasa_url, rasa_stack.token,
                                 {"HANDOFF_IP_MESSAGE_BURST": "6",
                                  "HANDOFF_IP_MESSAGE_RATE": "0.01"})
    widgets = [Widget(gw.url) for _ in range(3)]
    try:
        async with httpx.AsyncClient(base_url=gw.url, timeout=WAIT) as client:
            counted = await _refusals(client, "rate_limited")
            sessions = [await (await w.connect()).session() for w in widgets]
            for n in range(4):
                for widget, session_id in zip(widgets, sessions):
                    await widget.sio.call("user_uttered", {"message": f"hello {n}",
                                                           "session_id": session_id},
                                          timeout=WAIT)
            refused = []
            for widget in widgets:
                while not widget.events.empty():
                    event, data = widget.events.get_nowait()
                    if event == "error":
                        refused.append(data)
            assert len(refused) == 6
            assert {r["code"] for r in refused} == {"rate_limited"}
            assert all("from your address" in r["message"] and "bursts of 6" in r["message"]
                       for r in refused), refused
            assert all(w.sio.connected for w in widgets)  # 2 refusals each: not a flood
            assert await _refusals(client, "rate_limited") == counted + 6
        store = Store(gw.database_url)
        try:
            stored = []
            for session_id in sessions:
                try:
                    stored += [m.text for m in await store.list_messages(session_id)
                               if m.sender == "customer"]
                except NotFound:  # every message of this connection was refused
                    pass
        finally:
            await store.close()
        assert sorted(stored) == sorted([f"hello {n}" for n in (0, 1)] * 3)
    finally:
        for widget in widgets:
            if widget.sio.connected:
                await widget.close()
        await asyncio.to_thread(_stop, gw.process)


async def test_binary_frames_from_an_anonymous_socket_leave_memory_alone(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    pid = gateway.process.pid
    start = _rss_mb(pid)
    counted = await _refusals(api, "binary_refused")
    widget = await Widget(gateway.url).connect()
    try:
        for _ in range(3):  # an event announcing 300 attachments, then the attachments
            await widget.sio.eio.send('5300-["user_uttered",{"_placeholder":true,"num":0}]')
            for _ in range(300):
                await widget.sio.eio.send(bytes(60_000))
            event, error = await widget.next()
            assert (event, error["code"]) == ("error", "binary_refused")
        # an ordinary event afterwards is answered: nothing was left half-read
        assert await widget.session() != ""
        await widget.sio.emit("user_uttered", {"message": "x", "session_id": "s",
                                               "file": bytes(1000)})
        event, error = await widget.next()
        assert (event, error["code"]) == ("error", "binary_refused")
    finally:
        await widget.close()
    big = await Widget(gateway.url).connect()
    closed = asyncio.Event()
    big.sio.on("disconnect", lambda *_: closed.set())
    await big.sio.eio.send(bytes(900_000))  # above HANDOFF_MAX_FRAME_BYTES: cut, not read
    await asyncio.wait_for(closed.wait(), WAIT)
    await big.close()
    assert (await api.get("/api/health")).status_code == 200
    assert _rss_mb(pid) - start < 50
    assert await _refusals(api, "binary_refused") >= counted + 4


MALFORMED = [
    ("user_uttered", {"message": "a lone \ud800 surrogate", "session_id": "S"}, "bad_payload"),
    ("user_uttered", {"message": "hi", "session_id": "S", "metadata": functools.reduce(
        lambda inner, _: {"x": inner}, range(40), {})}, "bad_metadata"),
    ("user_uttered", {"message": ["hi"], "session_id": "S"}, "bad_payload"),
    ("user_uttered", {"message": "hi", "session_id": 5}, "bad_session_id"),
    ("session_request", {"session_id": {"a": 1}}, "bad_session_id"),
    ("session_request", {"session_id": None, "session_secret": 7}, "bad_session_secret"),
    ("end_conversation", ["S"], "bad_payload"),
    ("survey_answer", {"session_id": "S", "score": "5"}, "bad_score"),
]


async def test_malformed_events_get_a_clear_error_change_nothing_and_log_one_line(
    gateway: Gateway, widget: Widget, store: Store
) -> None:
    session_id = await widget.started()
    await asyncio.sleep(1.1)  # past the quiet log's interval (a line a second at most)
    logged = gateway.log_path.stat().st_size
    before = await store.list_messages(session_id)
    for event, payload, code in MALFORMED:
        if isinstance(payload, dict) and payload.get("session_id") == "S":
            payload = {**payload, "session_id": session_id}
        await widget.sio.emit(event, payload)
        answer, error = await widget.next()
        assert (answer, error["code"]) == ("error", code), (event, payload)
    # JSON nested beyond the decoder's recursion limit: the frame itself does not decode
    await widget.sio.eio.send('2["user_uttered",' + "[" * 5000 + "]" * 5000 + "]")
    answer, error = await widget.next()
    assert (answer, error["code"]) == ("error", "malformed_frame")
    await widget.say(session_id, "thanks")  # the connection still works
    assert (await widget.next())[0] == "bot_uttered"
    after = await store.list_messages(session_id)
    assert after[:len(before)] == before and len(after) == len(before) + 2
    assert (await store.get_conversation(session_id)).mode == "bot"
    log = gateway.log_path.read_bytes()[logged:].decode(errors="replace")
    assert "Traceback" not in log
    assert 1 <= log.count("refused a customer event") + log.count("could not be handled") < 5


# --------------------------------------------------------------------------- origins


async def _connects(gateway: Gateway, origin: str | None, namespace: str = "/",
                    auth: dict[str, str] | None = None) -> bool:
    client = socketio.AsyncClient(reconnection=False)
    try:
        await client.connect(gateway.url, namespaces=[namespace], transports=["websocket"],
                             headers={"Origin": origin} if origin else {}, auth=auth,
                             wait_timeout=10)
    except socketio.exceptions.ConnectionError:
        return False
    finally:
        await client.disconnect()
    return True


async def test_the_widget_opens_from_its_origins_the_console_only_from_its_own(
    gateway: Gateway, store: Store, api: httpx.AsyncClient
) -> None:
    own = gateway.url
    assert await _connects(gateway, own)
    assert await _connects(gateway, SHOP)  # listed in HANDOFF_CORS_ORIGINS
    assert not await _connects(gateway, EVIL)
    assert await _connects(gateway, None)  # not a browser: no Origin to check

    headers = await agent_login(store, api, "olga")
    token = {"token": headers["Authorization"].split()[1]}
    assert await _connects(gateway, own, "/agent", token)
    assert not await _connects(gateway, SHOP, "/agent", token)  # the widget's, not the console's
    assert not await _connects(gateway, EVIL, "/agent", token)

    assert (await api.get("/api/conversations", headers={**headers, "Origin": own})
            ).status_code == 200
    for origin in (SHOP, EVIL):
        resp = await api.get("/api/conversations", headers={**headers, "Origin": origin})
        assert resp.status_code == 403 and resp.json()["error"] == "origin_refused"
        resp = await api.post("/api/login", headers={"Origin": origin},
                              json={"username": "olga", "password": "olga-password"})
        assert resp.status_code == 403 and resp.json()["error"] == "origin_refused"
    assert (await api.get("/api/health", headers={"Origin": EVIL})).status_code == 403


# --------------------------------------------------------------------------- secrets


async def test_the_first_password_is_in_a_private_file_and_no_token_in_process_arguments(
    gateway: Gateway, rasa_stack: Stack
) -> None:
    password_file = Path(gateway.log_path).parent / "first-admin-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert gateway.admin_password and gateway.admin_password == password_file.read_text().strip()
    log = gateway.log_path.read_text(errors="replace")
    assert f"password in {password_file} " in log
    assert gateway.admin_password not in log

    assert rasa_stack.token
    rasa_servers = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes()
        except OSError:  # the process ended meanwhile
            continue
        assert rasa_stack.token.encode() not in args, args
        rasa_servers += b"rasa_run.py\0run\0--enable-api" in args
    assert rasa_servers >= 1  # the Rasa server was among the processes looked at


async def test_the_public_health_shows_states_only_and_its_detail_needs_a_login(
    gateway: Gateway, rasa_stack: Stack, api: httpx.AsyncClient, store: Store
) -> None:
    public = (await api.get("/api/health")).json()
    assert set(public) <= {"status", "store", "redis", "triage", "rasa"}, public
    assert set(public["rasa"]) == {"state"}
    assert rasa_stack.rasa_url.split("//")[1] not in str(public)
    assert (await api.get("/api/health/detail")).status_code == 401
    trainee = await user_login(store, api, "health-trainee", "trainee")  # the right to watch
    detail = (await api.get("/api/health/detail", headers=trainee)).json()
    assert detail["rasa"]["state"] == public["rasa"]["state"]
    assert [s["url"] for s in detail["rasa"]["servers"]] == [rasa_stack.rasa_url]
    assert isinstance(detail["rasa_calls"], dict)  # per Rasa server, once it has had calls


# --------------------------------------------------------------------------- fuzz


async def _fuzz(gateway: Gateway, case: list[tuple[str, Any]]) -> None:
    async with Fuzzer(gateway.url) as fuzzer:
        for event, payload in case:
            for name, data in await fuzzer.send(event, payload):  # answered: acknowledged
                if name == "error":  # a clear error: a code and a sentence, never internal
                    assert isinstance(data, dict) and set(data) == {"code", "message"}, data
                    assert isinstance(data["code"], str) and isinstance(data["message"], str)
                    assert data["code"] not in ("internal_error", "malformed_frame"), (
                        event, payload, data)


_FUZZ = settings(deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


@settings(_FUZZ, max_examples=200)
@given(case=CASES)
async def test_fuzzed_customer_events_are_answered_or_refused_clearly(
    gateway: Gateway, case: list[tuple[str, Any]]
) -> None:
    await _fuzz(gateway, case)


@pytest.mark.long
@pytest.mark.timeout(7200)
@settings(_FUZZ, max_examples=10_000)
@given(case=CASES)
async def test_fuzzed_customer_events_long(gateway: Gateway, case: list[tuple[str, Any]]
                                           ) -> None:
    await _fuzz(gateway, case)


async def test_after_the_fuzz_the_store_is_consistent_and_no_traceback_was_logged(
    gateway: Gateway, store: Store
) -> None:
    conversations = await store.list_conversations()
    assert conversations  # the fuzz (and the tests before it) spoke
    for conversation in conversations:
        for _ in range(600):  # a snapshot between writes (Rasa's turns may still be running)
            before = await store.get_conversation(conversation.id)
            seqs = [m.seq for m in await store.list_messages(conversation.id)]
            after = await store.get_conversation(conversation.id)
            if before.version == after.version and before.last_seq == after.last_seq:
                break
            await asyncio.sleep(0.1)
        assert seqs == list(range(1, after.last_seq + 1)), conversation.id
        assert after.mode in ("bot", "review", "human", "closed")
    await assert_store_consistent(store)  # every invariant, in one snapshot
    assert "Traceback" not in gateway.log_path.read_text(errors="replace")


async def test_the_gateway_log_file_is_rotated_by_size(tmp_path: Path) -> None:
    config = Settings(log_file=str(tmp_path / "gateway.log"), log_max_bytes=10_000,
                      log_backups=2)
    added = configure_logging(config)
    try:
        for n in range(200):
            logging.getLogger("handoff.test").warning("line %d %s", n, "x" * 400)
    finally:
        for handler in added:
            for name in ("handoff", "alembic", "sanic", "socketio", "engineio"):
                logging.getLogger(name).removeHandler(handler)
            handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["gateway.log", "gateway.log.1", "gateway.log.2"]
    assert all((tmp_path / f).stat().st_size <= 10_000 for f in files)
    assert "line 199 " in (tmp_path / "gateway.log").read_text()


@pytest.mark.long
async def test_legacy_sessions_join_by_id_alone(
    rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gw = await asyncio.to_thread(_start_gateway, tmp_path_factory.mktemp("legacy"),
                                 rasa_stack.rasa_url, rasa_stack.token,
                                 {"HANDOFF_CUSTOMER_SESSIONS": "legacy"})
    try:
        first = await Widget(gw.url).connect()
        session_id = await first.started()
        await first.close()
        again = await Widget(gw.url).connect()  # a plain Rasa client after a reload
        try:
            assert await again.session(session_id) == session_id
            await again.say(session_id, ORDER_QUESTION)
            event, answer = await again.next()
            assert event == "bot_uttered" and answer["text"].startswith("Order 100002 ")
        finally:
            await again.close()
    finally:
        await asyncio.to_thread(_stop, gw.process)
