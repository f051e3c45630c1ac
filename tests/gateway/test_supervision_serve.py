"""``python -m bot.serve`` survives crashes (long: it starts its own Rasa, then Rasa again).

Rasa is killed with SIGKILL: the gateway keeps serving, the customer is told, the keeper
restarts Rasa, and the queued conversation is back with the bot with the outage's message
answered. Then the gateway is killed too, and the keeper brings it back. The short versions:
tests/test_keeper.py (real child processes) and tests/gateway/test_rasa_outage.py (a hung
Rasa under a gateway)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from handoff.conversation.customer_protocol import RASA_DOWN_TEXT
from tests.conftest import RASA_VENV, free_port
from tests.gateway.clients import WAIT, Widget
from tests.gateway.test_deploys import _project_copy

pytestmark = [pytest.mark.long, pytest.mark.asyncio, pytest.mark.timeout(1800)]

ORDER_QUESTION = "where is my order 100002?"


class Serve:
    def __init__(self, url: str, control_url: str, token: str, log_path: Path,
                 process: subprocess.Popen[bytes]) -> None:
        self.url, self.control_url, self.token = url, control_url, token
        self.log_path, self.process = log_path, process

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def processes(self) -> dict[str, dict[str, Any]]:
        resp = requests.get(f"{self.control_url}/processes",
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        resp.raise_for_status()
        return {p["name"]: p for p in resp.json()["processes"]}


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, shop_db: Path) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("serve")
    actions_port, gateway_port, control_port = free_port(), free_port(), free_port()
    project = _project_copy(root, actions_port)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")},
        "RASA_TOKEN": secrets.token_urlsafe(16),
        "SHOP_DB_PATH": str(shop_db),
        "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "HANDOFF_ENV_FILE": str(root / "no.env"),
        "HANDOFF_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'handoff.db'}",
        "HANDOFF_JWT_SECRET": "test-secret-" + "x" * 40,
        "HANDOFF_RASA_TIMEOUT": "120",
        "HANDOFF_TRIAGE_ENABLED": "false",
    }
    log_path = root / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(RASA_VENV / "bin" / "python"), "-m", "bot.serve", "--project", str(project),
             "--rasa-port", str(free_port()), "--standby-port", str(free_port()),
             "--control-port", str(control_port), "--actions-port", str(actions_port),
             "--gateway-port", str(gateway_port)],
            cwd=Path(__file__).resolve().parents[2], env=env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    system = Serve(f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{control_port}",
                   env["RASA_TOKEN"], log_path, process)
    deadline = time.monotonic() + 400
    while "The system is up." not in system.log():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"bot.serve did not start:\n{system.log()[-4000:]}")
        time.sleep(0.5)
    yield system
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


async def _next_text(widget: Widget) -> dict[str, Any]:
    while True:
        event, data = await widget.next(timeout=400)
        if event == "bot_uttered" and isinstance(data, dict) and data.get("text"):
            return data


async def _until(check: Any, limit: float = 400) -> Any:
    deadline = time.monotonic() + limit
    while not (value := await check()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)
    return value


async def test_rasa_and_the_gateway_killed_under_bot_serve_are_restarted(serve: Serve) -> None:
    async with httpx.AsyncClient(base_url=serve.url, timeout=WAIT) as api:
        async def rasa_state() -> str:
            try:
                return str((await api.get("/api/health")).json()["rasa"]["state"])
            except (httpx.HTTPError, KeyError, ValueError):
                return ""

        widget = await Widget(serve.url).connect()
        try:
            cid = await widget.session()
            await widget.say(cid, "hi")
            assert (await _next_text(widget))["text"].startswith("Hi, I'm")
            rasa = serve.processes()["Rasa server"]
            assert (rasa["restarts"], rasa["state"]) == (0, "running")

            os.killpg(rasa["pid"], signal.SIGKILL)
            await _until(lambda: _is(rasa_state(), "down"))
            await widget.say(cid, ORDER_QUESTION)  # the gateway serves on; the customer told
            assert (await _next_text(widget))["text"] == RASA_DOWN_TEXT
            # nobody is logged in to the console: the customer is told that too
            assert (await _next_text(widget))["text"].startswith(
                "No member of our team is available right now.")

            # the keeper restarts Rasa; the conversation is back with the bot, answered
            assert (await _next_text(widget))["text"] == "You are back with the assistant."
            assert (await _next_text(widget))["text"].startswith("Order 100002 ")
            rasa = serve.processes()["Rasa server"]
            assert (rasa["restarts"], rasa["crashes"], rasa["last_exit_code"]) == (1, 1, -9)
            assert "restarting Rasa server (restart 1)" in serve.log()
            live = requests.get(f"{serve.control_url}/rasa", timeout=10, headers={
                "Authorization": f"Bearer {serve.token}"}).json()["live"]
            tracker = requests.get(f"{live['url']}/conversations/{cid}/tracker",
                                   params={"token": serve.token}, timeout=WAIT).json()
            assert [e["text"] for e in tracker["events"] if e["event"] == "user"] == [
                "hi", ORDER_QUESTION]

            gateway = serve.processes()["handoff gateway"]
            os.killpg(gateway["pid"], signal.SIGKILL)
            await _until(lambda: _is(rasa_state(), "up", "slow"))  # the gateway is back
            gateway = serve.processes()["handoff gateway"]
            assert (gateway["restarts"], gateway["last_exit_code"]) == (1, -9)
            assert serve.process.poll() is None  # bot.serve itself never stopped
        finally:
            await widget.close()


async def _is(value: Any, *wanted: str) -> bool:
    return await value in wanted
