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
  the difference to ``gateway`` is what triage adds to a turn;
- ``gateway-http``: a third gateway, the same as ``gateway`` but sending its turns to Rasa
  with one HTTP request each (``HANDOFF_RASA_TRANSPORT=http``, the transport before the
  websocket) instead of over its persistent websocket;
- ``channel-ws`` / ``channel-http``: the gateway's own Rasa client
  (``handoff.conversation.rasa_client.RasaClient``) calling the channel's ``turn`` from the
  bench, over the websocket and over HTTP: the two transports without the rest of the gateway.

Each gateway is started only when one of its routes is asked for. Prints p50 and p99 per route
in milliseconds and each route's ratio to ``socketio``, then what triage adds to a turn
(``gateway``, and each ``--variant`` with triage on, minus ``gateway-no-triage``, each turn
against the one of the same round), the machine's load average, and
where each gateway's time went (its ``handoff_turn_seconds`` histogram over the measured
rounds: the Rasa call, and the rest, from the message's arrival to the answer applied; its
``handoff_triage_seconds``, triage's judgement between Rasa's answer and the customer; and
the CPU time its process used per measured turn, steadier than latency on a busy machine), and
then (``--transport N``, 400 by default) the two transports alone: the channel's cheapest
request N times over each, their latency and the CPU each costs Rasa and the client.
``--variant`` adds gateways with other settings or from another copy of the project,
``--profile DIR`` runs the gateways under cProfile (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable, Dict, List, Tuple

import httpx
import socketio

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from actions.shop_db import seed  # noqa: E402
from bot.serve import GATEWAY_PYTHON, Service, Stack, latest_model  # noqa: E402
from handoff.conversation.rasa_client import RasaClient  # noqa: E402
from tests.conftest import RASA_BIN, free_port  # noqa: E402

# Messages answered by one response each (so a turn's end is one bot_uttered on socketio).
MESSAGES = [
    "what is your return policy?", "which payment methods do you accept",
    "how long does delivery take", "do you ship abroad?", "how do I reset my password",
    "are you a bot?", "hello", "thanks a lot",
]


ROUTES = ["socketio", "gateway", "gateway-no-triage", "gateway-http", "rest", "gateway-channel",
          "channel-ws", "channel-http", "http-steps"]
# The gateways the bench can start: route -> the settings that differ from the shipped ones.
GATEWAYS: Dict[str, Dict[str, str]] = {
    "gateway": {},
    "gateway-no-triage": {"HANDOFF_TRIAGE_ENABLED": "false"},
    "gateway-http": {"HANDOFF_RASA_TRANSPORT": "http"},
}


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
    def __init__(self, stack: Stack, client: httpx.AsyncClient,
                 gateway_urls: Dict[str, str]) -> None:
        self.stack = stack
        self.http = client
        self.token = stack.token
        self.customers = {"socketio": Customer(stack.rasa_url)}
        self.customers.update({name: Customer(url) for name, url in gateway_urls.items()})
        self.channel_ws = RasaClient(stack.rasa_url, stack.token, transport="websocket")
        self.channel_http = RasaClient(stack.rasa_url, stack.token, transport="http")

    async def start(self) -> None:
        for customer in self.customers.values():
            await customer.start()

    async def close(self) -> None:
        for customer in self.customers.values():
            await customer.sio.disconnect()
        await self.channel_ws.close()
        await self.channel_http.close()

    def customer(self, name: str) -> Callable[[str, str], Awaitable[None]]:
        async def route(sender: str, text: str) -> None:
            await self.customers[name].turn(text)
        return route

    async def channel_over_ws(self, sender: str, text: str) -> None:
        assert (await self.channel_ws.turn(sender, text))["actions"]

    async def channel_over_http(self, sender: str, text: str) -> None:
        assert (await self.channel_http.turn(sender, text))["actions"]

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


async def triage_ready(client: httpx.AsyncClient, gateway_url: str, admin_password: str
                       ) -> None:
    """Wait until the gateway's triage is loaded and, in fitted mode, its thresholds fitted
    (the fit sends hundreds of messages to Rasa's NLU at start: not a turn's cost)."""
    login = await client.post(f"{gateway_url}/api/login",
                              json={"username": "admin", "password": admin_password})
    login.raise_for_status()
    admin = {"Authorization": f"Bearer {login.json()['token']}"}
    for _ in range(1200):
        health = (await client.get(f"{gateway_url}/api/health/detail", headers=admin)).json()
        thresholds = health.get("triage_thresholds") or {}
        if health.get("triage") == "ready" and (thresholds.get("mode") != "fitted"
                                                 or thresholds.get("fitted_at")):
            return
        await asyncio.sleep(0.5)
    raise SystemExit("the gateway's triage did not load")


async def turn_parts(client: httpx.AsyncClient, url: str) -> Dict[str, Tuple[float, float]]:
    """The gateway's ``handoff_turn_seconds`` so far: part -> (sum of seconds, count)."""
    parts: Dict[str, List[float]] = {}
    for line in (await client.get(f"{url}/metrics")).text.splitlines():
        for suffix in ("_sum", "_count"):  # triage's judgement within the turn, as "judge"
            if line.startswith(f"handoff_triage_seconds{suffix} "):
                parts.setdefault("judge", [0.0, 0.0])[suffix == "_count"] = float(
                    line.split()[-1])
            head = f"handoff_turn_seconds{suffix}{{part=\""
            if line.startswith(head):
                part = line[len(head):line.index('"', len(head))]
                parts.setdefault(part, [0.0, 0.0])[suffix == "_count"] = float(line.split()[-1])
    return {part: (total, count) for part, (total, count) in parts.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def transports(stack: Stack, requests: int) -> Dict[str, Dict[str, float]]:
    """The two transports alone: the channel's cheapest request (``erase`` of a conversation
    Rasa never saw: the lock, a lookup, no model), ``requests`` of each, in alternating blocks
    of 20; each one's latency, and the CPU it cost Rasa's process and this one per request."""
    server = next(s for s in stack.services if s.name.startswith("Rasa server"))
    assert server.process is not None
    pid = server.process.pid
    clients = {"websocket": RasaClient(stack.rasa_url, stack.token, transport="websocket"),
               "http": RasaClient(stack.rasa_url, stack.token, transport="http")}
    times: Dict[str, List[float]] = {name: [] for name in clients}
    rasa_cpu = {name: 0.0 for name in clients}
    own_cpu = {name: 0.0 for name in clients}
    try:
        for client in clients.values():  # connect and warm up
            for _ in range(20):
                await client.erase(f"bench-none-{uuid.uuid4().hex}")
        for block in range(max(1, requests // 20) * 2):
            name = ("websocket", "http")[block % 2]
            client = clients[name]
            rasa0, own0 = cpu_seconds(pid), time.process_time()
            for _ in range(20):
                t0 = time.perf_counter()
                assert await client.erase(f"bench-none-{uuid.uuid4().hex}") is False
                times[name].append((time.perf_counter() - t0) * 1000)
            rasa_cpu[name] += cpu_seconds(pid) - rasa0
            own_cpu[name] += time.process_time() - own0
    finally:
        for client in clients.values():
            await client.close()
    return {name: {"p50": statistics.median(values), "p99": percentile(values, 0.99),
                   "rasa_cpu_ms": rasa_cpu[name] * 1000 / len(values),
                   "client_cpu_ms": own_cpu[name] * 1000 / len(values), "n": len(values)}
            for name, values in times.items()}


async def run(turns: int, stack: Stack, gateway_urls: Dict[str, str], only: List[str],
              admin_passwords: Dict[str, Path], pids: Dict[str, int]
              ) -> Tuple[Dict[str, List[float]], Dict[str, Dict[str, float]]]:
    async with httpx.AsyncClient(timeout=60) as client:
        for name, url in gateway_urls.items():
            if GATEWAYS[name].get("HANDOFF_TRIAGE_ENABLED") != "false":
                await triage_ready(client, url, admin_passwords[name].read_text().strip())
        routes = Routes(stack, client, gateway_urls)
        await routes.start()
        named: Dict[str, Callable[[str, str], Awaitable[None]]] = {
            "socketio": routes.customer("socketio"),
            **{name: routes.customer(name) for name in gateway_urls},
            "rest": routes.rest, "gateway-channel": routes.gateway_channel,
            "channel-ws": routes.channel_over_ws, "channel-http": routes.channel_over_http,
            "http-steps": routes.http_steps,
        }
        named = {name: named[name] for name in only}
        senders = {name: f"bench-{name}-{uuid.uuid4().hex[:8]}" for name in named}
        times: Dict[str, List[float]] = {name: [] for name in named}
        before: Dict[str, Dict[str, Tuple[float, float]]] = {}
        cpu: Dict[str, float] = {}
        for i in range(turns + 5):  # the first 5 rounds warm up
            if i == 5:
                before = {name: await turn_parts(client, url)
                          for name, url in gateway_urls.items()}
                cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            text = MESSAGES[i % len(MESSAGES)]
            order = list(named.items())
            order = order[i % len(order):] + order[:i % len(order)]
            for name, route in order:
                t0 = time.perf_counter()
                await route(senders[name], text)
                if i >= 5:
                    times[name].append((time.perf_counter() - t0) * 1000)
        parts: Dict[str, Dict[str, float]] = {}
        cpu = {name: (cpu_seconds(pid) - cpu[name]) * 1000 / turns for name, pid in pids.items()}
        for name, url in gateway_urls.items():
            after = await turn_parts(client, url)
            parts[name] = {
                part: (total - before[name].get(part, (0.0, 0.0))[0]) * 1000
                / max(1.0, count - before[name].get(part, (0.0, 0.0))[1])
                for part, (total, count) in after.items()}
            parts[name]["cpu"] = cpu[name]
        await routes.close()
        return times, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--routes", default=",".join(ROUTES),
                        help="comma-separated routes to compare (socketio is always one)")
    parser.add_argument("--database-url", default=None,
                        help="the gateway's store (default: a fresh SQLite file)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:VAR=VALUE,...",
                        help="one more gateway route NAME, the shipped gateway with these "
                        "HANDOFF_ settings changed (e.g. gateway-2threads:HANDOFF_TRIAGE_THREADS=0)"
                        "; cwd=DIR runs the gateway of another copy of the project (e.g. the "
                        "code before a change, from `git archive`); may be given several times")
    parser.add_argument("--transport", type=int, default=400, metavar="N",
                        help="then N requests over each transport to the channel alone (0: none) "
                        "(websocket against HTTP: latency and CPU per request on each side)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="run each gateway under cProfile, its statistics written to "
                        "DIR/<route>.prof when it stops (read with python -m pstats)")
    args = parser.parse_args()
    for variant in args.variant:
        name, _, changes = variant.partition(":")
        GATEWAYS[name] = dict(change.split("=", 1) for change in changes.split(",") if change)
    only = ["socketio"] + [r for r in args.routes.split(",")
                           if r in ROUTES and r != "socketio"] + [
        v.partition(":")[0] for v in args.variant]
    load = os.getloadavg()
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

        def profiled(label: str) -> List[str]:
            if args.profile is None:
                return []
            args.profile.mkdir(parents=True, exist_ok=True)
            return ["-m", "cProfile", "-o", str(args.profile.resolve() / f"{label}.prof")]

        for label in (name for name in GATEWAYS if name in only):
            port = free_port()
            service = Service(
                name=f"handoff {label}", argv=[str(GATEWAY_PYTHON), *profiled(label), "-m",
                                               "handoff"],
                ready_url=f"http://127.0.0.1:{port}/api/health",
                log_path=tmpdir / "logs" / f"{label}.log",
                env={"HANDOFF_PORT": str(port), "HANDOFF_RASA_URL": stack.rasa_url,
                     "HANDOFF_RASA_TOKEN": stack.token,
                     "HANDOFF_ENV_FILE": str(tmpdir / "no.env"),
                     "HANDOFF_DATABASE_URL": args.database_url
                     or f"sqlite+aiosqlite:///{tmpdir / (label + '.db')}",
                     "HANDOFF_JWT_SECRET": secrets.token_urlsafe(48),
                     "HANDOFF_FIRST_ADMIN_PASSWORD_FILE": str(tmpdir / f"{label}-admin"),
                     "HANDOFF_LOG_LEVEL": "WARNING",
                     # one customer sending turn after turn as fast as they are answered:
                     # above the default per-connection limit (docs/security.md)
                     "HANDOFF_CUSTOMER_MESSAGE_RATE": "1000",
                     "HANDOFF_CUSTOMER_MESSAGE_BURST": "10000",
                     "HANDOFF_IP_MESSAGE_RATE": "1000", "HANDOFF_IP_MESSAGE_BURST": "10000",
                     **{k: v for k, v in GATEWAYS[label].items() if k != "cwd"}},
                cwd=Path(GATEWAYS[label].get("cwd", PROJECT_ROOT)),
            )
            service.start()
            stack.services.append(service)
            gateways.append((label, service, f"http://127.0.0.1:{port}"))
        try:
            for _, service, _ in gateways:
                service.wait_until_ready(time.monotonic() + 60)
            pids = {label: service.process.pid for label, service, _ in gateways
                    if service.process is not None}
            times, parts = asyncio.run(run(
                args.turns, stack, {label: url for label, _, url in gateways}, only,
                {label: tmpdir / f"{label}-admin" for label, _, _ in gateways}, pids))
            transport = asyncio.run(transports(stack, args.transport)) if args.transport else {}
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
    if "gateway-no-triage" in times:
        for name in times:
            if name in ("socketio", "gateway-no-triage") or name not in GATEWAYS or GATEWAYS[
                    name].get("HANDOFF_TRIAGE_ENABLED") == "false":
                continue
            added = [a - b for a, b in zip(times[name], times["gateway-no-triage"])]
            print(f"\ntriage within the turn adds ({name}): p50 "
                  f"{statistics.median(added):+.1f} ms, p90 {percentile(added, 0.9):+.1f} ms "
                  f"({name} minus gateway-no-triage, same round)")
    print(f"\nload average (1 min) at the start {load[0]:.1f}, at the end "
          f"{os.getloadavg()[0]:.1f}")
    if transport:
        print("\n| transport (the channel's erase, nothing to erase) | p50 ms | p99 ms | "
              "Rasa CPU ms per request | client CPU ms per request |")
        print("|---|---|---|---|---|")
        for name, t in transport.items():
            print(f"| {name} ({t['n']:.0f}) | {t['p50']:.2f} | {t['p99']:.2f} | "
                  f"{t['rasa_cpu_ms']:.2f} | {t['client_cpu_ms']:.2f} |")
    if parts:
        print("\n| gateway | turn, mean ms | Rasa call | the rest (store, router, triage) | "
              "triage's judgement after Rasa's answer, mean ms | gateway CPU ms per turn |")
        print("|---|---|---|---|---|---|")
        for name, part in parts.items():
            print(f"| {name} | {part.get('total', 0):.1f} | {part.get('rasa', 0):.1f} | "
                  f"{part.get('gateway', 0):.1f} | {part.get('judge', 0):.2f} | "
                  f"{part.get('cpu', 0):.2f} |")


if __name__ == "__main__":
    main()
