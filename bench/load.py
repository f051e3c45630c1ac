"""Load on the gateway: a swarm of customers (python-socketio, Rasa's protocol as the widget
speaks it) and scripted agents, loopback only, bounded in time.

    .venv/gateway/bin/python bench/load.py --customers 50 --messages 5
    .venv/gateway/bin/python bench/load.py --customers 200 --messages 5 --rate 10
    .venv/gateway/bin/python bench/load.py --idle 2000          # idle sockets and memory
    .venv/gateway/bin/python bench/load.py --nodes 1 --database-url postgresql ...
    .venv/gateway/bin/python bench/load.py --nodes 2 ...        # same store, two gateways

It starts a Rasa server with the trained model (SQLite tracker store, as ``make run``), an
action server and ``--nodes`` gateway processes on free ports (``bot.serve``'s ``Stack``, as
the tests do). Each customer opens a session, sends ``--messages`` messages one after another
(each, the first too, after an exponential pause averaging ``customers / rate`` seconds and
the reply to the one before, so that all of them together send about ``--rate`` messages a
second from the start while they have messages left; 0: no pause; a paced swarm connects
within its first 30 s and stays connected) and records every ``bot_uttered`` and
``handoff_notice``. ``--review-share`` of the
conversations are put in review by a scripted agent (logged in through the API, on the
``/agent`` namespace) after their first reply; the agent approves every reply held for it.

Printed: customer-turn latency (message sent → first reply) p50/p99 for bot and review
conversations, the agents' review (takeover) acknowledgement p99, the admission control's
queue (most calls waiting) and the human queue, conversations queued for a person because of
load (the customer got ``handoff_queued``), messages never answered, conversations whose Rasa
tracker differs from what the customer saw (the bot's texts, in order), the turns a second
achieved, and each process's memory (RSS). Then the gateways' own account of where the
agents' clicks waited, scraped from their ``/metrics`` at the end of the swarm (docs/metrics.md,
"Prometheus"): the review events' time in their handler and their read of the users, the waits
for the conversations' locks by who waited, and the event loop's lag; each as how many were
over a bound and the bucket the p99 falls in (the histograms keep buckets, not values).

``--idle N``: instead, connect N customer sockets that open a session and stay idle (spread
over client processes of 2,500 sockets each, ``--idle-processes`` to choose; each socket
speaks Engine.IO/Socket.IO frames over one aiohttp session per process, so the clients are not
the limit), keep them open ``--idle-hold`` seconds (60) and count those still open; prints the
gateway's RSS before and after, the memory per socket and how many such sockets fit in 1 GB.

``--nodes 2``: two gateway processes share a fresh PostgreSQL database on ``--pg-url``
(``load_bench_<pid>_…``, dropped at the end) and ``--redis-url`` under their own
``HANDOFF_REDIS_PREFIX``; customers alternate between the nodes and each review goes to an
agent on the other node; each node's RSS is printed. ``--nodes 1 --database-url postgresql``
puts the one node on such a database too, to compare the two fairly. The short version of
both modes runs in the test suite (tests/gateway/test_overload.py), asserting the correctness
goals only, never timings.

``--rasa 2``: two Rasa servers behind the gateway(s), sharing a fresh PostgreSQL tracker store
and a Redis lock store (docs/deploy.md), listed in ``HANDOFF_RASA_URL``; the calls each server
answered are printed, and the answered turns a second per server and per core. ``--rasa 1,2``
starts one system of each (all on the shared stores, so that only the number of servers
differs) and interleaves their runs rate by rate. ``--hop`` sends each customer's messages
through the gateway nodes in turn (one session); with ``--nodes 2`` the second node names the
servers ``localhost`` and so picks other servers for many conversations: their turns then run
on both servers, one at a time, and their trackers must still hold what the customer saw
("on several servers" counts them). The short version runs in
tests/gateway/test_rasa_pool_e2e.py (``long``).

    .venv/gateway/bin/python bench/load.py --rasa 1,2 --nodes 2 --hop --rate 0,4

``--shared-tracker-store``: the shared PostgreSQL tracker store's ``type``: the project's
``bot.tracker_store.SQLTrackerStore`` (docs/deploy.md's multi-server setup; the default) or
Rasa's ``SQL``; both, comma-separated, start one system each and interleave their runs.

    .venv/gateway/bin/python bench/load.py --rasa 2 \
        --shared-tracker-store SQL,bot.tracker_store.SQLTrackerStore --rate 0

``--database-url sqlite,postgresql`` and ``--gateway-code /work/main,.``: one system for each
store and each checkout (the gateways of a checkout run its ``handoff/``, in this environment),
all started at once and their runs interleaved, then a summary table: the stores, or the code
before and after a change, side by side in one run. ``--pg-prefix`` names the fresh databases.

    .venv/gateway/bin/python bench/load.py --customers 200 --messages 3 --review-share 0.5 \
        --database-url sqlite,postgresql --gateway-code /work/main,. --pg-prefix takeover

SIGTERM (``timeout``, a CI's cancel) stops a run as Ctrl-C does: the swarm or the idle sockets
are cancelled, the client processes close their sockets and exit, the servers stop and the
fresh databases are dropped; nothing it started is left running.

``--rasa-code /work/main,.``: the same for the Rasa side: each system's Rasa servers and action
server run that checkout's ``bot/``, ``actions/`` and ``credentials.yml``, on the SQLite tracker
store its ``endpoints.yml`` ships (the model is this checkout's). ``--timeline 10`` also prints
each run in 10 s windows (turns answered a second, the CPU of the Rasa servers and of the
gateways, calls waiting) and the longest time no turn was answered while calls waited: a stall
or a steady rate. Every run prints the CPU the Rasa servers and the gateways used per answered
turn. ``--deadline``: the swarm stops sending then; the messages already sent are answered and
measured, those not sent are counted apart (a run at a low rate has a long tail: each
customer's pauses are exponential).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import aiohttp
import httpx
import socketio

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from actions.shop_db import seed  # noqa: E402
from bot.serve import GATEWAY_PYTHON, Service, Stack, latest_model  # noqa: E402
from bench.rasa_turn import MESSAGES, cpu_seconds, percentile  # noqa: E402  (one response each)
from handoff.conversation.customer_protocol import bot_uttered_payloads  # noqa: E402

HOP_OVERLAP = 1.0  # seconds both sockets of a customer that moves between nodes are open
# the shared PostgreSQL tracker store's type (docs/deploy.md; --shared-tracker-store)
SHARED_TRACKER_STORE = "bot.tracker_store.SQLTrackerStore"
REPLY_WAIT = 120.0  # seconds a customer waits for a reply before it counts as unanswered
CONNECT_SPREAD = 30.0  # seconds over which a paced swarm's customers connect (--rate > 0)
GIGABYTE = 1024 ** 3
OPEN_LIMITS = {  # every customer here comes from 127.0.0.1: the per-address limits at their top
    "HANDOFF_IP_MESSAGE_RATE": "10000", "HANDOFF_IP_MESSAGE_BURST": "100000",
    "HANDOFF_IP_CONNECT_RATE": "10000", "HANDOFF_IP_CONNECT_BURST": "100000",
}


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# --------------------------------------------------------------------------- the system


@dataclass
class Node:
    """A gateway process the bench talks to."""

    url: str
    pid: int | None = None  # None: not started by the bench (no memory figure)


@dataclass
class System:
    """Where the bench points its customers and agents."""

    nodes: list[Node]
    rasa_url: str
    rasa_token: str
    admin_password: str
    rasa_pid: int | None = None
    # every Rasa server (its URL and process id); with several, the node at index i names
    # them as rasa_names[i] does (see started_system)
    rasa_servers: list[tuple[str, int | None]] = field(default_factory=list)
    rasa_names: list[list[str]] = field(default_factory=list)
    label: str = ""  # how the runs name it when several systems run side by side

    def server_of(self, url: str) -> str:
        """The Rasa server (``:port``) a URL any node uses names."""
        return ":" + url.rstrip("/").rsplit(":", 1)[1]


def multi_node_supported() -> bool:
    """Whether this gateway has the multi-node settings (another piece of work adds them)."""
    from handoff.settings import SETTINGS
    return any(s.name == "redis_url" for s in SETTINGS)


def gateway_env(port: int, rasa_url: str, token: str, tmp: Path, database_url: str,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """A gateway's environment for load: triage off (its flags would hold replies: that is
    triage's test), and the per-address limits (docs/security.md) opened, since every
    customer here comes from 127.0.0.1."""
    return {
        "HANDOFF_PORT": str(port), "HANDOFF_HOST": "127.0.0.1",
        "HANDOFF_RASA_URL": rasa_url, "HANDOFF_RASA_TOKEN": token,
        "HANDOFF_ENV_FILE": str(tmp / "no.env"), "HANDOFF_DATABASE_URL": database_url,
        "HANDOFF_TRIAGE_ENABLED": "false", "HANDOFF_JWT_SECRET": secrets.token_urlsafe(48),
        # (started_system passes one secret to every node: an agent's token works on each)
        "HANDOFF_LOG_LEVEL": "WARNING",
        "HANDOFF_FIRST_ADMIN_PASSWORD_FILE": str(tmp / "first-admin-password"),
        **OPEN_LIMITS, **(extra or {}),
    }


@contextmanager
def started_system(nodes: int, tmp: Path, gateway_extra: dict[str, str],
                   pg_url: str, redis_url: str, database_url: str = "", rasa: int = 1,
                   shared_rasa_stores: bool = False, pg_prefix: str = "load_bench",
                   code: Path = PROJECT_ROOT, rasa_code: Path = PROJECT_ROOT,
                   shared_tracker_store: str = SHARED_TRACKER_STORE) -> Iterator[System]:
    """Rasa, the action server and ``nodes`` gateways on free ports, stopped on exit.

    ``rasa`` > 1 (or ``shared_rasa_stores``): the Rasa servers share a fresh PostgreSQL
    tracker store (``load_bench_rasa_<pid>_…`` on ``pg_url``) and a Redis lock store (on
    ``redis_url``, a key prefix of their own), the multi-node setup of docs/deploy.md, both
    removed at the end; every gateway lists them all in ``HANDOFF_RASA_URL``. With two nodes
    and several servers, the second node names them ``localhost`` instead of ``127.0.0.1``:
    its rendezvous order differs, so a conversation whose customer moves between the nodes
    (``--hop``) has turns on more than one server. ``pg_prefix``: the start of the fresh
    databases' names; ``code``: the checkout whose ``handoff`` the gateways run (another
    branch's, to compare code side by side; the same environment); ``rasa_code``: the
    checkout whose Rasa project the Rasa servers and the action server run (its ``bot``,
    ``actions``, ``credentials.yml`` and the tracker store its ``endpoints.yml`` ships, on a
    file of the run's; the trained model is this checkout's); ``shared_tracker_store``: the
    ``type`` of the shared PostgreSQL tracker store."""
    from tests.conftest import RASA_BIN, free_port
    shared = rasa > 1 or shared_rasa_stores
    rasa_db = ""
    lock_prefix = f"loadbench{os.getpid()}{uuid.uuid4().hex[:6]}"  # Rasa: alphanumeric only
    endpoints: Path | None = None
    actions_port = free_port()
    if shared:
        rasa_db = fresh_pg_database(pg_url, pg_prefix).rsplit("/", 1)[1]
        endpoints = tmp / "endpoints.yml"
        endpoints.write_text(rasa_endpoints(actions_port, pg_url, rasa_db, redis_url,
                                            lock_prefix, shared_tracker_store))
    stack = Stack(rasa_bin=RASA_BIN, model=latest_model(), rasa_port=free_port(),
                  actions_port=actions_port, token=secrets.token_urlsafe(16),
                  log_dir=tmp / "logs", tracker_db=None if shared else tmp / "rasa-tracker.db",
                  tracker_store_type=shipped_tracker_store(rasa_code),
                  project=rasa_code, credentials=rasa_code / "credentials.yml",
                  endpoints=endpoints,
                  env={"SHOP_DB_PATH": str(seed(tmp / "shop.db")),
                       "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    dropped = ""
    try:
        # the first server creates the tracker store's tables alone (two at once can race,
        # and Rasa then falls back to an in-memory tracker store): the others start after it
        stack.start(timeout=600)
        more = [stack.rasa_service(free_port(), stack.model) for _ in range(rasa - 1)]
        for service in more:
            service.start()
            stack.services.append(service)
        for service in more:
            service.wait_until_ready(time.monotonic() + 600)
        rasa_services = [s for s in stack.services if s.name.startswith("Rasa server")]
        urls = [s.ready_url.split("/status", 1)[0] for s in rasa_services]
        names = [urls] + [[u.replace("127.0.0.1", "localhost") for u in urls]
                          if rasa > 1 else urls for _ in range(nodes - 1)]
        extra = dict(gateway_extra)
        fresh_pg = nodes > 1 or database_url in ("postgresql", pg_url)
        if not database_url or database_url in ("postgresql", pg_url):
            database_url = f"sqlite+aiosqlite:///{tmp / 'handoff.db'}"
            if fresh_pg:
                database_url = fresh_pg_database(pg_url, pg_prefix)
                dropped = database_url.rsplit("/", 1)[1]
        if nodes > 1:
            extra["HANDOFF_REDIS_URL"] = redis_url
            extra["HANDOFF_REDIS_PREFIX"] = f"{pg_prefix}_{os.getpid()}"
        extra.setdefault("HANDOFF_JWT_SECRET", secrets.token_urlsafe(48))  # one for all nodes
        services = []
        for i in range(nodes):
            port = free_port()
            node_env = {**extra, "HANDOFF_NODE_ID": f"load-node-{i + 1}"}
            service = Service(
                name=f"handoff gateway {i + 1}", argv=[str(GATEWAY_PYTHON), "-m", "handoff"],
                ready_url=f"http://127.0.0.1:{port}/api/health",
                log_path=tmp / "logs" / f"gateway-{i + 1}.log", cwd=code,
                env=gateway_env(port, ",".join(names[i]), stack.token, tmp, database_url,
                                node_env))
            service.start()
            stack.services.append(service)
            services.append((service, port))
            if i == 0:  # the first node creates the schema and the first admin alone
                service.wait_until_ready(time.monotonic() + 120)
        for service, _ in services:
            service.wait_until_ready(time.monotonic() + 120)
        yield System(
            nodes=[Node(f"http://127.0.0.1:{port}", s.process.pid if s.process else None)
                   for s, port in services],
            rasa_url=stack.rasa_url, rasa_token=stack.token,
            admin_password=(tmp / "first-admin-password").read_text().strip(),
            rasa_pid=rasa_services[0].process.pid if rasa_services[0].process else None,
            rasa_servers=[(u, s.process.pid if s.process else None)
                          for u, s in zip(urls, rasa_services)],
            rasa_names=names)
    finally:
        stack.stop()
        for db in (dropped, rasa_db):
            if db:
                subprocess.run(["psql", pg_url + "/postgres", "-qc",
                                f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'], check=False)
        if shared:
            drop_redis_keys(redis_url, lock_prefix)


def shipped_tracker_store(project: Path) -> str:
    """The tracker store type the project's ``endpoints.yml`` ships for its SQLite file (the
    bench points it at a file of its own)."""
    import yaml
    endpoints = yaml.safe_load((project / "endpoints.yml").read_text()) or {}
    store = endpoints.get("tracker_store") or {}
    if store.get("dialect", "sqlite") != "sqlite":
        raise ValueError(f"{project / 'endpoints.yml'} ships no SQLite tracker store")
    return str(store.get("type") or "SQL")


def rasa_endpoints(actions_port: int, pg_url: str, database: str, redis_url: str,
                   lock_prefix: str, tracker_store: str = SHARED_TRACKER_STORE) -> str:
    """Rasa's endpoints.yml for servers that share a PostgreSQL tracker store and a Redis lock
    store (docs/deploy.md, "Rasa servers, tracker store and lock store")."""
    pg, redis = urlsplit(pg_url), urlsplit(redis_url)
    lines = [
        "action_endpoint:", f'  url: "http://127.0.0.1:{actions_port}/webhook"',
        "tracker_store:", f"  type: {tracker_store}", '  dialect: "postgresql"',
        f'  url: "{pg.hostname or "127.0.0.1"}"', f"  port: {pg.port or 5432}",
        f'  db: "{database}"', f'  username: "{pg.username or "postgres"}"',
    ]
    if pg.password:
        lines.append(f'  password: "{pg.password}"')
    lines += ["lock_store:", '  type: "redis"', f'  url: "{redis.hostname or "127.0.0.1"}"',
              f"  port: {redis.port or 6379}",
              f"  db: {int(redis.path.strip('/') or 0)}", f'  key_prefix: "{lock_prefix}"']
    if redis.password:
        lines.append(f'  password: "{redis.password}"')
    return "\n".join(lines) + "\n"


def drop_redis_keys(redis_url: str, prefix: str) -> None:
    """Delete the keys under ``prefix`` (the bench's Rasa locks; most have expired by now)."""
    import redis as redis_sync
    client = redis_sync.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def fresh_pg_database(pg_url: str, prefix: str = "load_bench") -> str:
    """A new PostgreSQL database for the gateways' shared store (``pg_url``: the server,
    e.g. postgresql://postgres@127.0.0.1:5432), named ``<prefix>_<pid>_<random>``."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    subprocess.run(["psql", pg_url + "/postgres", "-qc", f"CREATE DATABASE {name}"], check=True)
    return pg_url.replace("postgresql://", "postgresql+asyncpg://") + "/" + name


# --------------------------------------------------------------------------- customers


@dataclass
class Turn:
    text: str
    sent: float
    answered: float | None = None


@dataclass
class Customer:
    """One customer's widget: session, messages one after another, everything received."""

    url: str
    review: bool = False
    session_id: str = ""
    secret: str = ""  # the session's secret, to resume it on another node
    turns: list[Turn] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # the bot's (or agent's) texts, in order
    notices: list[str] = field(default_factory=list)
    replied: asyncio.Event = field(default_factory=asyncio.Event)
    sio: socketio.AsyncClient = field(default_factory=lambda: socketio.AsyncClient(
        reconnection=False))

    def __post_init__(self) -> None:
        self.recorder = self.sio  # the socket whose events count (two overlap in a move)
        self._listen(self.sio)

    def _listen(self, sio: socketio.AsyncClient) -> None:
        async def uttered(data: Any) -> None:
            if sio is self.recorder:
                await self._bot_uttered(data)

        async def notice(data: Any) -> None:
            if sio is self.recorder:
                await self._notice(data)

        sio.on("bot_uttered", uttered)
        sio.on("handoff_notice", notice)

    async def _bot_uttered(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        if (data.get("metadata") or {}).get("sender") == "system":
            return  # a notice's words (the gateway's, not the bot's): not in the tracker
        if isinstance(data.get("text"), str):
            self.seen.append(data["text"])
        if self.turns and self.turns[-1].answered is None:
            self.turns[-1].answered = time.monotonic()
            self.replied.set()

    async def _notice(self, data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("kind"), str):
            self.notices.append(data["kind"])

    async def move(self, url: str) -> None:
        """Carry on the same session through the gateway node at ``url`` (a widget that the
        balancer sent elsewhere). The new socket joins the session before the old one leaves,
        and the old one's events count for :data:`HOP_OVERLAP` seconds more: a reply's later
        parts (or a reviewed reply's next part) still on their way to the old one are not lost,
        none is counted twice."""
        old = self.sio
        self.url = url
        self.sio = socketio.AsyncClient(reconnection=False)
        self._listen(self.sio)
        await self.connect(self.session_id)
        await asyncio.sleep(HOP_OVERLAP)
        self.recorder = self.sio
        await old.disconnect()

    async def connect(self, session_id: str | None = None) -> None:
        confirmed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def on_confirm(data: Any) -> None:
            if not confirmed.done():
                confirmed.set_result(data if isinstance(data, str) else data["session_id"])

        self.sio.on("session_confirm", on_confirm)
        await self.sio.connect(self.url, socketio_path="/socket.io", transports=["websocket"])
        request: dict[str, Any] = {"session_id": session_id}
        if self.secret:
            request["session_secret"] = self.secret
        ack = await self.sio.call("session_request", request, timeout=REPLY_WAIT)
        if isinstance(ack, dict) and ack.get("session_secret"):
            self.secret = ack["session_secret"]  # a new session's: to come back to it
        self.session_id = await asyncio.wait_for(confirmed, REPLY_WAIT)
        if session_id is not None and self.session_id != session_id:
            raise RuntimeError(f"session {session_id} not resumed: got {self.session_id}")

    async def say(self, text: str) -> Turn:
        """Send one message as the widget does (acknowledged: stored) and wait for the first
        reply to it."""
        turn = Turn(text, time.monotonic())
        self.turns.append(turn)
        self.replied.clear()
        ack = await self.sio.call("user_uttered", {"message": text,
                                                   "session_id": self.session_id},
                                  timeout=REPLY_WAIT)
        if isinstance(ack, dict) and ack.get("code"):
            raise RuntimeError(f"message refused: {ack}")
        try:
            await asyncio.wait_for(self.replied.wait(), REPLY_WAIT)
        except asyncio.TimeoutError:
            pass  # counted as unanswered
        return turn

    async def close(self) -> None:
        await self.sio.disconnect()


# --------------------------------------------------------------------------- agents


class Agent:
    """A scripted agent on ``/agent``: takes conversations into review and approves every
    reply held for it."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.sio = socketio.AsyncClient(reconnection=False)
        self.ack_seconds: list[float] = []
        self.decided = 0
        self.failures: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.sio.on("pending_reply", self._pending, namespace="/agent")

    async def connect(self) -> None:
        await self.sio.connect(self.url, namespaces=["/agent"], transports=["websocket"],
                               auth={"token": self.token})

    async def _pending(self, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("reply"), dict):
            return
        task = asyncio.get_running_loop().create_task(self._approve(
            data["conversation_id"], data["reply"]["reply_id"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _approve(self, cid: str, reply_id: int) -> None:
        ack = await self.sio.call("decision", {"conversation_id": cid, "reply_id": reply_id,
                                               "type": "approve"}, namespace="/agent",
                                  timeout=REPLY_WAIT)
        if isinstance(ack, dict) and "status" in ack:
            self.failures.append(f"decision on {cid}: {ack}")
        else:
            self.decided += 1

    async def review(self, cid: str) -> None:
        """Take the conversation into review (the agent owns it); the acknowledgement's time
        is the takeover acknowledgement."""
        started = time.monotonic()
        ack = await self.sio.call("review", {"conversation_id": cid, "on": True},
                                  namespace="/agent", timeout=REPLY_WAIT)
        self.ack_seconds.append(time.monotonic() - started)
        if isinstance(ack, dict) and "status" in ack:
            self.failures.append(f"review of {cid}: {ack}")

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sio.disconnect()


T = TypeVar("T")


class AgentDesk:
    """The scripted agents' own event loop, in a thread of its own: their clicks are sent and
    their acknowledgements timed there, not behind the swarm's thousand customers' callbacks
    in the main loop (whose lateness the bench prints as its own loop's lag). The threads
    share the interpreter's lock, which a thread waiting for it gets within its switch
    interval (5 ms)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="agent-desk",
                                        daemon=True)

    async def __aenter__(self) -> AgentDesk:
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        async def cancel_the_rest() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            await self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join, 10)
        if not self._thread.is_alive():
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """``coro`` run on the desk's loop; await the result from any other loop."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))


async def connected_agent(url: str, token: str) -> Agent:
    agent = Agent(url, token)
    await agent.connect()
    return agent


async def agent_tokens(client: httpx.AsyncClient, admin_password: str,
                       count: int) -> list[str]:
    """Agents created and logged in through the API (the admin creates them)."""
    resp = await client.post("/api/login", json={"username": "admin",
                                                  "password": admin_password})
    resp.raise_for_status()
    admin = {"Authorization": f"Bearer {resp.json()['token']}"}
    tokens = []
    for i in range(count):
        name, password = f"load-agent-{i}-{uuid.uuid4().hex[:6]}", secrets.token_urlsafe(12)
        created = await client.post("/api/users", headers=admin, json={
            "username": name, "password": password, "tier": "agent",
            "reason": "load benchmark"})
        created.raise_for_status()
        login = await client.post("/api/login", json={"username": name, "password": password})
        login.raise_for_status()
        tokens.append(login.json()["token"])
    return tokens


# --------------------------------------------------------------------------- the run


@dataclass
class Report:
    customers: int
    messages: int
    seconds: float
    bot_latency: list[float]
    review_latency: list[float]
    takeover_ack: list[float]
    queued_for_load: list[str]
    unanswered: int
    mismatched: list[str]
    delayed_notices: int
    most_waiting: int
    down_polls: int
    human_queue: int
    agent_failures: list[str]
    memory: dict[str, int]
    rasa_calls: dict[str, int] = field(default_factory=dict)  # server (":port") -> calls
    differences: list[str] = field(default_factory=list)  # each mismatch, spelled out
    on_several_servers: int = 0  # conversations with turns on more than one Rasa server
    # trackers behind what their customer saw right after the swarm (a reviewed reply's
    # action still waiting for its Rasa call), and the seconds until every call was done
    behind_at_end: int = 0
    settle_seconds: float = 0.0
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    # the queue watcher's samples (seconds into the run, calls waiting, each Rasa server's and
    # each gateway's CPU seconds so far) and when each turn was answered (seconds into the
    # run): the timeline (--timeline)
    samples: list[tuple[float, int, float, float]] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    not_sent: int = 0  # messages the swarm had not sent when the deadline cut it off
    # the gateways' histograms of WHERE_AGENTS_WAIT at the end of the swarm (empty: none)
    waits: dict[str, Buckets] = field(default_factory=dict)
    own_lag: list[float] = field(default_factory=list)  # the bench's own loop, late by (s)

    @property
    def per_server(self) -> float:
        """Answered turns a second per Rasa server."""
        return self.turns_per_second / max(1, len(self.rasa_calls))

    def cpu_per_turn(self, column: int) -> float:
        """CPU seconds the Rasa servers (``column`` 2) or the gateways (3) used per answered
        turn, between the queue watcher's first and last samples (nan: no samples)."""
        if len(self.samples) < 2:
            return float("nan")
        first, last = self.samples[0], self.samples[-1]
        answered = sum(1 for t in self.answered_at if first[0] <= t <= last[0])
        return (last[column] - first[column]) / answered if answered else float("nan")

    @property
    def per_core(self) -> float:
        return self.turns_per_second / self.cores

    @property
    def turns_per_second(self) -> float:
        answered = len(self.bot_latency) + len(self.review_latency)
        return answered / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        def ms(values: list[float], q: float) -> str:
            return "-" if not values else f"{percentile(values, q) * 1000:.0f}"
        out = [
            f"{self.customers} customers x {self.messages} messages in {self.seconds:.1f} s: "
            f"{self.turns_per_second:.1f} turns/s answered",
            "| measure | value |", "|---|---|",
            f"| customer turn, bot, p50 / p99 ms | {ms(self.bot_latency, 0.5)} / "
            f"{ms(self.bot_latency, 0.99)} |",
            f"| customer turn, review, p50 / p99 ms | {ms(self.review_latency, 0.5)} / "
            f"{ms(self.review_latency, 0.99)} |",
            f"| takeover (review) acknowledged, p50 / p99 ms | {ms(self.takeover_ack, 0.5)} / "
            f"{ms(self.takeover_ack, 0.99)} |",
            f"| most Rasa calls waiting (admission queue) | {self.most_waiting} |",
            f"| health polls (2 a second) that found Rasa down | {self.down_polls} |",
            f"| human queue at the end | {self.human_queue} |",
            f"| conversations queued for a person because of load | "
            f"{len(self.queued_for_load)} |",
            f"| unanswered messages | {self.unanswered} |",
        ]
        if self.not_sent:
            out.append(f"| messages not sent: the run's deadline came first (those sent were "
                       f"answered and are measured) | {self.not_sent} |")
        out += [
            f"| trackers that differ from what the customer saw | {len(self.mismatched)} |",
            f"| the same right after the swarm, before the gateway's last Rasa calls "
            f"({self.settle_seconds:.1f} s) | {self.behind_at_end} |",
            f"| customers told the reply is on its way | {self.delayed_notices} |",
        ]
        out += [f"| Rasa calls answered by the server at {server} | {calls} |"
                for server, calls in self.rasa_calls.items()]
        if len(self.rasa_calls) > 1:
            out.append(f"| conversations with turns on more than one Rasa server | "
                       f"{self.on_several_servers} |")
        out += [f"| answered turns/s per Rasa server, per core ({self.cores}) | "
                f"{self.per_server:.2f}, {self.per_core:.2f} |",
                f"| CPU per answered turn, Rasa servers / gateways ms | "
                f"{self.cpu_per_turn(2) * 1000:.1f} / {self.cpu_per_turn(3) * 1000:.1f} |"]
        out += [f"| RSS {name} | {size / 2 ** 20:.0f} MB |" for name, size in
                self.memory.items()]
        out += self.wait_lines()
        if self.own_lag:
            out.append(f"| the bench's own loop lag (0.1 s timer; every time it measures "
                       f"includes it), p50 / p99 / most ms | {ms(self.own_lag, 0.5)} / "
                       f"{ms(self.own_lag, 0.99)} / {max(self.own_lag) * 1000:.0f} |")
        if self.agent_failures:
            out.append(f"agent failures: {self.agent_failures[:5]}")
        out += [f"tracker mismatch: {d}" for d in self.differences[:3]]
        return out

    def wait_lines(self) -> list[str]:
        """Where the agents' clicks waited, by the gateways' histograms: their own time for
        a review event, its read of the users, the conversations' locks, the loop's lag."""
        w = self.waits
        if not w.get("review") or not w["review"].get(float("inf")):
            return []

        def share(key: str, bound: float) -> str:
            n, total = over(w.get(key, {}), bound)
            return f"{n} of {total} over {bound * 1000:.0f} ms, p99 {bucket_quantile(w[key], 0.99)}"

        return [
            f"| gateway: review events, their handler's time | {share('review', 0.1)} |",
            f"| gateway: the review events' read of the users | {share('users', 0.05)} |",
            f"| gateway: lock waits of agents' and timers' events | {share('lock_agent', 0.05)} |",
            f"| gateway: lock waits of customers' messages | {share('lock_customer', 0.05)} |",
            f"| gateway: lock waits of Rasa's answers | {share('lock_rasa', 0.05)} |",
            f"| gateway: event loop's lag (0.1 s timer) | {share('loop', 0.05)} |",
        ]

    def timeline(self, window: float) -> list[str]:
        """The run in windows of ``window`` seconds: turns answered a second, the CPU the Rasa
        servers and the gateways used (in cores), the most calls waiting; then the longest
        time no turn was answered while calls waited (a stall, as opposed to a steady rate)."""
        out = [f"timeline, {window:g} s windows:",
               "| from s | answered /s | Rasa CPU (cores) | gateway CPU (cores) | "
               "most waiting |", "|---|---|---|---|---|"]
        start = 0.0
        while start < self.seconds:
            end = start + window
            answered = sum(1 for t in self.answered_at if start <= t < end)
            inside = [s for s in self.samples if start <= s[0] < end]
            before = [s for s in self.samples if s[0] < start]
            first = before[-1] if before else (inside[0] if inside else None)
            last = inside[-1] if inside else None
            rasa = gateway = float("nan")
            if first is not None and last is not None and last[0] > first[0]:
                rasa = (last[2] - first[2]) / (last[0] - first[0])
                gateway = (last[3] - first[3]) / (last[0] - first[0])
            waiting = max((s[1] for s in inside), default=0)
            out.append(f"| {start:.0f} | {answered / window:.1f} | {rasa:.2f} | "
                       f"{gateway:.2f} | {waiting} |")
            start = end
        stall, waiting_since = 0.0, None
        answers = sorted(self.answered_at)
        for t, waiting, _, _ in self.samples:
            if waiting <= 0:
                waiting_since = None
                continue
            waiting_since = t if waiting_since is None else waiting_since
            answered_before = bisect.bisect_right(answers, t)
            last_answer = answers[answered_before - 1] if answered_before else 0.0
            stall = max(stall, t - max(last_answer, waiting_since))
        out.append(f"longest time without an answer while calls waited: {stall:.1f} s")
        return out


async def tracker_texts(client: httpx.AsyncClient, system: System, sender: str) -> list[str]:
    """What Rasa's tracker says the customer was sent, as the gateway would send it (a text
    split into one bot_uttered per paragraph)."""
    resp = await client.get(f"{system.rasa_url}/conversations/{sender}/tracker",
                            params={"token": system.rasa_token, "include_events": "APPLIED"})
    resp.raise_for_status()
    texts = []
    for event in resp.json()["events"]:
        if event["event"] != "bot":
            continue
        message = {"text": event.get("text"),
                   **{k: v for k, v in (event.get("data") or {}).items() if v}}
        texts += [p["text"] for p in bot_uttered_payloads(message)
                  if isinstance(p.get("text"), str)]
    return texts


SETTLE_WAIT = 120.0  # seconds the gateway gets to finish its Rasa calls after the swarm


async def calls_out(client: httpx.AsyncClient, nodes: Sequence[Any],
                    admins: dict[str, dict[str, str]]) -> int:
    """Rasa calls running or waiting for their turn, all gateway nodes together."""
    out = 0
    for node in nodes:
        body = (await client.get(f"{node.url}/api/health/detail",
                                 headers=admins[node.url])).json()
        out += sum(int(s.get("running", 0)) + int(s.get("waiting", 0))
                   for s in (body.get("rasa_calls") or {}).values())
    return out


async def rasa_calls(client: httpx.AsyncClient, system: System,
                     admins: dict[str, dict[str, str]]) -> dict[str, int]:
    """Calls each Rasa server (``:port``) answered so far, all gateway nodes together (their
    admission control's count: turns, and the continuations of reviewed replies)."""
    calls = {system.server_of(url): 0 for url, _ in system.rasa_servers}
    for node in system.nodes:
        body = (await client.get(f"{node.url}/api/health/detail",
                                 headers=admins[node.url])).json()
        for url, figures in (body.get("rasa_calls") or {}).items():
            server = system.server_of(url)
            calls[server] = calls.get(server, 0) + int(figures.get("admitted", 0))
    return calls


Buckets = dict[float, float]  # a histogram's cumulative counts by upper bound (le)


async def node_histograms(client: httpx.AsyncClient, nodes: Sequence[Any],
                          wanted: Mapping[str, Mapping[str, str]]) -> dict[str, Buckets]:
    """The gateway nodes' Prometheus histograms named in ``wanted`` (key -> the histogram's
    name and the labels it must have), their buckets summed over the nodes; a node whose
    gateway does not have one (older code) adds nothing."""
    from prometheus_client.parser import text_string_to_metric_families
    found: dict[str, Buckets] = {key: {} for key in wanted}
    for node in nodes:
        text = (await client.get(f"{node.url}/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not sample.name.endswith("_bucket"):
                    continue
                for key, want in wanted.items():
                    labels = {k: v for k, v in sample.labels.items() if k != "le"}
                    if sample.name == f"{want['name']}_bucket" and all(
                            labels.get(k) == v for k, v in want.items() if k != "name"):
                        le = float(sample.labels["le"])
                        found[key][le] = found[key].get(le, 0.0) + sample.value
    return found


def over(buckets: Buckets, bound: float) -> tuple[int, int]:
    """(how many observations were over ``bound``, how many in all): ``bound`` must be one of
    the histogram's bucket bounds."""
    total = buckets.get(float("inf"), 0.0)
    return round(total - buckets.get(bound, total)), round(total)


def bucket_quantile(buckets: Buckets, q: float) -> str:
    """The bucket the ``q`` quantile falls in, as "<= X ms" (the histogram keeps no more)."""
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return "-"
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return "> 5000 ms" if bound == float("inf") else f"<= {bound * 1000:.0f} ms"
    return "-"


WHERE_AGENTS_WAIT: Final = {  # the gateways' own account of the agents' clicks (docs/metrics.md)
    "review": {"name": "handoff_agent_event_seconds", "event": "review", "part": "total"},
    "users": {"name": "handoff_agent_event_seconds", "event": "review", "part": "users"},
    "lock_agent": {"name": "handoff_lock_wait_seconds", "waiter": "agent"},
    "lock_customer": {"name": "handoff_lock_wait_seconds", "waiter": "customer"},
    "lock_rasa": {"name": "handoff_lock_wait_seconds", "waiter": "rasa"},
    "loop": {"name": "handoff_loop_lag_seconds"},
}


def home_servers(system: System, session_id: str, used: Iterable[int]) -> set[str]:
    """The Rasa servers (``:port``) a conversation's turns went to from these nodes while no
    server was down: each node's rendezvous choice (handoff.conversation.rasa_pool)."""
    from handoff.conversation.rasa_pool import ranked
    if len(system.rasa_servers) < 2:
        return {system.server_of(system.rasa_url)}
    return {system.server_of(ranked(session_id, system.rasa_names[n])[0]) for n in used}


async def run_load(system: System, customers: int, messages: int, rate: float,
                   review_share: float, seed_value: int = 1,
                   deadline: float = 900.0, hop: bool = False) -> Report:
    """The swarm against ``system`` (see the module docstring); ``hop``: each customer sends
    each message through the next gateway node (the same session)."""
    rng = random.Random(seed_value)
    nodes = system.nodes
    reviewed = set(rng.sample(range(customers), round(customers * review_share)))
    swarm = [Customer(nodes[i % len(nodes)].url, review=i in reviewed)
             for i in range(customers)]
    async with httpx.AsyncClient(base_url=nodes[0].url, timeout=REPLY_WAIT) as client, \
            AgentDesk() as desk:
        tokens = await agent_tokens(client, system.admin_password,
                                    max(1, min(5, len(reviewed))) if reviewed else 0)
        agents = [await desk.run(connected_agent(nodes[(i + 1) % len(nodes)].url, token))
                  for i, token in enumerate(tokens)]
        most_waiting = down_polls = 0
        stop_watching = asyncio.Event()
        admins = {}  # each node's own login: /api/health/detail needs one
        for node in nodes:
            login = await client.post(f"{node.url}/api/login", json={
                "username": "admin", "password": system.admin_password})
            login.raise_for_status()
            admins[node.url] = {"Authorization": f"Bearer {login.json()['token']}"}
        # a model's first turns are slow: not measured, on every Rasa server
        for warm_id in warm_up_ids(system):
            warm = Customer(nodes[0].url)
            await warm.connect(warm_id)
            for text in MESSAGES[:3]:
                await warm.say(text)
            await warm.close()
        calls_before = await rasa_calls(client, system, admins)
        waits_before = await node_histograms(client, nodes, WHERE_AGENTS_WAIT)  # runs before

        samples: list[tuple[float, int, float, float]] = []
        rasa_pids = [pid for _, pid in system.rasa_servers if pid]
        gateway_pids = [n.pid for n in nodes if n.pid]

        async def watch_queue() -> None:
            nonlocal most_waiting, down_polls
            while not stop_watching.is_set():
                waiting_now = 0
                for node in nodes:
                    body = (await client.get(f"{node.url}/api/health/detail",
                                             headers=admins[node.url])).json()
                    down_polls += body["rasa"]["state"] == "down"
                    waiting = sum(s.get("waiting", 0) for s in
                                  (body.get("rasa_calls") or {}).values())
                    most_waiting = max(most_waiting, waiting)
                    waiting_now += waiting
                samples.append((time.monotonic() - started, waiting_now,
                                sum(cpu_seconds(pid) for pid in rasa_pids),
                                sum(cpu_seconds(pid) for pid in gateway_pids)))
                await asyncio.sleep(0.5)

        pause = customers / rate if rate > 0 else 0.0

        async def one(i: int, customer: Customer) -> None:
            # Each customer waits an exponential pause before each message, the first too:
            # each is then a Poisson process of rate / customers and all of them together send
            # --rate messages a second from the start (first messages spread evenly over one
            # pause, as before, overlapped the early customers' later messages: at the end of
            # that pause 1.6 times the rate asked with two messages each, 1.9 with three).
            # They connect within the first CONNECT_SPREAD seconds, or before their first
            # message, and stay connected to the end.
            if pause:
                first = rng.expovariate(1 / pause)
                began = time.monotonic()
                await asyncio.sleep(min(first, rng.uniform(0, CONNECT_SPREAD)))
            await customer.connect()
            if pause:
                await asyncio.sleep(max(0.0, first - (time.monotonic() - began)))
            for n in range(messages):
                if hop and n:
                    await customer.move(nodes[(i + n) % len(nodes)].url)
                await customer.say(MESSAGES[(i + n) % len(MESSAGES)])
                if n == 0 and customer.review:  # an agent on another node where there is one
                    others = [a for a in agents if a.url != customer.url] or agents
                    await desk.run(others[i % len(others)].review(customer.session_id))
                if pause and n + 1 < messages:
                    await asyncio.sleep(rng.expovariate(1 / pause))

        own_lag: list[float] = []

        async def sample_own_lag() -> None:
            """This process's own lateness: every time the clients measure includes it."""
            loop = asyncio.get_running_loop()
            while not stop_watching.is_set():
                asked = loop.time()
                await asyncio.sleep(0.1)
                own_lag.append(max(0.0, loop.time() - asked - 0.1))

        started = time.monotonic()
        watcher = asyncio.get_running_loop().create_task(watch_queue())
        lag_sampler = asyncio.get_running_loop().create_task(sample_own_lag())
        cut_off = False
        try:
            await asyncio.wait_for(asyncio.gather(*(one(i, c) for i, c in enumerate(swarm))),
                                   deadline)
        except asyncio.TimeoutError:
            # the swarm stops sending at the deadline; the customers stay connected, and the
            # messages already sent are answered and measured (those never sent are counted)
            cut_off = True
            settle_started = time.monotonic()
            while time.monotonic() - settle_started < SETTLE_WAIT and await calls_out(
                    client, nodes, admins):
                await asyncio.sleep(0.5)
        finally:
            seconds = time.monotonic() - started
            stop_watching.set()
            await asyncio.gather(watcher, lag_sampler, return_exceptions=True)
        await asyncio.sleep(1.0)  # late pushes: a reply's further paragraphs
        # cut off, some customers never had a session: nothing of theirs to compare
        swarm_all, swarm = swarm, [c for c in swarm if c.session_id]
        memory = {f"gateway {i + 1}": rss_bytes(n.pid) for i, n in enumerate(nodes) if n.pid}
        for url, pid in system.rasa_servers:
            if pid:
                memory[f"Rasa {system.server_of(url)}"] = rss_bytes(pid)
        calls_after = await rasa_calls(client, system, admins)
        waits = {key: {le: count - waits_before.get(key, {}).get(le, 0.0)
                       for le, count in buckets.items()}
                 for key, buckets in (await node_histograms(
                     client, nodes, WHERE_AGENTS_WAIT)).items()}  # this run's alone
        for agent in agents:
            await desk.run(agent.close())
        await asyncio.gather(*(c.close() for c in swarm), return_exceptions=True)
        # A reviewed reply reaches the customer before its action is run in Rasa (the
        # continuation, a Rasa call of its own, waits its turn in the admission queue like any
        # other): the trackers are compared once every node's calls are done, and those that
        # differed at the end of the swarm are counted apart.
        at_end = {c.session_id for c in swarm
                  if await tracker_texts(client, system, c.session_id) != c.seen}
        settle_started = time.monotonic()
        while time.monotonic() - settle_started < SETTLE_WAIT and await calls_out(
                client, nodes, admins):
            await asyncio.sleep(0.5)
        settle_seconds = time.monotonic() - settle_started
        mismatched = []
        differences: list[str] = []
        for customer in swarm:
            in_tracker = await tracker_texts(client, system, customer.session_id)
            if in_tracker != customer.seen:
                mismatched.append(customer.session_id)
                differences.append(f"{customer.session_id}: tracker {in_tracker!r}, customer "
                                   f"saw {customer.seen!r}, notices {customer.notices!r}")
        admin = await client.post("/api/login", json={"username": "admin",
                                                       "password": system.admin_password})
        queued = (await client.get("/api/conversations", params={"queued": "true"},
                                   headers={"Authorization":
                                            f"Bearer {admin.json()['token']}"})).json()
    turns = [(c.review, n, t) for c in swarm for n, t in enumerate(c.turns)]
    return Report(
        customers=customers, messages=messages, seconds=seconds,
        # a review conversation's first turn is answered by the bot (review starts after it)
        bot_latency=[t.answered - t.sent for review, n, t in turns
                     if t.answered and (not review or n == 0)],
        review_latency=[t.answered - t.sent for review, n, t in turns
                        if t.answered and review and n > 0],
        takeover_ack=[s for a in agents for s in a.ack_seconds],
        queued_for_load=[c.session_id for c in swarm if "handoff_queued" in c.notices],
        unanswered=sum(1 for _, _, t in turns if t.answered is None)
        + (0 if cut_off else sum(messages - len(c.turns) for c in swarm)),
        not_sent=sum(messages - len(c.turns) for c in swarm_all) if cut_off else 0,
        mismatched=mismatched, differences=differences,
        behind_at_end=len(at_end), settle_seconds=settle_seconds,
        delayed_notices=sum(1 for c in swarm if "reply_delayed" in c.notices),
        most_waiting=most_waiting, down_polls=down_polls,
        human_queue=len(queued.get("conversations") or []),
        agent_failures=[f for a in agents for f in a.failures],
        memory=memory,
        rasa_calls={server: calls - calls_before.get(server, 0)
                    for server, calls in calls_after.items()},
        on_several_servers=len([c for i, c in enumerate(swarm) if len(home_servers(
            system, c.session_id, nodes_used(i, len(nodes), messages, hop))) > 1]),
        samples=samples, answered_at=[t.answered - started for _, _, t in turns if t.answered],
        waits=waits, own_lag=own_lag)


def nodes_used(i: int, nodes: int, messages: int, hop: bool) -> set[int]:
    """The gateway nodes customer ``i`` sent its messages through (run_load's order)."""
    return {(i + n) % nodes for n in range(messages)} if hop else {i % nodes}


def warm_up_ids(system: System) -> list[str]:
    """Session ids whose conversations the first node sends to each Rasa server in turn."""
    from handoff.conversation.rasa_pool import ranked
    urls = system.rasa_names[0] if system.rasa_names else [system.rasa_url]
    found: dict[str, str] = {}
    n = 0
    while len(found) < len(urls):
        candidate = f"warm-{n}-{uuid.uuid4().hex[:8]}"
        found.setdefault(ranked(candidate, urls)[0], candidate)
        n += 1
    return list(found.values())


# --------------------------------------------------------------------------- idle sockets

SOCKETS_PER_PROCESS = 2500  # idle sockets one client process holds (--idle-processes: more)


class IdleSocket:
    """One idle customer as the widget's client speaks to the gateway, without a client
    library's objects: Engine.IO 4 over a websocket (the session id in the open packet), the
    Socket.IO connect to the default namespace, ``session_request`` acknowledged and
    ``session_confirm`` received; then it only answers the server's pings. Thousands of them
    share one aiohttp session in one process."""

    def __init__(self) -> None:
        self.session_id = ""
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.closed = asyncio.Event()

    async def open(self, http: aiohttp.ClientSession, url: str) -> None:
        ws = self.ws = await http.ws_connect(
            url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket",
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
            autoping=False)
        opened = await ws.receive_str(timeout=REPLY_WAIT)
        if not opened.startswith("0"):
            raise RuntimeError(f"no Engine.IO open packet: {opened[:100]!r}")
        await ws.send_str("40")  # Socket.IO connect, default namespace
        await ws.send_str('420["session_request",{"session_id":null}]')  # ack id 0
        connected = acked = False
        while not (connected and acked and self.session_id):
            frame = await ws.receive_str(timeout=REPLY_WAIT)
            if frame == "2":
                await ws.send_str("3")
            elif frame.startswith("40"):
                connected = True
            elif frame.startswith("44"):
                raise RuntimeError(f"connection refused: {frame[:200]}")
            elif frame.startswith("430"):
                acked = True
            elif frame.startswith("42"):
                name, *args = json.loads(frame[2:])
                if name == "session_confirm" and args and isinstance(args[0], str):
                    self.session_id = args[0]
        asyncio.get_running_loop().create_task(self._answer_pings(ws))

    async def _answer_pings(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT and frame.data == "2":
                    await ws.send_str("3")
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.closed.set()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        self.closed.set()


async def hold_idle(url: str, count: int, commands: asyncio.StreamReader | None,
                    say: Any, batch: int = 100) -> None:
    """Open ``count`` idle sockets on ``url`` in waves of ``batch`` (stopping at the first
    failure or a ``stop`` command), tell ``say({...})`` how it went, then answer the commands
    ``count`` (how many are still open) and ``close`` (close them all and return)."""
    held: list[IdleSocket] = []
    failed: list[str] = []
    stop = asyncio.Event()

    async def read_commands() -> None:
        assert commands is not None
        while line := (await commands.readline()).decode().strip():
            if line == "stop":
                stop.set()
            elif line == "count":
                say({"open": sum(not s.closed.is_set() for s in held)})
            elif line == "close":
                break
        stop.set()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        reader = asyncio.get_running_loop().create_task(read_commands()) if commands else None
        while len(held) < count and not failed and not stop.is_set():
            wave = [IdleSocket() for _ in range(min(batch, count - len(held)))]
            outcomes = await asyncio.gather(*(s.open(http, url) for s in wave),
                                            return_exceptions=True)
            failed += [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, Exception)]
            held += [s for s, o in zip(wave, outcomes) if not isinstance(o, Exception)]
            for s, o in zip(wave, outcomes):
                if isinstance(o, Exception):
                    await s.close()
        say({"held": len(held), "confirmed": sum(1 for s in held if s.session_id),
             "failed": len(failed), "first_failure": failed[0] if failed else ""})
        if reader is not None:
            await reader
        for i in range(0, len(held), batch):
            await asyncio.gather(*(s.close() for s in held[i:i + batch]),
                                 return_exceptions=True)


def idle_worker(url: str, count: int, batch: int) -> int:
    """``--idle-worker URL --idle N``: one client process of :func:`run_idle`; JSON lines out,
    commands in (stdin)."""
    def say(what: dict[str, Any]) -> None:
        print(json.dumps(what), flush=True)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        commands = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
        await hold_idle(url, count, commands, say, batch)

    asyncio.run(run())
    return 0


class _Worker:
    """A client process of :func:`run_idle`, spoken to in JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def tell(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()

    async def heard(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"an idle-socket client process ended ({await self.process.wait()})")
        return dict(json.loads(line))


async def run_idle(node: Node, sockets: int, limit_bytes: int = GIGABYTE,
                   batch: int = 100, processes: int = 0,
                   hold: float = 0.0) -> dict[str, float]:
    """``sockets`` customers that open a session and stay idle on one node, spread over
    ``processes`` client processes (0: one per :data:`SOCKETS_PER_PROCESS`), each holding its
    share with :class:`IdleSocket` (so that no client is the limit); the memory they cost.
    The clients stop opening more when the gateway's RSS passes ``limit_bytes`` or at their
    first failed connection. With ``hold`` the sockets then stay open that many seconds
    (past Engine.IO's ping interval and timeout, 25 + 20 s: a socket whose pongs came too late
    would be closed) and the sockets still open at the end are counted; the RSS figure is the
    highest seen."""
    assert node.pid is not None, "idle mode measures a gateway the bench started"
    processes = processes or max(1, -(-sockets // SOCKETS_PER_PROCESS))
    shares = [sockets // processes + (i < sockets % processes) for i in range(processes)]
    before = rss_bytes(node.pid)
    workers = [_Worker(await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--idle-worker", node.url,
        "--idle", str(share), "--idle-batch", str(batch),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)) for share in shares]
    peak = before
    started = time.monotonic()
    try:
        reports = [asyncio.ensure_future(w.heard()) for w in workers]
        stopped = False
        while not all(r.done() for r in reports):
            await asyncio.wait(reports, timeout=0.5)
            peak = max(peak, rss_bytes(node.pid))
            if peak >= limit_bytes and not stopped:
                stopped = True
                for w in workers:
                    await w.tell("stop")
        done = [r.result() for r in reports]
        connect_seconds = time.monotonic() - started
        await asyncio.sleep(1.0)
        after = rss_bytes(node.pid)
        until = time.monotonic() + hold
        while time.monotonic() < until:
            await asyncio.sleep(min(1.0, until - time.monotonic()))
            peak = max(peak, rss_bytes(node.pid))
        peak = max(peak, after)
        still_open = 0
        for w in workers:
            await w.tell("count")
            still_open += (await w.heard())["open"]
        for w in workers:
            await w.tell("close")
    finally:
        # told to close, or cut off (cancelled: SIGTERM, Ctrl-C): a client process whose
        # stdin ends closes its sockets and exits, as after "close"
        for w in workers:
            if w.process.stdin is not None and not w.process.stdin.is_closing():
                w.process.stdin.close()
        for w in workers:
            try:
                await asyncio.wait_for(w.process.wait(), WORKER_EXIT_WAIT)
            except asyncio.TimeoutError:
                w.process.kill()
                await w.process.wait()
    held = sum(d["held"] for d in done)
    failures = [d["first_failure"] for d in done if d["first_failure"]]
    if failures:
        print(f"{sum(d['failed'] for d in done)} connections failed after {held}: "
              f"{failures[0]}", file=sys.stderr)
    per_socket = (after - before) / max(1, held)
    return {"sockets": float(held), "confirmed": float(sum(d["confirmed"] for d in done)),
            "failed": float(sum(d["failed"] for d in done)),
            "processes": float(processes), "connect_seconds": connect_seconds,
            "hold_seconds": hold, "open_after_hold": float(still_open),
            "rss_before": float(before), "rss_after": float(after), "rss_peak": float(peak),
            "per_socket": per_socket,
            "fit_in_limit": (limit_bytes - before) / per_socket if per_socket > 0 else
            float("inf")}


def idle_lines(figures: dict[str, float]) -> list[str]:
    return [
        f"{figures['sockets']:.0f} idle customer sockets ({figures['confirmed']:.0f} with a "
        f"confirmed session) on one gateway node, from {figures['processes']:.0f} client "
        f"process(es), opened in {figures['connect_seconds']:.1f} s:",
        "| measure | value |", "|---|---|",
        f"| connections that failed (a client stops at its first) | {figures['failed']:.0f} |",
        f"| still open after {figures['hold_seconds']:.0f} s idle | "
        f"{figures['open_after_hold']:.0f} |",
        f"| RSS before | {figures['rss_before'] / 2 ** 20:.0f} MB |",
        f"| RSS with the sockets open (highest while held) | "
        f"{figures['rss_after'] / 2 ** 20:.0f} MB ({figures['rss_peak'] / 2 ** 20:.0f} MB) |",
        f"| memory per socket | {figures['per_socket'] / 1024:.1f} KB |",
        f"| idle sockets that fit under 1 GB (extrapolated) | {figures['fit_in_limit']:.0f} |",
    ]


R = TypeVar("R")
WORKER_EXIT_WAIT = 30.0  # seconds an idle-socket client process gets to close its sockets


def _terminated(signum: int, _frame: object) -> None:
    """SIGTERM outside the event loop: unwind as Ctrl-C does (every ``finally`` and context
    manager runs: the servers stop, the fresh databases are dropped). A second one during that
    clean-up is ignored, so that it completes."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(128 + signum)


def run_terminable(main: Coroutine[Any, Any, R]) -> R:
    """``asyncio.run(main)``, with SIGTERM doing what Ctrl-C does to it: the running
    coroutine is cancelled (its clients close, its client processes are stopped in their
    ``finally`` blocks), then SystemExit(143) unwinds the rest as :func:`_terminated` does.

    Not :func:`_terminated` inside the loop: a handler that raises there leaves from whatever
    callback runs, and a signal delivered to another of the process's threads waits until the
    loop wakes; ``add_signal_handler`` wakes the loop at once and cancels in order."""
    terminated = False

    async def cancelled_by_sigterm() -> R:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def on_sigterm() -> None:
            nonlocal terminated
            if not terminated:
                terminated = True
                task.cancel()

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            return await main
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, signal.SIG_IGN if terminated else _terminated)

    try:
        return asyncio.run(cancelled_by_sigterm())
    except asyncio.CancelledError:
        if terminated:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/load.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--messages", type=int, default=5, help="messages per customer")
    parser.add_argument("--rate", default="0",
                        help="messages a second, all customers together (0: each customer "
                             "sends again as soon as answered); several, comma-separated: one "
                             "run after the other on the same system, new customers each, "
                             "and a summary table")
    parser.add_argument("--review-share", type=float, default=0.1,
                        help="share of conversations an agent reviews")
    parser.add_argument("--nodes", type=int, default=1, help="gateway processes")
    parser.add_argument("--rasa", default="1",
                        help="Rasa servers behind the gateways; several values, comma-"
                             "separated (e.g. 1,2): one system each, all started at once, "
                             "their runs interleaved rate by rate (side by side). Whenever a "
                             "value is above 1, every system's Rasa servers get a PostgreSQL "
                             "tracker store and a Redis lock store of their own")
    parser.add_argument("--hop", action="store_true",
                        help="each customer sends each message through the next gateway node "
                             "(the same session); with several Rasa servers the nodes name them "
                             "differently, so a conversation's turns land on several servers")
    parser.add_argument("--idle", type=int, default=0,
                        help="idle-sockets mode: connect this many idle customers instead")
    parser.add_argument("--idle-processes", type=int, default=0,
                        help=f"client processes holding the idle sockets (0: one per "
                             f"{SOCKETS_PER_PROCESS})")
    parser.add_argument("--idle-hold", type=float, default=60.0,
                        help="seconds the idle sockets stay open before they are counted "
                             "(past Engine.IO's ping interval and timeout)")
    parser.add_argument("--idle-batch", type=int, default=100,
                        help="sockets a client process opens at once")
    parser.add_argument("--idle-worker", metavar="URL", default="",
                        help=argparse.SUPPRESS)  # one client process of --idle
    parser.add_argument("--deadline", type=float, default=900.0,
                        help="seconds the swarm sends at most: then it stops, the messages "
                             "already sent are answered and measured, and those not sent yet "
                             "are counted")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a further gateway setting, e.g. HANDOFF_RASA_CALLS_IN_FLIGHT=0")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432",
                        help="PostgreSQL server for --nodes > 1 and --rasa > 1")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/7",
                        help="Redis for --nodes > 1 and --rasa > 1")
    parser.add_argument("--database-url", default="",
                        help="one node's store: empty or 'sqlite' = SQLite; 'postgresql' = a "
                        "fresh database on --pg-url, as two nodes always get (to compare "
                        "fairly); else as given. Several, comma-separated (e.g. "
                        "sqlite,postgresql): one system each, their runs interleaved")
    parser.add_argument("--pg-prefix", default="load_bench",
                        help="start of the fresh PostgreSQL databases' names (and of the "
                             "Redis prefix with --nodes > 1)")
    parser.add_argument("--gateway-code", default=str(PROJECT_ROOT),
                        help="the checkout whose handoff/ the gateways run; several, comma-"
                             "separated (e.g. /work/main,.): one system each, their runs "
                             "interleaved: code before and after a change, side by side")
    parser.add_argument("--rasa-code", default=str(PROJECT_ROOT),
                        help="the checkout whose Rasa side (bot/, actions/, credentials.yml, "
                             "the SQLite tracker store of its endpoints.yml) the Rasa servers "
                             "run; several, comma-separated: one system each, their runs "
                             "interleaved, as with --gateway-code")
    parser.add_argument("--shared-tracker-store", default=SHARED_TRACKER_STORE,
                        help="the type of the Rasa servers' shared PostgreSQL tracker store "
                             "(with --rasa above 1): bot.tracker_store.SQLTrackerStore (the "
                             "project's, the default) or SQL (Rasa's); several, "
                             "comma-separated: one system each, their runs interleaved")
    parser.add_argument("--timeline", type=float, default=0.0, metavar="SECONDS",
                        help="also print each run in windows of this many seconds: turns "
                             "answered a second, the Rasa servers' and gateways' CPU, calls "
                             "waiting, and the longest stall")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    if args.idle_worker:
        return idle_worker(args.idle_worker, args.idle, args.idle_batch)
    if args.nodes > 1 and not multi_node_supported():
        print("--nodes 2 needs the multi-node gateway (HANDOFF_REDIS_URL, a shared PostgreSQL "
              "store); this gateway has no such setting yet: run with --nodes 1",
              file=sys.stderr)
        return 2
    try:
        pools = [int(n) for n in args.rasa.split(",")]
    except ValueError:
        pools = []
    if not pools or min(pools) < 1:
        print(f"--rasa takes whole numbers of servers, at least 1 (got {args.rasa!r})",
              file=sys.stderr)
        return 2
    extra = dict(item.split("=", 1) for item in args.gateway_env)
    # A run stopped with SIGTERM (a timeout, a CI's cancel) stops its servers and drops its
    # database as Ctrl-C does: the exit unwinds through started_system's clean-up (and, in
    # the swarm and the idle sockets, through run_terminable's cancellation first).
    signal.signal(signal.SIGTERM, _terminated)
    shared = max(pools) > 1
    databases = [d.strip() for d in args.database_url.split(",")] if "," in \
        args.database_url else [args.database_url]
    databases = ["" if d == "sqlite" else d for d in databases]
    codes = [Path(c).resolve() for c in args.gateway_code.split(",")]
    rasa_codes = [Path(c).resolve() for c in args.rasa_code.split(",")]
    tracker_stores = [t.strip() for t in args.shared_tracker_store.split(",")]
    with contextlib.ExitStack() as systems_open:
        systems = []
        for servers in pools:
            for database in databases:
                for code, rasa_code, tracker_store in itertools.product(
                        codes, rasa_codes, tracker_stores):
                    tmp = Path(systems_open.enter_context(tempfile.TemporaryDirectory()))
                    system = systems_open.enter_context(started_system(
                        args.nodes, tmp, extra, args.pg_url, args.redis_url, database,
                        rasa=servers, shared_rasa_stores=shared, pg_prefix=args.pg_prefix,
                        code=code, rasa_code=rasa_code, shared_tracker_store=tracker_store))
                    system.label = ", ".join(
                        [f"--rasa {servers}"] * (len(pools) > 1)
                        + [database.split("+")[0].split(":")[0] or "sqlite"] * (
                            len(databases) > 1)
                        + [str(code)] * (len(codes) > 1)
                        + [f"Rasa side {rasa_code}"] * (len(rasa_codes) > 1)
                        + [f"tracker store {tracker_store}"] * (len(tracker_stores) > 1)
                    ) or f"--rasa {servers}"
                    systems.append((servers, system))
        stores = (f"PostgreSQL tracker store {args.shared_tracker_store}, Redis lock store"
                  if shared
                  else "SQLite tracker store")
        print(f"model {latest_model().name}; {args.nodes} gateway node(s); Rasa servers "
              f"{args.rasa} ({stores}); load average {os.getloadavg()[0]:.2f}", flush=True)
        if args.idle:
            figures = run_terminable(run_idle(systems[0][1].nodes[0], args.idle,
                                              batch=args.idle_batch,
                                              processes=args.idle_processes,
                                              hold=args.idle_hold))
            print(f"load average {os.getloadavg()[0]:.2f}")
            print("\n".join(idle_lines(figures)))
            if args.json:
                print(json.dumps(figures))
            return 0
        reports = []
        for rate in [float(r) for r in args.rate.split(",")]:
            for servers, system in systems:
                load_before = os.getloadavg()[0]
                report = run_terminable(run_load(
                    system, args.customers, args.messages, rate, args.review_share,
                    deadline=args.deadline, hop=args.hop))
                reports.append((system.label, rate, report))
                print(f"\n{system.label} --rate {rate:g} (load average "
                      f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}): " + "\n".join(report.lines()), flush=True)
                if args.timeline > 0:
                    print("\n".join(report.timeline(args.timeline)), flush=True)
                if args.json:
                    print(json.dumps({**dataclasses.asdict(report), "rasa": servers,
                                      "turns_per_second": report.turns_per_second}))
    if len(reports) > 1:
        print("\n" + "\n".join(summary_lines(reports)))
    return 0


def summary_lines(reports: list[tuple[str, float, Report]]) -> list[str]:
    """One row per run: the system (Rasa servers, store, code), the rate asked, the rate
    achieved (all, per server, per core), the latency and the goals."""
    out = ["| system | rate asked /s | answered /s | per server | per core | Rasa CPU ms per "
           "turn | bot p50 ms "
           "| bot p99 ms | takeover ack p50 / p99 ms | most waiting | Rasa down polls | "
           "queued for "
           "load | unanswered | tracker mismatches | Rasa calls per server | on several "
           "servers |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for servers, rate, rep in reports:
        p50 = percentile(rep.bot_latency, 0.5) * 1000 if rep.bot_latency else float("nan")
        p99 = percentile(rep.bot_latency, 0.99) * 1000 if rep.bot_latency else float("nan")
        ack = (f"{percentile(rep.takeover_ack, 0.5) * 1000:.0f} / "
               f"{percentile(rep.takeover_ack, 0.99) * 1000:.0f}" if rep.takeover_ack
               else "-")
        calls = " / ".join(str(n) for n in rep.rasa_calls.values())
        out.append(f"| {servers} | {rate:g} | {rep.turns_per_second:.1f} | "
                   f"{rep.per_server:.2f} | {rep.per_core:.2f} | "
                   f"{rep.cpu_per_turn(2) * 1000:.0f} | {p50:.0f} | {p99:.0f} | "
                   f"{ack} | {rep.most_waiting} | {rep.down_polls} | "
                   f"{len(rep.queued_for_load)} | {rep.unanswered} | {len(rep.mismatched)} | "
                   f"{calls} | {rep.on_several_servers} |")
    return out


if __name__ == "__main__":
    sys.exit(main())
