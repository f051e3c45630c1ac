"""One summaries check for the dashboard's concurrent requests (docs/metrics.md, "Speed").

Every figure starts by bringing the period's summaries up to date
(:func:`handoff.learning.metrics.refresh_summaries`): a scan for stale summaries, ~20 ms on
a million messages, then the recomputation of those it finds. The console asks for its nine
figures at once, so the same scan ran nine times side by side. :class:`SharedRefresh` runs it
once for all of them, and stays exact: a request never shares a check that began before it
did (that check may have scanned before the request's own writes were committed). So:

* a request joins the *pending* check, one that has not begun its scan, widening its period
  to cover the request's (when the two overlap and the union stays within ``max_span``);
* otherwise it makes a new pending check;
* a pending check begins only when the check running before it has ended: the requests that
  come in meanwhile all join it, and it finds what the running one left behind recomputed.

Nothing is cached across time: a write committed before a request began is always seen by
the check that request waits for, as if the request had run its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Final

__all__ = ["Refresh", "SharedRefresh"]

Refresh = Callable[[datetime, datetime], Awaitable[int]]  # [since, until) -> recomputed
MAX_SPAN: Final = timedelta(days=400)  # the widest union of periods one check covers


class _Check:
    """A pending or running check of ``[since, until)``."""

    def __init__(self, since: datetime, until: datetime) -> None:
        self.since, self.until = since, until
        self.began = False
        self.task: asyncio.Task[int] | None = None


class SharedRefresh:
    """Brings summaries up to date with ``refresh``, one check for the requests that arrive
    while another runs (see the module docstring). ``checks`` counts the checks run."""

    def __init__(self, refresh: Refresh, *, max_span: timedelta = MAX_SPAN) -> None:
        self._refresh = refresh
        self._max_span = max_span
        self._pending: _Check | None = None
        self._running: asyncio.Task[int] | None = None
        self._tasks: set[asyncio.Task[int]] = set()  # kept referenced until done
        self.checks = 0

    async def __call__(self, since: datetime, until: datetime) -> int:
        """Bring the summaries of ``[since, until)`` up to date, from a scan that begins after
        this call did; returns how many the check it shared recomputed."""
        check = self._pending
        if check is not None and not check.began and since <= check.until and (
                check.since <= until) and (max(until, check.until) - min(since, check.since)
                                           <= self._max_span):
            check.since, check.until = min(since, check.since), max(until, check.until)
        else:
            check = self._pending = _Check(since, until)
            check.task = asyncio.create_task(self._run(check, self._running))
            self._tasks.add(check.task)
            check.task.add_done_callback(self._tasks.discard)
        assert check.task is not None
        return await asyncio.shield(check.task)

    async def _run(self, check: _Check, before: asyncio.Task[int] | None) -> int:
        if before is not None:
            await asyncio.wait([before])  # its outcome is its own requests'
        check.began = True  # from here on no request joins: the scan begins after them all
        if self._pending is check:
            self._pending = None
        self._running = check.task
        self.checks += 1
        try:
            return await self._refresh(check.since, check.until)
        finally:
            if self._running is check.task:
                self._running = None

    async def close(self) -> None:
        """Cancel the checks still running (at shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
