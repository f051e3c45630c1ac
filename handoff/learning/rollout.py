"""A deploy's switch on every gateway node (docs/deploy.md, "A deploy across nodes").

With several nodes (:class:`~handoff.conversation.cluster.RedisCluster`) each node holds its
own :class:`~handoff.conversation.rasa_client.RasaClient`, so the node that deploys cannot
switch the others by switching itself. It announces the switch instead
(:meth:`Rollout.switch_others`): an entry ``{"id", "url", "node", "drain"}`` in the stream
``<prefix>:rasa:switches``. Every node reads that stream (``XREAD BLOCK`` on a connection of its
own, from the last entry it read), sends every new request to ``url``, waits for its own
requests still on the server before to end (:meth:`RasaClient.drained`, at most ``drain``
seconds) and acknowledges in the hash ``<prefix>:rasa:switch:<id>`` (node -> whether they
drained). The deploying node has the old server stopped only once every other node alive
acknowledged, or the drain timeout passed: then it names the nodes that did not.

A stream, not pub/sub: a node cut off from Redis for a moment reads on from its last entry when
it is back, so it still switches. A node that starts later, or one whose Redis lost the stream,
asks the supervisor which server is live (:meth:`Rollout.reconcile`): at start-up, each time its
listener (re)connects, and whenever its Rasa server refuses a connection (``RasaClient.
reconcile``, then the request goes to the live one: nothing had been sent). With one node
(:class:`~handoff.conversation.cluster.LocalCluster`) nothing is announced and nothing read.

Each entry is signed: ``sig``, an HMAC-SHA256 of the entry's JSON under a key derived from
``HANDOFF_JWT_SECRET``, which every node shares (its agents' logins work on any node), and the
entry carries when it was made (``at``, Unix time). A node follows only an entry whose signature
checks and which is at most :data:`MAX_AGE` seconds old: whoever can write to Redis, without the
nodes' secret, cannot send the nodes (and the Rasa token they send along) to a server of their
choosing, and an old genuine entry written again is not followed either (the node asks the
supervisor instead). Such an entry is logged and not acknowledged.

A URL from the stream or the supervisor is followed only when it is an http(s) URL with a
host (the rule of ``HANDOFF_RASA_URL``); anything else is logged and ignored, and a switch to
it is not acknowledged. Its host is the supervisor's to choose (``bot.serve
--advertised-host``: the loopback by default, a private address when the nodes are on other
machines), so the nodes take it as given.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any, Final
from urllib.parse import urlsplit

from handoff.conversation.cluster import Cluster, RedisCluster
from handoff.conversation.rasa_client import RasaClient
from handoff.learning.supervisor import Supervisor, SupervisorError

__all__ = ["Rollout"]

log = logging.getLogger(__name__)

READ_BLOCK: Final = 2.0  # seconds one XREAD waits for a switch
RETRY: Final = (0.1, 2.0)  # seconds between the listener's reconnection attempts: first, most
ACK_POLL: Final = 0.05  # seconds between the deploying node's looks at the acknowledgements
STREAM_LENGTH: Final = 100  # switches the stream keeps (about)
RECONCILE_EVERY: Final = 1.0  # seconds: refusals within this share one look at the supervisor
MAX_AGE: Final = 600.0  # seconds: an older switch is not followed (the supervisor is asked)


def switch_key(secret: str) -> bytes:
    """The key the nodes sign their switches with, derived from their shared secret (never
    the secret itself: a token signed with it could not be made from the key)."""
    return hmac.new(secret.encode(), b"handoff rasa switch", hashlib.sha256).digest()


def _signature(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _followable(url: str) -> bool:
    """Whether ``url`` is one a node switches to: http(s), with a host."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class Rollout:
    """Switches every node's Rasa URL in a deploy (see the module docstring)."""

    def __init__(self, cluster: Cluster, rasa: RasaClient,
                 supervisor: Supervisor | None, *, secret: str) -> None:
        self.cluster = cluster
        self._key = switch_key(secret)  # signs and checks the switches (module docstring)
        self.rasa = rasa
        self.supervisor = supervisor
        self.deploying = False  # this node deploys now: its own switch is not undone
        self._listener: asyncio.Task[None] | None = None
        self._switches: set[asyncio.Task[Any]] = set()
        self._reconciling = asyncio.Lock()
        self._reconciled_at = float("-inf")

    @property
    def _redis(self) -> RedisCluster | None:
        return self.cluster if isinstance(self.cluster, RedisCluster) else None

    def start(self) -> None:
        """Read the other nodes' switches (several nodes only); refused connections ask the
        supervisor."""
        if self.supervisor is not None:
            self.rasa.reconcile = self.reconcile
        if self._redis is not None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        for task in (self._listener, *self._switches):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # ------------------------------------------------------------------ the supervisor

    async def reconcile(self) -> str | None:
        """The Rasa server the supervisor says is live, switched to if this node used
        another; None when there is no supervisor or it does not answer. Not while this node
        deploys (its candidate is not live yet). Calls within :data:`RECONCILE_EVERY` of
        the last answer share it."""
        if self.supervisor is None:
            return None
        async with self._reconciling:
            if time.monotonic() - self._reconciled_at < RECONCILE_EVERY:
                return self.rasa.base_url
            try:
                live = (await self.supervisor.status(timeout=5)).get("live") or {}
            except SupervisorError as exc:
                log.warning("%s; still using %s", exc.message, self.rasa.base_url)
                return None
            self._reconciled_at = time.monotonic()
            url = live.get("url")
            if not isinstance(url, str) or not url:
                return None
            if not _followable(url):
                log.warning("the supervisor names %r as its live Rasa, not an http(s) URL: "
                            "still using %s", url, self.rasa.base_url)
                return None
            if url.rstrip("/") != self.rasa.base_url and not self.deploying:
                log.warning("the supervisor's live Rasa is %s, not %s: using it", url,
                            self.rasa.base_url)
                self.rasa.switch(url)
            return self.rasa.base_url

    # ------------------------------------------------------------------ the deploying node

    async def switch_others(self, url: str, drain: float) -> list[str]:
        """Tell the other nodes alive to send every new request to ``url`` and wait until
        each acknowledged (its requests on the server before drained) or ``drain`` seconds
        passed. The nodes that did not acknowledge (all of them when Redis did not answer)."""
        cluster = self._redis
        if cluster is None:
            return []
        switch_id = uuid.uuid4().hex
        acks = cluster.key("rasa", "switch", switch_id)
        try:
            others = await cluster.nodes() - {cluster.node_id}
            if not others:
                return []
            message = json.dumps({"id": switch_id, "url": url, "node": cluster.node_id,
                                  "drain": drain, "at": time.time()})
            await cluster.redis.xadd(
                cluster.key("rasa", "switches"),
                {"m": message, "sig": _signature(self._key, message)},
                maxlen=STREAM_LENGTH, approximate=True)
        except Exception as exc:  # noqa: BLE001 - they switch when the old server refuses them
            log.warning("the other gateway nodes were not told of the switch to %s: %s", url,
                        exc)
            return ["(the other nodes: Redis did not answer)"]
        deadline = time.monotonic() + drain + 1.0  # a node's own drain, and the way back
        waiting = set(others)
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(ACK_POLL)
            try:
                waiting -= set(await cluster.redis.hkeys(acks))
                waiting &= await cluster.alive(waiting)  # a node gone meanwhile: not waited for
            except Exception as exc:  # noqa: BLE001 - Redis away: wait on to the deadline
                log.warning("acknowledgements of the switch to %s not read: %s", url, exc)
        return sorted(waiting)

    # ------------------------------------------------------------------ every other node

    async def _listen(self) -> None:
        cluster = self._redis
        assert cluster is not None
        stream, last, pause = cluster.key("rasa", "switches"), None, RETRY[0]
        while True:
            try:
                if last is None:  # from the stream's end: the supervisor says what is live
                    newest = await cluster.redis.xrevrange(stream, count=1)
                    last = newest[0][0] if newest else "0-0"
                    await self.reconcile()
                pause = RETRY[0]
                while True:
                    found = await cluster.redis.xread({stream: last}, count=10,
                                                      block=int(READ_BLOCK * 1000))
                    for _stream, entries in found or ():
                        for entry_id, fields in entries:
                            last = entry_id
                            self._apply(self._checked(fields))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: read on when it is back
                log.warning("deploy switches not read (Redis: %s); reading on from the last "
                            "one when it answers", exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY[1])
                self._reconciled_at = float("-inf")
                with contextlib.suppress(Exception):
                    await self.reconcile()  # a switch may have gone by meanwhile

    def _checked(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The switch an entry of the stream announces, when it is signed with the nodes'
        key and recent (module docstring); None, logged, otherwise."""
        message, signature = fields.get("m"), fields.get("sig")
        if not isinstance(message, str) or not isinstance(signature, str) or (
                not hmac.compare_digest(signature, _signature(self._key, message))):
            log.warning("a deploy switch not signed with the nodes' secret "
                        "(HANDOFF_JWT_SECRET) was found in Redis: not followed")
            return None
        try:
            switch = json.loads(message)
            age = time.time() - float(switch["at"])
        except (ValueError, TypeError, KeyError):
            log.warning("a signed deploy switch could not be read: not followed")
            return None
        if not isinstance(switch, dict) or not -MAX_AGE < age < MAX_AGE:
            log.warning("a deploy switch made %.0f s ago (at most %g s followed): not "
                        "followed; the supervisor is asked what is live", age, MAX_AGE)
            self._reconciled_at = float("-inf")
            task = asyncio.get_running_loop().create_task(self.reconcile())
            self._switches.add(task)
            task.add_done_callback(self._switches.discard)
            return None
        return switch

    def _apply(self, switch: dict[str, Any] | None) -> None:
        cluster = self._redis
        if switch is None or cluster is None or switch.get("node") == cluster.node_id:
            return
        task = asyncio.get_running_loop().create_task(self._switch(switch))
        self._switches.add(task)
        task.add_done_callback(self._switches.discard)

    async def _switch(self, switch: dict[str, Any]) -> None:
        cluster = self._redis
        assert cluster is not None
        url = str(switch.get("url")).rstrip("/")
        if not _followable(url):
            log.warning("gateway node %s announced a switch to %r, not an http(s) URL: not "
                        "followed", switch.get("node"), url)
            return  # not acknowledged: the deploying node names this one
        drained = True
        if url != self.rasa.base_url:
            old = self.rasa.switch(url)
            log.info("gateway node %s deploys: every new request goes to %s; waiting for "
                     "those still on %s", switch.get("node"), url, old)
            drained = await self.rasa.drained(old, float(switch.get("drain") or 0))
        acks = cluster.key("rasa", "switch", str(switch["id"]))
        try:
            async with cluster.redis.pipeline(transaction=True) as pipe:
                pipe.hset(acks, cluster.node_id, json.dumps({"drained": drained}))
                pipe.expire(acks, 3600)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the deploying node waits out its timeout
            log.warning("the switch to %s not acknowledged: %s", url, exc)
