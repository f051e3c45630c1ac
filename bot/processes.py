"""The processes of the system and how they are started, waited for and stopped: the Rasa
token, :class:`Service` (one process in its own process group), :class:`Stack` (the action
server, Rasa and the gateway, in order), and which model is in service.

Used by :mod:`bot.serve` (``make run``), the deploy supervisor :mod:`bot.control`, retraining,
the benchmarks and the test suite (Python 3.11). Standard library only.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = PROJECT_ROOT / "var"
GATEWAY_PYTHON = PROJECT_ROOT / ".venv" / "gateway" / "bin" / "python"
TOKEN_FILE = VAR_DIR / "rasa-token"
RASA_RUN = Path(__file__).resolve().parent / "rasa_run.py"
LOOPBACK = "127.0.0.1"
WILDCARDS = ("0.0.0.0", "::")  # every interface: an address to listen on, not one to call
# Rasa's tracker store on a SQLite file, as endpoints.yml ships it (bot/tracker_store.py)
SQLITE_TRACKER_STORE = "bot.tracker_store.SQLTrackerStore"


class StartupError(RuntimeError):
    """A service did not come up; the message says which and shows the end of its log."""


def http_url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def reach(interface: str) -> str:
    """The address this machine calls a server listening on ``interface`` by: the interface
    itself, or the loopback for a wildcard."""
    return LOOPBACK if interface in WILDCARDS else interface


def advertised_host(interface: str, advertised: str = "") -> str:
    """The host in the URLs handed to the gateway nodes for servers listening on ``interface``:
    ``advertised`` when given, else the interface. ValueError for a wildcard interface with
    none (``0.0.0.0`` names no machine the nodes could call)."""
    if advertised:
        return advertised
    if interface in WILDCARDS:
        raise ValueError(f"the Rasa servers listen on {interface} (every interface): name the "
                         "host the gateway nodes call them by (--advertised-host, "
                         "$RASA_ADVERTISED_HOST)")
    return interface


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

    ``project`` is the Rasa project they run in (its ``actions``, ``bot`` (its
    ``bot/rasa_run.py`` where it has one) and relative paths of ``endpoints.yml``). Without
    ``endpoints`` a file is written that names the action server and, with ``tracker_db``, a
    SQLite tracker store there (``tracker_store_type``: the one endpoints.yml ships,
    :data:`SQLITE_TRACKER_STORE`): Rasa servers that share it share the conversations (a
    blue/green deploy, :mod:`bot.control`).

    The Rasa servers listen on ``interface`` (the loopback unless told otherwise: gateway
    nodes on other machines need a private interface, docs/deploy.md) and are named to the
    gateway by :meth:`url`, with ``advertised`` as host (default: the interface). The action
    server stays on the loopback: only the Rasa servers beside it call it.
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
    interface: str = LOOPBACK
    advertised: str = ""
    tracker_store_type: str = SQLITE_TRACKER_STORE
    services: List[Service] = field(default_factory=list)

    @property
    def rasa_url(self) -> str:
        """The URL of the first Rasa server, as the gateway nodes are told it."""
        return self.url(self.rasa_port)

    def url(self, port: int) -> str:
        """The URL the gateway nodes call the Rasa server on ``port`` by."""
        return http_url(advertised_host(self.interface, self.advertised), port)

    def local_url(self, port: int) -> str:
        """The URL this machine calls the Rasa server on ``port`` by (its readiness, a
        standby's model load): the interface it listens on, whatever name it is advertised
        by."""
        return http_url(reach(self.interface), port)

    def _endpoints_file(self) -> Path:
        if self.endpoints is not None:
            return self.endpoints
        path = self.log_dir / f"endpoints-{self.actions_port}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = ("action_endpoint:\n"
                f'  url: "{http_url(LOOPBACK, self.actions_port)}/webhook"\n')
        if self.tracker_db is not None:
            text += (f"tracker_store:\n  type: {self.tracker_store_type}\n"
                     f"  dialect: \"sqlite\"\n"
                     f"  db: {json.dumps(str(self.tracker_db))}\n")
        path.write_text(text)
        return path

    def _rasa_run(self) -> Path:
        """The project's ``bot/rasa_run.py`` (so that its ``bot`` package is the one Rasa
        imports), else this one's."""
        project_run = self.project / "bot" / "rasa_run.py"
        return project_run if project_run.is_file() else RASA_RUN

    def rasa_service(self, port: int, model: Path, nice: int = 0) -> Service:
        """A Rasa server (HTTP API on :attr:`interface`, token auth) on ``port`` with
        ``model``; with ``nice``, at that lower CPU priority (a deploy's second server loading
        its model)."""
        return Service(
            name=f"Rasa server :{port}",
            # the token goes in the environment, not the arguments (which every user can
            # read in ps): bot/rasa_run.py hands it to Rasa's --auth-token in-process
            argv=(["nice", "-n", str(nice)] if nice else []) + [
                str(self.rasa_bin.parent / "python"), str(self._rasa_run()), "run",
                "--enable-api",
                "--interface", self.interface, "--port", str(port),
                "--model", str(model), "--endpoints", str(self._endpoints_file()),
                "--credentials", str(self.credentials)],
            ready_url=f"{self.local_url(port)}/status?token={self.token}",
            log_path=self.log_dir / f"rasa-{port}.log",
            env={**self.env, "GATEWAY_CHANNEL_TOKEN": self.token,  # bot/gateway_channel.py
                 "RASA_AUTH_TOKEN": self.token},
            cwd=self.project,
        )

    def start(self, timeout: float = 240.0) -> None:
        self.token = self.token or rasa_token()
        actions = Service(
            name="action server",
            argv=[str(self.rasa_bin), "run", "actions", "--port", str(self.actions_port),
                  "--actions", "actions"],
            ready_url=f"{http_url(LOOPBACK, self.actions_port)}/health",
            log_path=self.log_dir / f"actions-{self.actions_port}.log",
            env={"SANIC_HOST": LOOPBACK, **self.env},
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
