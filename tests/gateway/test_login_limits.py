"""Login limits kept in the store (issue 15, docs/security.md "Login limits"): two gateway
nodes on one database and a restarted gateway see the same back-off and lockout, and an
admin's unlock on one node lifts it on every node. On SQLite and PostgreSQL (the store
fixture), and end to end with two real gateway processes and a restart (``-m long``; the
default run's brute-force test in test_rights.py goes through the store too)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from bot.serve import Stack
from handoff.store import Store
from handoff.web.login_limits import LoginLimits, TooManyAttempts
from tests.gateway.clients import WAIT, user_login
from tests.gateway.conftest import _start_gateway, _stop

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 12, 6, 4, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def limits(store: Store) -> LoginLimits:
    return LoginLimits(store, max_failures=5, ip_max_failures=50, backoff=1.0, lockout=60.0)


async def test_two_nodes_and_a_restart_share_the_back_off_and_the_lockout(
        store: Store, store_url: str) -> None:
    other = Store(store_url)  # a second node on the same database
    try:
        a, b = limits(store), limits(other)
        for node in (a, b):  # two free failures, one on each node
            await node.check("olga", "10.0.0.1", at(0))
            assert await node.failed("olga", "10.0.0.1", at(0)) is False
        assert await a.failed("olga", "10.0.0.2", at(0)) is False  # the third: 1 s back-off
        with pytest.raises(TooManyAttempts) as waiting:
            await b.check("olga", "10.0.0.3", at(0.5))
        assert waiting.value.details == {"retry_after": 0.6, "locked": False}
        await b.check("olga", "10.0.0.3", at(1.0))  # the back-off is over on both nodes
        assert await b.failed("olga", "10.0.0.3", at(1.0)) is False  # the 4th: 2 s
        with pytest.raises(TooManyAttempts):
            await a.check("olga", "10.0.0.3", at(2.5))
        assert await a.failed("olga", "10.0.0.3", at(3.0)) is True  # the 5th: locked, 60 s
        assert await b.locked_names(at(30)) == ["olga"]
        restarted = Store(store_url)  # a node started afresh
        try:
            with pytest.raises(TooManyAttempts) as locked:
                await limits(restarted).check("olga", "10.0.0.9", at(30))
            assert locked.value.details == {"retry_after": 33.0, "locked": True}
        finally:
            await restarted.close()
        assert await b.unlock("olga") is True  # an admin on node b lifts it ...
        await a.check("olga", "10.0.0.1", at(30))  # ... on node a too
        assert await a.locked_names(at(30)) == []
        assert await a.unlock("olga") is False
        rows = await store.login_limits(["user:olga", "ip:10.0.0.1", "ip:10.0.0.3"])
        assert {k: r.failures for k, r in rows.items()} == {"ip:10.0.0.1": 2, "ip:10.0.0.3": 2}
    finally:
        await other.close()


async def test_failures_counted_at_once_on_two_nodes_are_all_counted(
        store: Store, store_url: str) -> None:
    other = Store(store_url)
    try:
        a, b = limits(store), limits(other)
        await asyncio.gather(*(node.failed("pat", "10.0.0.5", at(0))
                               for node in (a, b) * 10))
        rows = await store.login_limits(["user:pat", "ip:10.0.0.5"])
        assert {k: r.failures for k, r in rows.items()} == {"user:pat": 20, "ip:10.0.0.5": 20}
        assert rows["user:pat"].locked is True
    finally:
        await other.close()


async def test_a_lockout_ends_and_quiet_failures_are_forgotten(store: Store) -> None:
    node = limits(store)
    for _ in range(5):
        await node.failed("quinn", "10.0.0.6", at(0))
    with pytest.raises(TooManyAttempts):
        await node.check("quinn", "10.0.0.6", at(59))
    await node.check("quinn", "10.0.0.6", at(60))  # over: the name starts afresh
    assert set(await store.login_limits(["user:quinn", "ip:10.0.0.6"])) == {"ip:10.0.0.6"}
    await node.failed("rita", "10.0.0.7", at(120))  # 60 s after: the quiet row is dropped
    assert set(await store.login_limits(["ip:10.0.0.6", "user:rita", "ip:10.0.0.7"])) == {
        "user:rita", "ip:10.0.0.7"}


@pytest.mark.long  # three gateway starts, ~28 s: the store tests above run by default
async def test_a_lockout_on_one_gateway_holds_on_another_and_after_a_restart(
        rasa_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nodes a and b serve one database at once: a lockout earned on a refuses the right
    password on b, and on a restarted a; an unlock on b lets the user in on the restarted a."""
    shared = tmp_path_factory.mktemp("two-nodes")
    env = {"HANDOFF_DATABASE_URL": f"sqlite+aiosqlite:///{shared / 'handoff.db'}",
           "HANDOFF_LOGIN_BACKOFF": "0.01"}
    (shared / "a").mkdir()
    (shared / "b").mkdir()
    a = await asyncio.to_thread(_start_gateway, shared / "a", rasa_stack.rasa_url,
                                rasa_stack.token, env)
    b = await asyncio.to_thread(_start_gateway, shared / "b", rasa_stack.rasa_url,
                                rasa_stack.token, env)
    right = {"username": "lena", "password": "lena-password"}
    store = Store(env["HANDOFF_DATABASE_URL"])
    try:
        async with httpx.AsyncClient(base_url=a.url, timeout=WAIT) as api_a, \
                httpx.AsyncClient(base_url=b.url, timeout=WAIT) as api_b:
            admin = await user_login(store, api_b, "limits-admin", "admin")
            await user_login(store, api_a, "lena", "agent")
            answers = []
            for n in range(5):
                await asyncio.sleep(0.05)  # the back-off of the 3rd and 4th
                resp = await api_a.post("/api/login", json={"username": "lena",
                                                            "password": f"guess-{n}"})
                answers.append(resp.status_code)
            assert answers == [401] * 5
            locked = await api_b.post("/api/login", json=right)
            assert locked.status_code == 429 and locked.json()["locked"] is True
            await asyncio.to_thread(_stop, a.process)  # a restarts
            a = await asyncio.to_thread(_start_gateway, shared / "a", rasa_stack.rasa_url,
                                        rasa_stack.token, env)
            api_a.base_url = httpx.URL(a.url)
            assert (await api_a.post("/api/login", json=right)).status_code == 429
            lifted = await api_b.post("/api/users/lena/unlock", headers=admin,
                                      json={"reason": "she remembered it"})
            assert lifted.json() == {"unlocked": True, "locked": []}
            assert (await api_a.post("/api/login", json=right)).status_code == 200
    finally:
        await store.close()
        for node in (a, b):
            await asyncio.to_thread(_stop, node.process)
