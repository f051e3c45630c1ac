"""Retrain and deploy from the console: the trainers' models API and the blue/green switch.

The supervisor (``bot/control.py``, started by ``python -m bot.serve``) runs the Rasa servers
and the retraining; the gateway decides and keeps the record (``model_versions``):

* ``POST /api/retrain`` exports the accepted corrections not trained on yet and has the
  supervisor run ``bot.retrain`` on them: written as training data (or refused, with Rasa's
  reasons, ``data/`` unchanged), trained, and proven against the live model. Its output is
  pushed line by line to trainers as ``retrain_progress`` on ``/agent``, and the outcome as
  ``retrain_finished``; ``GET /api/retrain`` shows the same. The corrections are marked
  exported, the new model recorded as a candidate with its proof, and each correction it gets
  right linked to it (``fixed_by_model``). A gateway that restarts during a retraining follows
  it to its end through the supervisor's record (:meth:`Deploys.recover_retrain`).
* ``POST /api/models/{model_id}/deploy`` (202: it runs in the background, its end pushed as
  ``deploy_finished``) puts a candidate live without a stall: the supervisor
  starts a second Rasa server on it (same tracker store), the gateway checks that server's
  ``/status`` names the model, sends every new request there, waits for the requests still
  running on the old server, and only then has the old one stopped. A model whose proof shows
  regressions is deployed only with an ``override`` reason, kept in the audit log.
* ``POST /api/models/rollback`` puts the model live before back, the same way.

Each step is pushed to trainers as ``deploy_progress``; every agent gets ``model_deployed``.
Without ``HANDOFF_SUPERVISOR_URL`` the list still shows the live model; retraining and
deploying answer 503.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any, ClassVar, Protocol

import aiohttp
from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from handoff.web.http import json_body, user_of
from handoff.learning.corrections import export_record
from handoff.errors import BadRequest, Conflict, HandoffError, NotFound
from handoff.conversation.rasa_client import RasaClient, RasaError
from handoff.settings import Settings
from handoff.store import ModelVersion, Store, to_json
from handoff.conversation.triage_link import TriageLink

__all__ = ["Deploys", "Supervisor", "SupervisorError", "SupervisorRefused",
           "register_models_api"]

log = logging.getLogger(__name__)
LOG_LINES = 400  # the lines of a retraining's output kept for GET /api/retrain
MAX_OVERRIDE = 1000
_CORRECTION_STORY = re.compile(r"^correction (\d+):")
# A fresh Rasa server's first predictions trace its TensorFlow graphs: about 2 s each, seen
# here, for the first customers after a switch. A few held turns (no action runs) on
# conversations of their own take that cost before any customer is sent there.
WARM_UP = ("hello", "where is my order 100002?", "what is your return policy?")


class TrainerNotifier(Protocol):
    """Where the deploys' pushes go (the Socket.IO server, in the web wing)."""

    async def to_trainers(self, event: str, payload: Any) -> None: ...

    async def to_agents(
        self, event: str, payload: Any, agent_ids: Sequence[str] | None = None
    ) -> None: ...


class SupervisorError(HandoffError):
    """The supervisor is not configured or not answering."""

    status: ClassVar[int] = 503
    code: ClassVar[str] = "supervisor_unavailable"


class SupervisorRefused(SupervisorError):
    """The supervisor answered with an error (a Rasa server that did not start...)."""

    status = 502
    code = "supervisor_refused"


def _refusal(status: int, data: dict[str, Any], default: str) -> HandoffError:
    message = str(data.get("message") or default)
    if status == 409:  # another deploy or retraining runs
        return Conflict(message, supervisor_error=data.get("error"))
    return SupervisorRefused(message, supervisor_error=data.get("error"))


class Supervisor:
    """The client of the supervisor's control API (``bot/control.py``)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}

    async def _call(self, method: str, path: str, body: Any = None,
                    timeout: float = 30.0) -> dict[str, Any]:
        try:
            async with aiohttp.ClientSession(headers=self._headers) as http, http.request(
                    method, self.base_url + path, json=body,
                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                data = _object(await resp.text())
                if resp.status >= 400:
                    raise _refusal(resp.status, data, f"the supervisor answered {resp.status}")
                return data
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise SupervisorError(f"the supervisor at {self.base_url} is not answering "
                                  f"({type(exc).__name__})") from exc

    async def status(self, timeout: float = 30.0) -> dict[str, Any]:
        return await self._call("GET", "/rasa", timeout=timeout)

    async def start(self, model_file: str) -> dict[str, Any]:
        return await self._call("POST", "/rasa/start", {"model": model_file}, timeout=900)

    async def promote(self, port: int) -> dict[str, Any]:
        return await self._call("POST", "/rasa/promote", {"port": port}, timeout=60)

    async def discard(self, port: int) -> dict[str, Any]:
        return await self._call("POST", "/rasa/discard", {"port": port}, timeout=60)

    async def last_retrain(self) -> dict[str, Any] | None:
        """The supervisor's running or last retraining (``{"job", "state", "report", "exit",
        "log"}``), None if it has run none."""
        try:
            return await self._call("GET", "/retrain", timeout=10)
        except SupervisorRefused as exc:
            if exc.details.get("supervisor_error") == "no_retraining":
                return None
            raise

    async def retrain(self, corrections: list[dict[str, Any]], finetune: bool,
                      job: str) -> AsyncIterator[dict[str, Any]]:
        """The retraining's newline-delimited JSON items as they come."""
        try:
            async with aiohttp.ClientSession(headers=self._headers) as http, http.post(
                    self.base_url + "/retrain",
                    json={"corrections": corrections, "finetune": finetune, "job": job},
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=1800)) as resp:
                if resp.status >= 400:
                    raise _refusal(resp.status, _object(await resp.text()),
                                   "the supervisor refused the retraining")
                async for raw in resp.content:
                    item = _object(raw.decode("utf-8", errors="replace"))
                    if item:
                        yield item
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise SupervisorError(f"the supervisor at {self.base_url} is not answering "
                                  f"({type(exc).__name__})") from exc


def _object(text: str) -> dict[str, Any]:
    try:
        data = jsonlib.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _time(value: Any) -> datetime | None:
    """Rasa's ``trained_at`` (ISO 8601, naive local time of the trainer: taken as UTC)."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class Deploys:
    """Retraining jobs and blue/green deploys (see the module docstring)."""

    def __init__(self, settings: Settings, store: Store, rasa: RasaClient,
                 notifier: TrainerNotifier, triage: TriageLink | None) -> None:
        self.settings = settings
        self.store = store
        self.rasa = rasa
        self.notifier = notifier
        self.triage = triage
        self.supervisor = (Supervisor(settings.supervisor_url, settings.rasa_token)
                           if settings.supervisor_url else None)
        self.job: dict[str, Any] | None = None  # the running or last retraining
        self._log: deque[str] = deque(maxlen=LOG_LINES)
        self._task: asyncio.Task[None] | None = None
        self.deploy_job: dict[str, Any] | None = None  # the running or last deploy
        self._deploy_task: asyncio.Task[None] | None = None
        self._live_task: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[dict[str, Any]] | None = None
        self._deploying = asyncio.Lock()

    def _need_supervisor(self) -> Supervisor:
        if self.supervisor is None:
            raise SupervisorError("retraining and deploying need the supervisor "
                                  "(HANDOFF_SUPERVISOR_URL; `make run` sets it)")
        return self.supervisor

    async def _to_trainers(self, event: str, payload: Any) -> None:
        await self.notifier.to_trainers(event, payload)

    # ------------------------------------------------------------------ the live model

    async def start(self) -> None:
        """At start-up: use the Rasa server the supervisor says is live (it may have switched
        while the gateway was down), and record its model in the background: a Rasa that is
        slow or down must not hold up the gateway (it is recorded later, :meth:`live`)."""
        if self.supervisor is not None:
            try:
                live = (await self.supervisor.status(timeout=5)).get("live") or {}
                if isinstance(live.get("url"), str) and live["url"] != self.rasa.base_url:
                    log.info("the supervisor's live Rasa is %s: using it", live["url"])
                    self.rasa.switch(live["url"])
            except SupervisorError as exc:
                log.warning("%s; using %s", exc.message, self.rasa.base_url)
        loop = asyncio.get_running_loop()
        self._live_task = loop.create_task(self._record_live())
        if self.supervisor is not None:
            self._recovery = loop.create_task(_outcome(
                "recovering a retraining", self.recover_retrain(self.supervisor)))

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
                                              trained_at=_time(model.get("trained_at")))

    # ------------------------------------------------------------------ retraining

    def retrain_state(self) -> dict[str, Any] | None:
        return None if self.job is None else {**self.job, "log": list(self._log)}

    async def retrain(self, by: str, finetune: bool) -> dict[str, Any]:
        """Start a retraining of the accepted corrections not trained on yet."""
        supervisor = self._need_supervisor()
        if self.job is None and self._recovery is not None and not self._recovery.done():
            raise Conflict("the gateway is still checking on a retraining started before it "
                           "restarted: try again in a moment")
        if self.job is not None and self.job["state"] == "running":
            raise Conflict("a retraining is already running", job=self.job["id"])
        found = await self.store.list_corrections(review_status="accepted", exported=False,
                                                  limit=None)
        if not found:
            raise Conflict("no accepted correction waits for training: accept some first")
        live = await self.live()
        self.job = {"id": f"retrain-{_now():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
                    "state": "running", "started_by": by, "started_at": _now().isoformat(),
                    "finished_at": None, "corrections": [c.id for c in found],
                    "against": live.model_id, "finetune": finetune, "report": None,
                    "model_id": None, "message": None}
        self._log.clear()
        await self.store.audit(by, "retrain_started", target=f"retrain:{self.job['id']}",
                               details={"corrections": self.job["corrections"],
                                        "finetune": finetune, "against": live.model_id})
        records = [export_record(c) for c in found]
        self._task = asyncio.get_running_loop().create_task(
            self._run(supervisor, dict(self.job), records))
        return self.retrain_state() or {}

    async def _run(self, supervisor: Supervisor, job: dict[str, Any],
                   records: list[dict[str, Any]]) -> None:
        async def follow() -> dict[str, Any]:
            code: int | None = None
            async for item in supervisor.retrain(records, bool(job["finetune"]), job["id"]):
                if "log" in item:
                    line = str(item["log"])
                    self._log.append(line)
                    await self._to_trainers("retrain_progress", {"id": job["id"], "line": line})
                elif "report" in item:
                    job["report"], code = item.get("report"), item.get("exit")
            return await self._record(job, job.get("report"), code)

        await self._finished(job, await _outcome(f"retraining {job['id']}", follow()))

    async def _finished(self, job: dict[str, Any], outcome: dict[str, Any]) -> None:
        """Keep a retraining's outcome, audit it and tell the trainers."""
        assert self.job is not None
        self.job.update(outcome, finished_at=_now().isoformat(), report=job.get("report"))
        await self.store.audit(job["started_by"], f"retrain_{self.job['state']}",
                               target=f"retrain:{job['id']}",
                               details={"model_id": self.job.get("model_id"),
                                        "message": self.job.get("message")})
        await self._to_trainers("retrain_finished", self.retrain_state())

    async def _record(self, job: dict[str, Any], report: Any,
                      code: int | None) -> dict[str, Any]:
        """Mark the corrections and record the model a retraining reported."""
        if not isinstance(report, dict) or not isinstance(report.get("write"), dict):
            return {"state": "failed", "message": f"the retraining ended (exit {code}) "
                                                  "without a report: see its log"}
        written = report["write"]
        if not written.get("ok"):
            reasons = "; ".join(str(e) for e in written.get("errors") or ()) or "see its log"
            return {"state": "refused", "message": f"the corrections were not written, and "
                                                   f"the training data is unchanged: {reasons}"}
        await self.store.mark_corrections_exported(job["corrections"], export_id=job["id"])
        model_id, model_file = report.get("model_id"), written.get("model")
        if not isinstance(model_id, str) or not isinstance(model_file, str):
            return {"state": "failed", "message": "the data was written but no model came "
                                                  "out of the training: see its log"}
        proof = report.get("proof") if isinstance(report.get("proof"), dict) else None
        await self.store.record_model(
            model_id, model_file, trained_at=_time(report.get("trained_at")) or _now(),
            retrained_by=job["started_by"], corrections=job["corrections"], proof=proof)
        failing = {int(m.group(1)) for name in (proof or {}).get("corrections", {}).get(
            "failing", ()) if (m := _CORRECTION_STORY.match(str(name)))}
        await self.store.mark_corrections_fixed(
            [i for i in job["corrections"] if i not in failing], model_id)
        regressions = (proof or {}).get("regressions") or []
        return {"state": "succeeded", "model_id": model_id, "message": (
            f"{model_file}: " + _proof_line(proof) + (
                "" if not regressions else " — deploying it needs an override"))}

    async def recover_retrain(self, supervisor: Supervisor,
                              poll: float = 2.0) -> dict[str, Any]:
        """After a restart: a retraining this gateway started and never saw end (its
        ``retrain_started`` audit entry has no outcome) is followed to its end through the
        supervisor's record and recorded as if the gateway had never stopped. One the
        supervisor no longer knows (it restarted too) is recorded as failed: its corrections
        are still waiting, and retraining them again writes each only once."""
        started = await self.store.list_audit(action="retrain_started", limit=1)
        if not started or self.job is not None:
            return {}
        entry = started[0]
        target = entry.target or ""
        if any(e.action != "retrain_started" for e in
               await self.store.list_audit(target=target, limit=None)):
            return {}  # it ended while the gateway ran
        details = entry.details or {}
        job: dict[str, Any] = {
            "id": target.removeprefix("retrain:"), "state": "running",
            "started_by": entry.actor, "started_at": entry.created_at.isoformat(),
            "finished_at": None, "corrections": [int(i) for i in details.get("corrections", ())],
            "against": details.get("against"), "finetune": bool(details.get("finetune")),
            "report": None, "model_id": None, "message": None}
        self.job = job
        log.info("following %s, started before this gateway restarted", job["id"])

        async def follow() -> dict[str, Any]:
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
                if last is None or last.get("job") != job["id"]:
                    return {"state": "failed", "message": (
                        "the retraining did not finish: the supervisor stopped during it. Its "
                        "corrections still wait: retrain again")}
                self._log.clear()
                self._log.extend(str(line) for line in last.get("log") or ())
                if last.get("state") == "finished":
                    job["report"] = last.get("report")
                    return await self._record(job, last.get("report"), last.get("exit"))
                await asyncio.sleep(poll)

        await self._finished(job, await _outcome(f"retraining {job['id']}", follow()))
        return self.job

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

    def deploy_state(self) -> dict[str, Any] | None:
        return None if self.deploy_job is None else dict(self.deploy_job)

    async def start_deploy(self, model_id: str, by: str, override: str | None = None,
                           rollback: bool = False) -> dict[str, Any]:
        """Check, then deploy in the background (a model loads for tens of seconds: longer
        than an HTTP request should wait). Progress as ``deploy_progress``, the end as
        ``deploy_finished`` (and ``model_deployed`` to every agent)."""
        self._need_supervisor()
        if self._deploying.locked() or (self.deploy_job or {}).get("state") == "running":
            raise Conflict("a deploy is already running")
        version, _, _ = await self._checked(model_id, override, rollback)
        if (self.deploy_job or {}).get("state") == "running":  # started while we checked
            raise Conflict("a deploy is already running")
        self.deploy_job = {"model_id": model_id, "file": version.file, "state": "running",
                           "rollback": rollback, "started_by": by,
                           "started_at": _now().isoformat(), "finished_at": None,
                           "message": None}
        await self.store.audit(by, "model_deploy_started", target=f"model:{model_id}",
                               details={"override": override, "rollback": rollback})
        self._deploy_task = asyncio.get_running_loop().create_task(
            self._deploy_job(model_id, by, override, rollback))
        return dict(self.deploy_job)

    async def _deploy_job(self, model_id: str, by: str, override: str | None,
                          rollback: bool) -> None:
        async def deploy() -> dict[str, Any]:
            version = await self.deploy(model_id, by, override, rollback)
            return {"state": "succeeded", "message": f"{version.file} is live"}

        outcome = await _outcome(f"deploying {model_id}", deploy())
        assert self.deploy_job is not None
        self.deploy_job.update(outcome, finished_at=_now().isoformat())
        if outcome["state"] == "failed":
            await self.store.audit(by, "model_deploy_failed", target=f"model:{model_id}",
                                   details={"message": outcome["message"]})
        await self._to_trainers("deploy_finished", self.deploy_state())

    async def deploy(self, model_id: str, by: str, override: str | None = None,
                     rollback: bool = False) -> ModelVersion:
        """Put ``model_id`` live, blue/green (see the module docstring)."""
        supervisor = self._need_supervisor()
        async with self._deploying:
            version, live, regressions = await self._checked(model_id, override, rollback)
            await self._progress(model_id, f"starting a Rasa server on {version.file}")
            candidate = await supervisor.start(version.file)
            url, port = str(candidate.get("url")), int(candidate.get("port") or 0)
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
            drained = await self.rasa.drained(old, self.settings.deploy_drain_timeout)
            await supervisor.promote(port)
            version = await self.store.set_live_model(
                model_id, deployed_by=by, override=override,
                details={"previous": live.model_id, "url": url, "drained": drained,
                         "rollback": rollback, "regressions": regressions})
        if self.triage is not None and self.triage.model_changed(model_id):
            await self.triage.rebuild()
        await self._progress(model_id, f"{version.file} is live")
        await self.notifier.to_agents("model_deployed", {"model": to_json(version),
                                                         "rollback": rollback})
        return version

    async def start_rollback(self, by: str) -> dict[str, Any]:
        """Deploy the model that was live before the current one (no regression check: it
        was live already)."""
        self._need_supervisor()
        live = await self.live()
        before = [m for m in await self.store.list_models(limit=500)
                  if m.status == "retired" and m.deployed_at is not None]
        if not before:
            raise Conflict(f"{live.file} is the only model that has been live")
        previous = max(before, key=lambda m: m.deployed_at or _now())
        return await self.start_deploy(previous.model_id, by, rollback=True)

    async def _progress(self, model_id: str, line: str) -> None:
        log.info("deploy %s: %s", model_id, line)
        await self._to_trainers("deploy_progress", {"model_id": model_id, "line": line})

    async def close(self) -> None:
        for task in (self._task, self._deploy_task, self._live_task, self._recovery):
            if task is not None and not task.done():
                task.cancel()


async def _outcome(what: str, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """How a background job ended, ``{state, message, ...}``: whatever it raised becomes a
    failure a trainer can read (it has no HTTP answer to carry the error)."""
    try:
        return await work
    except HandoffError as exc:
        return {"state": "failed", "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - a trainer must see it ended, and why
        log.exception("%s failed", what)
        return {"state": "failed", "message": f"{type(exc).__name__}: {exc}"}


def _proof_line(proof: dict[str, Any] | None) -> str:
    """"corrected turns now right: 23 of 25; regressions: 0" from bot.prove's report."""
    if not proof:
        return "not proven (no model to compare with)"
    fixed = proof.get("corrections") or {}
    suite = proof.get("suite") or {}
    return (f"corrected turns now right: {fixed.get('after')} of {fixed.get('total')} "
            f"(before: {fixed.get('before')}); test stories: {suite.get('after')} of "
            f"{suite.get('total')} (before: {suite.get('before')}); regressions: "
            f"{len(proof.get('regressions') or [])}")


def model_json(version: ModelVersion, live: str | None) -> dict[str, Any]:
    return {**to_json(version), "live": version.model_id == live,
            "summary": _proof_line(version.proof) if version.proof else None}


def register_models_api(app: Sanic[Any, Any], *, settings: Settings, store: Store,
                        deploys: Deploys) -> None:
    """Add the trainers' models endpoints to ``app`` (see the module docstring)."""

    async def trainer(request: Request) -> str:
        return (await user_of(request, store, settings, "trainer")).username

    @app.get("/api/models", name="models")
    async def _models(request: Request) -> HTTPResponse:
        await trainer(request)
        try:
            live: str | None = (await deploys.live()).model_id
        except RasaError:
            live = None
        await deploys.discover()
        versions = await store.list_models()
        return json({"live": live, "models": [model_json(v, live) for v in versions],
                     "retrain": deploys.retrain_state(), "deploy": deploys.deploy_state(),
                     "can_deploy": deploys.supervisor is not None})

    @app.post("/api/retrain", name="retrain")
    async def _retrain(request: Request) -> HTTPResponse:
        who = await trainer(request)
        body = json_body(request)
        finetune = body.get("finetune", False)
        if not isinstance(finetune, bool):
            raise BadRequest("'finetune' must be true or false")
        return json({"retrain": await deploys.retrain(who, finetune)}, status=202)

    @app.get("/api/retrain", name="retrain_state")
    async def _retrain_state(request: Request) -> HTTPResponse:
        await trainer(request)
        return json({"retrain": deploys.retrain_state()})

    @app.post("/api/models/<model_id:str>/deploy", name="deploy")
    async def _deploy(request: Request, model_id: str) -> HTTPResponse:
        who = await trainer(request)
        body = json_body(request)
        override = body.get("override")
        if override is not None and (not isinstance(override, str) or not override.strip()
                                     or len(override) > MAX_OVERRIDE):
            raise BadRequest(f"'override' must be a reason of 1 to {MAX_OVERRIDE} characters")
        try:
            await store.get_model(model_id)
        except NotFound:
            raise NotFound(f"no model {model_id}") from None
        job = await deploys.start_deploy(model_id, who, override.strip() if override else None)
        return json({"deploy": job}, status=202)

    @app.post("/api/models/rollback", name="rollback")
    async def _rollback(request: Request) -> HTTPResponse:
        who = await trainer(request)
        return json({"deploy": await deploys.start_rollback(who)}, status=202)
