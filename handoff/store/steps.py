"""The router step, saved whole: :meth:`StepStore.save_step` writes in one transaction what one
step of a conversation's router did — its new state, the messages it produced and the NLU of the
Rasa answer it took in (``docs/store.md``). Part of :class:`~handoff.store.Store`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handoff.store.database import one_of
from handoff.store.records import MODES, Message, MessageNlu, Mode, StepMessage, Conversation
from handoff.store.reviews import ReviewStore

__all__ = ["StepStore"]


class StepStore(ReviewStore):
    """The one-transaction save of a router step."""

    async def save_step(
        self,
        conversation_id: str,
        *,
        expected_version: int,
        mode: Mode,
        owner: str | None,
        queued: bool,
        queue_reason: str | None,
        state: dict[str, Any] | None,
        appended: Sequence[StepMessage] = (),
        nlu: MessageNlu | None = None,
    ) -> tuple[Conversation, list[Message]]:
        """One router step in one transaction: the new state (as ``set_conversation_state``,
        ``StaleVersion`` included), then the ``appended`` messages in order (as
        ``append_message``: a ``client_message_id`` already stored is not written again), then
        ``nlu`` on its customer message. Returns the conversation and the stored messages."""
        one_of("mode", mode, MODES)
        values = [self._message_values(**m) for m in appended]
        async with self._tx(write=True) as conn:
            conv = await self._set_state(
                conn, conversation_id, expected_version=expected_version, mode=mode,
                owner=owner, queued=queued, queue_reason=queue_reason, state=state)
            stored = [await self._append(conn, conversation_id, v) for v in values]
            if nlu is not None:
                await self._record_turn(conn, conversation_id, nlu)
            return conv, stored
