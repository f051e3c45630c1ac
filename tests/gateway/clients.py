"""Test clients of the running gateway: a customer's widget (python-socketio speaking Rasa's
protocol) and an agent's login and console (the ``/agent`` namespace)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
import socketio

from handoff.errors import NotFound
from handoff.store import Store
from handoff.web.auth import create_user
from tests.gateway.conftest import Gateway

WAIT = 60.0  # seconds for anything that involves Rasa
QUIET = 1.0  # seconds of silence that count as "nothing came"


class Widget:
    """A customer's chat widget: python-socketio's AsyncClient speaking Rasa's protocol."""

    def __init__(self, url: str, transports: list[str] | None = None) -> None:
        self.url = url
        self.transports = transports or ["websocket"]
        self.sio = socketio.AsyncClient()
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.sio.on("*", self._any)

    async def _any(self, event: str, data: Any = None) -> None:
        await self.events.put((event, data))

    async def connect(self) -> Widget:
        await self.sio.connect(self.url, socketio_path="/socket.io", transports=self.transports)
        return self

    async def session(self, session_id: str | None = None) -> str:
        await self.sio.emit("session_request", {"session_id": session_id})
        event, data = await self.next()
        assert event == "session_confirm"
        assert isinstance(data, str)
        return data

    async def started(self, text: str = "hi") -> str:
        """A new session the customer has spoken in (the gateway keeps a conversation only
        from the first message): ``session_request``, ``text`` and the bot's one answer."""
        session_id = await self.session()
        await self.say(session_id, text)
        event, _ = await self.next()
        assert event == "bot_uttered"
        return session_id

    async def secure_session(self, session_id: str | None = None,
                             secret: str | None = None) -> tuple[str, str | None]:
        """``session_request`` as the gateway's widget sends it (with the session's secret, and
        asking for the acknowledgement): the confirmed session id and the secret of a newly
        issued session (None when an existing session was joined)."""
        payload: dict[str, Any] = {"session_id": session_id}
        if secret is not None:
            payload["session_secret"] = secret
        reply = await self.sio.call("session_request", payload, timeout=WAIT)
        assert await self.next() == ("session_confirm", reply["session_id"])
        return reply["session_id"], reply["session_secret"]

    async def next(self, timeout: float = WAIT) -> tuple[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def say(self, session_id: str, text: str) -> None:
        await self.sio.emit("user_uttered", {"message": text, "session_id": session_id})

    async def emit(self, event: str, data: Any) -> None:
        await self.sio.emit(event, data)

    async def nothing(self) -> None:
        await asyncio.sleep(QUIET)
        assert self.events.empty(), self.events.get_nowait()

    async def close(self) -> None:
        await self.sio.disconnect()


@pytest_asyncio.fixture
async def widget(gateway: Gateway) -> AsyncIterator[Widget]:
    """A connected customer widget (import into a test module to use)."""
    w = await Widget(gateway.url).connect()
    yield w
    await w.close()


@pytest_asyncio.fixture(name="store")
async def gateway_store(gateway: Gateway) -> AsyncIterator[Store]:
    """``store``: the running gateway's own database, opened from the test (SQLite WAL: readers
    do not block). Import into a test module to use it instead of conftest's empty store."""
    s = Store(gateway.database_url)
    yield s
    await s.close()


@pytest_asyncio.fixture
async def api(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the gateway's API (import into a test module to use)."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=WAIT) as client:
        yield client


async def user_login(store: Store, api: httpx.AsyncClient, username: str,
                     role: str) -> dict[str, str]:
    """Create a user of the tier ``role`` (once) and log in; the Authorization header."""
    try:
        await store.get_user(username)
    except NotFound:
        await create_user(store, username, f"{username}-password", role)
    resp = await api.post("/api/login", json={"username": username,
                                              "password": f"{username}-password"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"token", "expires_at", "tier", "rights", "role"}
    assert body["tier"] == body["role"] == role
    return {"Authorization": f"Bearer {body['token']}"}


async def admin_login(gateway: Gateway, api: httpx.AsyncClient) -> dict[str, str]:
    """Log in as the first admin with the password the gateway printed; the Authorization
    header (for a gateway whose store the test does not open)."""
    resp = await api.post("/api/login", json={"username": "admin",
                                              "password": gateway.admin_password})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


async def agent_login(store: Store, api: httpx.AsyncClient, username: str) -> dict[str, str]:
    """Create an agent (once) and log in; the Authorization header."""
    return await user_login(store, api, username, "agent")


async def agent_console(gateway: Gateway, headers: dict[str, str],
                        event: str) -> tuple[socketio.AsyncClient, asyncio.Queue[dict[str, Any]]]:
    """An agent console connected to /agent, with a queue of the pushes of one event."""
    console = socketio.AsyncClient()
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_event(data: dict[str, Any]) -> None:
        await received.put(data)

    console.on(event, on_event, namespace="/agent")
    await console.connect(gateway.url, namespaces=["/agent"], transports=["websocket"],
                          auth={"token": headers["Authorization"].split()[1]})
    return console, received
