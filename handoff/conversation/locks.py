"""Per-key asyncio locks that do not outlive their use, and, with several gateway nodes, the
conversation's lock across nodes taken inside the node's own (:mod:`handoff.conversation.cluster`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

__all__ = ["ConversationLocks"]


class ConversationLocks:
    """One ``asyncio.Lock`` per conversation, dropped as soon as nobody holds or awaits it
    (so a gateway that served a million conversations does not keep a million locks).
    ``across``: the lock shared with the other gateway nodes, taken once this node's own is
    held (so a node waits for another node's step with one request at most)."""

    def __init__(self, across: Callable[[str], contextlib.AbstractAsyncContextManager[None]]
                 | None = None) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._across = across

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(conversation_id) or (asyncio.Lock(), 0)
        self._locks[conversation_id] = (lock, users + 1)
        try:
            async with lock:
                if self._across is None:
                    yield
                else:
                    async with self._across(conversation_id):
                        yield
        finally:
            lock, users = self._locks[conversation_id]
            if users == 1:
                del self._locks[conversation_id]
            else:
                self._locks[conversation_id] = (lock, users - 1)
