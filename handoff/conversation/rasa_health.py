"""Rasa's health as the gateway sees it: a probe of Rasa's ``/status`` every
``rasa_probe_interval`` seconds, each given ``rasa_probe_timeout`` seconds.

:class:`RasaHealth` keeps the state (``unknown`` before the first probe, then ``up``, ``slow``
— it answered, later than ``rasa_slow_seconds`` — or ``down``: ``rasa_probe_failures`` probes in
a row got no answer in time, were refused, or failed, while no Rasa call was answered during
them either: a Rasa that answers turns is busy, not hung, and is ``slow``) and calls
``on_change(previous, current)`` on every change between up/slow and down
(``Conversations.rasa_health_changed``: customers are told at once, agents get ``rasa_health``,
and when Rasa is back the conversations it queued go back to the bot). A hung Rasa (stopped,
deadlocked) is thus found within failures × (interval + timeout) seconds (4 s by default), not after the
30 s turn timeout.

The probe task is kept referenced and cancelled by :meth:`RasaHealth.close`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from handoff.conversation.rasa_client import RasaClient, RasaError

__all__ = ["RasaHealth"]

log = logging.getLogger(__name__)

Listener = Callable[[str, str], Awaitable[None]]


class RasaHealth:
    """Probes Rasa and reports its state (see the module docstring)."""

    def __init__(self, rasa: RasaClient, *, interval: float, timeout: float,
                 slow: float, failures: int = 2,
                 answering: Callable[[], float] | None = None,
                 url: str | None = None) -> None:
        self.rasa = rasa
        self.url = url  # the server probed; None: the one in service (it follows a deploy)
        # time.monotonic() of Rasa's last answer to a call (the admission control's): a probe
        # unanswered while Rasa answered a call meanwhile finds Rasa busy, not hung
        self.answering = answering
        self.failures = failures
        self.failed = 0  # failed probes in a row
        self.interval = interval
        self.timeout = timeout
        self.slow = slow
        self.state = "unknown"
        self.since = datetime.now(UTC)
        self.error: str | None = None
        self.probe_seconds: float | None = None
        self.last_answered = float("-inf")  # time.monotonic() when a probe was last answered
        self.down_event = asyncio.Event()  # set while Rasa is down
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        return self.state == "down"

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since.isoformat(), "error": self.error,
                "failed_probes": self.failed,
                "probe_ms": None if self.probe_seconds is None
                else round(self.probe_seconds * 1000, 1),
                "probe": "on" if self.interval > 0 else "off"}

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.probe()
            except asyncio.CancelledError:
                raise
            except Exception:  # a listener failed: the probe itself goes on
                log.exception("Rasa health listener failed")
            await asyncio.sleep(self.interval)

    async def probe(self) -> str:
        """One probe; the state after it."""
        started = time.monotonic()
        error: str | None = None
        try:
            await asyncio.wait_for(self.rasa.status(self.url), self.timeout)
        except asyncio.TimeoutError:
            error = f"Rasa did not answer its status in {self.timeout:g} s"
        except RasaError as exc:
            error = exc.message
        self.probe_seconds = time.monotonic() - started
        if error is None:
            self.last_answered = time.monotonic()
        if error and self.answering is not None and self.answering() >= started:
            self.error = f"{error}, but it answered a turn meanwhile: busy, not hung"
            self.failed = 0
            await self._set("slow")
            return self.state
        self.error = error
        self.failed = self.failed + 1 if error else 0
        if error:
            state = "down" if self.failed >= self.failures else self.state
        else:
            state = "slow" if self.probe_seconds > self.slow else "up"
        await self._set(state)
        return state

    @property
    def _at(self) -> str:
        return f" at {self.url}" if self.url else ""

    async def _set(self, state: str) -> None:
        previous = self.state
        if state == previous:
            return
        self.state = state
        self.since = datetime.now(UTC)
        if state == "down":
            self.down_event.set()
            log.warning("Rasa%s is down: %s", self._at, self.error)
        else:
            self.down_event.clear()
            log.log(logging.WARNING if previous == "down" else logging.INFO,
                    "Rasa%s is %s (was %s; probe %.0f ms)", self._at, state, previous,
                    (self.probe_seconds or 0) * 1000)
        for listener in self._listeners:
            await listener(previous, state)
