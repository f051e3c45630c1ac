"""How fast the dashboard's queries are on a big store: seeds a store with a million messages
(fast bulk inserts with the store's own table definitions) and prints each query's median
time, for the dashboard's default period (the last 30 days), filtered by an intent, and a
week filtered by an agent. The runs are interleaved (one run of every query, then the next),
so a change in the machine's load touches every query alike, each as wall-clock time and as
CPU time (this process plus the PostgreSQL backends, from /proc: the time on an idle core).
The goal (docs/metrics.md "Speed"): under 200 ms each.

    .venv/gateway/bin/python bench/metrics_queries.py                      # SQLite, 1,000,000
    .venv/gateway/bin/python bench/metrics_queries.py --url sqlite+aiosqlite:///var/bench.db \
        --url postgresql+asyncpg://postgres@127.0.0.1/bench  # both, seeded, in one run
    .venv/gateway/bin/python bench/metrics_queries.py --messages 100000 --runs 3
    .venv/gateway/bin/python bench/metrics_queries.py --seeded \
        --url sqlite+aiosqlite:///var/bench.db --url postgresql+asyncpg://postgres@127.0.0.1/bench  # measure again, no new seed

With several ``--url``, every store is seeded and measured in the same run, their queries
interleaved too, so SQLite's and PostgreSQL's columns are measured under the same load. The
last two rows time the console's nine figure requests at once (the slowest one's wall time),
each checking the summaries itself, then sharing one check as the gateway does.

The history: conversations of ten messages (five customer turns and five bot replies) spread
over 90 days, a quarter queued and taken over by one of eight agents, a tenth reviewed with held
replies, a survey answer for half, four model versions deployed a month apart.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handoff.learning.metrics import (  # noqa: E402
    METRICS, compute_metrics, queue_bucket_seconds, refresh_summaries)
from handoff.learning.refresh import SharedRefresh  # noqa: E402
from handoff.store import Store  # noqa: E402
from handoff.store.metrics import MetricFilter  # noqa: E402
from handoff.store.schema import (  # noqa: E402
    audit_log,
    conversation_events,
    conversations,
    messages,
    model_versions,
    pending_replies,
)

DAYS = 90
INTENTS = ("track_order", "cancel_order", "refund", "change_address", "greet", "thank",
           "human_handoff", "payment_problem")
AGENTS = tuple(f"agent{i}" for i in range(8))
MODELS = ("m1", "m2", "m3", "m4")
CHUNK = 20_000


async def _insert(store: Store, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Bulk insert (executemany in chunks); every row gets the same keys (None where absent)."""
    keys = sorted({k for row in rows for k in row})
    rows = [{k: row.get(k) for k in keys} for row in rows]
    for start in range(0, len(rows), CHUNK):
        async with store._tx(write=True) as conn:
            await conn.execute(sa.insert(table), rows[start:start + CHUNK])


async def seed(store: Store, n_messages: int, now: datetime) -> int:
    """Write the history; returns how many conversations."""
    rnd = random.Random(16)
    n_conv = n_messages // 10
    first = now - timedelta(days=DAYS)
    convs: list[dict[str, Any]] = []
    msgs: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    audits: list[dict[str, Any]] = []
    next_mid = 1
    for i in range(n_conv):
        cid = f"c{i:07d}"
        created = first + timedelta(seconds=rnd.uniform(0, DAYS * 86400 - 3600))
        model = MODELS[min(3, int((created - first).days / (DAYS / 4)))]
        intent = rnd.choice(INTENTS)
        escalated = rnd.random() < 0.25
        reviewed = not escalated and rnd.random() < 0.13
        t = created
        for turn in range(5):
            msgs.append(dict(id=next_mid, conversation_id=cid, seq=2 * turn + 1,
                             sender="customer", text="where is my parcel", created_at=t,
                             intent=intent if turn == 0 else rnd.choice(INTENTS),
                             confidence=0.9, model_version=model,
                             sentiment=round(rnd.uniform(-1, 1), 3)))
            trigger = next_mid
            next_mid += 1
            t += timedelta(seconds=rnd.uniform(1, 5))
            if reviewed:
                decided = t + timedelta(seconds=rnd.uniform(3, 60))
                held.append(dict(conversation_id=cid, created_at=t, trigger_message_id=trigger,
                                 action="utter_x", messages=[{"text": "x"}], model_version=model,
                                 status="decided", decision=rnd.choice(("approved", "edited")),
                                 decided_by=AGENTS[i % 8], decided_at=decided))
                t = decided
            msgs.append(dict(id=next_mid, conversation_id=cid, seq=2 * turn + 2, sender="bot",
                             text="it is on its way", created_at=t, action="utter_x",
                             model_version=model))
            next_mid += 1
            t += timedelta(seconds=rnd.uniform(10, 120))
        agent = AGENTS[i % 8]
        if escalated:
            queued = created + timedelta(seconds=30)
            taken = queued + timedelta(seconds=rnd.uniform(5, 600))
            events += [dict(conversation_id=cid, created_at=queued, cause="RasaAnswer",
                            mode_from="bot", mode="bot", queued=True, queue_reason="triage"),
                       dict(conversation_id=cid, created_at=taken, cause="TakeOver",
                            actor=agent, mode_from="bot", mode="human", owner=agent,
                            queued=False)]
            audits.append(dict(created_at=taken + timedelta(seconds=20), actor=agent,
                               action="message", target=f"conversation:{cid}",
                               details={"suggestion": "response:utter_x"}
                               if rnd.random() < 0.5 else None))
        closed = t + timedelta(seconds=5)
        events.append(dict(conversation_id=cid, created_at=closed, cause="Close",
                           actor=agent if escalated else None,
                           mode_from="human" if escalated else "bot", mode="closed",
                           queued=False))
        convs.append(dict(id=cid, created_at=created, updated_at=closed, mode="closed",
                          queued=False, closed_at=closed, version=3, last_seq=10,
                          effort_score=rnd.randint(1, 7) if rnd.random() < 0.5 else None))
    await _insert(store, conversations, convs)
    await _insert(store, messages, msgs)
    await _insert(store, conversation_events, events)
    await _insert(store, pending_replies, held)
    await _insert(store, audit_log, audits)
    await _insert(store, model_versions, [
        dict(model_id=m, file=f"{m}.tar.gz", status="live" if m == "m4" else "retired",
             created_at=first + timedelta(days=k * DAYS / 4),
             deployed_at=first + timedelta(days=k * DAYS / 4), deployed_by="bench")
        for k, m in enumerate(MODELS)])
    await _insert(store, audit_log, [
        dict(created_at=first + timedelta(days=k * DAYS / 4), actor="bench",
             action="model_deployed", target=f"model:{m}") for k, m in enumerate(MODELS)])
    await _vacuum(store)
    return n_conv


async def _vacuum(store: Store) -> None:
    """What autovacuum does after a big fill: the planner's statistics and, on PostgreSQL,
    the visibility map that lets a query read an index without the table."""
    async with store._engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(sa.text("VACUUM ANALYZE" if store.dialect == "postgresql"
                                   else "ANALYZE"))


async def _touch(store: Store, f: MetricFilter, n: int) -> int:
    """Change ``n`` conversations of the period as a survey answer would (the summaries' stamp
    moves); returns how many."""
    async with store._tx(write=True) as conn:
        ids = [cid for (cid,) in await conn.execute(
            sa.select(conversations.c.id).where(conversations.c.created_at >= f.since)
            .order_by(conversations.c.id).limit(n))]
        await conn.execute(sa.update(conversations).where(conversations.c.id.in_(ids)).values(
            effort_score=4, metrics_rev=conversations.c.metrics_rev + 1))
    return len(ids)


async def _backend_ticks(store: Store) -> dict[int, int] | None:
    """CPU clock ticks used so far by each PostgreSQL backend serving this database, read from
    /proc (a server on this machine); None where that cannot be read."""
    if store.dialect != "postgresql":
        return None
    async with store._tx(write=False) as conn:
        pids = [pid for (pid,) in await conn.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))]
    ticks = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


async def measure(store: Store, work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(wall ms, CPU ms) of one call: the CPU of this process and of the database's backends
    (on SQLite the database runs in this process), i.e. its time on an idle core."""
    before = await _backend_ticks(store)
    cpu = time.process_time()
    started = time.perf_counter()
    await work()
    wall = (time.perf_counter() - started) * 1000
    cpu_ms = (time.process_time() - cpu) * 1000
    after = await _backend_ticks(store)
    if before is not None and after is not None:
        hz = os.sysconf("SC_CLK_TCK")
        cpu_ms += sum(t - before.get(pid, 0) for pid, t in after.items()) * 1000 / hz
    return wall, cpu_ms


def _load() -> str:
    """The machine's load average over 1, 5 and 15 minutes (the cores are shared)."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


async def _prepare(url: str, n_messages: int, seeded: bool, now: datetime) -> Store:
    """A migrated store at ``url``, seeded now unless ``seeded``, its summaries computed."""
    store = Store(url)
    await store.migrate()
    started = time.perf_counter()
    if seeded:
        async with store._tx(write=False) as conn:
            n_conv = (await conn.execute(sa.select(sa.func.count()).select_from(
                conversations))).scalar_one()
        print(f"{store.dialect}: {n_conv:,} conversations seeded before")
    else:
        n_conv = await seed(store, n_messages, now)
        print(f"{store.dialect}: seeded {n_messages:,} messages in {n_conv:,} "
              f"conversations over {DAYS} days in {time.perf_counter() - started:.0f} s")
    widest = MetricFilter(now - timedelta(days=30), now)
    started = time.perf_counter()
    computed = await refresh_summaries(store, widest.since, widest.until)
    print(f"{store.dialect}: first read after the upgrade: {computed:,} summaries computed in "
          f"{time.perf_counter() - started:.1f} s (once)")
    await _vacuum(store)
    changed = await _touch(store, widest, 100)
    started = time.perf_counter()
    computed = await refresh_summaries(store, widest.since, widest.until)
    print(f"{store.dialect}: {changed} conversations changed since the last read: {computed} "
          f"recomputed in {(time.perf_counter() - started) * 1000:.0f} ms")
    return store


def _queries(store: Store, f: MetricFilter) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Every dashboard query for ``f``, and the figures as the API computes them."""
    queries: dict[str, Callable[[], Awaitable[Any]]] = {
        "refresh_summaries (nothing changed)": lambda: refresh_summaries(store, f.since, f.until),
        "summary_groups": lambda: store.summary_groups(f),
        "effort_distribution": lambda: store.effort_distribution(f),
        "resolution_stats": lambda: store.resolution_stats(f),
        "people_stats": lambda: store.people_stats(f),
        "agent_people": lambda: store.agent_people(f),
        "queue_buckets": lambda: store.queue_buckets(
            f, queue_bucket_seconds(f.since, f.until), f.until),
        "reply_groups": lambda: store.reply_groups(f),
        "decision_latency_stats": lambda: store.decision_latency_stats(f),
        "agent_actions": lambda: store.agent_actions(f),
        "suggestion_ratings_of": lambda: store.suggestion_ratings_of(f),
        "correction_facts": lambda: store.correction_facts(f),
        "bot_turns_by_model": lambda: store.bot_turns_by_model(f),
        "model_facts": store.model_facts,
        "deploys": lambda: store.deploys(f),
        "queue_length (Prometheus)": store.queue_length,
    }
    for name in METRICS:
        queries[f"compute_metrics {name}"] = lambda name=name: compute_metrics(store, f, (name,))
    queries["compute_metrics (all, = GET /api/metrics)"] = lambda: compute_metrics(store, f)

    async def console(shared: bool) -> None:
        """The console's nine figure requests at once, each checking the summaries itself
        or sharing one check (the gateway's ``SharedRefresh``)."""
        refresh = SharedRefresh(functools.partial(refresh_summaries, store)) if shared else None
        await asyncio.gather(*(compute_metrics(store, f, (name,), refresh=refresh)
                               for name in METRICS))

    queries["console: 9 figures at once, own checks"] = lambda: console(False)
    queries["console: 9 figures at once, one shared check"] = lambda: console(True)
    return queries


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", default=[],
                        help="a store URL, once per store to measure in the same run ('sqlite': "
                        "a new SQLite file in a temp dir; default: that alone); its tables are "
                        "created and filled: use an empty database")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="",
                        help="measure only the queries whose name contains this, e.g. console")
    parser.add_argument("--seeded", action="store_true",
                        help="every --url database was seeded by an earlier run: migrate it and "
                        "measure, without seeding (the periods end now, so use it the same day)")
    args = parser.parse_args()
    urls = args.url or ["sqlite"]
    if args.seeded and "sqlite" in urls:
        parser.error("--seeded needs the --url of each database seeded before "
                     "(e.g. sqlite+aiosqlite:///var/bench.db)")
    with tempfile.TemporaryDirectory() as tmp:
        now = datetime.now(timezone.utc)
        stores = [await _prepare(f"sqlite+aiosqlite:///{tmp}/bench{k}.db" if url == "sqlite"
                                 else url, args.messages, args.seeded, now)
                  for k, url in enumerate(urls)]
        names = [s.dialect for s in stores]
        periods = {
            "last 30 days": MetricFilter(now - timedelta(days=30), now),
            "last 30 days, intent=refund": MetricFilter(now - timedelta(days=30), now,
                                                        intent="refund"),
            "last 7 days, agent=agent3": MetricFilter(now - timedelta(days=7), now,
                                                      agent="agent3"),
        }
        print(f"load average before measuring: {_load()}")
        for label, f in periods.items():
            queries = [{name: work for name, work in _queries(store, f).items()
                        if args.only in name} for store in stores]
            times: list[dict[str, list[tuple[float, float]]]] = [
                {name: [] for name in q} for q in queries]
            for _ in range(args.runs):  # one run of every query on every store, then the next
                for store, q, t in zip(stores, queries, times):
                    for name, work in q.items():
                        t[name].append(await measure(store, work))
            print(f"\n{label} (median of {args.runs} interleaved runs, ms; wall clock, and "
                  "CPU of the gateway process and the database backends):")
            print(f"  {'':46s}" + "".join(f" {n + ' wall':>17s} {'CPU':>8s}" for n in names))
            for name in queries[0]:
                print(f"  {name:46s}" + "".join(
                    f" {statistics.median(v for v, _ in t[name]):17.1f}"
                    f" {statistics.median(c for _, c in t[name]):8.1f}" for t in times))
        print(f"\nload average after: {_load()}")
        for store in stores:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
