"""A deploy across gateway nodes (handoff/learning/rollout.py, docs/deploy.md "A deploy across
nodes"): two gateway processes on loopback sharing a fresh PostgreSQL database and a Redis
prefix of their own, with the supervisor's real control API (``bot.control.serve_control``)
and its real pool of Rasa servers (on the session's action server, with a tracker store the
servers share).

* long: a deploy started on node A, blue/green with a second real Rasa server, leaves node
  B's customer answered all along (no turn fails) and then by the new server, the old one
  stopped; node B shows the deploy while it runs and its end (``GET /api/models``), and its
  trainer gets ``deploy_finished``;
* default run: the supervisor's Rasa servers and control API on another address than the
  nodes' 127.0.0.1 (``--interface``/``--advertised-host`` 127.0.0.2: all of 127.0.0.0/8 is
  the loopback on Linux, so it stands in for a machine of their own): the URLs it hands out
  name that address, and a deploy from node A switches node B to the new server, a real Rasa
  that answers there and nowhere else (the live server before it is the session's Rasa,
  forwarded to from that address, to save a Rasa start);
* default run: a node whose Rasa server refuses connections (a deploy it did not hear of)
  asks the supervisor which server is live and its customer is answered there; a
  retraining running on node A shows on node B (``GET /api/retrain``), its end too.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import socket
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from bot.control import RasaPool, Retrainer, serve_control
from bot.model_runs import archive_metadata
from bot.serve import Service, Stack
from handoff.conversation.customer_protocol import NOTICE_TEXTS, RASA_DOWN_TEXT
from handoff.store import Store
from tests.conftest import free_port
from tests.gateway.clients import WAIT, Widget, user_login
from tests.gateway.conftest import REDIS_URL, Gateway, _start_gateway, redis_reachable
from tests.gateway.test_multinode import Console, fresh_database, stop_nodes
from tests.gateway.test_retrain_recovery import ScriptedRetrainer

pytestmark = pytest.mark.asyncio
redis = pytest.importorskip("redis")  # the gateway's lock file has it

LEASE = 3  # seconds
NOTICES = {*NOTICE_TEXTS.values(), RASA_DOWN_TEXT}  # what the customer sees when no bot answers


@dataclass
class Nodes:
    a: Gateway
    b: Gateway
    database_url: str
    control_url: str


@contextlib.contextmanager
def _nodes(tmp: Path, rasa_url: str, token: str, control_url: str) -> Iterator[Nodes]:
    """Nodes A and B on a new PostgreSQL database and a Redis prefix of their own, both
    with the supervisor at ``control_url`` and ``rasa_url`` as their Rasa server."""
    redis_reachable()
    name, database_url = fresh_database("nodes")
    prefix = f"nodes:{uuid.uuid4().hex[:8]}"
    env = {"HANDOFF_DATABASE_URL": database_url, "HANDOFF_REDIS_URL": REDIS_URL,
           "HANDOFF_REDIS_PREFIX": prefix, "HANDOFF_NODE_LEASE": str(LEASE),
           "HANDOFF_SUPERVISOR_URL": control_url, "HANDOFF_DEPLOY_DRAIN_TIMEOUT": "20"}
    started: list[Gateway] = []
    try:
        for node in ("a", "b"):
            (tmp / node).mkdir()
            started.append(_start_gateway(tmp / node, rasa_url, token,
                                          {**env, "HANDOFF_NODE_ID": f"node-{node}"}))
        yield Nodes(started[0], started[1], database_url, control_url)
    finally:
        stop_nodes(started, prefix, name)


def _renamed_model(source: Path, target: Path, model_id: str) -> None:
    """``source`` as another model: the same archive with ``model_id`` in its metadata (Rasa
    reports it in ``/status``), so a deploy has a second model without a training run."""
    with tarfile.open(source, "r:gz") as old, tarfile.open(target, "w:gz") as new:
        for member in old:
            handle = old.extractfile(member) if member.isfile() else None
            if member.name.lstrip("./") == "metadata.json" and handle is not None:
                data = json.loads(handle.read())
                data["model_id"] = model_id
                raw = json.dumps(data).encode()
                member.size = len(raw)
                new.addfile(member, io.BytesIO(raw))
            else:
                new.addfile(member, handle)


def _refuses(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


def _failed(texts: list[str]) -> bool:
    """Whether a turn's texts are not a bot's answer (a notice, another event, nothing)."""
    return not texts or any(t in NOTICES or t.startswith("<") for t in texts)


class Forwarder:
    """A TCP port that forwards every connection to ``target`` until :meth:`close`d (then
    it refuses): a Rasa server that is stopped, as a deploy stops the old one."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accept (Linux): the port refuses
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


async def _turn(widget: Widget, session_id: str, text: str) -> list[str]:
    """The customer says ``text``: the texts the widget got for it (the first within WAIT,
    then whatever follows within a second)."""
    await widget.say(session_id, text)
    event, data = await widget.next()
    got = [str(data.get("text"))] if event == "bot_uttered" else [f"<{event}>"]
    with contextlib.suppress(asyncio.TimeoutError):
        while True:
            event, data = await widget.next(timeout=1.0)
            got.append(str(data.get("text")) if event == "bot_uttered" else f"<{event}>")
    return got


# ---------------------------------------------------------------------------------- long


@contextlib.contextmanager
def _pool_nodes(rasa_stack: Stack, model_path: Path, tmp: Path, host: str,
                forwarded: bool = False) -> Iterator[tuple[Nodes, str, str]]:
    """A real pool (its live Rasa server started here, on a tracker store of its own) behind
    the control API, both listening on ``host`` and naming their servers by it, and nodes A
    and B on it (on 127.0.0.1); yields them, the live server's URL and the id of the model to
    deploy. ``forwarded``: the live server is the session's Rasa, forwarded to from ``host``
    by a process of its own (one Rasa start less; its tracker store is not the pool's)."""
    models = tmp / "models"
    models.mkdir()
    live_model = models / model_path.name
    shutil.copy2(model_path, live_model)
    new_id = f"{archive_metadata(model_path)['model_id']}-next"
    _renamed_model(model_path, models / "20991231-000000-next.tar.gz", new_id)
    ports = (free_port(), free_port())
    stack = Stack(rasa_bin=rasa_stack.rasa_bin, model=live_model, rasa_port=ports[0],
                  actions_port=rasa_stack.actions_port, token=rasa_stack.token,
                  log_dir=tmp / "logs", env=rasa_stack.env, tracker_db=tmp / "tracker.db",
                  interface=host, advertised=host)
    if forwarded:
        live = Service(
            name=f"forwarder :{ports[0]}", log_path=tmp / "logs" / "forwarder.log",
            argv=[sys.executable, "-c", _FORWARD, host, str(ports[0]),
                  str(rasa_stack.rasa_port)],
            ready_url=f"{stack.local_url(ports[0])}/status?token={stack.token}")
    else:
        live = stack.rasa_service(ports[0], live_model)
    live.start()
    pool = RasaPool(stack, ports, models, tmp / "live-model.json")
    control = None
    try:
        live.wait_until_ready(time.monotonic() + 300)
        pool.adopt(live, ports[0], live_model)
        control_port = free_port()
        control = serve_control(pool, Retrainer(pool, tmp), control_port, stack.token,
                                host=host)
        with _nodes(tmp, stack.rasa_url, stack.token,
                    f"http://{host}:{control_port}") as nodes:
            yield nodes, stack.rasa_url, new_id
    finally:
        if control is not None:
            control.shutdown()
            control.server_close()
        pool.stop()
        live.stop()


# A Rasa server's stand-in for the pool: every connection to host:port is forwarded to the
# session's Rasa on 127.0.0.1:target; it refuses once stopped (as Forwarder, in a process).
_FORWARD = """
import socket, sys, threading
host, port, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def pump(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
listener = socket.create_server((host, port))
while True:
    client, _ = listener.accept()
    server = socket.create_connection(("127.0.0.1", target))
    for a, b in ((client, server), (server, client)):
        threading.Thread(target=pump, args=(a, b), daemon=True).start()
"""


@pytest.fixture(scope="module")
def pool_nodes(rasa_stack: Stack, model_path: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Nodes, str, str]]:
    """:func:`_pool_nodes` on 127.0.0.1, beside the nodes (``make run``'s case)."""
    with _pool_nodes(rasa_stack, model_path, tmp_path_factory.mktemp("nodes-deploy"),
                     "127.0.0.1") as found:
        yield found


@pytest.mark.long
@pytest.mark.timeout(600)
async def test_a_deploy_on_node_a_switches_node_b_with_no_turn_failing(
    pool_nodes: tuple[Nodes, str, str]
) -> None:
    nodes, old_url, new_id = pool_nodes
    store = Store(nodes.database_url)
    widget = await Widget(nodes.b.url).connect()
    console = Console()
    try:
        async with httpx.AsyncClient(base_url=nodes.a.url, timeout=WAIT) as api_a, \
                httpx.AsyncClient(base_url=nodes.b.url, timeout=WAIT) as api_b:
            rita_a = await user_login(store, api_a, "rita", "trainer")
            rita_b = await user_login(store, api_b, "rita", "trainer")
            await console.connect(nodes.b.url, rita_b)
            models = (await api_a.get("/api/models", headers=rita_a)).json()
            old_id = models["live"]
            assert new_id in {m["model_id"] for m in models["models"]}
            session = await widget.session()
            answers = [await _turn(widget, session, "hello")]

            resp = await api_a.post(f"/api/models/{new_id}/deploy", headers=rita_a, json={})
            assert resp.status_code == 202, resp.text
            seen_running = None
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # node B's customer talks on while A deploys
                answers.append(await _turn(widget, session, "what is your return policy?"))
                assert not _failed(answers[-1]), answers
                view = (await api_b.get("/api/models", headers=rita_b)).json()["deploy"]
                if view is not None and view["state"] == "running":
                    seen_running = view
                if view is not None and view["state"] != "running":
                    break
                await asyncio.sleep(0.3)
            assert seen_running is not None and seen_running["model_id"] == new_id
            assert seen_running["node"] == "node-a"
            assert view["state"] == "succeeded", view
            assert view["message"] == "20991231-000000-next.tar.gz is live", view
            finished = await _pushed(console, "deploy_finished")
            assert (finished["model_id"], finished["state"]) == (new_id, "succeeded")

            assert _refuses(old_url)  # the old server is stopped
            for _ in range(3):  # and node B's customer is answered by the new one
                answers.append(await _turn(widget, session, "hello"))
            models_b = (await api_b.get("/api/models", headers=rita_b)).json()
            assert models_b["live"] == new_id != old_id  # node B's own Rasa server says so
        assert not [a for a in answers if _failed(a)], answers
    finally:
        await widget.close()
        with contextlib.suppress(Exception):
            await console.sio.disconnect()
        await store.close()


ELSEWHERE = "127.0.0.2"  # the Rasa servers' "machine": loopback, but not the nodes' address


async def _deploy_view(api: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    """The deploy as a node shows it, once it has ended."""
    deadline = time.monotonic() + 300
    while True:
        view: dict[str, Any] | None = (await api.get("/api/models", headers=headers)
                                       ).json()["deploy"]
        if view is not None and view["state"] != "running":
            return view
        assert time.monotonic() < deadline, f"the deploy never ended: {view}"
        await asyncio.sleep(0.5)


@pytest.fixture
def elsewhere_nodes(rasa_stack: Stack, model_path: Path, tmp_path: Path
                    ) -> Iterator[tuple[Nodes, str, str]]:
    """:func:`_pool_nodes` on :data:`ELSEWHERE`, the live server the session's Rasa
    forwarded to from there: the deploy's new server is the real Rasa on that address."""
    with _pool_nodes(rasa_stack, model_path, tmp_path, ELSEWHERE, forwarded=True) as found:
        yield found


@pytest.mark.timeout(600)
async def test_a_deploy_switches_the_nodes_to_rasa_servers_on_another_address(
    elsewhere_nodes: tuple[Nodes, str, str], rasa_stack: Stack
) -> None:
    nodes, old_url, new_id = elsewhere_nodes
    old_port = int(old_url.rsplit(":", 1)[1])
    assert old_url == f"http://{ELSEWHERE}:{old_port}"
    control = httpx.AsyncClient(base_url=nodes.control_url, timeout=WAIT,
                                headers={"Authorization": f"Bearer {rasa_stack.token}"})
    store = Store(nodes.database_url)
    widget = await Widget(nodes.b.url).connect()
    try:
        async with httpx.AsyncClient(base_url=nodes.a.url, timeout=WAIT) as api_a, \
                httpx.AsyncClient(base_url=nodes.b.url, timeout=WAIT) as api_b:
            # the supervisor names its live server by the address it listens on, and it
            # answers there, not on 127.0.0.1
            live = (await control.get("/rasa")).json()["live"]
            assert live["url"] == old_url
            status = httpx.get(f"{old_url}/status", params={"token": rasa_stack.token})
            assert status.status_code == 200 and status.json()["model_id"] != new_id
            assert _refuses(f"http://127.0.0.1:{old_port}")
            session = await widget.session()
            assert not _failed(got := await _turn(widget, session, "hello")), got

            rita_a = await user_login(store, api_a, "rita", "trainer")
            rita_b = await user_login(store, api_b, "rita", "trainer")
            detail = (await api_b.get("/api/health/detail", headers=rita_b)).json()
            assert [s["url"] for s in detail["rasa"]["servers"]] == [old_url], detail
            models = (await api_a.get("/api/models", headers=rita_a)).json()
            assert new_id in {m["model_id"] for m in models["models"]}  # found on the supervisor
            resp = await api_a.post(f"/api/models/{new_id}/deploy", headers=rita_a,
                                    json={})
            assert resp.status_code == 202, resp.text
            view = await _deploy_view(api_b, rita_b)
            assert (view["state"], view["node"]) == ("succeeded", "node-a"), view
            # no "did not confirm the switch": node B acknowledged it
            assert view["message"] == "20991231-000000-next.tar.gz is live", view

            live = (await control.get("/rasa")).json()["live"]
            new_port = live["port"]
            assert new_port != old_port and live["url"] == f"http://{ELSEWHERE}:{new_port}"
            assert _refuses(f"http://127.0.0.1:{new_port}") and _refuses(old_url)
            # node B's own client went to the new server, the real Rasa at that address
            detail = (await api_b.get("/api/health/detail", headers=rita_b)).json()
            assert [s["url"] for s in detail["rasa"]["servers"]] == [live["url"]], detail
            assert (await api_b.get("/api/models", headers=rita_b)).json()["live"] == new_id
            assert not _failed(got := await _turn(widget, session, "hello")), got
    finally:
        await widget.close()
        await store.close()
        await control.aclose()


async def _pushed(console: Console, event: str) -> dict[str, Any]:
    while True:
        name, data = await asyncio.wait_for(console.pushed.get(), WAIT)
        if name == event:
            return dict(data)


# ---------------------------------------------------------------------------------- short

MODEL_ID = "model-of-the-shared-retraining"
# Stands in for `python -m bot.retrain` (tests/gateway/test_retrain_recovery.py does the
# same): says it runs, waits for the test's signal, then prints a report like bot.retrain's.
_JOB = """
import json, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
print("writing 1 correction(s)", file=sys.stderr, flush=True)
while not (folder / "go").exists():
    time.sleep(0.05)
print(json.dumps({"outcome": "written", "write": {"ok": True, "model": "shared.tar.gz"},
    "proof": {"corrections": {"before": 0, "after": 1, "total": 1, "failing": []},
              "suite": {"before": 42, "after": 42, "total": 42},
              "regressions": [], "deploy": True}}))
"""


@dataclass
class Scripted:
    nodes: Nodes
    signals: Path  # the folder of the scripted retraining's signals
    live: dict[str, Any]  # the live server the supervisor reports
    old: Forwarder  # the nodes' Rasa server at their start
    rasa_url: str  # the session's Rasa server


@pytest.fixture
def scripted(rasa_stack: Stack, tmp_path: Path) -> Iterator[Scripted]:
    """The control API with a pool that reports ``live`` as the live server (at first a
    forwarder to the session's Rasa, which nodes A and B start on), and the nodes."""
    signals = tmp_path / "signals"
    signals.mkdir()
    old = Forwarder(("127.0.0.1", rasa_stack.rasa_port))
    live = {"url": old.url, "port": 0, "model": "live.tar.gz", "model_id": None}
    pool = SimpleNamespace(
        live=SimpleNamespace(model=tmp_path / "models" / "live.tar.gz"),
        models_dir=tmp_path / "models", candidate=None,
        metadata=lambda path: {"model_id": MODEL_ID, "trained_at": "2026-12-07T03:00:00"},
        status=lambda: {"live": dict(live), "candidate": None, "models": []})
    port = free_port()
    server = serve_control(pool, ScriptedRetrainer(pool, tmp_path, signals, _JOB, ()),  # type: ignore[arg-type]
                           port, rasa_stack.token)
    try:
        with _nodes(tmp_path, old.url, rasa_stack.token, f"http://127.0.0.1:{port}") as nodes:
            yield Scripted(nodes, signals, live, old, rasa_stack.rasa_url)
    finally:
        old.close()
        server.shutdown()
        server.server_close()


async def _retrain_view(api: httpx.AsyncClient, headers: dict[str, str], wanted: str
                        ) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        job: dict[str, Any] | None = (await api.get("/api/retrain", headers=headers)
                                      ).json()["retrain"]
        if job is not None and job["state"] == wanted:
            return job
        assert time.monotonic() < deadline, f"retraining never {wanted} here: {job}"
        await asyncio.sleep(0.1)


async def test_a_node_finds_the_live_rasa_and_every_node_shows_a_retraining(
    scripted: Scripted
) -> None:
    nodes, signals = scripted.nodes, scripted.signals
    store = Store(nodes.database_url)
    widget = await Widget(nodes.b.url).connect()
    try:
        session = await widget.session()
        assert not _failed(got := await _turn(widget, session, "hello")), got
        # A deploy node B did not hear of: another server is live, the old one stopped.
        # Node B's next call is refused: it asks the supervisor, and its customer is answered.
        scripted.live["url"] = scripted.rasa_url
        scripted.old.close()
        assert _refuses(scripted.old.url)
        for text in ("hello", "what is your return policy?"):
            assert not _failed(got := await _turn(widget, session, text)), got

        await store.upsert_conversation("to-relabel")
        made = await store.add_correction(
            "to-relabel", type="relabelled", agent="ann",
            before={"intent": "contact_customer_service", "text": "i would love to join"},
            after={"intent": "create_account", "text": "i would love to join"})
        await store.review_correction(made.id, review_status="accepted", reviewed_by="rita")
        async with httpx.AsyncClient(base_url=nodes.a.url, timeout=WAIT) as api_a, \
                httpx.AsyncClient(base_url=nodes.b.url, timeout=WAIT) as api_b:
            rita_a = await user_login(store, api_a, "rita", "trainer")
            rita_b = await user_login(store, api_b, "rita", "trainer")
            assert (await api_b.get("/api/retrain", headers=rita_b)).json()["retrain"] is None
            resp = await api_a.post("/api/retrain", headers=rita_a, json={})
            assert resp.status_code == 202, resp.text
            job_id = resp.json()["retrain"]["id"]
            running = await _retrain_view(api_b, rita_b, "running")
            assert (running["id"], running["node"], running["corrections"]) == (
                job_id, "node-a", [made.id])
            again = await api_b.post("/api/retrain", headers=rita_b, json={})
            assert again.status_code == 409, again.text  # one at a time, across the nodes
            assert "node node-a" in again.json()["message"], again.text
            (signals / "go").write_text("go")
            done = await _retrain_view(api_b, rita_b, "succeeded")
            assert (done["id"], done["model_id"]) == (job_id, MODEL_ID)
            assert "writing 1 correction(s)" in done["log"]
    finally:
        await widget.close()
        await store.close()
