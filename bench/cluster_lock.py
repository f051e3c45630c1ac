"""What the lock across gateway nodes costs a conversation step (docs/deploy.md).

    .venv/gateway/bin/python bench/cluster_lock.py [--steps 300] [--redis redis://127.0.0.1:6379/0]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Runs the conversation shell's step (:meth:`Conversations.apply`: read the state, step the
router, save it with the version check, push) on a fresh PostgreSQL database, once as one
process (no lock across nodes) and once as a node of several (the Redis lock around the step),
interleaved step by step on one conversation each, and prints the median and p99 of each and
their difference. The event is an agent starting and stopping to watch (a step that writes and
pushes, with no Rasa call). Also the one-process path on SQLite, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from handoff.conversation import router as r  # noqa: E402
from handoff.conversation.cluster import LocalCluster, RedisCluster  # noqa: E402
from handoff.conversation.rasa_client import RasaClient  # noqa: E402
from handoff.conversation.shell import Conversations  # noqa: E402
from handoff.store import Store  # noqa: E402


class Quiet:
    """The notifier seam with nobody listening (the pushes are not what is measured)."""

    async def to_customer(self, conversation_id: str, event: str, payload: Any) -> None:
        return None

    async def to_agents(self, event: str, payload: Any,
                        agent_ids: Sequence[str] | None = None) -> None:
        return None

    def pushes(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


def _figures(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


async def run(steps: int, redis_url: str, pg_dsn: str) -> None:
    name = f"bench_cluster_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    pg_url = sa.make_url(pg_dsn).set(drivername="postgresql+asyncpg", database=name)
    rasa = RasaClient("http://127.0.0.1:9", "unused")
    stores: list[Store] = []
    clusters: list[Any] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kinds: dict[str, Conversations] = {}
            for kind, url, cluster in (
                    ("sqlite, one process", f"sqlite+aiosqlite:///{tmp}/h.db",
                     LocalCluster("bench")),
                    ("postgresql, one process", pg_url.render_as_string(False),
                     LocalCluster("bench")),
                    ("postgresql + redis lock", pg_url.render_as_string(False),
                     RedisCluster(redis_url, prefix=f"bench-{uuid.uuid4().hex[:6]}",
                                  node_id="bench", lease=10))):
                store = Store(url)
                await store.migrate()
                await cluster.start()
                stores.append(store)
                clusters.append(cluster)
                shell = Conversations(store, rasa, Quiet(), cluster=cluster)
                await shell.open(kind)
                kinds[kind] = shell
            times: dict[str, list[float]] = {k: [] for k in kinds}
            for n in range(steps + 20):
                for kind, shell in kinds.items():  # interleaved: the same machine load
                    started = time.perf_counter()
                    await shell.apply(kind, r.Watch(agent_id="ann", on=n % 2 == 0))
                    if n >= 20:  # warm-up left out
                        times[kind].append(time.perf_counter() - started)
            base = _figures(times["postgresql, one process"])
            print(f"{steps} steps each, interleaved (ms)")
            print(f"{'':28} {'p50':>7} {'p99':>7}")
            for kind, seconds in times.items():
                p50, p99 = _figures(seconds)
                print(f"{kind:28} {p50:7.2f} {p99:7.2f}")
            p50, p99 = _figures(times["postgresql + redis lock"])
            print(f"the Redis lock adds {p50 - base[0]:.2f} ms at p50, {p99 - base[1]:.2f} ms "
                  "at p99 to a step on PostgreSQL")
    finally:
        for cluster in clusters:
            await cluster.close()
        for store in stores:
            await store.close()
        await rasa.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)
    asyncio.run(run(args.steps, args.redis, args.pg))


if __name__ == "__main__":
    main()
