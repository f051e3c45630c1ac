"""The router step, saved whole: :meth:`StepStore.save_step` writes in one transaction what one
step of a conversation's router did — its new state, the messages it produced, the NLU of the
Rasa answer it took in, the reply it holds for an agent, the pending reply it decided or
discarded, and the correction recording the decision (with the agent's audit-log entry). Either all of it is stored or none of it
(``docs/store.md``). Part of :class:`~handoff.store.Store`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handoff.errors import BadRequest
from handoff.store.conversations import AlreadyStored
from handoff.store.database import Conn, one_of
from handoff.store.records import (
    CORRECTION_TYPES,
    AuditDraft,
    Keep,
    MODES,
    Conversation,
    Correction,
    CorrectionDraft,
    Message,
    MessageNlu,
    Mode,
    PendingReply,
    PendingReplyDraft,
    PendingResolution,
    SavedStep,
    StepMessage,
    TriageRecord,
)
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
        resolve: PendingResolution | None = None,
        hold: PendingReplyDraft | None = None,
        correction: CorrectionDraft | None = None,
        audit: AuditDraft | None = None,
        cause: str = "unknown",
        actor: str | None = None,
        node_id: str | None | Keep = Keep.NODE,
        once: str | None = None,
        triage: TriageRecord | None = None,
        before: Conversation | None = None,
    ) -> SavedStep:
        """One router step in one transaction, in this order:

        1. the new state, if the conversation is still at ``expected_version`` (else
           ``StaleVersion``, 409: re-read, step again); the version goes up by one.
           ``queued_at`` is set when it enters the queue and cleared when it leaves;
           ``closed_at`` likewise for mode ``closed``; a change of mode, owner or queue is
           recorded in ``conversation_events`` with ``cause`` (the router event's name) and
           ``actor`` (the agent who caused it, None for the customer or the system);
           ``node_id``, the gateway node that runs the Rasa call or timer the step started
           (None: nothing runs any more), is kept as it was unless given;
        2. the ``appended`` messages in order (the next ``seq`` each; a ``client_message_id``
           already stored is not written again, its row comes back ``replayed``; but when it
           is ``once``, the id of a customer message this step stores for the first time,
           the whole step is rolled back and ``AlreadyStored`` raised: a client's resend);
        3. ``nlu`` on its customer message, and ``triage``: triage's assessment of that
           message on it and the conversation's ``risk`` and ``triage`` (written by the
           statements of 1 and 3, none more);
        4. ``resolve``: every still-pending reply of the conversation decided (with the
           agent's decision) or discarded;
        5. ``hold``: a new pending reply, linked to the customer message it answers;
        6. ``correction``: the decision's record, linked to the reply it resolved and to the
           customer message of its turn, with its tracker events ``pending`` (fetched from
           Rasa after the commit: :meth:`set_correction_tracker`);
        7. ``audit``: the audit-log entry of the agent's action, naming the correction.

        ``before``: the conversation's row at ``expected_version``, which the caller has (the
        one it stepped from): it is not read again, so the update of 1 is the transaction's
        first statement, and 2 counts on from its ``last_seq`` without reading it either.

        Returns what was written. Any failure rolls all of it back."""
        one_of("mode", mode, MODES)
        values = [self._message_values(**m) for m in appended]
        if resolve is not None:
            self._check_resolution(resolve)
        if hold is not None and not isinstance(hold.get("action"), str):
            raise BadRequest("a held reply needs its action")
        if correction is not None:
            one_of("correction type", correction.get("type"), CORRECTION_TYPES)

        async def step(conn: Conn) -> SavedStep:
            conv = await self._set_state(
                conn, conversation_id, expected_version=expected_version, mode=mode,
                owner=owner, queued=queued, queue_reason=queue_reason, state=state,
                cause=cause, actor=actor, node_id=node_id, triage=triage, before=before)
            stored: list[Message] = []
            last_seq = conv.last_seq  # the update above holds the row: nobody else appends
            for v in values:
                message = await self._append(conn, conversation_id, v, last_seq)
                stored.append(message)
                if not message.replayed:
                    last_seq = message.seq
            for message in stored:
                if message.replayed and once is not None and message.client_message_id == once:
                    raise AlreadyStored(message)
            if nlu is not None or triage is not None:
                await self._record_turn(conn, conversation_id, nlu, triage)
            resolved: list[PendingReply] = []
            if resolve is not None:
                resolved = await self._resolve_pending(conn, conversation_id, resolve)
            held = None if hold is None else await self._hold(conn, conversation_id, hold)
            recorded: Correction | None = None
            if correction is not None:
                recorded = await self._record_correction(
                    conn, conversation_id, correction, resolved[-1].id if resolved else None)
            if audit is not None:
                await self._audit_correction(conn, audit, recorded)
            return SavedStep(conversation=conv, messages=stored, held=held, resolved=resolved,
                             correction=recorded)

        return await self._run(step, write=True)  # one hand-off on a SQLite file
