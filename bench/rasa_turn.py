"""How long one customer turn takes, by the route the gateway can drive Rasa: ``make bench``
or ``.venv/gateway/bin/python bench/rasa_turn.py [--turns 100] [--routes gateway,rest]``.

Starts a real Rasa server (the trained model in models/) and action server, then sends the same
customer messages, interleaved round-robin so that machine noise hits every route alike, by:

- ``socketio``: Rasa's own socketio channel (session_persistence off, the configuration that
  works with current python-socketio), with python-socketio's AsyncClient: the baseline the
  gateway is measured against;
- ``rest``: Rasa's REST webhook;
- ``gateway-channel``: bot/gateway_channel.py's /turn (one round trip, the whole turn, the
  NLU result and every action's confidence);
- ``http-steps``: Rasa's HTTP API step by step (log the message, predict, execute … until
  action_listen), as a gateway without a channel of its own would;
- ``gateway``: the handoff gateway itself (``python -m handoff`` in front of the same Rasa, bot
  mode), with the same python-socketio AsyncClient and the same protocol as ``socketio``: the
  customer's whole path, storing every message, driving Rasa through its channel and judging
  each message with triage before its reply goes out (the bench waits for triage's model);
- ``gateway-no-triage``: a second gateway, the same but with ``HANDOFF_TRIAGE_ENABLED=false``:
  the difference to ``gateway`` is what triage adds to a turn.

Prints p50 and p99 per route in milliseconds and each route's ratio to ``socketio``, then what
triage adds to a turn (``gateway`` minus ``gateway-no-triage``, each turn against the one of the
same round).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable, Dict, List

import httpx
import socketio

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from actions.shop_db import seed  # noqa: E402
from bot.serve import GATEWAY_PYTHON, Service, Stack, latest_model  # noqa: E402
from tests.conftest import RASA_BIN, free_port  # noqa: E402

# Messages answered by one response each (so a turn's end is one bot_uttered on socketio).
MESSAGES = [
    "what is your return policy?", "which payment methods do you accept",
    "how long does delivery take", "do you ship abroad?", "how do I reset my password",
    "are you a bot?", "hello", "thanks a lot",
]


ROUTES = ["socketio", "gateway", "gateway-no-triage", "rest", "gateway-channel", "http-steps"]


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Customer:
    """A customer on a Rasa-protocol Socket.IO server (Rasa's own channel or the gateway)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.AsyncClient(reconnection=False)
        self.replies: asyncio.Queue[dict] = asyncio.Queue()
        self.session_id = ""

    async def start(self) -> None:
        confirmed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        @self.sio.on("bot_uttered")
        async def on_bot(data: dict) -> None:
            await self.replies.put(data)

        @self.sio.on("session_confirm")
        async def on_confirm(session_id: object) -> None:
            if not confirmed.done():
                confirmed.set_result(str(session_id))

        await self.sio.connect(self.url, socketio_path="/socket.io", transports=["websocket"])
        await self.sio.emit("session_request", {"session_id": None})
        self.session_id = await asyncio.wait_for(confirmed, timeout=30)

    async def turn(self, text: str) -> None:
        await self.sio.emit("user_uttered", {"message": text, "session_id": self.session_id})
        await asyncio.wait_for(self.replies.get(), timeout=30)


class Routes:
    def __init__(self, stack: Stack, client: httpx.AsyncClient, gateway_url: str,
                 plain_gateway_url: str) -> None:
        self.stack = stack
        self.http = client
        self.token = stack.token
        self.rasa_customer = Customer(stack.rasa_url)
        self.gateway_customer = Customer(gateway_url)
        self.plain_gateway_customer = Customer(plain_gateway_url)

    async def start(self) -> None:
        await self.rasa_customer.start()
        await self.gateway_customer.start()
        await self.plain_gateway_customer.start()

    async def socketio(self, sender: str, text: str) -> None:
        await self.rasa_customer.turn(text)

    async def gateway(self, sender: str, text: str) -> None:
        await self.gateway_customer.turn(text)

    async def gateway_no_triage(self, sender: str, text: str) -> None:
        await self.plain_gateway_customer.turn(text)

    async def rest(self, sender: str, text: str) -> None:
        r = await self.http.post(f"{self.stack.rasa_url}/webhooks/rest/webhook",
                                 json={"sender": sender, "message": text})
        assert r.status_code == 200 and r.json(), r.text

    async def gateway_channel(self, sender: str, text: str) -> None:
        r = await self.http.post(f"{self.stack.rasa_url}/webhooks/gateway/turn",
                                 json={"sender": sender, "text": text},
                                 headers={"Authorization": f"Bearer {self.token}"})
        assert r.status_code == 200 and r.json()["actions"], r.text

    async def http_steps(self, sender: str, text: str) -> None:
        base = f"{self.stack.rasa_url}/conversations/{sender}"
        params = {"token": self.token, "include_events": "NONE"}
        r = await self.http.post(f"{base}/messages", params=params,
                                 json={"text": text, "sender": "user"})
        assert r.status_code == 200, r.text
        for _ in range(10):
            p = (await self.http.post(f"{base}/predict", params=params)).json()
            name = p["scores"][0]["action"]
            r = await self.http.post(f"{base}/execute", params=params, json={
                "name": name, "policy": p["policy"], "confidence": p["confidence"]})
            assert r.status_code == 200, r.text
            if name == "action_listen":
                return


async def triage_ready(client: httpx.AsyncClient, gateway_url: str) -> None:
    for _ in range(600):
        if (await client.get(f"{gateway_url}/api/health")).json().get("triage") == "ready":
            return
        await asyncio.sleep(0.5)
    raise SystemExit("the gateway's triage did not load")


async def run(turns: int, stack: Stack, gateway_url: str, plain_gateway_url: str,
              only: List[str]) -> Dict[str, List[float]]:
    async with httpx.AsyncClient(timeout=60) as client:
        await triage_ready(client, gateway_url)
        routes = Routes(stack, client, gateway_url, plain_gateway_url)
        await routes.start()
        named: Dict[str, Callable[[str, str], Awaitable[None]]] = {
            "socketio": routes.socketio, "gateway": routes.gateway,
            "gateway-no-triage": routes.gateway_no_triage, "rest": routes.rest,
            "gateway-channel": routes.gateway_channel, "http-steps": routes.http_steps,
        }
        named = {name: route for name, route in named.items() if name in only}
        senders = {name: f"bench-{name}-{uuid.uuid4().hex[:8]}" for name in named}
        times: Dict[str, List[float]] = {name: [] for name in named}
        for i in range(turns + 5):  # the first 5 rounds warm up
            text = MESSAGES[i % len(MESSAGES)]
            order = list(named.items())
            order = order[i % len(order):] + order[:i % len(order)]
            for name, route in order:
                t0 = time.perf_counter()
                await route(senders[name], text)
                if i >= 5:
                    times[name].append((time.perf_counter() - t0) * 1000)
        await routes.rasa_customer.sio.disconnect()
        await routes.gateway_customer.sio.disconnect()
        await routes.plain_gateway_customer.sio.disconnect()
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--routes", default=",".join(ROUTES),
                        help="comma-separated routes to compare (socketio is always one)")
    parser.add_argument("--database-url", default=None,
                        help="the gateway's store (default: a fresh SQLite file)")
    args = parser.parse_args()
    only = ["socketio"] + [r for r in args.routes.split(",") if r in ROUTES and r != "socketio"]
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        credentials = tmpdir / "credentials.yml"
        credentials.write_text((PROJECT_ROOT / "credentials.yml").read_text()
                               + "\nsocketio:\n  user_message_evt: user_uttered\n"
                               "  bot_message_evt: bot_uttered\n  session_persistence: false\n")
        stack = Stack(rasa_bin=RASA_BIN, model=latest_model(), rasa_port=free_port(),
                      actions_port=free_port(), token=secrets.token_urlsafe(16),
                      credentials=credentials, log_dir=tmpdir / "logs",
                      env={"SHOP_DB_PATH": str(seed(tmpdir / "shop.db")),
                           "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
        stack.start(timeout=300)
        gateways = []
        for label, triage in (("gateway", "true"), ("gateway-no-triage", "false")):
            port = free_port()
            service = Service(
                name=f"handoff {label}", argv=[str(GATEWAY_PYTHON), "-m", "handoff"],
                ready_url=f"http://127.0.0.1:{port}/api/health",
                log_path=tmpdir / "logs" / f"{label}.log",
                env={"HANDOFF_PORT": str(port), "HANDOFF_RASA_URL": stack.rasa_url,
                     "HANDOFF_RASA_TOKEN": stack.token,
                     "HANDOFF_ENV_FILE": str(tmpdir / "no.env"),
                     "HANDOFF_DATABASE_URL": args.database_url
                     or f"sqlite+aiosqlite:///{tmpdir / (label + '.db')}",
                     "HANDOFF_TRIAGE_ENABLED": triage,
                     "HANDOFF_JWT_SECRET": secrets.token_urlsafe(48),
                     "HANDOFF_LOG_LEVEL": "WARNING",
                     # one customer sending turn after turn as fast as they are answered:
                     # above the default per-connection limit (docs/security.md)
                     "HANDOFF_CUSTOMER_MESSAGE_RATE": "1000",
                     "HANDOFF_CUSTOMER_MESSAGE_BURST": "10000",
                     "HANDOFF_IP_MESSAGE_RATE": "1000", "HANDOFF_IP_MESSAGE_BURST": "10000"},
            )
            service.start()
            stack.services.append(service)
            gateways.append((service, f"http://127.0.0.1:{port}"))
        try:
            for service, _ in gateways:
                service.wait_until_ready(time.monotonic() + 60)
            times = asyncio.run(run(args.turns, stack, gateways[0][1], gateways[1][1], only))
        finally:
            stack.stop()
    base50 = statistics.median(times["socketio"])
    base99 = percentile(times["socketio"], 0.99)
    print(f"{args.turns} turns per route, interleaved; model {latest_model().name}\n")
    print("| route | p50 ms | p99 ms | p50 ratio | p99 ratio |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {p50 / base50:.2f} | {p99 / base99:.2f} |")
    if "gateway" in times and "gateway-no-triage" in times:
        added = [a - b for a, b in zip(times["gateway"], times["gateway-no-triage"])]
        print(f"\ntriage within the turn adds: p50 {statistics.median(added):+.1f} ms, "
              f"p90 {percentile(added, 0.9):+.1f} ms (gateway minus gateway-no-triage, "
              "same round)")


if __name__ == "__main__":
    main()
