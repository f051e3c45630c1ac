"""Per-key asyncio locks that do not outlive their use, and, with several gateway nodes, the
conversation's lock across nodes taken inside the node's own (:mod:`handoff.conversation.cluster`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

__all__ = ["ConversationLocks"]


class ConversationLocks:
    """One ``asyncio.Lock`` per conversation, dropped as soon as nobody holds or awaits it
    (so a gateway that served a million conversations does not keep a million locks).
    ``across``: the lock shared with the other gateway nodes, taken once this node's own is
    held (so a node waits for another node's step with one request at most). ``waited``:
    told how long each :meth:`hold` waited for the lock (both locks), with its ``waiter``."""

    def __init__(self, across: Callable[[str], contextlib.AbstractAsyncContextManager[None]]
                 | None = None,
                 waited: Callable[[str, float], None] | None = None) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._across = across
        self._waited = waited

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, conversation_id: str, waiter: str = "other") -> AsyncIterator[None]:
        lock, users = self._locks.get(conversation_id) or (asyncio.Lock(), 0)
        self._locks[conversation_id] = (lock, users + 1)
        asked = time.perf_counter()
        try:
            async with lock:
                if self._across is None:
                    self._tell(waiter, asked)
                    yield
                else:
                    async with self._across(conversation_id):
                        self._tell(waiter, asked)
                        yield
        finally:
            lock, users = self._locks[conversation_id]
            if users == 1:
                del self._locks[conversation_id]
            else:
                self._locks[conversation_id] = (lock, users - 1)

    def _tell(self, waiter: str, asked: float) -> None:
        if self._waited is not None:
            self._waited(waiter, time.perf_counter() - asked)
