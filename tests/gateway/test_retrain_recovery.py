"""A gateway that restarts during a retraining still records its outcome
(handoff/learning/retraining.py, ``Retraining.recover_retrain``), from the supervisor's record
of it (``GET /retrain``); a correction that cannot become training data is left out of a
retraining, with its reason.

The supervisor's control API is the real one (``bot.control.serve_control``) and so is the
gateway (a process, killed with SIGKILL and started again on the same database), beside the
real Rasa server. Two parts stand in for what cannot be cut short on cue: the Rasa pool only
reports that server as live (starting servers is tests/gateway/test_deploys.py's), and the
retraining is a script that waits for the test's signal and then prints the report
``bot.retrain`` would (its real runs are in test_deploys.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio

from bot.control import Retrainer, serve_control
from bot.serve import Stack
from handoff.store import Store
from tests.conftest import free_port
from tests.gateway.clients import WAIT, user_login
from tests.gateway.conftest import Gateway, _start_gateway, _stop, stored_correction

pytestmark = pytest.mark.asyncio

MODEL_ID = "model-of-the-recovered-retraining"
MODEL_FILE = "corrections-20261128T235900Z.tar.gz"
JOIN = "i would love to join northwind goods as a customer"

# Stands in for `python -m bot.retrain`: says it runs, waits for the test's signal, then
# prints a report like bot.retrain's (one correction, fixed, nothing regressed; or, when
# signalled, that the corrections were all in the data already).
_JOB = """
import json, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
(folder / "started").write_text("started")
print("writing 1 correction(s)", file=sys.stderr, flush=True)
while not (folder / "go").exists():
    time.sleep(0.05)
if (folder / "nothing_new").exists():  # every correction was in the data already
    print(json.dumps({"outcome": "nothing_new", "message": "nothing new: 1 correction(s) "
                      "already in the training data", "write": {"ok": True, "model": None}}))
    sys.exit(0)
print("proving the new model", file=sys.stderr, flush=True)
print(json.dumps({"outcome": "written",
    "write": {"ok": True, "model": sys.argv[2]},
    "proof": {"corrections": {"before": 0, "after": 1, "total": 1, "failing": []},
              "suite": {"before": 42, "after": 42, "total": 42},
              "regressions": [], "deploy": True}}))
"""


class ScriptedRetrainer(Retrainer):
    """Runs ``job`` (a script standing in for ``python -m bot.retrain``) with the signals'
    folder and ``args``."""

    def __init__(self, pool: Any, project: Path, signals: Path, job: str = _JOB,
                 args: tuple[str, ...] = (MODEL_FILE,)) -> None:
        super().__init__(pool, project)
        self.signals, self.job, self.args = signals, job, args

    def command(self, records: Path, live_model: Path, finetune: bool) -> list[str]:
        return [sys.executable, "-c", self.job, str(self.signals), *self.args]


@pytest.fixture
def supervisor(rasa_stack: Stack, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The control API on a free port, its pool reporting the test session's Rasa as live;
    yields its URL and the folder of the scripted job's signals."""
    project, signals = tmp_path / "project", tmp_path / "signals"
    project.mkdir()
    signals.mkdir()
    live = SimpleNamespace(model=project / "models" / "live.tar.gz")
    pool = SimpleNamespace(
        live=live, models_dir=project / "models", candidate=None,
        metadata=lambda path: {"model_id": MODEL_ID, "trained_at": "2026-11-28T23:59:00"},
        status=lambda: {"live": {"url": rasa_stack.rasa_url, "port": 0, "model": "live.tar.gz",
                                 "model_id": None}, "candidate": None, "models": []})
    port = free_port()
    server = serve_control(pool, ScriptedRetrainer(pool, project, signals),  # type: ignore[arg-type]
                           port, rasa_stack.token)
    yield f"http://127.0.0.1:{port}", signals
    server.shutdown()
    server.server_close()


@pytest_asyncio.fixture
async def restartable(rasa_stack: Stack, supervisor: tuple[str, Path],
                      tmp_path: Path) -> Any:
    """Starts (and restarts) a gateway on one database, with the supervisor."""
    folder = tmp_path / "gateway"
    folder.mkdir()
    running: list[Gateway] = []

    def start() -> Gateway:
        running.append(_start_gateway(folder, rasa_stack.rasa_url, rasa_stack.token,
                                      {"HANDOFF_SUPERVISOR_URL": supervisor[0]}))
        return running[-1]

    yield start
    for gateway in running:
        _stop(gateway.process)


async def _state(api: httpx.AsyncClient, headers: dict[str, str], wanted: str,
                 timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = (await api.get("/api/retrain", headers=headers)).json()["retrain"]
        if job is not None and job["state"] == wanted:
            return job
        assert time.monotonic() < deadline, f"retraining never {wanted}: {job}"
        await asyncio.sleep(0.2)


async def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.05)


async def _relabel_to_create_account(store: Store, conversation_id: str) -> Any:
    """An agent's relabel of JOIN from contact_customer_service to create_account."""
    await store.upsert_conversation(conversation_id)
    return await store.add_correction(
        conversation_id, type="relabelled", agent="ann",
        before={"intent": "contact_customer_service", "text": JOIN},
        after={"intent": "create_account", "text": JOIN})


async def _accepted_relabel(store: Store, conversation_id: str) -> Any:
    """:func:`_relabel_to_create_account`, accepted by a trainer."""
    made = await _relabel_to_create_account(store, conversation_id)
    await store.review_correction(made.id, review_status="accepted", reviewed_by="rita")
    return made


async def test_a_restarted_gateway_records_the_retraining_it_started(
    restartable: Any, supervisor: tuple[str, Path]
) -> None:
    _, signals = supervisor
    gateway = await asyncio.to_thread(restartable)
    store = Store(gateway.database_url)
    try:
        made = await _accepted_relabel(store, "to-relabel")
        async with httpx.AsyncClient(base_url=gateway.url, timeout=WAIT) as api:
            rita = await user_login(store, api, "rita", "trainer")
            resp = await api.post("/api/retrain", headers=rita, json={})
            assert resp.status_code == 202, resp.text
            job_id = resp.json()["retrain"]["id"]
        await _wait_for(signals / "started")

        # The gateway dies mid-retraining; the supervisor's job goes on.
        os.killpg(gateway.process.pid, signal.SIGKILL)
        gateway.process.wait(10)
        gateway = await asyncio.to_thread(restartable)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=WAIT) as api:
            running = await _state(api, rita, "running")
            assert (running["id"], running["started_by"], running["corrections"]) == (
                job_id, "rita", [made.id])
            assert "writing 1 correction(s)" in running["log"]  # the supervisor's lines
            (signals / "go").write_text("go")
            done = await _state(api, rita, "succeeded")
            assert done["model_id"] == MODEL_ID
            assert "corrected turns now right: 1 of 1" in done["message"]
            assert "proving the new model" in done["log"]
            models = (await api.get("/api/models", headers=rita)).json()["models"]
            [model] = [m for m in models if m["model_id"] == MODEL_ID]
            assert (model["status"], model["file"], model["retrained_by"]) == (
                "candidate", MODEL_FILE, "rita")
        correction = await stored_correction(store, made.id)
        assert (correction.export_id, correction.fixed_by_model) == (job_id, MODEL_ID)
        assert [e.action for e in await store.list_audit(target=f"retrain:{job_id}")] == [
            "retrain_succeeded", "retrain_started"]

        # A retraining the supervisor no longer knows (it restarted as well): recorded as
        # failed, its corrections still waiting.
        await store.upsert_conversation("another")
        waiting = await store.add_correction(
            "another", type="relabelled", agent="ann", before={"intent": "greet", "text": "bye"},
            after={"intent": "goodbye", "text": "bye"})
        await store.review_correction(waiting.id, review_status="accepted", reviewed_by="rita")
        await store.audit("rita", "retrain_started", target="retrain:lost-one",
                          details={"corrections": [waiting.id], "finetune": False})
        _stop(gateway.process)
        gateway = await asyncio.to_thread(restartable)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=WAIT) as api:
            lost = await _state(api, rita, "failed")
            assert lost["id"] == "lost-one" and "retrain again" in lost["message"]
        assert (await stored_correction(store, waiting.id)).export_id is None
        assert [e.action for e in await store.list_audit(target="retrain:lost-one")] == [
            "retrain_failed", "retrain_started"]
    finally:
        await store.close()


async def test_a_correction_that_cannot_become_training_data_is_left_out(
    restartable: Any, supervisor: tuple[str, Path]
) -> None:
    _, signals = supervisor
    gateway = await asyncio.to_thread(restartable)
    store = Store(gateway.database_url)
    try:
        good = await _relabel_to_create_account(store, "c1")
        # Rasa was not reachable when the agent decided: no tracker events to write from
        blind = await store.add_correction(
            "c1", type="replaced", agent="ann", before={"action_name": "utter_greet"},
            after={"action_name": "utter_goodbye"}, tracker_events=[])
        await store.review_corrections([good.id, blind.id], review_status="accepted",
                                       reviewed_by="rita")
        reason = "no tracker events: the story cannot be written (Rasa was not reachable " \
                 "when the agent decided)"
        async with httpx.AsyncClient(base_url=gateway.url, timeout=WAIT) as api:
            rita = await user_login(store, api, "rita", "trainer")
            resp = await api.post("/api/retrain", headers=rita, json={})
            assert resp.status_code == 202, resp.text
            job = resp.json()["retrain"]
            assert (job["corrections"], job["left_out"]) == (
                [good.id], [{"id": blind.id, "reason": reason}])
            assert job["log"] == [f"correction {blind.id} left out: {reason}"]
            (signals / "go").write_text("go")
            done = await _state(api, rita, "succeeded")
            assert "retraining on 1 correction(s)" in " ".join(done["log"])
            assert done["message"].endswith(
                "(1 correction(s) left out, not valid training data: see the log)")
            assert (await stored_correction(store, good.id)).export_id == job["id"]
            assert (await stored_correction(store, blind.id)).export_id is None  # still waiting

            # only the one that cannot become training data waits: refused, with why
            again = await api.post("/api/retrain", headers=rita, json={})
            assert again.status_code == 409, again.text
            assert again.json()["left_out"] == [{"id": blind.id, "reason": reason}]
            assert f"correction {blind.id}: no tracker events" in again.json()["message"]
    finally:
        await store.close()


async def test_a_retraining_waits_for_the_tracker_of_a_correction_accepted_a_moment_ago(
    restartable: Any, supervisor: tuple[str, Path]
) -> None:
    """An agent's decision stores its correction at once and fetches its tracker events from
    Rasa after the step commits; a trainer who accepts it and retrains straight away gets it
    learnt, not left out as not ready."""
    _, signals = supervisor
    gateway = await asyncio.to_thread(restartable)
    store = Store(gateway.database_url)
    try:
        made = await _accepted_relabel(store, "decided-just-now")
        # as a decision's step leaves it: the tracker events still on the way from Rasa
        with sqlite3.connect(gateway.database_url.split(":///", 1)[1]) as db:
            db.execute("UPDATE corrections SET tracker_status = 'pending' WHERE id = ?",
                       (made.id,))
        async with httpx.AsyncClient(base_url=gateway.url, timeout=WAIT) as api:
            rita = await user_login(store, api, "rita", "trainer")
            started = asyncio.create_task(api.post("/api/retrain", headers=rita, json={}))
            await asyncio.sleep(0.5)
            assert not started.done()  # waiting for the events, not leaving the correction out
            await store.set_correction_tracker(made.id, events=[{"event": "user", "text": JOIN}])
            resp = await started
            assert resp.status_code == 202, resp.text
            job = resp.json()["retrain"]
            assert (job["corrections"], job["left_out"]) == ([made.id], [])
            (signals / "go").write_text("go")
            await _state(api, rita, "succeeded")
    finally:
        await store.close()


async def test_a_retraining_with_nothing_new_to_learn_says_so_and_marks_its_corrections(
    restartable: Any, supervisor: tuple[str, Path]
) -> None:
    _, signals = supervisor
    gateway = await asyncio.to_thread(restartable)
    store = Store(gateway.database_url)
    try:
        made = await _accepted_relabel(store, "learnt-before")
        async with httpx.AsyncClient(base_url=gateway.url, timeout=WAIT) as api:
            rita = await user_login(store, api, "rita", "trainer")
            resp = await api.post("/api/retrain", headers=rita, json={})
            assert resp.status_code == 202, resp.text
            (signals / "nothing_new").write_text("yes")
            (signals / "go").write_text("go")
            done = await _state(api, rita, "refused")
            assert done["message"] == (
                "nothing new to learn, no model trained: nothing new: 1 correction(s) already "
                "in the training data; the corrections are marked exported")
            assert done["model_id"] is None
            assert (await stored_correction(store, made.id)).export_id == done["id"]
            models = (await api.get("/api/models", headers=rita)).json()["models"]
            assert [m["status"] for m in models] == ["live"]  # no candidate recorded
    finally:
        await store.close()
