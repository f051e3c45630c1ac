"""The supervisor's control API: blue/green Rasa servers and retraining.

``python -m bot.serve`` runs it (``--control-port``, default 5004) beside the servers it starts,
on the interface they listen on (``--interface``: the loopback unless gateway nodes on other
machines must reach them, docs/deploy.md).

Its one client is the handoff gateway (``HANDOFF_SUPERVISOR_URL``), which decides when to
switch: loading a model into a running Rasa server (``PUT /model``) blocks every request it
serves for tens of seconds, so a new model goes live on a *second* Rasa server that shares the
tracker store, and the gateway moves its traffic there once that server answers with the new
model (RASA-NOTES.md, docs/deploys.md).

Every request needs ``Authorization: Bearer <the Rasa token>``; answers are JSON, errors
``{"error", "message"}``.

* ``GET /rasa``: ``{"live": server, "candidate": server | null, "models": [model, ...]}``, where
  a server is ``{"url", "port", "model", "model_id"}`` and a model ``{"file", "model_id",
  "trained_at"}`` (the archives in ``models/``, newest first). A server's ``url`` has the
  host the gateway nodes call it by (:meth:`bot.processes.Stack.url`).
* ``POST /rasa/start {"model": "<file in models/>"}``: start a Rasa server on the idle port with
  that model; answers once it serves it (``server``, with ``"reused": true`` when it is the
  standby a retraining proved that model on, still up: nothing to load). 409 while another
  candidate exists, 404 for an unknown model, 502 when it did not start (with the end of its
  log).
* ``POST /rasa/standby {"model": "<file in models/>"}``: a retraining's standby server on the
  idle port with that model (the one in service), at the lower CPU priority; ``POST /rasa/load
  {"port", "model": "<path>"}`` has it load another archive (in ``models/`` or a retraining's
  candidate folder) with Rasa's ``PUT /model``: it serves nobody, so the load may block it. When
  the retraining keeps its model, the standby stays up, ``"role": "proven"``, for the deploy of
  that model; otherwise it is stopped (:meth:`Retrainer.run`). A server's ``role`` is ``live``,
  ``deploy`` (a deploy's candidate), ``proof`` (a retraining's standby) or ``proven``; a
  proven standby gives way to any other start.
* ``POST /rasa/promote {"port"}``: the candidate on that port becomes the live server (kept in
  ``var/live-model`` for the next start) and the old one is stopped; the gateway calls this
  after it has moved its traffic and its requests to the old server have finished.
* ``POST /rasa/discard {"port"}``: stop a candidate that will not go live.
* ``POST /retrain {"corrections": [...], "finetune": bool, "job": name}``: run
  ``python -m bot.retrain`` on the records (the corrections become training data, a model is
  trained and proven against the live one, on the standby server: ``--supervisor``). The
  answer streams newline-delimited JSON: ``{"log": line}`` while it runs, then
  ``{"report": {...}, "exit": code}`` (the report as ``bot.retrain`` prints it, plus the new
  model's ``model_id`` and ``trained_at``). 409 while another retraining runs. When the
  supervisor stops, a running retraining is interrupted (:meth:`Retrainer.stop`).
* ``GET /retrain``: the running or last retraining, ``{"job", "state": "running" | "finished",
  "report", "exit", "log": [its last lines]}`` (404 if none ran): a gateway that restarted
  during one records its outcome from here. The last one is kept in ``var/last-retrain.json``.

Standard library only, like :mod:`bot.serve`.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from bot.keeper import Keeper
from bot.model_runs import archive_metadata
from bot.processes import LOOPBACK, Service, Stack, StartupError
from bot.retrain import CANDIDATES_DIR
from bot.standby import TOKEN_ENV as STANDBY_TOKEN_ENV

MAX_BODY = 64 * 1024 * 1024
# Loading a model and training take every core they can get; the live server must keep
# answering meanwhile, so the second server loads, and retraining runs, at a lower priority.
BACKGROUND_NICE = 10
PROGRESS_EVERY = 1.0  # seconds between two progress-bar lines passed on
KEPT_LOG_LINES = 200  # of a retraining's output, for GET /retrain
LAST_RETRAIN = Path("var") / "last-retrain.json"  # in the project
_PROGRESS_BAR = re.compile(r"\d+%\|")


class ControlError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def model_metadata(path: Path) -> Dict[str, Any]:
    """``model_id`` and ``trained_at`` from a Rasa model archive's ``metadata.json``."""
    data = archive_metadata(path)
    return {"model_id": data.get("model_id"), "trained_at": data.get("trained_at")}


# What a server not yet live is for: a deploy's candidate, a retraining's standby proving its
# model, or a proven standby kept for the deploy of its model.
Role = str
ROLES = ("live", "deploy", "proof", "proven")


@dataclass
class Server:
    service: Service
    port: int
    model: Path
    model_id: Optional[str] = None
    role: Role = "live"
    url: str = ""  # as the gateway nodes call it

    def as_dict(self) -> Dict[str, Any]:
        return {"url": self.url, "port": self.port,
                "model": self.model.name, "model_id": self.model_id, "role": self.role}

    def moved(self, model: Path) -> None:
        """The server's model archive is now ``model`` (moved after it was loaded): a restart
        loads it from there."""
        argv = self.service.argv
        if "--model" in argv:
            argv[argv.index("--model") + 1] = str(model)
        self.model = model


class RasaPool:
    """The Rasa servers of a blue/green deploy: one live, at most one candidate, on two ports."""

    def __init__(self, stack: Stack, ports: Tuple[int, int], models_dir: Path,
                 state_file: Path, start_timeout: float = 300.0) -> None:
        self.stack = stack
        self.ports = ports
        self.models_dir = models_dir
        self.state_file = state_file
        self.start_timeout = start_timeout
        self.live: Optional[Server] = None
        self.candidate: Optional[Server] = None
        self._lock = threading.Lock()
        self._metadata: Dict[Tuple[str, float], Dict[str, Any]] = {}

    # ------------------------------------------------------------------ models

    def metadata(self, path: Path) -> Dict[str, Any]:
        key = (str(path), path.stat().st_mtime)
        if key not in self._metadata:
            self._metadata[key] = model_metadata(path)
        return self._metadata[key]

    def models(self) -> List[Dict[str, Any]]:
        paths = sorted(self.models_dir.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime,
                       reverse=True)
        return [{"file": p.name, **self.metadata(p)} for p in paths]

    def model_file(self, name: Any) -> Path:
        if not isinstance(name, str) or "/" in name or not name.endswith(".tar.gz"):
            raise ControlError(400, "bad_request", "'model' must be a model file name in models/")
        path = self.models_dir / name
        if not path.is_file():
            raise ControlError(404, "unknown_model", f"no model {name} in {self.models_dir}")
        return path

    # ------------------------------------------------------------------ servers

    def adopt(self, service: Service, port: int, model: Path) -> None:
        """The server :class:`~bot.processes.Stack` started becomes the live one."""
        self.live = Server(service, port, model, self.metadata(model)["model_id"], "live",
                           self.stack.url(port))
        self._remember(model)

    def status(self) -> Dict[str, Any]:
        with self._lock:
            return {"live": self.live.as_dict() if self.live else None,
                    "candidate": self.candidate.as_dict() if self.candidate else None,
                    "models": self.models()}

    def _busy(self) -> ControlError:
        assert self.candidate is not None
        if self.candidate.role == "proof":
            return ControlError(409, "standby_in_use",
                                f"a retraining proves its model on the standby server "
                                f":{self.candidate.port}: try again once it has finished")
        return ControlError(409, "deploy_in_progress",
                            f"a candidate already runs on :{self.candidate.port}")

    def _claim(self, model: Path, role: Role) -> Tuple[Server, Optional[Server]]:
        """A new server on the idle port for ``model`` (not started yet), and a proven
        standby it replaces (to be stopped). Call with the lock held."""
        stale = None
        if self.candidate is not None:
            if self.candidate.role != "proven":
                raise self._busy()
            stale, self.candidate = self.candidate, None
        assert self.live is not None
        port = self.ports[1] if self.live.port == self.ports[0] else self.ports[0]
        server = Server(self.stack.rasa_service(port, model, nice=BACKGROUND_NICE), port,
                        model, self.metadata(model)["model_id"], role, self.stack.url(port))
        self.candidate = server
        return server, stale

    def _start(self, server: Server, stale: Optional[Server]) -> None:
        if stale is not None:
            stale.service.stop()
        server.service.start()
        try:
            server.service.wait_until_ready(time.monotonic() + self.start_timeout)
        except StartupError as exc:
            server.service.stop()
            with self._lock:
                if self.candidate is server:
                    self.candidate = None
            raise ControlError(502, "rasa_start_failed", str(exc)) from None

    def start_candidate(self, name: Any) -> Dict[str, Any]:
        """A deploy's candidate on ``name``: the standby a retraining proved on that model when
        it still runs (``"reused": true``), else a new server on the idle port."""
        model = self.model_file(name)
        with self._lock:
            kept = self.candidate
            if kept is not None and kept.role == "proven" and kept.model == model:
                kept.role = "deploy"
                server, stale = kept, None
            else:
                kept = None
                server, stale = self._claim(model, "deploy")
        if kept is None:
            self._start(server, stale)
        _full_priority(server.service)  # loaded: from now on it serves customers
        return {**server.as_dict(), "reused": kept is not None}

    def start_standby(self, name: Any) -> Dict[str, Any]:
        """A retraining's standby: a server on the idle port with ``name`` (the model in
        service, whose results on new test stories the proof needs first), at the lower CPU
        priority; :meth:`load` then gives it the retraining's model."""
        model = self.model_file(name)
        with self._lock:
            server, stale = self._claim(model, "proof")
        self._start(server, stale)
        return server.as_dict()

    def _allowed(self, path: Any) -> Path:
        """A model archive a standby may load: in ``models/`` or in a retraining's candidate
        (``var/candidates/`` of the project)."""
        if not isinstance(path, str) or not path.endswith(".tar.gz"):
            raise ControlError(400, "bad_request", "'model' must be the path of a model archive")
        model = Path(path).resolve()
        roots = (self.models_dir.resolve(), (self.stack.project / CANDIDATES_DIR).resolve())
        if not any(root in model.parents for root in roots):
            raise ControlError(400, "bad_request",
                               f"a standby loads models from {self.models_dir} or "
                               f"{self.stack.project / CANDIDATES_DIR} only")
        if not model.is_file():
            raise ControlError(404, "unknown_model", f"no model {model}")
        return model

    def load(self, port: Any, path: Any) -> Dict[str, Any]:
        """Load another model into the retraining's standby on ``port`` (Rasa's ``PUT
        /model``: it serves nobody, so the load may block it); answers once it serves it."""
        model = self._allowed(path)
        with self._lock:
            server = self.candidate
            if server is None or server.port != port or server.role != "proof":
                raise ControlError(409, "no_standby", f"no retraining's standby runs on :{port}")
        url = self.stack.local_url(port)
        try:
            request = urllib.request.Request(
                f"{url}/model?token={urllib.parse.quote(self.stack.token)}", method="PUT",
                data=json.dumps({"model_file": str(model)}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=self.start_timeout):
                pass
        except (urllib.error.URLError, OSError) as exc:
            raise ControlError(502, "rasa_load_failed",
                               f"the standby on :{port} did not load {model.name}: {exc}"
                               ) from None
        server.model_id = self.metadata(model)["model_id"]
        server.moved(model)
        return server.as_dict()

    def keep(self, port: int, model: Path) -> Optional[Dict[str, Any]]:
        """The retraining's standby on ``port`` proved its model, now kept as ``model`` (in
        ``models/``): it stays up for the deploy of that model (:meth:`start_candidate`).
        None when it no longer serves that model (it is stopped then)."""
        with self._lock:
            server = self.candidate
            if server is None or server.port != port or server.role != "proof":
                return None
            if server.model_id != self.metadata(model)["model_id"]:
                self.candidate = None
            else:
                server.role = "proven"
                server.moved(model)
                return server.as_dict()
        server.service.stop()
        return None

    def drop_standby(self) -> Optional[int]:
        """Stop a retraining's standby that proved nothing worth keeping; its port, if any."""
        with self._lock:
            server = self.candidate
            if server is None or server.role != "proof":
                return None
            self.candidate = None
        server.service.stop()
        return server.port

    def promote(self, port: Any) -> Dict[str, Any]:
        with self._lock:
            if (self.candidate is None or self.candidate.port != port
                    or self.candidate.role != "deploy"):
                raise ControlError(409, "no_candidate", f"no deploy's candidate runs on :{port}")
            old, self.live, self.candidate = self.live, self.candidate, None
            self.live.role = "live"
            self._remember(self.live.model)
        if old is not None:
            old.service.stop()
        print(f"deployed {self.live.model.name} on :{self.live.port}"
              + (f"; stopped :{old.port}" if old else ""), flush=True)
        return {"live": self.live.as_dict(), "stopped": old.port if old else None}

    def discard(self, port: Any) -> Dict[str, Any]:
        with self._lock:
            if (self.candidate is None or self.candidate.port != port
                    or self.candidate.role == "proof"):
                raise ControlError(409, "no_candidate", f"no candidate runs on :{port}")
            server, self.candidate = self.candidate, None
        server.service.stop()
        return {"stopped": port}

    def exited(self) -> Optional[Service]:
        """The live server, when it has exited (a planned stop is never reported)."""
        with self._lock:
            live = self.live
        if live and live.service.process and live.service.process.poll() is not None:
            return live.service
        return None

    def stop(self) -> None:
        with self._lock:
            servers = [s for s in (self.candidate, self.live) if s is not None]
        for server in servers:
            server.service.stop()

    def _remember(self, model: Path) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(model.name + "\n")


def _full_priority(service: Service) -> None:
    """Give a server that has loaded its model its normal CPU priority back.
    Raising a priority needs privileges: without them it stays lower, which only matters
    while something else competes for the CPU."""
    if service.process is None:
        return
    try:
        os.setpriority(os.PRIO_PGRP, service.process.pid, 0)
    except (PermissionError, ProcessLookupError) as exc:
        print(f"the live Rasa server keeps its lower CPU priority ({exc})", file=sys.stderr)


class Retrainer:
    """One ``python -m bot.retrain`` at a time, its progress passed on line by line.

    It runs in a session of its own (a Ctrl-C meant for ``bot.serve`` must not cut it at a
    random point), so :meth:`stop` interrupts it deliberately when the supervisor stops."""

    def __init__(self, pool: RasaPool, project: Path, control_url: Optional[str] = None,
                 token: str = "", on_standby: bool = True) -> None:
        self.pool = pool
        self.project = project
        # Where the retraining asks for the standby server (this supervisor's control API,
        # with its token); without it, or with on_standby False, the retraining loads the
        # models it checks in its own process.
        self.control_url = control_url
        self.token = token
        self.on_standby = on_standby
        self._running = threading.Lock()
        self._process: Optional[subprocess.Popen[bytes]] = None
        # The running or last job, for a gateway that restarted during it (GET /retrain);
        # a finished one is kept in var/ across the supervisor's restarts too.
        self.record_file = project / LAST_RETRAIN
        self.last: Optional[Dict[str, Any]] = _json_or_none(_read(self.record_file))
        self._log: Deque[str] = deque(maxlen=KEPT_LOG_LINES)

    def status(self) -> Dict[str, Any]:
        """The running or last retraining: ``{"job", "state": "running" | "finished",
        "report", "exit", "log"}``; 404 when the supervisor has run none."""
        last = self.last
        if not isinstance(last, dict):
            raise ControlError(404, "no_retraining", "no retraining has run here")
        return {**last, "log": list(self._log) if last.get("state") == "running"
                else last.get("log", [])}

    def _finish(self, job: Optional[str], report: Any, code: Optional[int]) -> None:
        self.last = {"job": job, "state": "finished", "report": report, "exit": code,
                     "log": list(self._log)}
        try:
            self.record_file.parent.mkdir(parents=True, exist_ok=True)
            scratch = self.record_file.with_name(f".{self.record_file.name}.tmp")
            scratch.write_text(json.dumps(self.last), "utf-8")
            os.replace(scratch, self.record_file)
        except OSError as exc:
            print(f"cannot keep the retraining's outcome in {self.record_file}: {exc}",
                  file=sys.stderr)

    def command(self, records: Path, live_model: Path, finetune: bool) -> List[str]:
        argv = ["nice", "-n", str(BACKGROUND_NICE),
                sys.executable, "-m", "bot.retrain", "--corrections", str(records),
                "--project", str(self.project), "--in-service", str(live_model),
                "--models", str(self.pool.models_dir)]
        if self.control_url and self.on_standby:
            argv += ["--supervisor", self.control_url]
        return argv + (["--finetune"] if finetune else [])

    def _settle_standby(self, report: Any) -> None:
        """After a retraining: its standby stays up, as the proven server of its model, when
        the model was kept; otherwise it is stopped."""
        server = self.pool.candidate
        if server is None or server.role != "proof":
            return
        model = None
        if isinstance(report, dict) and report.get("outcome") == "written" and isinstance(
                report.get("write"), dict) and isinstance(report["write"].get("model"), str):
            model = self.pool.models_dir / report["write"]["model"]
        if model is None or not model.is_file() or self.pool.keep(server.port, model) is None:
            self.pool.drop_standby()
        else:
            print(f"the standby Rasa server :{server.port} keeps {model.name} loaded for its "
                  "deploy", flush=True)

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """Interrupt a running retraining and wait for it; None when none runs.

        SIGINT, not SIGTERM: Python turns it into KeyboardInterrupt, so the writer puts back
        any file it had replaced (``bot.corrections.writer.commit``) and the project's data
        is as before or wholly written; its corrections stay waiting in the gateway, which
        writes each only once when they are retrained. SIGKILL after ``timeout``."""
        process = self._process
        if process is None or process.poll() is not None:
            return None
        try:
            os.killpg(process.pid, signal.SIGINT)
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait()
        except ProcessLookupError:
            return process.wait()

    def run(self, corrections: List[Any], finetune: bool,
            emit: Callable[[Dict[str, Any]], None], job: Optional[str] = None) -> None:
        """Run one retraining, passing on its output; ``job`` is the caller's name for it,
        kept with its outcome (:meth:`status`)."""
        if not self._running.acquire(blocking=False):
            raise ControlError(409, "retrain_in_progress", "a retraining is already running")
        code: Optional[int] = None
        report: Any = None
        try:
            live = self.pool.live
            if live is None:
                raise ControlError(503, "no_live_model", "no Rasa server is live")
            self._log.clear()
            self.last = {"job": job, "state": "running", "report": None, "exit": None}

            def relay(item: Dict[str, Any]) -> None:  # and keep the last lines
                if "log" in item:
                    self._log.append(str(item["log"]))
                emit(item)

            with tempfile.TemporaryDirectory(prefix="retrain-") as tmp:
                records = Path(tmp) / "corrections.json"
                records.write_text(json.dumps(corrections), "utf-8")
                report_path = Path(tmp) / "report.json"
                argv = self.command(records, live.model, finetune)
                relay({"log": f"retraining on {len(corrections)} correction(s) against "
                               f"{live.model.name}"})
                with open(report_path, "wb") as report_out:
                    with subprocess.Popen(
                            argv, cwd=self.project, stdout=report_out, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, STANDBY_TOKEN_ENV: self.token}) as process:
                        self._process = process
                        assert process.stderr is not None
                        _pass_on(process.stderr, relay)
                        code = process.wait()
                report = _json_or_none(report_path.read_text("utf-8"))
            if isinstance(report, dict):
                model = (report.get("write") or {}).get("model") if isinstance(
                    report.get("write"), dict) else None
                if model:
                    report.update(self.pool.metadata(self.pool.models_dir / model))
        finally:
            self._settle_standby(report)
            if self.last is not None and self.last.get("state") == "running":
                self._finish(job, report, code)
            self._running.release()
        emit({"report": report, "exit": code})


def _pass_on(stream: Any, emit: Callable[[Dict[str, Any]], None]) -> None:
    """Rasa's and TensorFlow's output, one ``{"log"}`` per line; a progress bar redraws itself
    with carriage returns many times a second, so at most one of its lines a second."""
    last_bar = 0.0
    pending = b""
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = re.split(rb"[\r\n]", pending)
        for raw in lines:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            if _PROGRESS_BAR.search(line):
                now = time.monotonic()
                if now - last_bar < PROGRESS_EVERY and "100%" not in line:
                    continue
                last_bar = now
            emit({"log": line[:2000]})
    if pending.strip():
        emit({"log": pending.decode("utf-8", errors="replace").strip()[:2000]})


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except OSError:
        return ""


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class _ServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6  # an IPv6 interface (ThreadingHTTPServer's is IPv4)


def serve_control(pool: RasaPool, retrainer: Retrainer, port: int,
                  token: str, keeper: Optional[Keeper] = None,
                  host: str = LOOPBACK) -> ThreadingHTTPServer:
    """Serve the control API on ``host``:``port`` in a background thread (with ``keeper``,
    ``GET /processes`` lists the kept processes and their restarts)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "northwind-supervisor"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass  # the gateway logs what it asked for; nothing here worth a line per request

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            given = self.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return True
            self._send(401, {"error": "unauthorized", "message": "a valid token is needed"})
            return False

        def _body(self) -> Dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise ControlError(413, "too_large", f"the body exceeds {MAX_BODY} bytes")
            data = _json_or_none(self.rfile.read(length).decode("utf-8", errors="replace"))
            if not isinstance(data, dict):
                raise ControlError(400, "bad_request", "the body must be a JSON object")
            return data

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if not self._authorised():
                return
            if self.path == "/rasa":
                self._send(200, pool.status())
            elif self.path == "/processes" and keeper is not None:
                self._send(200, {"processes": keeper.status()})
            elif self.path == "/retrain":
                try:
                    self._send(200, retrainer.status())
                except ControlError as exc:
                    self._send(exc.status, {"error": exc.code, "message": str(exc)})
            else:
                self._send(404, {"error": "not_found", "message": f"no {self.path}"})

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if not self._authorised():
                return
            try:
                body = self._body()
                if self.path == "/rasa/start":
                    self._send(200, pool.start_candidate(body.get("model")))
                elif self.path == "/rasa/promote":
                    self._send(200, pool.promote(body.get("port")))
                elif self.path == "/rasa/discard":
                    self._send(200, pool.discard(body.get("port")))
                elif self.path == "/rasa/standby":
                    self._send(200, pool.start_standby(body.get("model")))
                elif self.path == "/rasa/load":
                    self._send(200, pool.load(body.get("port"), body.get("model")))
                elif self.path == "/retrain":
                    self._retrain(body)
                else:
                    self._send(404, {"error": "not_found", "message": f"no {self.path}"})
            except ControlError as exc:
                self._send(exc.status, {"error": exc.code, "message": str(exc)})

        def _retrain(self, body: Dict[str, Any]) -> None:
            corrections = body.get("corrections")
            if not isinstance(corrections, list):
                raise ControlError(400, "bad_request", "'corrections' must be a list")
            started = False

            def emit(item: Dict[str, Any]) -> None:
                nonlocal started
                if not started:  # headers only once the job runs: a 409 can still be sent
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-ndjson")
                    self.end_headers()
                    started = True
                try:
                    self.wfile.write(json.dumps(item).encode() + b"\n")
                    self.wfile.flush()
                except OSError:
                    pass  # the gateway went away: the job still finishes and is reported

            job = body.get("job")
            if job is not None and (not isinstance(job, str) or len(job) > 200):
                raise ControlError(400, "bad_request", "'job' must be a name of a job")
            retrainer.run(corrections, bool(body.get("finetune")), emit, job)

    server = (_ServerV6 if ":" in host else ThreadingHTTPServer)((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
    return server
