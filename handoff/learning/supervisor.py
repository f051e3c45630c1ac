"""The client of the supervisor's control API (``bot/control.py``, started by
``python -m bot.serve``): it runs the Rasa servers and the retraining; the gateway asks.

HTTP, with the Rasa token as bearer token (on the loopback, or a private interface when
the Rasa servers run on a machine of their own: docs/deploy.md):

* ``GET /rasa`` — the live server, a candidate, the models it has;
* ``POST /rasa/start`` / ``promote`` / ``discard`` — a second Rasa server on a model, made the
  live one, or stopped;
* ``POST /retrain`` — the retraining's output as newline-delimited JSON (``{"log"}`` lines,
  then ``{"report", "exit"}``); ``GET /retrain`` — the running or last one.

An unreachable supervisor is :class:`SupervisorError` (503); one that answers with an error is
:class:`SupervisorRefused` (502), or ``Conflict`` (409) when another job runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp

from handoff.errors import Conflict, HandoffError

__all__ = ["Supervisor", "SupervisorError", "SupervisorRefused", "need_supervisor"]


class SupervisorError(HandoffError):
    """The supervisor is not configured or not answering."""

    status: ClassVar[int] = 503
    code: ClassVar[str] = "supervisor_unavailable"


class SupervisorRefused(SupervisorError):
    """The supervisor answered with an error (a Rasa server that did not start...)."""

    status = 502
    code = "supervisor_refused"


def need_supervisor(supervisor: Supervisor | None) -> Supervisor:
    """The supervisor, or the 503 that says retraining and deploying need one."""
    if supervisor is None:
        raise SupervisorError("retraining and deploying need the supervisor "
                              "(HANDOFF_SUPERVISOR_URL; `make run` sets it)")
    return supervisor


def _refusal(status: int, data: dict[str, Any], default: str) -> HandoffError:
    message = str(data.get("message") or default)
    if status == 409:  # another deploy or retraining runs
        return Conflict(message, supervisor_error=data.get("error"))
    return SupervisorRefused(message, supervisor_error=data.get("error"))


def _object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class Supervisor:
    """The client of the supervisor's control API (see the module docstring)."""

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
