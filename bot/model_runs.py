"""What a retraining asks of a trained model, wherever it is loaded: its parses of many
messages, and Rasa's end-to-end story test on a folder of test stories.

Two places answer the same questions:

* :class:`InProcess` loads the model archive in this process (:mod:`bot.loaded_models`): what
  ``make retrain`` does without a running system;
* :class:`OnServer` asks a Rasa server that has the model loaded, through its proof channel
  (:mod:`bot.proof_channel`): the standby server of a blue/green deploy, which the supervisor
  starts on the candidate anyway (docs/deploys.md). The model is then loaded once, in the
  server that can go live with it, instead of in each checking process and again for the
  deploy.

Both run the same two functions here, :func:`parse_many` and :func:`story_test`, on a loaded
``rasa.core.agent.Agent``. Standard library only at import (the supervisor, :mod:`bot.control`,
imports :class:`OnServer` through :mod:`bot.standby`).
"""

from __future__ import annotations

import json
import re
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Set, Tuple

_SOURCE = re.compile(r" \([^()]*\.ya?ml\)$")


async def parse_many(agent: Any, texts: Sequence[str]) -> List[Dict[str, Any]]:
    """The model's parse of each text, as ``Agent.parse_message`` gives it, with the whole
    list run through the NLU graph at once: the sentence encoder and the classifier work on
    a batch instead of one message at a time."""
    from rasa.core.channels.channel import UserMessage
    from rasa.engine.constants import PLACEHOLDER_MESSAGE, PLACEHOLDER_TRACKER
    from rasa.shared.core.trackers import DialogueStateTracker
    from rasa.shared.nlu.constants import (
        ENTITIES,
        INTENT,
        INTENT_NAME_KEY,
        PREDICTED_CONFIDENCE_KEY,
        TEXT,
    )

    processor = agent.processor
    if not texts:
        return []
    if processor.http_interpreter is not None:  # an NLU server: one request per message
        return [await agent.parse_message(text) for text in texts]
    messages = [UserMessage(text) for text in texts]
    results = processor.graph_runner.run(
        inputs={PLACEHOLDER_MESSAGE: messages,
                PLACEHOLDER_TRACKER: DialogueStateTracker.from_events("parse-many", [])},
        targets=[processor.model_metadata.nlu_target])
    parsed = results[processor.model_metadata.nlu_target]
    out: List[Dict[str, Any]] = []
    for message in parsed:
        data: Dict[str, Any] = {TEXT: "", INTENT: {INTENT_NAME_KEY: None,
                                                   PREDICTED_CONFIDENCE_KEY: 0.0},
                                ENTITIES: []}
        data.update(message.as_dict(only_output_properties=True))
        processor._update_full_retrieval_intent(data)
        out.append(data)
    return out


async def story_test(agent: Any, stories: Path) -> Tuple[Set[str], str]:
    """The names of the test stories in the folder ``stories`` that ``agent`` gets wrong
    (Rasa's own e2e story test, as ``rasa test core --e2e`` runs it) and Rasa's
    ``failed_test_stories.yml`` (its comments name each wrong prediction)."""
    import yaml
    from rasa.core.test import test as rasa_story_test

    with tempfile.TemporaryDirectory() as out:
        try:
            await rasa_story_test(str(stories), agent, e2e=True, out_directory=out,
                                  disable_plotting=True)
        except Exception as exc:  # noqa: BLE001 - any failure of Rasa's test is reported
            raise RuntimeError(f"Rasa's story test failed on {stories}: {exc!r}") from exc
        failed = Path(out) / "failed_test_stories.yml"
        if not failed.exists():
            return set(), ""
        text = failed.read_text()
    data = yaml.safe_load(text) or {}
    # Rasa names a failed story "<name> (<file it came from>)"
    return {_SOURCE.sub("", s["story"]) for s in data.get("stories") or ()
            if isinstance(s, dict) and isinstance(s.get("story"), str)}, text


def archive_metadata(model: Path) -> Dict[str, Any]:
    """A model archive's ``metadata.json`` (``{}`` when unreadable)."""
    try:
        with tarfile.open(model, "r:gz") as archive:
            for member in archive:
                if member.name.lstrip("./") == "metadata.json":
                    handle = archive.extractfile(member)
                    return dict(json.loads(handle.read())) if handle else {}
    except (OSError, tarfile.TarError, ValueError):
        pass
    return {}


def fallback_of(metadata: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    """The FallbackClassifier's threshold and ambiguity threshold in a model's metadata."""
    nodes = ((metadata.get("predict_schema") or {}).get("nodes") or {}).values()
    for node in nodes:
        if str(node.get("uses", "")).rsplit(".", 1)[-1] == "FallbackClassifier":
            config = node.get("config") or {}
            return {"threshold": config.get("threshold"),
                    "ambiguity_threshold": config.get("ambiguity_threshold")}
    return {"threshold": None, "ambiguity_threshold": None}


class Runner(Protocol):
    """A trained model, loaded somewhere, that parses and runs test stories."""

    model: Path
    model_id: str

    def parses(self, texts: Sequence[str]) -> List[Dict[str, Any]]: ...

    def stories(self, folder: Path) -> Tuple[Set[str], str]: ...

    def fallback(self) -> Dict[str, Optional[float]]: ...


class InProcess:
    """The model loaded in this process (once: :mod:`bot.loaded_models`)."""

    def __init__(self, model: Path) -> None:
        self.model = model
        self.model_id = str(archive_metadata(model).get("model_id") or model.name)

    def _agent(self) -> Any:
        import logging

        from rasa.utils.log_utils import configure_structlog

        from bot import loaded_models

        configure_structlog(logging.getLogger().getEffectiveLevel())  # no line per parse
        return loaded_models.agent(self.model)

    def parses(self, texts: Sequence[str]) -> List[Dict[str, Any]]:
        import asyncio

        return asyncio.run(parse_many(self._agent(), texts))

    def stories(self, folder: Path) -> Tuple[Set[str], str]:
        import asyncio

        return asyncio.run(story_test(self._agent(), folder))

    def fallback(self) -> Dict[str, Optional[float]]:
        return fallback_of(archive_metadata(self.model))


class ServerError(RuntimeError):
    """The Rasa server did not answer, or answers for another model."""


class OnServer:
    """A Rasa server with the model loaded, asked through its proof channel
    (``/webhooks/proof/…``, the Rasa token as bearer token)."""

    def __init__(self, url: str, token: str, model: Path, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.model = model
        self.model_id = str(archive_metadata(model).get("model_id") or "")
        self.timeout = timeout

    def _post(self, path: str, body: Mapping[str, Any]) -> Dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/webhooks/proof/{path}", data=json.dumps(body).encode(),
            method="POST", headers={"Content-Type": "application/json",
                                    "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                data: Dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ServerError(f"{self.url} answered {exc.code} to {path}: "
                              f"{exc.read()[:500]!r}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ServerError(f"{self.url} did not answer {path}: {exc}") from exc
        if data.get("model_id") != self.model_id:
            raise ServerError(f"{self.url} serves model {data.get('model_id')}, not "
                              f"{self.model_id} ({self.model.name})")
        return data

    def parses(self, texts: Sequence[str]) -> List[Dict[str, Any]]:
        return list(self._post("parse", {"texts": list(texts)})["parses"])

    def stories(self, folder: Path) -> Tuple[Set[str], str]:
        files = {str(p.relative_to(folder)): p.read_text("utf-8")
                 for p in sorted(folder.rglob("*.yml"))}
        answer = self._post("stories", {"files": files})
        return set(answer["failed"]), str(answer["failed_text"])

    def fallback(self) -> Dict[str, Optional[float]]:
        return fallback_of(archive_metadata(self.model))
