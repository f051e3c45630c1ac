"""Admission control in front of each Rasa server: a bounded number of calls in flight, the
rest waiting their turn, first come first served.

Rasa serves one process's worth of turns (about 13 a second on this 2-core machine,
docs/performance.md). Sent everything at once it answers every turn late, the late ones past
the gateway's turn timeout, and those conversations went to the human queue although nothing
was wrong but load. With :class:`Admission` the gateway keeps at most ``limit`` calls out to
each Rasa server (keyed by base URL, so a blue/green deploy's new server has its own); the
others wait here, in arrival order, and the turn timeout counts only once a call is sent. A
call that waits does not make Rasa slower, so Rasa's health probe still answers in time and
still tells a hung Rasa (no answer at all) from a busy one (callers wait here); and the time of
each server's last answer (:meth:`Admission.answered`) tells its probe that a Rasa too busy
to answer its ``/status`` in time is still answering turns.

Each conversation's own turns are already one at a time (the router's backlog); this module
orders different conversations' calls. ``on_slow``: called once when the call (waiting plus
Rasa's time) has not ended after ``notice_after`` seconds: the shell tells the customer that the
reply is on its way::

    admission = Admission(limit=4, notice_after=5.0)
    async with admission.slot(rasa.base_url, on_slow=tell_customer):
        reply = await rasa.turn(...)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Admission"]

SlowCallback = Callable[[], None]  # called from the event loop; spawns what it does


@dataclass
class _Server:
    """The calls out to one Rasa server and those waiting for it."""

    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)
    last_answer: float = float("-inf")  # time.monotonic() when a call last came back
    admitted: int = 0  # calls ever admitted (figures for /metrics and the bench)
    waited: int = 0  # of those, calls that had to wait


class Admission:
    """At most ``limit`` calls in flight per Rasa server (0: no limit); see the module
    docstring."""

    def __init__(self, limit: int = 0, notice_after: float = 0.0) -> None:
        self.limit = limit
        self.notice_after = notice_after
        self._servers: dict[str, _Server] = {}

    def as_json(self) -> dict[str, Any]:
        """The servers' figures: calls running and waiting now, admitted and waited so far."""
        return {url: {"running": s.running, "waiting": len(s.waiting),
                      "admitted": s.admitted, "waited": s.waited}
                for url, s in self._servers.items()}

    def answered(self, server: str) -> float:
        """time.monotonic() when ``server`` last answered a call (-inf: never)."""
        found = self._servers.get(server)
        return found.last_answer if found is not None else float("-inf")

    def waiting(self) -> int:
        """Calls waiting for any server."""
        return sum(len(s.waiting) for s in self._servers.values())

    @contextlib.asynccontextmanager
    async def slot(self, server: str,
                   on_slow: SlowCallback | None = None) -> AsyncIterator[None]:
        """Hold one of ``server``'s places while the block runs (waiting for one first)."""
        timer = self._notice_timer(on_slow)
        try:
            await self._acquire(server)
            try:
                yield
                # Rasa answers: busy, maybe, but not hung
                self._servers[server].last_answer = time.monotonic()
            finally:
                self._release(server)
        finally:
            if timer is not None:
                timer.cancel()

    def _notice_timer(self, on_slow: SlowCallback | None) -> asyncio.TimerHandle | None:
        if on_slow is None or self.notice_after <= 0:
            return None
        return asyncio.get_running_loop().call_later(self.notice_after, on_slow)

    async def _acquire(self, url: str) -> None:
        server = self._servers.setdefault(url, _Server())
        server.admitted += 1
        if self.limit <= 0 or (server.running < self.limit and not server.waiting):
            server.running += 1
            return
        server.waited += 1
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        server.waiting.append(ticket)
        try:
            await ticket  # _release hands its place over: running stays counted
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._release(url)  # handed a place just as it was cancelled: pass it on
            elif ticket in server.waiting:
                server.waiting.remove(ticket)
            raise

    def _release(self, url: str) -> None:
        server = self._servers[url]
        while server.waiting:
            ticket = server.waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)  # the place goes to the next in line
                return
        server.running -= 1
