"""What carrying pushes between gateway nodes on a Redis stream costs (docs/deploy.md,
"Pushes made while Redis is away").

    .venv/gateway/bin/python bench/push_bus.py [--pushes 2000] [--redis redis://127.0.0.1:6379/0]

Two transports of python-socketio's Redis manager, each between a sending and a receiving
"node" in this process on a key prefix of its own: python-socketio's own ``AsyncRedisManager``
(``PUBLISH`` / ``SUBSCRIBE``) and the gateway's :class:`PushBus` (an outbox, ``XADD`` /
``XREAD BLOCK``). Pushes of about 1 KB (a console's ``message`` event) go one at a time,
interleaved between the two, and each push's time from the send until the receiver has it is
recorded; the medians and p99 of each and their ratio are printed. Nothing of the Socket.IO
server runs: only the transport is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import socketio

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from handoff.conversation.cluster import PushBus  # noqa: E402


def _message(i: int) -> dict[str, Any]:
    return {"method": "emit", "event": "message", "namespace": "/agent", "room": "agents",
            "data": [{"conversation_id": f"c{i}", "sender": "customer", "text": "x" * 900}],
            "binary": False, "skip_sid": None, "callback": None, "host_id": "sender"}


async def _receiver(listen: AsyncIterator[Any], got: asyncio.Queue[float]) -> None:
    async for _ in listen:
        await got.put(time.perf_counter())


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=2000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    prefix = f"bench-bus-{uuid.uuid4().hex[:8]}"
    senders: dict[str, Any] = {}
    queues: dict[str, asyncio.Queue[float]] = {}
    tasks: list[asyncio.Task[None]] = []
    for name, make in (("pubsub", lambda: socketio.AsyncRedisManager(args.redis, channel=f"{prefix}:socketio")),
                       ("stream", lambda: PushBus(args.redis, stream=f"{prefix}:pushes"))):
        sender, receiver = make(), make()
        sender.json = receiver.json = json
        queues[name] = asyncio.Queue()
        tasks.append(asyncio.create_task(_receiver(receiver._listen(), queues[name])))
        senders[name] = sender
    await asyncio.sleep(0.5)  # both receivers subscribed / reading
    times: dict[str, list[float]] = {name: [] for name in senders}
    for i in range(args.pushes):
        for name in (("pubsub", "stream") if i % 2 else ("stream", "pubsub")):
            started = time.perf_counter()
            await senders[name]._publish(_message(i))
            arrived = await asyncio.wait_for(queues[name].get(), 10)
            times[name].append((arrived - started) * 1000)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    from redis import asyncio as aioredis
    client = aioredis.Redis.from_url(args.redis)
    await client.delete(f"{prefix}:pushes")
    await client.aclose()
    print(f"{args.pushes} pushes of ~1 KB each way, interleaved; ms from send to received")
    print("| transport | p50 | p99 |")
    print("|---|---|---|")
    for name, label in (("pubsub", "PUBLISH/SUBSCRIBE (python-socketio)"),
                        ("stream", "XADD/XREAD outbox (PushBus)")):
        print(f"| {label} | {statistics.median(times[name]):.3f} | "
              f"{_pct(times[name], 0.99):.3f} |")
    stream, pubsub = times["stream"], times["pubsub"]
    print(f"stream / pubsub: p50 {statistics.median(stream) / statistics.median(pubsub):.2f}, "
          f"p99 {_pct(stream, 0.99) / _pct(pubsub, 0.99):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
