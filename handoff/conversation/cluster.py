"""Several gateway nodes on one store: what the nodes share (docs/deploy.md, "Several nodes").

:class:`Cluster` is the seam. It names this node (``HANDOFF_NODE_ID``) and says:

* which nodes are **alive** (:meth:`Cluster.alive`): a node that stops heart-beating is gone,
  and another node takes over the Rasa turns it had out and the review timers it ran
  (:meth:`handoff.conversation.shell.Conversations.adopt`);
* a **conversation lock** across nodes (:meth:`Cluster.conversation_lock`), taken after the
  node's own ``asyncio`` lock, so that one conversation's steps and their pushes happen one
  after another whichever node runs them. It orders; it does not guard: the store's version
  check on every step (``Store.save_step``, with the row locked) is the fence, so a lock that
  expired under a stalled node costs a re-step, never a lost write;
* a **job** one node at a time runs (:meth:`Cluster.claim_job`: a retraining, a deploy) and a
  **claim** taken once (:meth:`Cluster.once`: a retention pass, a waiting customer's offer);
* **presence**: each node's agent sockets (``/agent`` sid -> username) and away marks, read
  as the union over the nodes alive (:meth:`Cluster.presence`): who is available, and which
  sockets to close or re-authorise when a user's logins end or their tier changes. A node
  announces its presence again at the first heartbeat that finds its lease gone from Redis
  (a Redis restarted without persistence) or after a share that failed;
* a background **job's state** (:meth:`Cluster.put_job_state`, :meth:`Cluster.job_state`): the
  running or last retraining's and deploy's JSON, so that every node shows it, not only the
  one that runs it. It is kept while the job runs and after (a week); a state that says
  ``running`` whose node is gone (its lease ran out) is read as ``failed``.

:class:`LocalCluster` is one process (the default): everything stays in memory and costs
nothing. :class:`RedisCluster` (``HANDOFF_REDIS_URL``) keeps it in Redis under
``HANDOFF_REDIS_PREFIX``: a lease per node (``SET … PX``, renewed every third of
``HANDOFF_NODE_LEASE``), locks as ``SET NX PX`` with a random token released only by their
holder, and the nodes' presence in one hash. When Redis does not answer, a conversation
lock is skipped (the version check still holds) and a job or claim is refused.

:class:`PushBus` is python-socketio's Redis manager carried by a Redis stream instead of
pub/sub, so that no push between nodes is lost while Redis is away: what a node cannot send
waits in its outbox and goes in order once Redis answers, and every node reads the stream on
from the last entry it read, whenever it reconnects; it logs once when pushes stop and once
when they resume (docs/deploy.md, "Pushes made while Redis is away").

A missing lease proves a node gone only while Redis can be trusted to hold the leases: after a
heartbeat failed, this node's own lease went missing, or Redis's memory is younger than a
lease, no node is judged gone for a full lease (:meth:`RedisCluster.alive`; docs/deploy.md,
"No node's work taken over because Redis forgot").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Final, Protocol

import socketio

from handoff.errors import Conflict, ServiceUnavailable

__all__ = ["Cluster", "JobBusy", "JobLease", "LocalCluster", "PushBus", "RedisCluster",
           "make_cluster"]

log = logging.getLogger(__name__)

LOCK_TTL: Final = 10.0  # seconds a conversation lock outlives a node that died holding it
LOCK_WAIT: Final = 30.0  # seconds a step waits for another node's lock before giving up
BUS_RETRY: Final = (0.1, 2.0)  # seconds between the bus's reconnection attempts: first, most
OUTBOX: Final = 10_000  # pushes a node keeps for the other nodes while Redis is away
STREAM_LENGTH: Final = 10_000  # pushes the stream keeps (about) for a node reading again
SEEN: Final = 10_000  # push ids a node remembers, to skip one sent twice
READ_BLOCK: Final = 2.0  # seconds one XREAD waits for pushes
JOB_STATE_TTL: Final = 7 * 24 * 3600.0  # seconds a job's last state stays readable
_RELEASE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


class JobBusy(Conflict):
    """Another node runs this job now (409)."""

    code = "job_busy"


class JobLease(Protocol):
    """A job held by this node until :meth:`release`."""

    async def release(self) -> None: ...


class Cluster(Protocol):
    """What the gateway nodes share (see the module docstring)."""

    node_id: str
    shared: bool  # False: one process, nothing leaves it

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def alive(self, nodes: Iterable[str]) -> set[str]: ...

    def conversation_lock(self, conversation_id: str
                          ) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def claim_job(self, name: str, what: str) -> JobLease: ...

    async def once(self, name: str, ttl: float) -> bool: ...

    async def share_presence(self, sockets: Mapping[str, str], away: Iterable[str]
                             ) -> None: ...

    async def presence(self) -> tuple[dict[str, str], set[str]]: ...

    async def answers(self) -> bool: ...

    async def put_job_state(self, name: str, state: Mapping[str, Any]) -> None: ...

    async def job_state(self, name: str) -> dict[str, Any] | None: ...


class _NoLease:
    async def release(self) -> None:
        return None


class LocalCluster:
    """One process: this node is the only one alive; locks and jobs are the node's own."""

    shared = False

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._presence: tuple[dict[str, str], set[str]] = ({}, set())

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def alive(self, nodes: Iterable[str]) -> set[str]:
        return {n for n in nodes if n == self.node_id}

    def conversation_lock(self, conversation_id: str
                          ) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def claim_job(self, name: str, what: str) -> JobLease:
        return _NoLease()

    async def once(self, name: str, ttl: float) -> bool:
        return True

    async def share_presence(self, sockets: Mapping[str, str], away: Iterable[str]
                             ) -> None:
        self._presence = (dict(sockets), set(away))

    async def presence(self) -> tuple[dict[str, str], set[str]]:
        return dict(self._presence[0]), set(self._presence[1])

    async def answers(self) -> bool:
        return True

    async def put_job_state(self, name: str, state: Mapping[str, Any]) -> None:
        return None  # one node: its own job is the only one

    async def job_state(self, name: str) -> dict[str, Any] | None:
        return None


class _RedisLease:
    """A job held in Redis, its expiry pushed back every third of the lease while it runs."""

    def __init__(self, cluster: RedisCluster, key: str, token: str) -> None:
        self.cluster, self.key, self.token = cluster, key, token
        self._renewal = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        lease_ms = int(self.cluster.lease * 1000)
        while True:
            await asyncio.sleep(self.cluster.lease / 3)
            try:
                await self.cluster.redis.eval(_RENEW, 1, self.key, self.token, lease_ms)
            except Exception as exc:  # noqa: BLE001 - Redis away: try again next time
                log.warning("job lease %s not renewed: %s", self.key, exc)

    async def release(self) -> None:
        self._renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewal
        try:
            await self.cluster.redis.eval(_RELEASE, 1, self.key, self.token)
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            log.warning("job lease %s not released (it expires): %s", self.key, exc)


class RedisCluster:
    """The nodes of one gateway on one Redis (see the module docstring)."""

    shared = True

    def __init__(self, url: str, *, prefix: str, node_id: str, lease: float) -> None:
        from redis import asyncio as aioredis  # only a gateway with HANDOFF_REDIS_URL needs it

        self.url, self.prefix, self.node_id, self.lease = url, prefix, node_id, lease
        self.redis: Any = aioredis.Redis.from_url(url, decode_responses=True)
        self._heartbeat: asyncio.Task[None] | None = None
        self._lock_warned = 0.0
        self._presence: str | None = None  # this node's presence as last shared (JSON)
        self._presence_unsent = False  # its last share failed: the next beat sends it
        # until then (monotonic) no other node is judged gone: Redis may have lost the leases
        self._unsure_until = 0.0
        self._started = False

    @property
    def push_stream(self) -> str:
        """The stream that carries python-socketio's pushes between the nodes (PushBus)."""
        return self._key("pushes")

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def key(self, *parts: str) -> str:
        """A key under this cluster's prefix (for the wings that keep their own records in
        the nodes' Redis: :mod:`handoff.learning.rollout`)."""
        return self._key(*parts)

    async def nodes(self) -> set[str]:
        """The nodes whose lease is in Redis now (this one included)."""
        found: set[str] = set()
        head = self._key("node", "")
        async for key in self.redis.scan_iter(match=head + "*", count=100):
            found.add(str(key)[len(head):])
        return found

    async def start(self) -> None:
        """Take this node's lease (``ServiceUnavailable`` when Redis does not answer) and
        keep it while the node runs."""
        try:
            await self._beat()
        except Exception as exc:  # noqa: BLE001 - a node cannot join without Redis
            raise ServiceUnavailable(f"Redis at {self.url} does not answer: {exc}") from exc
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat_forever())

    async def _beat(self) -> None:
        """Renew this node's lease. A lease Redis no longer has (it restarted without
        persistence, or was flushed, or the lease ran out while it was away) is taken again
        and this node's presence announced again with it, as is a presence whose last share
        failed: so who is logged in on this node is known again within a third of a lease of
        Redis answering, without waiting for an agent to come or go. A lease lost after the
        first beat makes this node judge no other gone for a lease (:meth:`_unsure`), and
        ``<prefix>:since`` records when Redis's memory began if it is missing."""
        key, now, ttl = self._key("node", self.node_id), str(time.time()), int(self.lease * 1000)
        if not await self.redis.set(key, now, px=ttl, xx=True):
            await self.redis.set(key, now, px=ttl)
            if self._started:  # not the first beat: Redis lost it, or it ran out meanwhile
                self._unsure("its own lease was gone from Redis")
            if self._presence is not None:
                self._presence_unsent = True
        self._started = True
        await self.redis.set(self._key("since"), now, nx=True)  # Redis's memory began by now
        if self._presence_unsent and self._presence is not None:
            snapshot = self._presence
            await self.redis.hset(self._key("presence"), self.node_id, snapshot)
            if self._presence == snapshot:
                self._presence_unsent = False
            log.warning("node %s: presence announced again (Redis had lost it, or the last "
                        "share did not reach it)", self.node_id)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self._beat()
            except Exception as exc:  # noqa: BLE001 - Redis away: the next beat may reach it
                self._unsure(f"its heartbeat failed ({exc})")

    async def close(self) -> None:
        """Leave: the lease and this node's presence go at once (not after the lease)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        with contextlib.suppress(Exception):
            await self.redis.delete(self._key("node", self.node_id))
            await self.redis.hdel(self._key("presence"), self.node_id)
        await self.redis.aclose()

    def _unsure(self, why: str) -> None:
        """Judge no other node gone for a full lease from now: a lease missing from Redis
        proves nothing while Redis may have lost them all (restarted without persistence,
        flushed, or away longer than the leases ran) and the other nodes have not beaten
        since. Every heartbeat that fails or finds this node's own lease gone, and every
        look that finds it gone, pushes the wait back."""
        if time.monotonic() >= self._unsure_until:
            log.warning("node %s: %s; no other node's work is taken over for %.0f s (a full "
                        "lease: Redis may have lost every node's lease)", self.node_id, why,
                        self.lease)
        self._unsure_until = time.monotonic() + self.lease

    async def alive(self, nodes: Iterable[str]) -> set[str]:
        """The nodes among ``nodes`` whose lease is in Redis, and all of them while this node
        cannot be sure a missing lease means a node gone (:meth:`_unsure`): its own lease gone
        from Redis, a heartbeat failed within a lease, or Redis's memory younger than a lease
        (``<prefix>:since``, written by the first node to find it missing: a node starting
        just after Redis lost its keys waits too)."""
        names = sorted(set(nodes))
        if not names:
            return set()
        since_key = self._key("since")
        *found, mine, since = await self.redis.mget(
            [self._key("node", n) for n in names] + [self._key("node", self.node_id), since_key])
        if since is None:
            await self.redis.set(since_key, str(time.time()), nx=True)
            since = await self.redis.get(since_key)
        if mine is None:
            self._unsure("its own lease was gone from Redis")
        if time.monotonic() < self._unsure_until or (
                time.time() - float(since or 0) < self.lease):
            return set(names)
        return {n for n, value in zip(names, found, strict=True) if value is not None}

    @contextlib.asynccontextmanager
    async def conversation_lock(self, conversation_id: str) -> AsyncIterator[None]:
        key, token = self._key("lock", "conversation", conversation_id), uuid.uuid4().hex
        try:
            held = await self._acquire(key, token)
        except ServiceUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis away: the version check still holds
            self._warn_unlocked(exc)
            held = False
        try:
            yield
        finally:
            if held:
                try:
                    await self.redis.eval(_RELEASE, 1, key, token)
                except Exception as exc:  # noqa: BLE001 - it expires by itself
                    self._warn_unlocked(exc)

    async def _acquire(self, key: str, token: str) -> bool:
        deadline = time.monotonic() + LOCK_WAIT
        pause = 0.001
        while not await self.redis.set(key, token, nx=True, px=int(LOCK_TTL * 1000)):
            if time.monotonic() > deadline:
                raise ServiceUnavailable("another gateway node holds this conversation too "
                                         "long; try again")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        return True

    def _warn_unlocked(self, exc: Exception) -> None:
        if time.monotonic() - self._lock_warned > 10:
            self._lock_warned = time.monotonic()
            log.warning("conversation locks across nodes unavailable (%s): steps rely on the "
                        "store's version check", exc)

    async def claim_job(self, name: str, what: str) -> JobLease:
        key, token = self._key("job", name), f"{self.node_id}:{uuid.uuid4().hex}"
        try:
            taken = await self.redis.set(key, token, nx=True, px=int(self.lease * 1000))
            holder = None if taken else await self.redis.get(key)
        except Exception as exc:  # noqa: BLE001 - without Redis no node may start it
            raise ServiceUnavailable(f"Redis does not answer, so {what} cannot start: {exc}"
                                     ) from exc
        if not taken:
            node = str(holder or "?").rsplit(":", 1)[0]
            raise JobBusy(f"{what} is already running on gateway node {node}", node=node)
        return _RedisLease(self, key, token)

    async def once(self, name: str, ttl: float) -> bool:
        try:
            return bool(await self.redis.set(self._key("once", name), self.node_id, nx=True,
                                             px=max(1, int(ttl * 1000))))
        except Exception as exc:  # noqa: BLE001 - not sure it is ours: leave it
            log.warning("claim %s not taken, Redis does not answer: %s", name, exc)
            return False

    async def share_presence(self, sockets: Mapping[str, str], away: Iterable[str]
                             ) -> None:
        snapshot = json.dumps({"sockets": dict(sockets), "away": sorted(set(away))})
        self._presence = snapshot
        try:
            await self.redis.hset(self._key("presence"), self.node_id, snapshot)
        except Exception as exc:  # noqa: BLE001 - the next heartbeat sends it again
            self._presence_unsent = True
            log.warning("presence of node %s not shared: %s", self.node_id, exc)

    async def presence(self) -> tuple[dict[str, str], set[str]]:
        try:
            snapshots = await self.redis.hgetall(self._key("presence"))
            live = await self.alive(snapshots)
        except Exception as exc:  # noqa: BLE001 - nobody known available: customers are told
            log.warning("presence not read, Redis does not answer: %s", exc)
            return {}, set()
        sockets: dict[str, str] = {}
        away: set[str] = set()
        for node, raw in snapshots.items():
            if node in live:
                snapshot = json.loads(raw)
                sockets.update(snapshot.get("sockets", {}))
                away.update(snapshot.get("away", ()))
        return sockets, away

    async def answers(self) -> bool:
        """Whether Redis answers a ``PING`` within two seconds (``/api/health``'s ``redis``)."""
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 2.0))
        except Exception:  # noqa: BLE001 - any failure means it does not answer
            return False


    async def put_job_state(self, name: str, state: Mapping[str, Any]) -> None:
        """Keep ``state`` (a job's JSON) as the running or last job ``name`` for every node
        to read; a failure is logged (the node running it still shows it)."""
        try:
            await self.redis.set(self._key("jobstate", name),
                                 json.dumps({**state, "node": self.node_id}),
                                 px=int(JOB_STATE_TTL * 1000))
        except Exception as exc:  # noqa: BLE001 - the other nodes show an older state
            log.warning("the state of job %s not shared: %s", name, exc)

    async def job_state(self, name: str) -> dict[str, Any] | None:
        """The running or last job ``name`` as the node that ran it last shared it (with
        ``node``), None if none or Redis does not answer. One still ``running`` whose node is
        gone (:meth:`alive`: its lease ran out) is read as ``failed``."""
        try:
            raw = await self.redis.get(self._key("jobstate", name))
            state: dict[str, Any] | None = None if raw is None else json.loads(raw)
            gone = (state is not None and state.get("state") == "running"
                    and not await self.alive([str(state.get("node"))]))
        except Exception as exc:  # noqa: BLE001 - this node's own view only
            log.warning("the state of job %s not read, Redis does not answer: %s", name, exc)
            return None
        if state is None:
            return None
        if gone:
            state = {**state, "state": "failed", "message": (
                f"gateway node {state.get('node')} stopped during it; it did not finish")}
        return state


class PushBus(socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager carried by a Redis stream instead of pub/sub, so that
    no push between nodes is lost when Redis goes away (module docstring).

    A push (delivered at once to this node's own sockets by python-socketio) is appended to
    this node's outbox for the other nodes and sent from there, in order,
    as ``XADD <prefix>:pushes``; while Redis does not answer the outbox keeps it (at most
    :data:`OUTBOX` pushes, the oldest dropped beyond, logged) and it goes as soon as Redis
    answers again. Each node reads the stream with ``XREAD BLOCK`` on a connection of its own
    from the last entry it read, so a node that was cut off reads, when it is back, what the
    others sent meanwhile: pub/sub would have dropped every push published before it had
    subscribed again. Each push carries an id and a node skips one it already handled (an
    ``XADD`` whose answer was lost is sent twice). It says once that pushes between nodes
    stopped and once that they resumed."""

    def __init__(self, url: str, *, stream: str) -> None:
        super().__init__(url, channel=stream, logger=log)
        self.stream = stream
        self.listening = False  # reading the stream: pushes from the other nodes arrive
        self._outage = False
        self._outbox: deque[str] = deque()  # JSON of the pushes not yet in the stream
        self._dropped = 0
        self._retry_at = 0.0  # monotonic time before which a push only joins the outbox
        self._retry_pause = BUS_RETRY[0]  # doubles while sending fails, up to BUS_RETRY[1]
        self._sending = asyncio.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()  # push ids handled, newest last
        self._writer: Any = None

    def _client(self) -> Any:
        """A client that fails at once (no retries of its own: the outbox is the retry)."""
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        return self._get_redis_module().Redis.from_url(
            self.redis_url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2.0,
            socket_timeout=READ_BLOCK + 5.0, **self.redis_options)

    def _went(self, what: str, exc: Exception) -> None:
        if not self._outage:
            self._outage = True
            log.warning("pushes between gateway nodes stopped: Redis does not answer (%s: "
                        "%s); kept in this node's outbox until it does", what, exc)

    def _back(self) -> None:
        if self._outage:
            self._outage = False
            log.warning("pushes between gateway nodes resumed: Redis answers again")

    async def _publish(self, data: Any) -> Any:
        """Into the outbox, then the outbox into the stream (unless Redis failed just now:
        then the listener sends it once it reads again)."""
        pushed = self.json.dumps({**data, "push_id": uuid.uuid4().hex})
        async with self._sending:
            self._outbox.append(pushed)
            if len(self._outbox) > OUTBOX:
                self._outbox.popleft()
                self._dropped += 1
            if time.monotonic() >= self._retry_at:
                await self._send_outbox()
        return None

    async def flush(self) -> bool:
        """Send what the outbox holds; whether it is empty now."""
        async with self._sending:
            return await self._send_outbox()

    async def _send_outbox(self) -> bool:
        if self._writer is None:
            self._writer = self._client()
        while self._outbox:
            batch = list(itertools.islice(self._outbox, 100))
            for attempt in (1, 2):  # a connection Redis closed fails once, then is replaced
                try:
                    async with self._writer.pipeline(transaction=False) as pipe:
                        for pushed in batch:
                            pipe.xadd(self.stream, {"m": pushed}, maxlen=STREAM_LENGTH,
                                      approximate=True)
                        await pipe.execute()
                    break
                except Exception as exc:  # noqa: BLE001 - Redis away: kept for the next try
                    if attempt == 2:
                        self._retry_at = time.monotonic() + self._retry_pause
                        self._retry_pause = min(self._retry_pause * 2, BUS_RETRY[1])
                        self._went("send", exc)
                        return False
            for _ in batch:
                self._outbox.popleft()
        self._retry_pause = BUS_RETRY[0]
        if self.listening:  # sending failed while the stream was still read: it is over
            self._back()
        if self._dropped:
            log.warning("%d push(es) between gateway nodes dropped: the outbox holds at most "
                        "%d while Redis is away (they are in the store: a reload shows them)",
                        self._dropped, OUTBOX)
            self._dropped = 0
        return True

    def _first_time(self, push_id: str | None) -> bool:
        if push_id is None:
            return True
        if push_id in self._seen:
            return False
        self._seen[push_id] = None
        if len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        return True

    async def _listen(self) -> AsyncIterator[Any]:
        """The other nodes' pushes, read from the stream from the last entry read (from its
        end at start), through any number of Redis restarts: an entry's id is Redis's time,
        so a stream begun again after a restart without persistence is read from where it
        left off."""
        last: Any = None
        pause = BUS_RETRY[0]
        while True:
            client = self._client()
            try:
                if last is None:
                    newest = await client.xrevrange(self.stream, count=1)
                    last = newest[0][0] if newest else "0-0"
                else:
                    await client.ping()
                self.listening = True
                self._back()
                pause = BUS_RETRY[0]
                while True:
                    if self._outbox:
                        await self.flush()
                    found = await client.xread({self.stream: last}, count=100,
                                               block=int(READ_BLOCK * 1000))
                    for _stream, entries in found or ():
                        for entry_id, fields in entries:
                            last = entry_id
                            message = self.json.loads(fields[b"m"])
                            if self._first_time(message.pop("push_id", None)):
                                yield message
            except Exception as exc:  # noqa: BLE001 - Redis away: read again when it is back
                self.listening = False
                self._went("listen", exc)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(pause)
            pause = min(pause * 2, BUS_RETRY[1])


def make_cluster(redis_url: str, *, prefix: str, node_id: str, lease: float) -> Cluster:
    """:class:`RedisCluster` with a Redis URL, :class:`LocalCluster` without."""
    if redis_url:
        return RedisCluster(redis_url, prefix=prefix, node_id=node_id, lease=lease)
    return LocalCluster(node_id)
