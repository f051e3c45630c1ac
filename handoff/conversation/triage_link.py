"""Triage inside the gateway: when to assess, what to store, whom to tell, what to flag.

:class:`TriageLink` sits between :class:`~handoff.conversation.shell.Conversations` and the triage
library (:mod:`handoff.triage`):

* **Before Rasa** (:meth:`rules_flag`): the trainers' policy rules, plain regular expressions
  checked on the event loop in microseconds. A hit flags the conversation before its message
  is run, so a legal threat goes to a person (``human``) or has this very reply held
  (``review``).
* **Within the turn**: :meth:`begin` starts the slow part (the embedding, on the worker
  thread, and the conversation's history) while Rasa reads the message; :meth:`judge` ends it
  with Rasa's parse (tens of µs) before anything Rasa said is sent, and its flag goes to the
  router with Rasa's answer, so a reply triage would hold is held (docs/triage.md). The
  embedding of a text seen lately ("thanks", "yes", "hi") is taken from a small cache (keyed by
  a digest of the text, which itself is not kept; emptied when the index is rebuilt) instead of
  being computed again beside Rasa's turn, where it competes with Rasa for the CPU.
  The risk and reasons (the conversation's ``risk`` orders the console's queue; each customer
  message keeps its assessment) and the history are stored by the router step that takes in
  Rasa's answer (:meth:`stored`, ``Store.save_step``'s ``triage``: no transaction of their own),
  and the next message's history is read from the row that step saved; :meth:`record` pushes
  them to the agents as ``risk``, after the customer has the reply.
* **A new model** (:meth:`model_changed`, seen in Rasa's answers): the index of training
  examples and responses is rebuilt on a thread and swapped in (:meth:`rebuild`).
* **Thresholds that follow a target share** (:meth:`calibrate`, ``HANDOFF_TRIAGE_THRESHOLDS=fitted``):
  at start and after each model change, a calibration set of customer messages is parsed by the
  live Rasa model and scored off the event loop, and the review/human thresholds are raised to
  meet the target shares (:mod:`handoff.triage.calibration`); :attr:`thresholds_state` shows
  them, and each change goes to the audit log (through ``on_fitted``).
* **Agent assist** (:meth:`suggestions`): the best replies for the conversation so far, pushed
  as ``suggested_replies`` to the agents in charge while a reply is held or a person answers.

The model loads in the background when the gateway starts (:meth:`start`); until it is ready,
and when ``HANDOFF_TRIAGE_ENABLED`` is false, only the rules run (they need no model).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from handoff.conversation import router as r
from handoff.store import Conversation, Store, TriageRecord
from handoff.triage import Assessment, History, Suggestion, Triage, TriageConfig, TriageWorker
from handoff.triage.engine import Prepared
from handoff.triage import Message as TriageMessage
from handoff.triage.rules import Rule, check_rules, load_rules

__all__ = ["Judgement", "Judging", "TriageLink"]

log = logging.getLogger(__name__)
SUGGESTIONS = 3
CONTEXT_MESSAGES = 6
RECORD_WAIT = 5.0
"""Seconds a message's triage waits for the previous message's history to be written."""
PARSES_AT_ONCE = 4  # calibration: Rasa parses in flight together
START_FITS, START_FIT_RETRY = 6, 10.0  # tries of the first fit, seconds between them

Parse = Callable[[str], Awaitable[dict[str, Any]]]
"""Rasa's NLU result for a text (``RasaClient.parse``)."""
ModelOf = Callable[[], Awaitable[str | None]]
"""The id of the model in service (from Rasa's ``/status``)."""
Recent = Callable[[int], Awaitable[list[str]]]
"""At most n recent stored customer messages, newest first."""
Fitted = Callable[[dict[str, Any]], Awaitable[None]]
"""Told each time the fitted thresholds change (the gateway writes the audit log)."""


@dataclass(frozen=True)
class _Begun:
    worker: TriageWorker
    prepared: Prepared
    history: History
    done: asyncio.Event


@dataclass(frozen=True)
class Judging:
    """A message's triage under way (:meth:`TriageLink.begin`)."""

    task: asyncio.Task[_Begun]
    done: asyncio.Event


@dataclass(frozen=True)
class Judgement:
    """Triage's verdict on one customer message, made within its turn."""

    assessment: Assessment
    history: History
    flag: r.TriageFlag | None  # review or human; None: the bot goes on
    done: asyncio.Event  # set once the history is written


def _flag(assessment: Assessment) -> r.TriageFlag | None:
    if assessment.action not in ("review", "human"):
        return None
    top = max(assessment.reasons, key=lambda reason: reason.contribution, default=None)
    detail = f"risk {assessment.risk:.2f}" + (f": {top.text}" if top else "")
    by_rule = any(reason.code.startswith("rule:") for reason in assessment.reasons)
    return r.TriageFlag(detail=detail, action=r.TriageAction(assessment.action), by_rule=by_rule)


class Push(Protocol):
    async def __call__(self, event: str, payload: Any,
                       agent_ids: Sequence[str] | None = None) -> None: ...


class TriageLink:
    """Triage for the conversations of one gateway (see the module docstring)."""

    def __init__(self, config: TriageConfig, *, enabled: bool = True,
                 load: Callable[[TriageConfig], Triage] = Triage.load,
                 embedding_cache: int = 2048) -> None:
        self.config = config
        # digest of a text -> its prepared measurement, most recently used last (at most
        # embedding_cache of them; 0: none kept)
        self.embedding_cache = embedding_cache
        self._prepared: OrderedDict[bytes, Prepared] = OrderedDict()
        self.prepared_hits = 0  # assessments whose embedding came from the cache
        self.enabled = enabled
        self.rules: tuple[Rule, ...] = tuple(load_rules(config.rules))  # a bad file fails fast
        self._load = load
        self.worker: TriageWorker | None = None
        self._loading: asyncio.Task[None] | None = None
        # per conversation, the message whose history is not yet written (see begin/record)
        self._unrecorded: dict[str, asyncio.Event] = {}
        self._model_id: str | None = None
        self._parse: Parse | None = None
        self._model_of: ModelOf | None = None
        self._recent: Recent | None = None
        self._on_fitted: Fitted | None = None
        self._calibrating = asyncio.Lock()
        self._calibration: asyncio.Task[dict[str, Any] | None] | None = None
        self.fitted_state: dict[str, Any] | None = None  # the last fit (fitted mode)

    def attach(self, *, parse: Parse, model_of: ModelOf, recent: Recent | None = None,
               on_fitted: Fitted | None = None) -> None:
        """What fitted thresholds need from the gateway: Rasa's NLU, the live model's id, the
        stored customer messages and where to report a change."""
        self._parse, self._model_of = parse, model_of
        self._recent, self._on_fitted = recent, on_fitted

    @property
    def fitted(self) -> bool:
        return self.config.mode == "fitted"

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
        if self.fitted:
            self._calibration = asyncio.get_running_loop().create_task(
                self._calibrate_at_start(), name="triage-calibrate")

    async def _calibrate_at_start(self) -> dict[str, Any] | None:
        """The first fit; Rasa may not answer yet at start: tried again a few times."""
        for _ in range(START_FITS - 1):
            if (state := await self.calibrate()) is not None or self._parse is None:
                return state
            await asyncio.sleep(START_FIT_RETRY)
        return await self.calibrate()

    async def wait_ready(self) -> bool:
        """Wait for the background load (tests, benchmarks); whether triage is ready."""
        if self._loading is not None:
            await self._loading
        return self.ready

    async def close(self) -> None:
        for task in (self._loading, self._calibration):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
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
            self._prepared.clear()  # measured with the old index (checked on use, too)
            await self.calibrate()

    async def model_live(self, model_id: str) -> None:
        """A deploy put ``model_id`` live: re-fit the thresholds unless they were fitted on
        it already (a rebuild seen in Rasa's answers may have done it)."""
        state = self.fitted_state
        if state is None or state.get("model_id") != model_id:
            await self.calibrate()

    # ------------------------------------------------------------------ thresholds

    @property
    def thresholds_state(self) -> dict[str, Any]:
        """The thresholds in use and, in fitted mode, what they were fitted on (for
        ``/api/health``): ``mode``, ``review_threshold``, ``human_threshold``, and the last
        fit's ``target_review_share``, ``target_human_share``, ``review_share``,
        ``human_share`` (measured on the set), ``messages``, ``source``, ``model_id``,
        ``fitted_at``, ``fitted`` (False: too few messages, fixed kept)."""
        worker = self.worker
        current = worker.triage.thresholds if worker is not None else self.config.thresholds
        state: dict[str, Any] = {"mode": self.config.mode, "review_threshold": current.review,
                                 "human_threshold": current.human,
                                 "floor_review_threshold": self.config.thresholds.review,
                                 "floor_human_threshold": self.config.thresholds.human}
        if self.fitted:
            state["target_review_share"] = self.config.shares.review
            state["target_human_share"] = self.config.shares.human
            state.update({k: v for k, v in (self.fitted_state or {}).items()
                          if k not in ("review_threshold", "human_threshold")})
        return state

    async def _calibration_texts(self, worker: TriageWorker) -> tuple[list[str], str]:
        """The recent stored customer messages when there are enough, else the training
        data's examples spread over all intents (see docs/triage.md)."""
        size = self.config.calibration_messages
        if self._recent is not None:
            stored = list(dict.fromkeys(t for t in await self._recent(size * 2) if t.strip()))
            if len(stored) >= self.config.calibration_min:
                return stored[:size], "stored customer messages"
        examples = list(dict.fromkeys(e.text for e in worker.triage.index.corpus.examples))
        step = max(1, len(examples) // size)
        return examples[::step][:size], "training data"

    async def calibrate(self) -> dict[str, Any] | None:
        """Fit the thresholds to the target shares on the live model (fitted mode, once the
        model is loaded and :meth:`attach` was called): a calibration set parsed by Rasa and
        scored off the event loop. Returns the fit (None: nothing done). A failure (Rasa
        down) keeps the thresholds in use, logged."""
        worker = self.worker
        if not self.fitted or worker is None or self._parse is None or self._model_of is None:
            return None
        parse = self._parse
        async with self._calibrating:
            try:
                model_id = await self._model_of()
                texts, source = await self._calibration_texts(worker)
                limit = asyncio.Semaphore(PARSES_AT_ONCE)

                async def one(text: str) -> TriageMessage:
                    async with limit:
                        return TriageMessage.from_parse(text, await parse(text))

                messages = await asyncio.gather(*(one(t) for t in texts))
                calibration = await worker.calibrate(messages, self.config.thresholds,
                                                     self.config.shares,
                                                     self.config.calibration_min)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("triage thresholds could not be fitted: the current ones stay")
                return None
            previous = self.fitted_state
            state = {**calibration.to_json(), "source": source, "model_id": model_id,
                     "target_review_share": self.config.shares.review,
                     "target_human_share": self.config.shares.human,
                     "fitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            self.fitted_state = state
            log.info("triage thresholds fitted on %d %s (model %s): review %.4f, human %.4f",
                     calibration.messages, source, model_id, calibration.thresholds.review,
                     calibration.thresholds.human)
            changed = previous is None or any(
                previous.get(k) != state[k] for k in ("review_threshold", "human_threshold",
                                                      "model_id"))
            if changed and self._on_fitted is not None:
                try:
                    await self._on_fitted(state)
                except Exception:
                    log.exception("the fitted triage thresholds could not be reported")
            return state

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

    # ------------------------------------------------------------------ within the turn

    def begin(self, store: Store, conversation_id: str, message: r.CustomerMessage, *,
              kept: Callable[[], Conversation | None] | None = None) -> Judging | None:
        """Start judging a customer message while Rasa reads it: the embedding (on the
        worker thread) and the conversation's triage history, from ``kept()`` (the row the
        shell saved last for it, which holds the history its previous turn's step wrote) or,
        without one, from the store. None when the model is not ready. Finish with
        :meth:`judge`; whatever happens, the shell then calls :meth:`record` (or
        :meth:`abandon`), which lets the conversation's next message go."""
        worker = self.worker
        if worker is None:
            return None
        previous = self._unrecorded.get(conversation_id)
        done = asyncio.Event()
        self._unrecorded[conversation_id] = done
        task = asyncio.get_running_loop().create_task(
            self._begin(worker, store, conversation_id, message, previous, done, kept),
            name=f"triage-begin-{conversation_id}")
        return Judging(task, done)

    async def _prepare(self, worker: TriageWorker, text: str) -> Prepared:
        """The message's measurement before its NLU result (the embedding, on the worker
        thread), or the one of the same text from the cache when the index is the same."""
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        found = self._prepared.get(key)
        if found is not None and found.index is worker.triage.index:
            self._prepared.move_to_end(key)
            self.prepared_hits += 1
            return replace(found, text=text)
        prepared = await worker.prepare(text)
        if self.embedding_cache > 0:
            self._prepared[key] = replace(prepared, text="")
            self._prepared.move_to_end(key)
            while len(self._prepared) > self.embedding_cache:
                self._prepared.popitem(last=False)
        return prepared

    async def _begin(self, worker: TriageWorker, store: Store, conversation_id: str,
                     message: r.CustomerMessage, previous: asyncio.Event | None,
                     done: asyncio.Event,
                     kept: Callable[[], Conversation | None] | None) -> _Begun:
        prepared = asyncio.get_running_loop().create_task(self._prepare(worker, message.text))
        try:
            if previous is not None:  # the previous message's history is still being written
                await asyncio.wait_for(previous.wait(), RECORD_WAIT)
        except asyncio.TimeoutError:
            log.warning("triage history of %s: the previous message was not recorded in time",
                        conversation_id)
        try:
            conv = kept() if kept is not None else None
            if conv is None:
                conv = await store.get_conversation(conversation_id)
            history = History.from_json((conv.triage or {}).get("history"))
            return _Begun(worker, await prepared, history, done)
        except BaseException:
            prepared.cancel()
            raise

    async def judge(self, judging: Judging, message: r.CustomerMessage,
                    parse: r.NluParse | None) -> Judgement:
        """The assessment of the message with Rasa's parse (tens of µs, on the event loop,
        once :meth:`begin`'s part is done) and the flag it raises: what the router decides on
        before the reply goes out."""
        begun = await judging.task
        assessment, history = begun.worker.finish(begun.prepared,
                                                  _triage_message(message, parse),
                                                  begun.history)
        return Judgement(assessment, history, _flag(assessment), begun.done)

    @staticmethod
    def stored(message: r.CustomerMessage, judgement: Judgement) -> TriageRecord:
        """What the store keeps of a judgement: the conversation's ``risk`` and ``triage``
        (history and assessment) and the message's assessment. The shell has the step that
        takes in Rasa's answer write it (``Store.save_step``'s ``triage``): no transaction
        of its own in the turn."""
        data = judgement.assessment.to_json()
        return {"risk": judgement.assessment.risk,
                "triage": {"history": judgement.history.to_json(), "assessment": data},
                "client_message_id": message.message_id, "assessment": data}

    async def record(self, store: Store, push: Push, conversation_id: str,
                     message: r.CustomerMessage, judgement: Judgement, *,
                     stored: bool = False) -> Conversation | None:
        """Push the assessment to the agents as ``risk`` (after the customer has the reply:
        off the customer's path), storing it first unless the turn's step did (``stored``:
        a Rasa answer the router ignored saves no step). Returns the row written here."""
        row = None
        try:
            if not stored:
                record = self.stored(message, judgement)
                row = await store.set_triage(
                    conversation_id, risk=record["risk"], triage=record["triage"],
                    client_message_id=message.message_id, assessment=record["assessment"])
        finally:
            self.abandon(conversation_id, judgement.done)
        await push("risk", {"conversation_id": conversation_id,
                            "message_id": message.message_id,
                            **judgement.assessment.to_json()})
        return row

    def abandon(self, conversation_id: str, done: asyncio.Event) -> None:
        """The message's history is written (or will never be): the next one may go on."""
        done.set()
        if self._unrecorded.get(conversation_id) is done:
            del self._unrecorded[conversation_id]

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
