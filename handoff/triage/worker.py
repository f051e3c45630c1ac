"""The async façade: triage off the event loop, micro-batched under load.

:class:`TriageWorker` owns one worker thread. :meth:`TriageWorker.assess` queues the message
and awaits its result; a pump task hands the queue to the thread in batches: while the thread
is encoding one batch, newly arriving messages wait and then go together as the next batch (at
most ``max_batch``), so under load the network runs once per batch instead of once per message,
and with no load a message goes alone at once. OpenVINO and PyTorch release the GIL while they
compute, so the event loop keeps running. Suggestions and agents' replies go through the same
thread (one encoder call at a time); index rebuilds run on a second thread and the new index is
swapped in on the worker thread, so no assessment sees half an index::

    worker = await TriageWorker.load(TriageConfig.from_settings(settings))
    assessment, history = await worker.assess(Message.from_parse(text, parse), history)
    await worker.close()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from handoff.triage.calibration import Calibration, Shares
from handoff.triage.clustering import Cluster
from handoff.triage.corpus import read_corpus
from handoff.triage.encoder import Encoder, load_encoder
from handoff.triage.engine import Message, Prepared, Triage, TriageConfig
from handoff.triage.index import EmbeddingIndex, Suggestion
from handoff.triage.scoring import Assessment, History, Thresholds

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Request:
    text: str
    future: asyncio.Future[Prepared]


class TriageWorker:
    """Runs a :class:`Triage` on a worker thread for an asyncio program."""

    def __init__(self, triage: Triage, *, max_batch: int = 32) -> None:
        self.triage = triage
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage")
        self._pending: list[_Request] = []
        self._running: list[_Request] = []  # the batch on the thread now
        self._wakeup = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._rebuilding = asyncio.Lock()
        self.batches = 0  # batches run, and messages in them (for benchmarks and metrics)
        self.batched_messages = 0

    @classmethod
    async def load(cls, config: TriageConfig) -> TriageWorker:
        """Loads the engine on a thread (seconds: rules, model, index) and starts a worker."""
        triage = await asyncio.get_running_loop().run_in_executor(None, Triage.load, config)
        worker = cls(triage, max_batch=config.max_batch)
        await worker.start()
        return worker

    async def start(self) -> None:
        """Starts the pump (idempotent)."""
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run(), name="triage-pump")

    async def close(self) -> None:
        """Stops the pump, fails what is still queued, and ends the thread."""
        if self._pump is not None:
            self._pump.cancel()
            try:
                await self._pump
            except asyncio.CancelledError:
                pass
            self._pump = None
        for request in self._pending + self._running:
            if not request.future.done():
                request.future.set_exception(RuntimeError("triage worker closed"))
        self._pending.clear()
        self._running = []
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    async def __aenter__(self) -> TriageWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # --- assessments ----------------------------------------------------------------------

    async def assess(self, message: Message, history: History = History()
                     ) -> tuple[Assessment, History]:
        """The assessment of one customer message and the conversation's new history, wholly
        on the worker thread (for bulk use; the gateway's turns use :meth:`prepare` and
        :meth:`finish`)."""
        prepared = await self.prepare(message.text)
        return await self._call(self.triage.finish, prepared, message, history)

    async def prepare(self, text: str) -> Prepared:
        """The part of an assessment that needs only the text (the embedding: the slow part),
        on the worker thread, batched with other messages under load. Start it while Rasa
        reads the same message; :meth:`finish` it with the NLU result."""
        if self._pump is None:
            raise RuntimeError("TriageWorker.start() was not awaited")
        future: asyncio.Future[Prepared] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(text, future))
        self._wakeup.set()
        return await future

    def finish(self, prepared: Prepared, message: Message,
               history: History = History()) -> tuple[Assessment, History]:
        """The assessment of a :meth:`prepare`-d message with its NLU result: a search over
        the index and the pure score, tens of µs, done where it is called (the event loop)."""
        return self.triage.finish(prepared, message, history)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[:self.max_batch]
                del self._pending[:self.max_batch]
                batch = [r for r in batch if not r.future.done()]  # cancelled by the caller
                if not batch:
                    continue
                texts = [r.text for r in batch]
                self._running = batch
                try:
                    results = await self._call(self.triage.prepare, texts)
                except Exception as exc:  # noqa: BLE001 - every waiter gets the error
                    log.exception("triage of %d messages failed", len(batch))
                    for request in batch:
                        if not request.future.done():
                            request.future.set_exception(exc)
                    continue
                finally:
                    self._running = []
                self.batches += 1
                self.batched_messages += len(batch)
                for request, result in zip(batch, results):
                    if not request.future.done():
                        request.future.set_result(result)

    # --- agent assist and emerging needs --------------------------------------------------

    async def suggest(self, context: Sequence[str], k: int = 3) -> list[Suggestion]:
        """The ``k`` best replies for the conversation's last messages (oldest first)."""
        return await self._call(self.triage.suggest, list(context), k)

    async def add_reply(self, text: str, source: str, context: str | None = None) -> None:
        """Remembers a reply an agent wrote (``source``: ``agent:<who>``) for later
        suggestions; ``context``: the customer message it answered."""
        await self._call(lambda: self.triage.index.add_reply(text, source, context))

    async def emerging_needs(self, texts: Sequence[str], *, max_distance: float = 0.6,
                             min_size: int = 2) -> list[Cluster]:
        """Clusters of recent badly handled messages (see :mod:`handoff.triage.clustering`)."""
        return await self._call(lambda: self.triage.emerging_needs(
            texts, max_distance=max_distance, min_size=min_size))

    # --- thresholds that follow a target share ------------------------------------------

    async def calibrate(self, messages: Sequence[Message], floors: Thresholds, shares: Shares,
                        min_messages: int) -> Calibration:
        """Fits the thresholds on ``messages`` (:meth:`Triage.calibrate`) on a separate thread
        while assessments go on, then swaps them in on the worker thread; returns the fit."""
        triage = self.triage
        calibration = await asyncio.get_running_loop().run_in_executor(
            None, lambda: triage.calibrate(list(messages), floors, shares, min_messages,
                                           self.max_batch))

        def swap() -> None:
            triage.thresholds = calibration.thresholds

        await self._call(swap)
        return calibration

    # --- index rebuilds -------------------------------------------------------------------

    async def rebuild(self, config: TriageConfig, *, reload_model: bool = False,
                      encoder: Encoder | None = None) -> EmbeddingIndex:
        """Builds a new index from ``config``'s data and domain (and, with ``reload_model``
        or ``encoder``, a new model) on a separate thread while assessments go on with the old
        one, then swaps it in. Agents' replies are carried over, also those added meanwhile.
        One rebuild at a time; returns the new index."""
        async with self._rebuilding:
            old = self.triage.index
            loop = asyncio.get_running_loop()

            def build() -> EmbeddingIndex:
                new_encoder = encoder or (load_encoder(config.model, config.backend,
                                                       config.cache_dir, threads=config.threads)
                                          if reload_model else None)
                return old.rebuilt(read_corpus(config.data, config.domain), new_encoder)

            new = await loop.run_in_executor(None, build)

            def swap() -> None:
                for reply in old.replies[len(new.replies):]:
                    new.add_reply(reply.text, reply.source, reply.context)
                self.triage.index = new

            await self._call(swap)
            log.info("triage index rebuilt: %d examples, %d responses, model %s",
                     len(new.corpus.examples), len(new.corpus.responses), new.model_name)
            return new
