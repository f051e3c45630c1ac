"""Keeps the system's processes running: a process that exits without being asked to is
started again, after a back-off, while the others keep running.

``python -m bot.serve`` watches the action server, the live Rasa server and the gateway with one
:class:`Keeper` and calls :meth:`Keeper.tick` from its main loop. A crash is logged (with the end
of the process's log) and counted; the restart waits ``delay`` seconds, doubled after each crash
up to ``max_delay``, and back to ``delay`` once the process has stayed up ``stable_after``
seconds. Restarting does not block: the process is started and :meth:`Keeper.tick` reports when
it answers again (a Rasa server takes tens of seconds to load its model).

What is watched is looked up on every tick (``lookup``), so the Rasa server a deploy made live
is the one watched, and a server a deploy stopped on purpose is never restarted.

Standard library only (the test suite, on Python 3.11, uses it too).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, TextIO

from bot.processes import Service

__all__ = ["Keeper", "Watched"]


@dataclass
class Watched:
    """One kept process: ``lookup`` gives the :class:`Service` to keep (None: nothing now)."""

    name: str
    lookup: Callable[[], Optional[Service]]
    restarts: int = 0
    crashes: int = 0
    delay: float = 0.0
    restart_at: Optional[float] = None  # monotonic: a restart is due then
    started_at: Optional[float] = None  # monotonic: the last (re)start
    answering: bool = True
    last_exit: Optional[int] = None
    history: List[Dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        state = ("waiting to restart" if self.restart_at is not None
                 else "running" if self.answering else "starting")
        return {"name": self.name, "state": state, "restarts": self.restarts,
                "crashes": self.crashes, "last_exit_code": self.last_exit,
                "next_delay": self.delay}


class Keeper:
    """Restarts watched processes that exit (see the module docstring)."""

    def __init__(self, delay: float = 1.0, max_delay: float = 30.0, stable_after: float = 60.0,
                 out: TextIO = sys.stdout, clock: Callable[[], float] = time.monotonic) -> None:
        if delay <= 0 or max_delay < delay or stable_after <= 0:
            raise ValueError("need 0 < delay <= max_delay and stable_after > 0")
        self.first_delay = delay
        self.max_delay = max_delay
        self.stable_after = stable_after
        self.out = out
        self.clock = clock
        self.watched: List[Watched] = []

    def watch(self, name: str, lookup: Callable[[], Optional[Service]]) -> Watched:
        kept = Watched(name, lookup, delay=self.first_delay, started_at=self.clock())
        self.watched.append(kept)
        return kept

    def status(self) -> List[Dict[str, Any]]:
        out = []
        for kept in self.watched:
            service = kept.lookup()
            process = service.process if service is not None else None
            out.append({**kept.as_dict(), "pid": process.pid if process else None})
        return out

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def tick(self) -> None:
        """Notice exits, start what is due, and report what answers again."""
        now = self.clock()
        for kept in self.watched:
            service = kept.lookup()
            if service is None or service.process is None:
                continue
            if kept.restart_at is not None:
                if now >= kept.restart_at:
                    kept.restart_at = None
                    kept.restarts += 1
                    kept.started_at = now
                    kept.answering = False
                    self._say(f"restarting {kept.name} (restart {kept.restarts})")
                    try:
                        service.start()
                    except OSError as exc:  # could not even be started: try again later
                        self._schedule(kept, now, f"could not be started ({exc})")
                continue
            code = service.process.poll()
            if code is not None:
                kept.crashes += 1
                kept.last_exit = code
                if kept.started_at is not None and now - kept.started_at >= self.stable_after:
                    kept.delay = self.first_delay  # it had been running well: a fresh start
                self._schedule(kept, now, f"exited with code {code}; its log ends with:\n"
                               f"{service.log_tail(10)}")
                continue
            if not kept.answering and service.is_ready():
                kept.answering = True
                self._say(f"{kept.name} is back (restart {kept.restarts})")

    def _schedule(self, kept: Watched, now: float, why: str) -> None:
        kept.restart_at = now + kept.delay
        kept.history.append({"crash": kept.crashes, "delay": kept.delay})
        self._say(f"{kept.name} {why}\n{kept.name}: restart in {kept.delay:g} s "
                  f"(crash {kept.crashes})")
        kept.delay = min(kept.delay * 2, self.max_delay)
