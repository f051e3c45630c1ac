"""Rasa input channel that lets a retraining check the model a Rasa server has loaded.

A retraining started by the supervisor proves its candidate on the standby Rasa server that the
blue/green deploy would start anyway (docs/deploys.md): the model is loaded once, in the server
that then goes live with it. Rasa 3.6's own ``POST /model/test/stories`` answers with action
counts only (no story names, no wrong predictions) and ``/model/parse`` takes one message per
request, so this channel answers what :mod:`bot.prove` and :mod:`bot.tune_fallback` need, with
the same functions they use in-process (:mod:`bot.model_runs`):

``POST /webhooks/proof/parse`` ``{"texts": ["...", ...]}`` answers ``{"model_id", "parses":
[...]}``: each text's parse as ``/model/parse`` gives it, the whole list run through the NLU
pipeline at once.

``POST /webhooks/proof/stories`` ``{"files": {"test_x.yml": "<test stories YAML>", ...}}``
answers ``{"model_id", "failed": [story names], "failed_text": "<Rasa's
failed_test_stories.yml>"}``: Rasa's end-to-end story test on those files (as ``rasa test
core --e2e``).

Both hold the server's event loop while they run (seconds): they are for a server that serves
no customer yet. Requests need ``Authorization: Bearer <token>`` (``$GATEWAY_CHANNEL_TOKEN``,
else ``$RASA_TOKEN``, as the gateway's channel); a bad body is 400 with the reason.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Awaitable, Callable, Dict, Optional, Text

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.gateway_channel import authorised
from bot.model_runs import parse_many, story_test

MAX_TEXTS = 20_000


class BadRequest(ValueError):
    """A request body this channel cannot use; the message says why."""


def _model_id(agent: Any) -> Optional[str]:
    metadata = getattr(agent.processor, "model_metadata", None)
    return None if metadata is None else str(metadata.model_id)


async def parse(agent: Any, body: Any) -> Dict[str, Any]:
    texts = body.get("texts") if isinstance(body, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest("'texts' must be a list of strings")
    if len(texts) > MAX_TEXTS:
        raise BadRequest(f"at most {MAX_TEXTS} texts a request")
    return {"model_id": _model_id(agent), "parses": await parse_many(agent, texts)}


def _file_name(name: Any) -> PurePosixPath:
    path = PurePosixPath(str(name))
    if (not isinstance(name, str) or path.is_absolute() or ".." in path.parts
            or path.suffix not in (".yml", ".yaml") or not path.name.startswith("test_")):
        raise BadRequest(f"{name!r}: a file name must be relative, without '..', start "
                         "with 'test_' and end with .yml (Rasa reads test stories only "
                         "from such files)")
    return path


async def stories(agent: Any, body: Any) -> Dict[str, Any]:
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict) or not files or not all(
            isinstance(text, str) for text in files.values()):
        raise BadRequest("'files' must map test story file names to their YAML text")
    with tempfile.TemporaryDirectory(prefix="proof-") as tmp:
        for name, text in files.items():
            target = Path(tmp) / _file_name(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, "utf-8")
        failed, failed_text = await story_test(agent, Path(tmp))
    return {"model_id": _model_id(agent), "failed": sorted(failed),
            "failed_text": failed_text}


class ProofInput(InputChannel):
    """The retraining's channel (see the module docstring)."""

    @classmethod
    def name(cls) -> Text:
        return "proof"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> "InputChannel":
        return cls()

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> Blueprint:
        bp = Blueprint("proof_webhook", __name__)

        async def answer(request: Request,
                         handler: Callable[[Any, Any], Awaitable[Dict[str, Any]]]
                         ) -> HTTPResponse:
            if not authorised(request):
                return response.json({"error": "unauthorised"}, status=401)
            agent = request.app.ctx.agent
            if agent is None or not agent.is_ready():
                return response.json({"error": "no_model", "message": "no model is loaded"},
                                     status=409)
            try:
                body = request.json
            except Exception:  # noqa: BLE001 - sanic's own error for a body that is not JSON
                body = None
            try:
                return response.json(await handler(agent, body))
            except BadRequest as exc:
                return response.json({"error": "bad_request", "message": str(exc)},
                                     status=400)
            except RuntimeError as exc:  # Rasa's story test failed on the files
                return response.json({"error": "test_failed", "message": str(exc)},
                                     status=422)

        @bp.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @bp.route("/parse", methods=["POST"])
        async def parse_route(request: Request) -> HTTPResponse:
            return await answer(request, parse)

        @bp.route("/stories", methods=["POST"])
        async def stories_route(request: Request) -> HTTPResponse:
            return await answer(request, stories)

        return bp


__all__ = ("ProofInput",)
