"""The standby Rasa server a retraining proves its model on: asked of the supervisor
(:mod:`bot.control`, ``POST /rasa/standby`` and ``POST /rasa/load``), used through the
server's proof channel (:class:`bot.model_runs.OnServer`).

A blue/green deploy starts a second Rasa server on the new model anyway. A retraining started
by the supervisor has that server started on the model in service at once, while it writes and
trains (the model in service runs there the test stories it has not met yet); once the
candidate is trained the server loads it, the fallback is re-tuned and the proof runs on it,
and when the model is kept the supervisor keeps the server up for its deploy, which then only
switches to it. Every step that fails here says why and lets the retraining go on with the
models loaded in its own process, as ``make retrain`` does.

Standard library only.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional

from bot.model_runs import OnServer

TOKEN_ENV = "SUPERVISOR_TOKEN"  # the supervisor's (and Rasa's) token, for bot.retrain


class StandbyError(RuntimeError):
    """The supervisor refused or did not answer; the message says why."""


class Standby:
    """A retraining's standby server: requested in the background (:meth:`request`), then
    given models to load (:meth:`load`)."""

    def __init__(self, control_url: str, token: str, timeout: float = 900.0) -> None:
        self.control_url = control_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.server: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None
        self._thread: Optional[threading.Thread] = None

    def _call(self, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        request = urllib.request.Request(
            self.control_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                data: Dict[str, Any] = json.loads(resp.read())
                return data
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("message")
            except ValueError:
                message = None
            raise StandbyError(message or f"the supervisor answered {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StandbyError(f"the supervisor at {self.control_url} did not answer: "
                               f"{exc}") from exc

    def request(self, model: Path) -> None:
        """Have the supervisor start the standby server on ``model`` (a file in its
        ``models/``), in the background: :meth:`ready` waits for it."""

        def start() -> None:
            try:
                self.server = self._call("/rasa/standby", {"model": model.name})
            except StandbyError as exc:
                self.error = str(exc)

        self._thread = threading.Thread(target=start, name="standby", daemon=True)
        self._thread.start()

    def ready(self) -> Optional[Dict[str, Any]]:
        """The standby server (``{"url", "port", "model", "model_id"}``) once it answers, or
        None when there is none (:attr:`error` says why)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.server

    def runner(self, model: Path) -> OnServer:
        """The standby's model, ``model``, asked through the server's proof channel."""
        assert self.server is not None
        return OnServer(str(self.server["url"]), self.token, model)

    def load(self, model: Path) -> OnServer:
        """Load ``model`` (an archive in a candidate or in ``models/``) into the standby
        server; StandbyError when it cannot."""
        server = self.ready()
        if server is None:
            raise StandbyError(self.error or "no standby server")
        self.server = self._call("/rasa/load", {"port": server["port"], "model": str(model)})
        return self.runner(model)
