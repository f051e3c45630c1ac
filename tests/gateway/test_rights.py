"""Who may do what (issue 15), against the real gateway: the whole surface — every HTTP route of
the app and every ``/agent`` event — checked against every tier, anonymous and a customer's
socket included; an undeclared route stops the app; a tier change, a logout and disabling take
effect on open sockets at once."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import socketio

from handoff.conversation.rasa_client import RasaClient
from handoff.settings import load_settings
from handoff.store import TIERS, Store
from handoff.web.app import create_app
from handoff.web.notifier import AGENT_NAMESPACE
from handoff.web.rights import (AUTHENTICATED, DECISION_RIGHTS, EVENT_RIGHTS, PUBLIC,
                                ROUTE_RIGHTS, Undeclared, check_surface, rights_of, route_name)
from tests.gateway.clients import WAIT, Widget, agent_console, user_login
from tests.gateway.clients import api, gateway_store  # noqa: F401 (fixtures)
from tests.gateway.conftest import GATEWAY_PYTHON, PROJECT_ROOT, Gateway

pytestmark = pytest.mark.asyncio

PARAMS = {"conversation_id": "no-such-conversation", "reply_id": "1", "model_id": "no-model",
          "correction_id": "987654321", "metric": "no_metric", "username": "no-such-user",
          "name": "no-such-file.js", "spot_check_id": "987654321"}
# What an allowed event answers to the matrix's payload (a conversation that does not exist):
# 404, except presence, which names no conversation and refuses the status it was sent.
ALLOWED = {"presence": 400}
SKIP = {"logout"}  # ends the login this test uses: test_logout_and_disable_end_sockets


@pytest_asyncio.fixture
async def surface(tmp_path: Path) -> AsyncIterator[tuple[list[tuple[str, str, str]], set[str]]]:
    """The app's HTTP routes (method, path, name) and its /agent events, from a built app."""
    settings = load_settings({"HANDOFF_JWT_SECRET": "s" * 40, "HANDOFF_RASA_TOKEN": "t"},
                             env_file=None, var_dir=tmp_path)
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    rasa = RasaClient("http://127.0.0.1:9", "t")
    try:
        app = create_app(settings, store, rasa)
        routes = []
        for route in app.router.routes:
            path = "/" + re.sub(r"<(\w+)(:[^>]*)?>",
                                lambda m: PARAMS.get(m.group(1), "x"), route.path.strip("/"))
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                routes.append((method, path, route_name(app, route.name)))
        sio = app.ctx.notifier._sio
        events = set(sio.handlers[AGENT_NAMESPACE]) - {"connect", "disconnect"}
        yield routes, events
    finally:
        await rasa.close()
        await store.close()


async def _call(api: httpx.AsyncClient, method: str, path: str,
                headers: dict[str, str]) -> httpx.Response:
    # A body that is not JSON: a handler the right lets through refuses it (400) or finds
    # nothing (404), and changes nothing.
    content = b"{not json" if method in ("POST", "PATCH", "PUT", "DELETE") else None
    return await api.request(method, path, headers={**headers, "content-type":
                                                    "application/json"}, content=content)


async def test_every_route_and_event_checks_its_right_for_every_tier(
        gateway: Gateway, store: Store, api: httpx.AsyncClient,
        surface: tuple[list[tuple[str, str, str]], set[str]]) -> None:
    routes, events = surface
    assert {name for _, _, name in routes} == set(ROUTE_RIGHTS)  # all declared, none stale
    assert events | {"connect", "disconnect"} == set(EVENT_RIGHTS)
    logins = {tier: await user_login(store, api, f"matrix-{tier}", tier) for tier in TIERS}
    checked = 0
    for who, headers in [("anonymous", {}), *logins.items()]:
        rights = rights_of(who)
        for method, path, name in routes:
            if name in SKIP:
                continue
            right = ROUTE_RIGHTS[name]
            resp = await _call(api, method, path, headers)
            if right == PUBLIC or (who != "anonymous" and (right == AUTHENTICATED
                                                            or right in rights)):
                assert resp.status_code not in (401, 403), (who, method, path, resp.text)
            elif who == "anonymous":
                assert resp.status_code == 401, (method, path, resp.text)
            else:
                assert resp.status_code == 403, (who, method, path, resp.text)
                assert resp.json()["right"] == right
            assert resp.status_code != 500, (who, method, path, resp.text)  # 503: no supervisor
            checked += 1

    # /agent: every event, and a decision of every type, for every tier.
    for tier, headers in logins.items():
        rights = rights_of(tier)
        console = socketio.AsyncClient()
        await console.connect(gateway.url, namespaces=[AGENT_NAMESPACE], transports=["websocket"],
                              auth={"token": headers["Authorization"].split()[1]})
        try:
            cases = [(e, EVENT_RIGHTS[e], {"text": "t", "status": "no-such-status"})
                     for e in sorted(events - {"decision"})]
            cases += [("decision", kind_right, {"type": kind, "reply_id": 1, "text": "t",
                                                "action": "utter_greet", "intent": "greet"})
                      for kind, kind_right in DECISION_RIGHTS.items()]
            for event, right, extra in cases:
                answer = await console.call(event, {"conversation_id": "no-such-conversation",
                                                    **extra}, namespace=AGENT_NAMESPACE,
                                            timeout=WAIT)
                need = {right, EVENT_RIGHTS[event]}
                if need <= rights:
                    assert answer["status"] == ALLOWED.get(event, 404), (tier, event, extra,
                                                                        answer)
                else:
                    assert (answer["status"], answer["error"]) == (403, "forbidden"), (
                        tier, event, extra, answer)
                checked += 1
        finally:
            await console.disconnect()
    assert checked > 7 * len(routes)

    # Anonymous and a customer: no way into /agent, and no agent event on the customers' side.
    anonymous = socketio.AsyncClient()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await anonymous.connect(gateway.url, namespaces=[AGENT_NAMESPACE],
                                transports=["websocket"])
    customer = await Widget(gateway.url).connect()
    try:
        session_id = await customer.started()  # its conversation is kept from the first message
        intruder = socketio.AsyncClient()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await intruder.connect(gateway.url, namespaces=[AGENT_NAMESPACE],
                                   transports=["websocket"], auth={"token": session_id})
        for event in sorted(events):  # the default namespace has no such handler: ignored
            await customer.emit(event, {"conversation_id": session_id})
        await customer.nothing()
        conversation = (await api.get(f"/api/conversations/{session_id}",
                                      headers=logins["admin"])).json()
        assert conversation["router"]["owner"] is None
        assert conversation["router"]["mode"] == "bot"
    finally:
        await customer.close()


async def test_an_undeclared_route_stops_the_app(tmp_path: Path) -> None:
    settings = load_settings({"HANDOFF_JWT_SECRET": "s" * 40, "HANDOFF_RASA_TOKEN": "t"},
                             env_file=None, var_dir=tmp_path)
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    rasa = RasaClient("http://127.0.0.1:9", "t")
    try:
        app = create_app(settings, store, rasa)
        sio = app.ctx.notifier._sio

        @app.get("/api/forgotten", name="forgotten")
        async def _forgotten(request: Any) -> None:
            raise AssertionError("never served")

        with pytest.raises(Undeclared, match="forgotten"):
            check_surface(app, sio)
        app2 = create_app(settings, store, rasa)
        sio2 = app2.ctx.notifier._sio

        async def sneaky(sid: str, data: Any = None) -> None:
            raise AssertionError("never called")

        sio2.on("sneaky", handler=sneaky, namespace=AGENT_NAMESPACE)
        with pytest.raises(Undeclared, match="/agent sneaky"):
            check_surface(app2, sio2)
    finally:
        await rasa.close()
        await store.close()


async def test_a_tier_change_takes_effect_on_an_open_socket(
        gateway: Gateway, store: Store, api: httpx.AsyncClient) -> None:
    admin = await user_login(store, api, "rights-admin", "admin")
    name = f"tess-{uuid.uuid4().hex[:6]}"
    tess = await user_login(store, api, name, "agent")
    console, pushed = await agent_console(gateway, tess, "rights")
    try:
        before = await console.call("takeover", {"conversation_id": "no-such-conversation"},
                                    namespace=AGENT_NAMESPACE, timeout=WAIT)
        assert before["status"] == 404
        resp = await api.patch(f"/api/users/{name}", headers=admin,
                               json={"tier": "trainee", "reason": "back to training"})
        assert resp.status_code == 200 and resp.json()["user"]["tier"] == "trainee"
        assert await asyncio.wait_for(pushed.get(), WAIT) == {  # the console re-renders
            "tier": "trainee", "rights": ["watch", "approve", "whisper"]}
        after = await console.call("takeover", {"conversation_id": "no-such-conversation"},
                                   namespace=AGENT_NAMESPACE, timeout=WAIT)
        assert (after["status"], after["right"]) == (403, "takeover")
        me = (await api.get("/api/me", headers=tess)).json()["user"]
        assert (me["tier"], me["rights"]) == ("trainee", ["watch", "approve", "whisper"])
        entry = (await api.get("/api/audit", headers=admin,
                               params={"target": f"user:{name}", "action": "tier_changed"})
                 ).json()["entries"][0]
        assert (entry["actor"], entry["details"]) == ("rights-admin", {
            "reason": "back to training", "before": "agent", "after": "trainee"})
    finally:
        await console.disconnect()


async def _cli(gateway: Gateway, *args: str) -> None:
    """``python -m handoff.web.auth ARGS`` on the gateway's database, beside the gateway."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")},
           "HANDOFF_ENV_FILE": os.devnull}
    process = await asyncio.create_subprocess_exec(
        str(GATEWAY_PYTHON), "-m", "handoff.web.auth", *args, "--url", gateway.database_url,
        cwd=PROJECT_ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode == 0, err.decode()


async def test_a_tier_change_and_a_disable_from_the_cli_reach_an_open_socket_at_the_next_push(
        gateway: Gateway, store: Store, api: httpx.AsyncClient) -> None:
    """The CLI changes only the database: the gateway notices before its next push (it reads
    the users of its open sockets), applies the new tier and ends a disabled user's socket."""
    name = f"cleo-{uuid.uuid4().hex[:6]}"
    cleo = await user_login(store, api, name, "agent")
    console, pushed = await agent_console(gateway, cleo, "rights")
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    console.on("message", messages.put, namespace=AGENT_NAMESPACE)
    gone = asyncio.Event()
    console.on("disconnect", gone.set, namespace=AGENT_NAMESPACE)
    customer = await Widget(gateway.url).connect()
    try:
        await _cli(gateway, "set-tier", "--username", name, "--tier", "trainee",
                   "--reason", "back to training")
        assert pushed.empty()  # nothing pushed yet: the gateway has not looked
        session_id = await customer.started("hello")  # pushes to every agent
        assert await asyncio.wait_for(pushed.get(), WAIT) == {
            "tier": "trainee", "rights": ["watch", "approve", "whisper"]}
        while (await asyncio.wait_for(messages.get(), WAIT)).get("text") != "hello":
            pass  # the customer's words reach the trainee (watch)
        await _cli(gateway, "disable", "--username", name, "--reason", "left the team")
        assert console.connected
        await customer.say(session_id, "my card is 4111 1111 1111 1111")
        await asyncio.wait_for(gone.wait(), WAIT)  # ended before the card's push
        await customer.next()  # the bot answered: every push of this turn is done
        await asyncio.sleep(0.5)
        texts = []
        while not messages.empty():
            texts.append(messages.get_nowait().get("text"))
        assert not any("4111" in (t or "") for t in texts), texts
    finally:
        await customer.close()
        await console.disconnect()
    entries = (await api.get("/api/audit", headers=await user_login(
        store, api, "rights-admin", "admin"), params={"target": f"user:{name}"})).json()
    assert [(e["actor"], e["action"]) for e in entries["entries"]] == [
        ("cli", "user_disabled"), ("cli", "tier_changed")]


async def test_an_agents_event_checks_every_open_socket_before_its_pushes(
        gateway: Gateway, store: Store, api: httpx.AsyncClient) -> None:
    """An ``/agent`` event reads its user and the users of every open socket at once, and its
    pushes go by that read (one read, not one per push): a user disabled from the CLI before
    another agent's takeover is disconnected before that takeover's pushes, and hears none."""
    cleo_name, dana_name = (f"{n}-{uuid.uuid4().hex[:6]}" for n in ("cleo", "dana"))
    cleo = await user_login(store, api, cleo_name, "agent")
    dana = await user_login(store, api, dana_name, "agent")
    watching, statuses = await agent_console(gateway, cleo, "status")
    gone = asyncio.Event()
    watching.on("disconnect", gone.set, namespace=AGENT_NAMESPACE)
    acting, _ = await agent_console(gateway, dana, "status")
    customer = await Widget(gateway.url).connect()
    try:
        session_id = await customer.started("hello")
        await _cli(gateway, "disable", "--username", cleo_name, "--reason", "left the team")
        assert watching.connected
        answer = await acting.call("takeover", {"conversation_id": session_id},
                                   namespace=AGENT_NAMESPACE, timeout=WAIT)
        assert answer["conversation"]["owner"] == dana_name, answer
        await asyncio.wait_for(gone.wait(), WAIT)
        taken = []
        while not statuses.empty():
            taken.append(statuses.get_nowait())
        assert not any(s.get("owner") == dana_name for s in taken), taken
    finally:
        await customer.close()
        await acting.disconnect()
        await watching.disconnect()


async def test_logout_and_disable_end_sockets(
        gateway: Gateway, store: Store, api: httpx.AsyncClient) -> None:
    admin = await user_login(store, api, "rights-admin", "admin")
    for ending in ("logout", "disable"):
        name = f"olga-{ending}-{uuid.uuid4().hex[:6]}"
        olga = await user_login(store, api, name, "agent")
        console, messages = await agent_console(gateway, olga, "message")
        gone = asyncio.Event()
        console.on("disconnect", gone.set, namespace=AGENT_NAMESPACE)
        if ending == "logout":
            resp = await api.post("/api/logout", headers=olga)
        else:
            resp = await api.patch(f"/api/users/{name}", headers=admin,
                                   json={"disabled": True, "reason": "left the team"})
        assert resp.status_code == 200, resp.text
        await asyncio.wait_for(gone.wait(), WAIT)
        # The old token is refused everywhere, and a customer's words reach no one.
        refused = await api.get("/api/conversations", headers=olga)
        assert refused.status_code == (401 if ending == "logout" else 403), refused.text
        customer = await Widget(gateway.url).connect()
        try:
            session_id = await customer.session()
            await customer.say(session_id, "my card is 4111 1111 1111 1111")
            await customer.next()
            await asyncio.sleep(0.5)
            assert messages.empty()
        finally:
            await customer.close()
            await console.disconnect()
    audit = (await api.get("/api/audit", headers=admin, params={"action": "user_disabled"})
             ).json()["entries"]
    assert audit[0]["details"] == {"reason": "left the team"}


async def test_brute_force_logins_meet_back_off_and_a_lockout_an_admin_lifts(
        gateway: Gateway, store: Store, api: httpx.AsyncClient) -> None:
    admin = await user_login(store, api, "rights-admin", "admin")
    name = f"bruno-{uuid.uuid4().hex[:6]}"
    await user_login(store, api, name, "agent")
    answers: list[int] = []
    for attempt in range(30):  # a guesser that respects nothing but retry_after < 2 s
        resp = await api.post("/api/login", json={"username": name,
                                                  "password": f"guess-{attempt}"})
        answers.append(resp.status_code)
        if resp.status_code == 429:
            body = resp.json()
            assert body["error"] == "too_many_attempts"
            if body["locked"]:
                break
            await asyncio.sleep(body["retry_after"])
    assert answers.count(401) == 5 and answers[-1] == 429  # 5 wrong passwords, then locked
    right = {"username": name, "password": f"{name}-password"}
    locked = await api.post("/api/login", json=right)
    assert locked.status_code == 429 and locked.json()["locked"] is True
    scrape = (await api.get("/metrics")).text
    assert 'handoff_login_failures_total{reason="locked"}' in scrape
    assert (await api.post(f"/api/users/{name}/unlock", headers=admin, json={})).status_code == 400
    lifted = await api.post(f"/api/users/{name}/unlock", headers=admin,
                            json={"reason": "it was me, typing fast"})
    assert lifted.json()["unlocked"] is True and name not in lifted.json()["locked"]
    assert (await api.post("/api/login", json=right)).status_code == 200


async def test_an_admin_overrides_a_disabled_owners_conversation(
        gateway: Gateway, store: Store, api: httpx.AsyncClient) -> None:
    admin = await user_login(store, api, "rights-admin", "admin")
    name = f"otto-{uuid.uuid4().hex[:6]}"
    otto = await user_login(store, api, name, "agent")
    other = await user_login(store, api, "rights-agent", "agent")
    customer = await Widget(gateway.url).connect()
    try:
        conversation = await customer.session()
        await customer.say(conversation, "hello")
        await customer.next()
        base = f"/api/conversations/{conversation}"
        assert (await api.post(f"{base}/takeover", headers=otto)).status_code == 200
        await api.patch(f"/api/users/{name}", headers=admin,
                        json={"disabled": True, "reason": "left mid-shift"})
        assert (await api.post(f"{base}/takeover", headers=admin)).status_code == 409
        refused = await api.post(f"{base}/override", headers=other,
                                 json={"action": "takeover", "reason": "x"})
        assert (refused.status_code, refused.json()["right"]) == (403, "override")
        bad = await api.post(f"{base}/override", headers=admin, json={"action": "steal",
                                                                     "reason": "x"})
        assert bad.status_code == 400
        taken = await api.post(f"{base}/override", headers=admin,
                               json={"action": "takeover", "reason": "orphaned"})
        assert taken.status_code == 200, taken.text
        assert (taken.json()["conversation"]["mode"],
                taken.json()["conversation"]["owner"]) == ("human", "rights-admin")
        closed = await api.post(f"{base}/override", headers=admin,
                                json={"action": "close", "reason": "done"})
        assert closed.json()["conversation"]["mode"] == "closed"
        entries = (await api.get("/api/audit", headers=admin, params={
            "target": f"conversation:{conversation}"})).json()["entries"]
        assert [(e["action"], e["details"]) for e in entries[:2]] == [
            ("override_close", {"reason": "done", "owner": "rights-admin"}),
            ("override_takeover", {"reason": "orphaned", "owner": name})]
    finally:
        await customer.close()


async def test_the_conversation_list_is_paginated_and_filtered(
        gateway: Gateway, store: Store, api: httpx.AsyncClient) -> None:
    agent = await user_login(store, api, "rights-agent", "agent")
    for _ in range(3):
        await store.upsert_conversation(f"page-{uuid.uuid4().hex[:8]}")
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        resp = await api.get("/api/conversations", headers=agent,
                             params={"limit": 2, "offset": offset})
        body = resp.json()
        assert len(body["conversations"]) <= 2
        seen += [c["id"] for c in body["conversations"]]
        offset = body["next_offset"]
    everything = (await api.get("/api/conversations", headers=agent,
                                params={"limit": 500})).json()
    assert seen == [c["id"] for c in everything["conversations"]] and len(seen) >= 3
    assert (await api.get("/api/conversations", headers=agent,
                          params={"limit": 501})).status_code == 400
    mine = (await api.get("/api/conversations", headers=agent,
                          params={"owner": "nobody-owns-this"})).json()
    assert mine == {"conversations": [], "next_offset": None}


async def test_pushes_asking_at_once_share_a_read_that_started_after_they_asked(
        tmp_path: Path) -> None:
    """The users before a push: the pushes that ask while a read runs share the next read
    (a burst is two reads, not one each), and none is served by a read that started before
    it asked, so a change committed before it asked is seen."""
    from handoff.web.notifier import _UsersReads
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'users.db'}")
    await store.migrate()
    try:
        for name in ("una", "vic"):
            await store.create_user(name, password_hash="x", tier="agent")
        calls: list[set[str]] = []
        gate = asyncio.Event()

        async def read(names: Any) -> Any:
            calls.append(set(names))
            await gate.wait()
            return await store.users_by_name(names)

        reads = _UsersReads(read)
        gate.set()
        burst = await asyncio.gather(*(reads.users({"una"}) for _ in range(50)))
        assert calls == [{"una"}] and all(not b["una"].disabled for b in burst)
        gate.clear()
        running = asyncio.ensure_future(reads.users({"una"}))
        await asyncio.sleep(0.05)  # the read has started (and waits at the gate)
        await store.update_user("una", disabled=True)
        after = [asyncio.ensure_future(reads.users(n)) for n in ({"una"}, {"vic"})]
        await asyncio.sleep(0.05)
        assert len(calls) == 2  # the ones asking now wait for the next read
        gate.set()
        later = await asyncio.gather(*after)
        await running
        assert calls[2] == {"una", "vic"}  # one read for both
        assert all(found["una"].disabled for found in later) and "vic" in later[1]
    finally:
        await store.close()


async def test_the_pushes_of_one_step_share_one_read_of_the_users(tmp_path: Path) -> None:
    """``SocketNotifier.pushes``: the pushes of a block (one router step's) go by the read
    their first push made, which started after it asked (a user disabled before it is cut
    off); the next block reads again, and so does a push outside any block."""
    import time
    from handoff.web.notifier import SocketNotifier
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'users.db'}")
    await store.migrate()
    try:
        for name in ("una", "vic"):
            await store.create_user(name, password_hash="x", tier="agent")
        calls: list[set[str]] = []

        async def read(names: Any) -> Any:
            calls.append(set(names))
            return await store.users_by_name(names)

        sio = socketio.AsyncServer(async_mode="asgi")
        notifier = SocketNotifier(sio, users_now=read)
        for eio, name in (("e1", "una"), ("e2", "vic")):
            sid = await sio.manager.connect(eio, AGENT_NAMESPACE)
            user = await store.get_user(name)
            await notifier.join_agent(sid, user, time.time() + 60, user.token_version)
        with notifier.pushes():
            for event in ("message", "status", "pending_reply"):
                await notifier.to_agents(event, {})
        assert calls == [{"una", "vic"}]
        await store.update_user("vic", disabled=True)
        with notifier.pushes():
            await notifier.to_agents("message", {})
            assert len(calls) == 2 and notifier.connections()[AGENT_NAMESPACE] == 1
            await notifier.to_agents("status", {})
        await notifier.to_agents("message", {})
        await notifier.to_agents("status", {})
        assert calls == [{"una", "vic"}, {"una", "vic"}, {"una"}, {"una"}]
    finally:
        await store.close()
