"""Retraining from the console: the accepted corrections become training data and a new model,
proven against the live one; the gateway decides and keeps the record.

:meth:`Retraining.start` (``POST /api/retrain``) exports the accepted corrections not trained on
yet, each checked against the contract the writer reads them with
(:func:`~handoff.learning.corrections.export_records`): one that cannot become training data is
left out, with its reason in the job's log and message, and stays waiting; when none can, the
retraining is refused (409). The supervisor runs ``bot.retrain`` on the others: written as
training data (or refused, with Rasa's reasons, ``data/`` unchanged), trained, and proven
against the live model. Its output is pushed line by line to trainers as ``retrain_progress``,
and the outcome as ``retrain_finished``; :meth:`Retraining.state` shows the same. The
corrections are marked exported, the new model recorded as a candidate with its proof, and each
correction it gets right linked to it (``fixed_by_model``). A gateway that restarts during a
retraining follows it to its end through the supervisor's record (:meth:`Retraining.recover`).
With several gateway nodes the running or last retraining, its log included, is kept in the
nodes' Redis as it goes (:meth:`Cluster.put_job_state`), so every node shows it
(:meth:`Retraining.view`), not only the one that runs it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from contracts.correction_record import correction_id_of
from handoff.errors import Conflict
from handoff.learning.corrections import export_records
from handoff.conversation.cluster import Cluster, JobLease, LocalCluster
from handoff.conversation.instruments import Instruments
from handoff.learning.jobs import (
    Outcome,
    State,
    TrainerNotifier,
    job_seconds,
    job_view,
    now,
    outcome,
    parse_time,
)
from handoff.learning.supervisor import (
    Supervisor,
    SupervisorError,
    SupervisorRefused,
    need_supervisor,
)
from handoff.settings import default_node_id
from handoff.store import AuditEntry, Correction, ModelVersion, Store

__all__ = ["RetrainJob", "Retraining", "proof_line"]

log = logging.getLogger(__name__)
LOG_LINES = 400  # the lines of a retraining's output kept for GET /api/retrain
# How long a retraining waits for the tracker events of a correction accepted a moment ago
# (fetched from Rasa after its step commits) before leaving it out as not ready.
PENDING_WAIT = 10.0


@dataclass
class RetrainJob:
    """The running or last retraining, as trainers see it (:meth:`to_json`)."""

    id: str
    started_by: str
    started_at: str
    corrections: list[int]  # the corrections sent to the writer
    against: str | None  # the live model it is proven against
    finetune: bool
    left_out: dict[int, str] = field(default_factory=dict)  # correction id -> why
    state: State = "running"
    finished_at: str | None = None
    report: Any = None  # bot.retrain's report, once it ended
    model_id: str | None = None
    message: str | None = None

    @classmethod
    def new(cls, by: str, corrections: list[int], against: str, finetune: bool,
            left_out: dict[int, str]) -> RetrainJob:
        return cls(id=f"retrain-{now():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
                   started_by=by, started_at=now().isoformat(), corrections=corrections,
                   against=against, finetune=finetune, left_out=left_out)

    @classmethod
    def from_audit(cls, entry: AuditEntry) -> RetrainJob:
        """The job its ``retrain_started`` audit entry describes (after a restart)."""
        details = entry.details or {}
        return cls(id=(entry.target or "").removeprefix("retrain:"), started_by=entry.actor,
                   started_at=entry.created_at.isoformat(),
                   corrections=[int(i) for i in details.get("corrections", ())],
                   against=details.get("against"), finetune=bool(details.get("finetune")),
                   left_out={int(i): str(why) for i, why in
                             (details.get("left_out") or {}).items()})

    def audit_details(self) -> dict[str, Any]:
        return {"corrections": self.corrections, "finetune": self.finetune,
                "against": self.against,
                **({"left_out": {str(i): why for i, why in self.left_out.items()}}
                   if self.left_out else {})}

    def left_out_lines(self) -> list[str]:
        return [f"correction {cid} left out: {why}" for cid, why in sorted(self.left_out.items())]

    def finish(self, ended: Outcome, report: Any) -> None:
        self.state, self.report, self.finished_at = ended.state, report, now().isoformat()
        self.model_id = ended.model_id
        self.message = ended.message + (
            f" ({len(self.left_out)} correction(s) left out, not valid training data: see "
            "the log)" if self.left_out else "")

    def to_json(self, log_lines: list[str]) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "started_by": self.started_by,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "corrections": self.corrections, "against": self.against,
                "finetune": self.finetune, "report": self.report, "model_id": self.model_id,
                "message": self.message,
                "left_out": [{"id": cid, "reason": why}
                             for cid, why in sorted(self.left_out.items())],
                "log": log_lines}


class Retraining:
    """The retraining jobs, one at a time (see the module docstring). ``live`` gives the live
    model, recorded (:meth:`handoff.learning.deploys.Deploys.live`)."""

    def __init__(self, store: Store, supervisor: Supervisor | None, notifier: TrainerNotifier,
                 live: Callable[[], Awaitable[ModelVersion]],
                 instruments: Instruments | None = None, cluster: Cluster | None = None) -> None:
        self.store = store
        # with several gateway nodes, one retraining at a time among them all
        self.cluster: Cluster = cluster or LocalCluster(default_node_id())
        self.instruments = instruments or Instruments()
        self.supervisor = supervisor
        self.notifier = notifier
        self.live = live
        self.job: RetrainJob | None = None
        self._log: deque[str] = deque(maxlen=LOG_LINES)
        self._task: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None

    def state(self) -> dict[str, Any] | None:
        """This node's running or last retraining."""
        return None if self.job is None else self.job.to_json(list(self._log))

    async def view(self) -> dict[str, Any] | None:
        """The running or last retraining of any gateway node (:func:`job_view`)."""
        return await job_view(self.cluster, "retrain", self.state())

    async def _share(self) -> None:
        if self.cluster.shared and (state := self.state()) is not None:
            await self.cluster.put_job_state("retrain", state)

    async def start(self, by: str, finetune: bool) -> dict[str, Any]:
        """Start a retraining of the accepted corrections not trained on yet."""
        supervisor = need_supervisor(self.supervisor)
        if self.job is None and self._recovery is not None and not self._recovery.done():
            raise Conflict("the gateway is still checking on a retraining started before it "
                           "restarted: try again in a moment")
        if self.job is not None and self.job.state == "running":
            raise Conflict("a retraining is already running", job=self.job.id)
        found = await self._accepted()
        if self.job is not None and self.job.state == "running":  # started while we waited
            raise Conflict("a retraining is already running", job=self.job.id)
        if not found:
            raise Conflict("no accepted correction waits for training: accept some first")
        export = export_records(found)
        if not export.records:
            raise Conflict(
                f"none of the {len(found)} accepted correction(s) can become training data: "
                + "; ".join(f"correction {cid}: {why}" for cid, why in
                            sorted(export.refused.items()))
                + ". Reject them, or fix them and accept them again",
                left_out=[{"id": cid, "reason": why}
                          for cid, why in sorted(export.refused.items())])
        live = await self.live()
        lease = await self.cluster.claim_job("retrain", "a retraining")  # JobBusy: another node
        job = RetrainJob.new(by, export.ids, live.model_id, finetune, export.refused)
        self.job = job
        self._log.clear()
        self._log.extend(job.left_out_lines())
        await self.store.audit(by, "retrain_started", target=f"retrain:{job.id}",
                               details=job.audit_details())
        await self._share()
        self._task = asyncio.get_running_loop().create_task(
            self._run(supervisor, job, export.records, lease))
        return self.state() or {}

    async def _accepted(self) -> list[Correction]:
        """The accepted corrections not trained on yet. A correction made a moment ago may
        still have its tracker events on the way from Rasa (``pending``): the trainer who
        accepts it and retrains at once means it to be learnt, so it is waited for, up to
        :data:`PENDING_WAIT` seconds, before being left out as not ready."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PENDING_WAIT
        while True:
            found = await self.store.list_corrections(review_status="accepted",
                                                      exported=False, limit=None)
            if loop.time() >= deadline or all(c.tracker_status != "pending" for c in found):
                return found
            await asyncio.sleep(0.2)

    async def _line(self, job: RetrainJob, line: str) -> None:
        self._log.append(line)
        await self._share()
        await self.notifier.to_trainers("retrain_progress", {"id": job.id, "line": line})

    async def _run(self, supervisor: Supervisor, job: RetrainJob,
                   records: list[dict[str, Any]], lease: JobLease) -> None:
        try:
            await self._follow(supervisor, job, records)
        finally:
            await lease.release()

    async def _follow(self, supervisor: Supervisor, job: RetrainJob,
                      records: list[dict[str, Any]]) -> None:
        report: Any = None

        async def follow() -> Outcome:
            nonlocal report
            code: int | None = None
            for line in job.left_out_lines():
                await self.notifier.to_trainers("retrain_progress", {"id": job.id, "line": line})
            async for item in supervisor.retrain(records, job.finetune, job.id):
                if "log" in item:
                    await self._line(job, str(item["log"]))
                elif "report" in item:
                    report, code = item.get("report"), item.get("exit")
            return await self._record(job, report, code)

        ended = await outcome(f"retraining {job.id}", follow())
        await self._finished(job, ended, report)

    async def _finished(self, job: RetrainJob, ended: Outcome, report: Any) -> None:
        """Keep a retraining's outcome, audit it and tell the trainers."""
        job.finish(ended, report)
        self.instruments.retrain_seconds.labels(job.state).observe(
            job_seconds(job.started_at, job.finished_at))
        await self.store.audit(job.started_by, f"retrain_{job.state}",
                               target=f"retrain:{job.id}",
                               details={"model_id": job.model_id, "message": job.message})
        await self._share()
        await self.notifier.to_trainers("retrain_finished", self.state())

    async def _record(self, job: RetrainJob, report: Any, code: int | None) -> Outcome:
        """Mark the corrections and record the model a retraining reported."""
        if not isinstance(report, dict) or not isinstance(report.get("write"), dict):
            return Outcome("failed", f"the retraining ended (exit {code}) without a report: "
                                     "see its log")
        written = report["write"]
        if report.get("outcome") == "nothing_new":  # all of it is in the training data already
            await self.store.mark_corrections_exported(job.corrections, export_id=job.id)
            return Outcome("refused", "nothing new to learn, no model trained: "
                           f"{report.get('message') or 'every correction is in the data already'}"
                           "; the corrections are marked exported")
        if not written.get("ok"):
            reasons = "; ".join(str(e) for e in written.get("errors") or ()) or "see its log"
            return Outcome("refused", "the corrections were not written, and the training "
                                      f"data is unchanged: {reasons}")
        await self.store.mark_corrections_exported(job.corrections, export_id=job.id)
        model_id, model_file = report.get("model_id"), written.get("model")
        if not isinstance(model_id, str) or not isinstance(model_file, str):
            return Outcome("failed", "the data was written but no model came out of the "
                                     "training: see its log")
        proof = report.get("proof") if isinstance(report.get("proof"), dict) else None
        await self.store.record_model(
            model_id, model_file, trained_at=parse_time(report.get("trained_at")) or now(),
            retrained_by=job.started_by, corrections=job.corrections, proof=proof)
        failing = {correction_id_of(str(name)) for name in
                   (proof or {}).get("corrections", {}).get("failing", ())}
        await self.store.mark_corrections_fixed(
            [i for i in job.corrections if i not in failing], model_id)
        regressions = (proof or {}).get("regressions") or []
        return Outcome("succeeded", f"{model_file}: " + proof_line(proof) + (
            "" if not regressions else " — deploying it needs an override"), model_id=model_id)

    # ------------------------------------------------------------------ after a restart

    def recover(self) -> None:
        """At start-up, in the background: follow a retraining started before a restart
        (:meth:`recover_retrain`). :meth:`start` waits for it."""
        supervisor = self.supervisor
        if supervisor is None:
            return

        async def recover() -> None:
            try:
                await self.recover_retrain(supervisor)
            except Exception:  # noqa: BLE001 - it must not stop the gateway
                log.exception("recovering a retraining failed")

        self._recovery = asyncio.get_running_loop().create_task(recover())

    async def recover_retrain(self, supervisor: Supervisor,
                              poll: float = 2.0) -> RetrainJob | None:
        """After a restart: a retraining this gateway started and never saw end (its
        ``retrain_started`` audit entry has no outcome) is followed to its end through the
        supervisor's record and recorded as if the gateway had never stopped. One the
        supervisor no longer knows (it restarted too) is recorded as failed: its corrections
        are still waiting, and retraining them again writes each only once."""
        started = await self.store.list_audit(action="retrain_started", limit=1)
        if not started or self.job is not None:
            return None
        if any(e.action != "retrain_started" for e in
               await self.store.list_audit(target=started[0].target or "", limit=None)):
            return None  # it ended while the gateway ran
        job = RetrainJob.from_audit(started[0])
        self.job = job
        log.info("following %s, started before this gateway restarted", job.id)
        report: Any = None

        async def follow() -> Outcome:
            nonlocal report
            unanswered = 0
            while True:
                try:
                    last = await supervisor.last_retrain()
                except SupervisorRefused:
                    raise
                except SupervisorError:
                    unanswered += 1  # it may be starting too: give it a minute
                    if unanswered * poll >= 60:
                        raise
                    await asyncio.sleep(poll)
                    continue
                if last is None or last.get("job") != job.id:
                    return Outcome("failed", "the retraining did not finish: the supervisor "
                                             "stopped during it. Its corrections still wait: "
                                             "retrain again")
                self._log.clear()
                self._log.extend(job.left_out_lines())
                self._log.extend(str(line) for line in last.get("log") or ())
                await self._share()
                if last.get("state") == "finished":
                    report = last.get("report")
                    return await self._record(job, report, last.get("exit"))
                await asyncio.sleep(poll)

        await self._finished(job, await outcome(f"retraining {job.id}", follow()), report)
        return job

    async def close(self) -> None:
        for task in (self._task, self._recovery):
            if task is not None and not task.done():
                task.cancel()


def proof_line(proof: dict[str, Any] | None) -> str:
    """"corrected turns now right: 23 of 25; regressions: 0" from bot.prove's report."""
    if not proof:
        return "not proven (no model to compare with)"
    fixed = proof.get("corrections") or {}
    suite = proof.get("suite") or {}
    return (f"corrected turns now right: {fixed.get('after')} of {fixed.get('total')} "
            f"(before: {fixed.get('before')}); test stories: {suite.get('after')} of "
            f"{suite.get('total')} (before: {suite.get('before')}); regressions: "
            f"{len(proof.get('regressions') or [])}")
