"""Starts the whole system and stops it cleanly: ``python -m bot.serve`` (what ``make run`` does).

It starts the action server, the Rasa server (HTTP API enabled, loopback only, token auth) and
the handoff gateway (``python -m handoff`` in the gateway's environment; customers connect to it,
never to Rasa), waits until each answers, prints where to go, and on Ctrl-C or SIGTERM stops every
process it started, children included (each runs in its own process group).

It is also the supervisor of deploys: the gateway asks its control API (:mod:`bot.control`,
loopback, the Rasa token) to retrain and to start a second Rasa server on a new model, switches
to it, and has the old one stopped (docs/deploys.md). The live model is remembered in
``var/live-model`` for the next start.

Standard library only, so the test suite (Python 3.11) starts the very same processes with
:class:`Stack`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = PROJECT_ROOT / "var"
GATEWAY_PYTHON = PROJECT_ROOT / ".venv" / "gateway" / "bin" / "python"
TOKEN_FILE = VAR_DIR / "rasa-token"


class StartupError(RuntimeError):
    """A service did not come up; the message says which and shows the end of its log."""


def rasa_token() -> str:
    """The token of the Rasa HTTP API: $RASA_TOKEN, else one made once and kept in var/."""
    token = os.environ.get("RASA_TOKEN")
    if token:
        return token
    if TOKEN_FILE.exists():
        return TOKEN_FILE.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def http_json(url: str, timeout: float = 2.0) -> Optional[Dict[str, Any]]:
    """GET url and parse JSON; None when nothing (or an error) answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = json.loads(resp.read().decode())
            return data if isinstance(data, dict) else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class Service:
    name: str
    argv: List[str]
    ready_url: str
    log_path: Path
    env: Dict[str, str] = field(default_factory=dict)
    cwd: Path = PROJECT_ROOT
    process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped with all its children
            )
        finally:
            log.close()

    def is_ready(self) -> bool:
        status = http_json(self.ready_url)
        if status is None:
            return False
        # Rasa's /status names the loaded model; the action server's /health says "ok".
        return bool(status.get("model_file") or status.get("status") == "ok")

    def wait_until_ready(self, deadline: float) -> None:
        """Wait for the service to answer; StartupError if it exits or the monotonic deadline
        passes first."""
        while not self.is_ready():
            assert self.process is not None
            if self.process.poll() is not None:
                raise StartupError(
                    f"{self.name} exited with code {self.process.returncode}; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise StartupError(
                    f"{self.name} did not answer {self.ready_url} in time; "
                    f"its log ends with:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 10.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
        else:
            try:  # children that outlived their parent
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@dataclass
class Stack:
    """The Rasa server and the action server, on the ports given.

    ``project`` is the Rasa project they run in (its ``actions``, ``bot`` and relative paths
    of ``endpoints.yml``). Without ``endpoints`` a file is written that names the action
    server and, with ``tracker_db``, a SQLite tracker store there: Rasa servers that share it
    share the conversations (a blue/green deploy, :mod:`bot.control`).
    """

    rasa_bin: Path
    model: Path
    rasa_port: int = 5005
    actions_port: int = 5055
    token: str = ""
    endpoints: Optional[Path] = None
    credentials: Path = PROJECT_ROOT / "credentials.yml"
    log_dir: Path = VAR_DIR / "log"
    env: Dict[str, str] = field(default_factory=dict)
    project: Path = PROJECT_ROOT
    tracker_db: Optional[Path] = None
    services: List[Service] = field(default_factory=list)

    @property
    def rasa_url(self) -> str:
        return f"http://127.0.0.1:{self.rasa_port}"

    def _endpoints_file(self) -> Path:
        if self.endpoints is not None:
            return self.endpoints
        path = self.log_dir / f"endpoints-{self.actions_port}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = ("action_endpoint:\n"
                f'  url: "http://127.0.0.1:{self.actions_port}/webhook"\n')
        if self.tracker_db is not None:
            text += (f'tracker_store:\n  type: SQL\n  dialect: "sqlite"\n'
                     f"  db: {json.dumps(str(self.tracker_db))}\n")
        path.write_text(text)
        return path

    def rasa_service(self, port: int, model: Path, nice: int = 0) -> Service:
        """A Rasa server (HTTP API on loopback, token auth) on ``port`` with ``model``; with
        ``nice``, at that lower CPU priority (a deploy's second server loading its model)."""
        return Service(
            name=f"Rasa server :{port}",
            argv=(["nice", "-n", str(nice)] if nice else []) + [
                str(self.rasa_bin), "run", "--enable-api", "--interface", "127.0.0.1",
                "--port", str(port),
                f"--auth-token={self.token}",  # "=": a token may begin with "-"
                "--model", str(model), "--endpoints", str(self._endpoints_file()),
                "--credentials", str(self.credentials)],
            ready_url=f"http://127.0.0.1:{port}/status?token={self.token}",
            log_path=self.log_dir / f"rasa-{port}.log",
            env={**self.env, "GATEWAY_CHANNEL_TOKEN": self.token},  # bot/gateway_channel.py
            cwd=self.project,
        )

    def start(self, timeout: float = 240.0) -> None:
        self.token = self.token or rasa_token()
        actions = Service(
            name="action server",
            argv=[str(self.rasa_bin), "run", "actions", "--port", str(self.actions_port),
                  "--actions", "actions"],
            ready_url=f"http://127.0.0.1:{self.actions_port}/health",
            log_path=self.log_dir / f"actions-{self.actions_port}.log",
            env={"SANIC_HOST": "127.0.0.1", **self.env},
            cwd=self.project,
        )
        self.services = [actions, self.rasa_service(self.rasa_port, self.model)]
        for service in self.services:
            service.start()
        deadline = time.monotonic() + timeout
        try:
            for service in self.services:
                service.wait_until_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def exited(self) -> Optional[Service]:
        """The first service that has exited, if any."""
        for service in self.services:
            if service.process is not None and service.process.poll() is not None:
                return service
        return None

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


def latest_model(models_dir: Path = PROJECT_ROOT / "models") -> Path:
    models = sorted(models_dir.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not models:
        raise StartupError(f"no trained model in {models_dir}: run `make train`")
    return models[-1]


LIVE_MODEL = Path("var") / "live-model"  # in the project: the model bot.serve has live


def model_in_service(project: Path, models_dir: Optional[Path] = None) -> Path:
    """The model ``bot.serve`` last had live (``var/live-model``) while its file is there, else
    the newest in ``models/``; StartupError when there is none."""
    models_dir = models_dir or project / "models"
    try:
        remembered = models_dir / (project / LIVE_MODEL).read_text().strip()
    except OSError:
        remembered = models_dir
    return remembered if remembered.is_file() else latest_model(models_dir)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rasa-port", type=int, default=int(os.environ.get("RASA_PORT", 5005)))
    parser.add_argument("--standby-port", type=int,
                        help="the second Rasa server's port in a deploy (default: Rasa's + 1)")
    parser.add_argument("--control-port", type=int,
                        default=int(os.environ.get("CONTROL_PORT", 5004)),
                        help="the deploy and retrain API for the gateway (bot/control.py)")
    parser.add_argument("--actions-port", type=int,
                        default=int(os.environ.get("ACTIONS_PORT", 5055)))
    parser.add_argument("--model", type=Path,
                        help="model file (default: the one live when last stopped, else the "
                             "newest in models/)")
    parser.add_argument("--project", type=Path, default=PROJECT_ROOT,
                        help="the Rasa project to serve and retrain (default: this one)")
    parser.add_argument("--endpoints", type=Path)
    parser.add_argument("--gateway-port", type=int,
                        default=int(os.environ.get("HANDOFF_PORT", 8000)))
    args = parser.parse_args(argv)
    from bot.control import RasaPool, Retrainer, serve_control

    project = args.project.resolve()
    var_dir = project / "var"
    stack = Stack(
        rasa_bin=Path(sys.executable).parent / "rasa",
        model=Path(),
        rasa_port=args.rasa_port,
        actions_port=args.actions_port,
        endpoints=args.endpoints or project / "endpoints.yml",
        credentials=project / "credentials.yml",
        log_dir=var_dir / "log",
        project=project,
    )
    pool = RasaPool(stack, (args.rasa_port, args.standby_port or args.rasa_port + 1),
                    project / "models", project / LIVE_MODEL)
    try:
        stack.model = (args.model or model_in_service(project)).resolve()
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 1

    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    print(f"starting the action server on :{args.actions_port} and Rasa on :{args.rasa_port} "
          f"with {stack.model.name} (logs in {stack.log_dir})", flush=True)
    try:
        stack.start()
    except StartupError as exc:
        print(f"start-up failed: {exc}", file=sys.stderr)
        return 1
    pool.adopt(stack.services.pop(), args.rasa_port, stack.model)  # the pool runs Rasa now
    retrainer = Retrainer(pool, project)
    control = serve_control(pool, retrainer, args.control_port, stack.token)
    gateway = Service(
        name="handoff gateway",
        argv=[str(GATEWAY_PYTHON), "-m", "handoff"],
        ready_url=f"http://127.0.0.1:{args.gateway_port}/api/health",
        log_path=stack.log_dir / "gateway.log",
        env={"HANDOFF_PORT": str(args.gateway_port), "HANDOFF_RASA_URL": stack.rasa_url,
             "HANDOFF_RASA_TOKEN": stack.token,
             "HANDOFF_SUPERVISOR_URL": f"http://127.0.0.1:{args.control_port}"},
    )
    gateway_log_start = gateway.log_path.stat().st_size if gateway.log_path.exists() else 0
    gateway.start()
    stack.services.append(gateway)
    try:
        gateway.wait_until_ready(time.monotonic() + 60)
    except StartupError as exc:
        print(f"the gateway did not start: {exc}", file=sys.stderr)
        control.shutdown()
        pool.stop()
        stack.stop()
        return 1
    with open(gateway.log_path, "rb") as log:  # the first admin's password, shown once
        log.seek(gateway_log_start)
        for line in log.read().decode(errors="replace").splitlines():
            if line.startswith("Created the first user"):
                print(line, flush=True)
    print(
        "\nThe system is up.\n"
        f"  The shop, with the chat widget:  http://localhost:{args.gateway_port}/\n"
        f"  The agent console (log in):     http://localhost:{args.gateway_port}/console\n"
        f"  Handoff gateway: http://localhost:{args.gateway_port}\n"
        "    customers: Socket.IO at /socket.io, Rasa's socketio protocol\n"
        "    agents: JSON API under /api (POST /api/login; OpenAPI at /api/openapi.json),\n"
        "    live updates and actions on Socket.IO /agent\n"
        f"  Rasa HTTP API (loopback only, token in {TOKEN_FILE.relative_to(PROJECT_ROOT)}):\n"
        f"    {stack.rasa_url}/status?token=$(cat var/rasa-token)\n"
        f"  Deploys (the gateway's): control API on 127.0.0.1:{args.control_port}, "
        f"Rasa servers on :{pool.ports[0]} and :{pool.ports[1]}\n"
        "  Talk to it through Rasa's REST channel:\n"
        f"    curl -s {stack.rasa_url}/webhooks/rest/webhook "
        "-d '{\"sender\": \"me\", \"message\": \"where is my order 100002?\"}'\n"
        "Press Ctrl-C to stop everything.",
        flush=True,
    )
    code = 0
    while not stopping:
        dead = stack.exited() or pool.exited()
        if dead is not None:
            print(f"{dead.name} stopped unexpectedly; its log ends with:\n{dead.log_tail()}",
                  file=sys.stderr)
            code = 1
            break
        time.sleep(0.5)
    print("stopping…", flush=True)
    if retrainer.stop() is not None:
        print("a retraining was interrupted; its corrections still wait in the gateway",
              flush=True)
    control.shutdown()
    gateway.stop()
    pool.stop()
    stack.stop()
    print("stopped.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
