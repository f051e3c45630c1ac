"""Triage inside the gateway: when to assess, what to store, whom to tell, what to flag.

:class:`TriageLink` sits between :class:`~handoff.conversation.shell.Conversations` and the triage
library (:mod:`handoff.triage`):

* **Before Rasa** (:meth:`rules_flag`): the trainers' policy rules, plain regular expressions
  checked on the event loop in microseconds. A hit flags the conversation before its message
  is run, so a legal threat goes to a person (``human``) or has this very reply held
  (``review``).
* **After Rasa** (:meth:`assess`, in the background, off the customer's path): the whole
  assessment with the NLU result (confidence, margin, novelty, sentiment and its trend,
  fallbacks, going in circles). The risk and reasons are stored (the conversation's ``risk``
  orders the console's queue; each customer message keeps its assessment) and pushed to the
  agents as ``risk``; at the thresholds the conversation is flagged (its next replies are held
  for any agent, or it is queued for a person).
* **A new model** (:meth:`model_changed`, seen in Rasa's answers): the index of training
  examples and responses is rebuilt on a thread and swapped in (:meth:`rebuild`).
* **Agent assist** (:meth:`suggestions`): the best replies for the conversation so far, pushed
  as ``suggested_replies`` to the agents in charge while a reply is held or a person answers.

The model loads in the background when the gateway starts (:meth:`start`); until it is ready,
and when ``HANDOFF_TRIAGE_ENABLED`` is false, only the rules run (they need no model).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from handoff.conversation import router as r
from handoff.conversation.locks import ConversationLocks
from handoff.store import Store
from handoff.triage import History, Suggestion, Triage, TriageConfig, TriageWorker
from handoff.triage import Message as TriageMessage
from handoff.triage.rules import Rule, check_rules, load_rules

__all__ = ["TriageLink"]

log = logging.getLogger(__name__)
SUGGESTIONS = 3
CONTEXT_MESSAGES = 6


class Push(Protocol):
    async def __call__(self, event: str, payload: Any,
                       agent_ids: Sequence[str] | None = None) -> None: ...


class TriageLink:
    """Triage for the conversations of one gateway (see the module docstring)."""

    def __init__(self, config: TriageConfig, *, enabled: bool = True,
                 load: Callable[[TriageConfig], Triage] = Triage.load) -> None:
        self.config = config
        self.enabled = enabled
        self.rules: tuple[Rule, ...] = tuple(load_rules(config.rules))  # a bad file fails fast
        self._load = load
        self.worker: TriageWorker | None = None
        self._loading: asyncio.Task[None] | None = None
        self._history_locks = ConversationLocks()
        self._model_id: str | None = None

    @property
    def ready(self) -> bool:
        return self.worker is not None

    async def start(self) -> None:
        """Load the model and build the index in the background (seconds); the gateway serves
        customers meanwhile."""
        if self.enabled and self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._start(),
                                                                   name="triage-load")

    async def _start(self) -> None:
        try:
            triage = await asyncio.to_thread(self._load, self.config)
        except Exception:
            log.exception("triage could not load its model: only its rules will run")
            return
        worker = TriageWorker(triage, max_batch=self.config.max_batch)
        await worker.start()
        self.worker = worker
        log.info("triage ready")

    async def wait_ready(self) -> bool:
        """Wait for the background load (tests, benchmarks); whether triage is ready."""
        if self._loading is not None:
            await self._loading
        return self.ready

    async def close(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
        if self.worker is not None:
            await self.worker.close()
            self.worker = None

    # ------------------------------------------------------------------ model changes

    def model_changed(self, model_id: str | None) -> bool:
        """Note the model a Rasa answer came from; True when it differs from the one seen
        before (a new model was deployed: its data may have changed)."""
        if model_id is None:
            return False
        previous, self._model_id = self._model_id, model_id
        return previous is not None and previous != model_id

    async def rebuild(self) -> None:
        """Re-read the training data and domain and swap in a new index, on a thread;
        assessments and suggestions go on with the old index meanwhile."""
        if self.worker is not None:
            await self.worker.rebuild(self.config)

    # ------------------------------------------------------------------ before Rasa

    def rules_flag(self, text: str) -> r.TriageFlag | None:
        """The flag the policy rules raise for a customer message, if any (``human`` wins)."""
        hits = check_rules(self.rules, text)
        if not hits:
            return None
        human = [h for h in hits if h.action == "human"]
        hit = (human or hits)[0]
        return r.TriageFlag(detail=f"{hit.reason} (“{hit.matched}”)", by_rule=True,
                            action=r.TriageAction.HUMAN if human else r.TriageAction.REVIEW)

    # ------------------------------------------------------------------ after Rasa

    async def assess(self, store: Store, push: Push, conversation_id: str,
                     message: r.CustomerMessage, parse: r.NluParse | None,
                     flag: Callable[[r.TriageFlag], Awaitable[Any]]) -> dict[str, Any] | None:
        """Assess one customer message with its NLU result; store, push and flag. Returns the
        assessment as JSON, or None when the model is not ready."""
        worker = self.worker
        if worker is None:
            return None
        # one conversation's history is continued one message at a time
        async with self._history_locks.hold(conversation_id):
            conv = await store.get_conversation(conversation_id)
            history = History.from_json((conv.triage or {}).get("history"))
            assessment, history = await worker.assess(_triage_message(message, parse), history)
            data = assessment.to_json()
            await store.set_triage(
                conversation_id, risk=assessment.risk,
                triage={"history": history.to_json(), "assessment": data},
                client_message_id=message.message_id, assessment=data)
        await push("risk", {"conversation_id": conversation_id,
                            "message_id": message.message_id, **data})
        if assessment.action in ("review", "human"):
            top = max(assessment.reasons, key=lambda reason: reason.contribution, default=None)
            detail = f"risk {assessment.risk:.2f}" + (f": {top.text}" if top else "")
            by_rule = any(reason.code.startswith("rule:") for reason in assessment.reasons)
            await flag(r.TriageFlag(detail=detail, action=r.TriageAction(assessment.action),
                                    by_rule=by_rule))
        return data

    # ------------------------------------------------------------------ agent assist

    async def suggestions(self, context: Sequence[str]) -> list[Suggestion]:
        """The best replies for a conversation whose last messages are ``context`` (oldest
        first); empty until the model is ready."""
        worker = self.worker
        if worker is None or not context:
            return []
        return await worker.suggest(list(context)[-CONTEXT_MESSAGES:], SUGGESTIONS)

    async def remember_reply(self, text: str, agent: str, context: str | None) -> None:
        """An agent's own reply becomes a suggestion for later conversations."""
        if self.worker is not None:
            await self.worker.add_reply(text, f"agent:{agent}", context)


def _triage_message(message: r.CustomerMessage, parse: r.NluParse | None) -> TriageMessage:
    if parse is None:
        return TriageMessage(message.text)
    return TriageMessage(message.text, parse.intent, parse.confidence,
                         tuple((s.name, s.confidence) for s in parse.intent_ranking))
