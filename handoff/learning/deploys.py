"""Blue/green deploys: which model is live, and putting another one live without a stall.

The supervisor (:mod:`handoff.learning.supervisor`) runs the Rasa servers; the gateway decides
and keeps the record (``model_versions``):

* :meth:`Deploys.start_deploy` (``POST /api/models/{model_id}/deploy``, 202: it runs in the
  background, its end pushed as ``deploy_finished``) puts a candidate live without a stall: the
  supervisor starts a second Rasa server on it (same tracker store), or hands over the standby
  server a retraining proved that model on, still loaded; the gateway checks that
  server's ``/status`` names the model, warms it up, sends every new request there, waits for
  the requests still running on the old server, and only then has the old one stopped. A model
  whose proof shows regressions is deployed only with an ``override`` reason, kept in the audit
  log.
* :meth:`Deploys.start_rollback` (``POST /api/models/rollback``) puts the model live before
  back, the same way.

Each step is pushed to trainers as ``deploy_progress``; every agent gets ``model_deployed``.
Without a supervisor the live model is still known; deploying answers 503.

With several gateway nodes every node switches, not only the one that deploys
(:class:`~handoff.learning.rollout.Rollout`): the old server is stopped once every node alive
acknowledged (its own requests there drained) or the drain timeout passed, and the deploy's
progress and message name the nodes that did not. The running or last deploy is kept in the
nodes' Redis (:meth:`Cluster.put_job_state`) so that every node shows it (:meth:`Deploys.view`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Any

from handoff.conversation.cluster import Cluster, JobLease, LocalCluster
from handoff.conversation.rasa_client import RasaClient, RasaError
from handoff.conversation.triage_link import TriageLink
from handoff.errors import Conflict
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
from handoff.learning.rollout import Rollout
from handoff.learning.supervisor import (
    Supervisor,
    SupervisorError,
    SupervisorRefused,
    need_supervisor,
)
from handoff.settings import Settings
from handoff.store import ModelVersion, Store, to_json

__all__ = ["DeployJob", "Deploys"]

log = logging.getLogger(__name__)
# A fresh Rasa server's first predictions trace its TensorFlow graphs: about 2 s each, seen
# here, for the first customers after a switch. A few held turns (no action runs) on
# conversations of their own take that cost before any customer is sent there.
WARM_UP = ("hello", "where is my order 100002?", "what is your return policy?")


@dataclass
class DeployJob:
    """The running or last deploy, as trainers see it (:meth:`to_json`)."""

    model_id: str
    file: str
    state: State
    rollback: bool
    started_by: str
    started_at: str
    finished_at: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Deploys:
    """The live model and blue/green deploys (see the module docstring)."""

    def __init__(self, settings: Settings, store: Store, rasa: RasaClient,
                 supervisor: Supervisor | None, notifier: TrainerNotifier,
                 triage: TriageLink | None, instruments: Instruments | None = None,
                 cluster: Cluster | None = None) -> None:
        self.settings = settings
        # with several gateway nodes, one deploy at a time among them all
        self.cluster: Cluster = cluster or LocalCluster(settings.node_id)
        self.instruments = instruments or Instruments()
        self.store = store
        self.rasa = rasa
        self.supervisor = supervisor
        self.notifier = notifier
        self.triage = triage
        self.job: DeployJob | None = None  # the running or last deploy
        self._task: asyncio.Task[None] | None = None
        self._live_task: asyncio.Task[None] | None = None
        self._deploying = asyncio.Lock()
        self.rollout = Rollout(self.cluster, rasa, supervisor, secret=settings.jwt_secret)
        self._unconfirmed: list[str] = []  # nodes that did not confirm the last switch

    # ------------------------------------------------------------------ the live model

    async def start(self) -> None:
        """At start-up: use the Rasa server the supervisor says is live (it may have switched
        while the gateway was down), and record its model in the background: a Rasa that is
        slow or down must not hold up the gateway (it is recorded later, :meth:`live`)."""
        await self.rollout.reconcile()
        self.rollout.start()  # several nodes: the other nodes' deploys switch this one too
        self._live_task = asyncio.get_running_loop().create_task(self._record_live())

    async def _record_live(self) -> None:
        try:
            await self.live()
        except RasaError as exc:
            log.warning("the live model is not known yet: %s", exc.message)

    async def live(self) -> ModelVersion:
        """The live model as the Rasa server in service reports it, recorded if new."""
        status = await self.rasa.status()
        model_id = status.get("model_id")
        if not isinstance(model_id, str) or not model_id:
            raise RasaError("Rasa's /status names no model")
        known = await self.store.live_model()
        if known is not None and known.model_id == model_id:
            return known
        await self.store.record_model(model_id, PurePath(str(status.get("model_file"))).name)
        return await self.store.set_live_model(model_id, deployed_by="system",
                                               details={"found_live": True})

    async def discover(self) -> None:
        """Record the models the supervisor has that the gateway does not know yet (trained by
        ``make retrain`` or by hand), as candidates without a proof."""
        if self.supervisor is None:
            return
        try:
            found = (await self.supervisor.status()).get("models") or []
        except SupervisorError as exc:
            log.warning("cannot list the supervisor's models: %s", exc.message)
            return
        known = {m.model_id for m in await self.store.list_models(limit=10_000)}
        for model in found:
            model_id, file = model.get("model_id"), model.get("file")
            if isinstance(model_id, str) and isinstance(file, str) and model_id not in known:
                await self.store.record_model(model_id, file,
                                              trained_at=parse_time(model.get("trained_at")))

    # ------------------------------------------------------------------ deploying

    async def _checked(self, model_id: str, override: str | None,
                       rollback: bool) -> tuple[ModelVersion, ModelVersion, list[str]]:
        """The model to deploy, the live one and the proof's regressions, or why not."""
        version = await self.store.get_model(model_id)
        live = await self.live()
        if live.model_id == model_id:
            raise Conflict(f"{version.file} is already live")
        regressions = list((version.proof or {}).get("regressions") or [])
        if regressions and not rollback and not override:
            raise Conflict(f"{version.file} gets {len(regressions)} test stor"
                           f"{'y' if len(regressions) == 1 else 'ies'} wrong that the live "
                           "model gets right: deploy it only with an override reason",
                           regressions=regressions)
        return version, live, regressions

    def state(self) -> dict[str, Any] | None:
        """This node's running or last deploy."""
        return None if self.job is None else self.job.to_json()

    async def view(self) -> dict[str, Any] | None:
        """The running or last deploy of any gateway node (:func:`job_view`)."""
        return await job_view(self.cluster, "deploy", self.state())

    async def _share(self, job: DeployJob) -> None:
        await self.cluster.put_job_state("deploy", job.to_json())

    def _running(self) -> bool:
        return self.job is not None and self.job.state == "running"

    async def start_deploy(self, model_id: str, by: str, override: str | None = None,
                           rollback: bool = False) -> dict[str, Any]:
        """Check, then deploy in the background (a model loads for tens of seconds: longer
        than an HTTP request should wait). Progress as ``deploy_progress``, the end as
        ``deploy_finished`` (and ``model_deployed`` to every agent)."""
        need_supervisor(self.supervisor)
        if self._deploying.locked() or self._running():
            raise Conflict("a deploy is already running")
        version, _, _ = await self._checked(model_id, override, rollback)
        if self._running():  # started while we checked
            raise Conflict("a deploy is already running")
        lease = await self.cluster.claim_job("deploy", "a deploy")  # JobBusy: another node
        self.job = DeployJob(model_id=model_id, file=version.file, state="running",
                             rollback=rollback, started_by=by, started_at=now().isoformat())
        await self.store.audit(by, "model_deploy_started", target=f"model:{model_id}",
                               details={"override": override, "rollback": rollback})
        await self._share(self.job)
        self._task = asyncio.get_running_loop().create_task(
            self._deploy_job(self.job, override, lease))
        return self.job.to_json()

    async def _deploy_job(self, job: DeployJob, override: str | None, lease: JobLease) -> None:
        async def deploy() -> Outcome:
            version = await self.deploy(job.model_id, job.started_by, override, job.rollback)
            return Outcome("succeeded", f"{version.file} is live" + self._unconfirmed_note())

        try:
            ended = await outcome(f"deploying {job.model_id}", deploy())
            job.state, job.message = ended.state, ended.message
            job.finished_at = now().isoformat()
            await self._share(job)  # before the lease goes: no node reads it as cut off
        finally:
            await lease.release()
        self.instruments.deploy_seconds.labels(job.state).observe(
            job_seconds(job.started_at, job.finished_at))
        if ended.state == "failed":
            await self.store.audit(job.started_by, "model_deploy_failed",
                                   target=f"model:{job.model_id}",
                                   details={"message": ended.message})
        await self.notifier.to_trainers("deploy_finished", job.to_json())

    async def deploy(self, model_id: str, by: str, override: str | None = None,
                     rollback: bool = False) -> ModelVersion:
        """Put ``model_id`` live, blue/green (see the module docstring)."""
        supervisor = need_supervisor(self.supervisor)
        async with self._deploying:
            self._unconfirmed = []
            version, live, regressions = await self._checked(model_id, override, rollback)
            await self._progress(model_id, f"starting a Rasa server on {version.file}")
            candidate = await supervisor.start(version.file)
            url, port = str(candidate.get("url")), int(candidate.get("port") or 0)
            if candidate.get("reused"):
                await self._progress(model_id, f"the standby server {url} the retraining "
                                               "proved it on has it loaded already")
            try:
                status = await self.rasa.status(url)
            except RasaError as exc:
                await supervisor.discard(port)
                raise SupervisorRefused(f"the new Rasa server does not answer: {exc.message}"
                                        ) from exc
            if status.get("model_id") != model_id:
                await supervisor.discard(port)
                raise SupervisorRefused(f"the new Rasa server serves {status.get('model_id')}, "
                                        f"not {model_id}: nothing changed")
            await self._progress(model_id, "warming the new server up")
            for n, text in enumerate(WARM_UP):
                try:
                    await self.rasa.turn(f"deploy-warm-up-{model_id}-{n}", text, {},
                                         hold=True, base_url=url)
                except RasaError as exc:
                    await supervisor.discard(port)
                    raise SupervisorRefused(f"the new Rasa server failed a turn: {exc.message}"
                                            ) from exc
            old = self.rasa.switch(url)
            await self._progress(model_id, f"{version.file} serves every new request "
                                           f"({url}); waiting for those still on {old}")
            timeout = self.settings.deploy_drain_timeout
            self.rollout.deploying = True
            try:  # this node's requests drain while the other nodes switch and drain theirs
                drained, self._unconfirmed = await asyncio.gather(
                    self.rasa.drained(old, timeout), self.rollout.switch_others(url, timeout))
                if self._unconfirmed:
                    await self._progress(model_id, "not confirmed by every gateway node"
                                         + self._unconfirmed_note() + f": stopping {old} now")
                elif self.cluster.shared:
                    await self._progress(model_id, "every gateway node alive sends its "
                                                   f"requests to {url}")
                await supervisor.promote(port)
            finally:
                self.rollout.deploying = False
            version = await self.store.set_live_model(
                model_id, deployed_by=by, override=override,
                details={"previous": live.model_id, "url": url, "drained": drained,
                         "rollback": rollback, "regressions": regressions,
                         **({"unconfirmed": self._unconfirmed} if self._unconfirmed else {})})
        if self.triage is not None:
            if self.triage.model_changed(model_id):
                await self.triage.rebuild()  # re-fits the thresholds too (fitted mode)
            else:  # not seen in an answer yet: the thresholds still follow the new model
                await self.triage.model_live(model_id)
        await self._progress(model_id, f"{version.file} is live")
        await self.notifier.to_agents("model_deployed", {"model": to_json(version),
                                                         "rollback": rollback})
        return version

    async def start_rollback(self, by: str) -> dict[str, Any]:
        """Deploy the model that was live before the current one (no regression check: it
        was live already)."""
        need_supervisor(self.supervisor)
        live = await self.live()
        before = [m for m in await self.store.list_models(limit=500)
                  if m.status == "retired" and m.deployed_at is not None]
        if not before:
            raise Conflict(f"{live.file} is the only model that has been live")
        previous = max(before, key=lambda m: m.deployed_at or now())
        return await self.start_deploy(previous.model_id, by, rollback=True)

    def _unconfirmed_note(self) -> str:
        if not self._unconfirmed:
            return ""
        return (f" (gateway node(s) {', '.join(self._unconfirmed)} did not confirm the switch "
                f"within {self.settings.deploy_drain_timeout:g} s: they switch when the old "
                "server refuses them)")

    async def _progress(self, model_id: str, line: str) -> None:
        log.info("deploy %s: %s", model_id, line)
        await self.notifier.to_trainers("deploy_progress", {"model_id": model_id, "line": line})

    async def close(self) -> None:
        await self.rollout.close()
        for task in (self._task, self._live_task):
            if task is not None and not task.done():
                task.cancel()
