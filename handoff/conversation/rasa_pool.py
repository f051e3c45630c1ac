"""Several Rasa servers behind one gateway (``HANDOFF_RASA_URL=http://a:5005,http://b:5005``).

The servers share Rasa's tracker store (PostgreSQL or one SQLite file) and a Redis lock store,
so any of them can run any conversation's turn. :class:`RasaPool` picks one per conversation by
rendezvous hashing (:func:`ranked`) over the servers its health probes do not find down: a
conversation sticks to its server while that one is healthy, different conversations spread
over the servers, and when a server goes down only its own conversations move, each to the
next server in its own ranking (the others stay where they are). A conversation's turns are one
at a time already (the router's backlog), so two of its turns never run at once on two
servers; Rasa's Redis lock store covers the one case left, a turn still running on a server
that hung as the next one starts elsewhere.

A server that refuses a connection is skipped at once, before its probe finds it down: the
request it refused (which it never received) goes to the conversation's next server
(:meth:`RasaClient._routed <handoff.conversation.rasa_client.RasaClient>`), and the server
stays skipped until its probe answers or :data:`REFUSED_FOR` seconds have passed. A request
that reached a server and failed there (a timeout, a 5xx) is not sent elsewhere: it may have
run.

Each server has its own health probe (:class:`~handoff.conversation.rasa_health.RasaHealth`)
and its own admission queue (keyed by its URL). The pool is down only when every server is:
then the single-server outage path applies (customers told, conversations queued). With one
URL the pool is exactly the single server of before: its probe follows the server in service,
so a blue/green deploy still switches it::

    pool = RasaPool(rasa, ["http://a:5005", "http://b:5005"], interval=1, timeout=1, slow=2)
    pool.server_for("conv-1")        # the same server for every turn while it is up
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from handoff.conversation.rasa_client import RasaClient
from handoff.conversation.rasa_health import RasaHealth

__all__ = ["REFUSED_FOR", "RasaPool", "ranked"]

REFUSED_FOR = 5.0
"""Seconds a server that refused a connection is skipped without a probe saying it is back."""

Listener = Callable[[str, str, str], Awaitable[None]]  # (server, previous, state)
_BEST_FIRST = ("up", "slow", "unknown", "down")


def ranked(key: str, servers: Iterable[str]) -> list[str]:
    """``servers`` in ``key``'s rendezvous order, best first: each server's score is a hash of
    (server, key), so removing one server changes no other key's first choice."""
    def score(server: str) -> bytes:
        return hashlib.blake2b(f"{server}\n{key}".encode(), digest_size=8).digest()
    return sorted(servers, key=score, reverse=True)


class RasaPool:
    """The Rasa servers with their health probes (see the module docstring). Routes ``rasa``'s
    conversation requests when there are several servers."""

    def __init__(self, rasa: RasaClient, urls: Sequence[str], *, interval: float,
                 timeout: float, slow: float, failures: int = 2,
                 answering: Callable[[str], float] | None = None) -> None:
        if not urls:
            raise ValueError("a Rasa pool needs at least one server")
        self.rasa = rasa
        self.interval = interval

        def probe(url: str | None) -> RasaHealth:
            def answered() -> float:
                return answering(url or rasa.base_url) if answering else float("-inf")
            return RasaHealth(rasa, interval=interval, timeout=timeout, slow=slow,
                              failures=failures, answering=answered, url=url)

        if len(urls) == 1:  # the server in service, switched by a deploy
            self._single: RasaHealth | None = probe(None)
            self.healths = {urls[0]: self._single}
        else:
            self._single = None
            self.healths = {url: probe(url) for url in urls}
            rasa.route = self.server_for
            rasa.unreachable = self.unreachable
        self._refused: dict[str, float] = {}  # server -> time.monotonic() it refused
        self._listeners: list[Listener] = []
        for url, health in self.healths.items():
            health.on_change(self._changed_listener(url))

    @property
    def several(self) -> bool:
        return self._single is None

    def servers(self) -> list[str]:
        """The servers' URLs (the one in service, with a single server)."""
        return [self.rasa.base_url] if self._single is not None else list(self.healths)

    def health(self, server: str) -> RasaHealth:
        """The probe of ``server`` (a URL :meth:`server_for` returned)."""
        return self._single if self._single is not None else self.healths[server]

    def server_for(self, conversation_id: str) -> str:
        """The server for the conversation's next request: the first in its rendezvous order
        that is not down (its first choice when all are: the call then fails as Rasa down)."""
        if self._single is not None:
            return self.rasa.base_url
        order = ranked(conversation_id, self.healths)
        return next((url for url in order if not self.skipped(url)), order[0])

    def skipped(self, server: str) -> bool:
        """Whether ``server`` gets no conversation now: its probe finds it down, or it
        refused a connection lately (see the module docstring)."""
        if self.healths[server].down:
            return True
        refused = self._refused.get(server)
        if refused is None:
            return False
        if (time.monotonic() - refused < REFUSED_FOR
                and self.healths[server].last_answered < refused):
            return True
        del self._refused[server]
        return False

    def unreachable(self, server: str) -> None:
        """``server`` refused a connection: skip it (see the module docstring)."""
        if server in self.healths:
            self._refused[server] = time.monotonic()

    async def probe_all(self) -> dict[str, str]:
        """One probe of every server at once (a command that runs without the probe task);
        each server's state after it."""
        await asyncio.gather(*(health.probe() for health in self.healths.values()))
        return {url: health.state for url, health in self.healths.items()}

    @property
    def down(self) -> bool:
        """Every server is down."""
        return all(h.down for h in self.healths.values())

    @property
    def error(self) -> str | None:
        if self._single is not None:
            return self._single.error
        errors = [f"{url}: {h.error}" for url, h in self.healths.items() if h.error]
        return "; ".join(errors) or None

    def on_change(self, listener: Listener) -> None:
        """``listener(server, previous, state)`` on every change of a server's state."""
        self._listeners.append(listener)

    def _changed_listener(self, url: str) -> Callable[[str, str], Awaitable[None]]:
        async def changed(previous: str, state: str) -> None:
            server = self.rasa.base_url if self._single is not None else url
            for listener in self._listeners:
                await listener(server, previous, state)
        return changed

    def as_json(self) -> dict[str, Any]:
        """The state of the pool (the best server's: ``down`` only when all are) and of each
        server under ``servers``; with one server its own figures."""
        if self._single is not None:
            return {**self._single.as_json(),
                    "servers": [{"url": self.rasa.base_url, **self._single.as_json()}]}
        best = min(self.healths.values(), key=lambda h: _BEST_FIRST.index(h.state)
                   if h.state in _BEST_FIRST else len(_BEST_FIRST))
        return {**best.as_json(), "error": self.error,
                "servers": [{"url": url, **h.as_json()} for url, h in self.healths.items()]}

    def start(self) -> None:
        for health in self.healths.values():
            health.start()

    async def close(self) -> None:
        for health in self.healths.values():
            await health.close()
