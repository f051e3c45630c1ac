"""What the triage compares customer messages with, read from the Rasa project's YAML files.

Read with PyYAML (the gateway never imports rasa), in Rasa 3's training-data format:

- NLU examples: every ``*.yml`` under the data folder with an ``nlu:`` list; each
  ``- intent: x`` item's ``examples`` block (``- text`` lines) gives examples of ``x``. Entity
  annotations are reduced to their text: ``[100001](order_id)``, ``[Berlin]{"entity": "city"}``
  and ``[x]{...}`` all become the bracketed words. ``synonym``/``regex``/``lookup`` items are
  not examples and are skipped.
- Responses: the domain's ``responses:`` (``domain.yml`` or every ``*.yml`` of a domain
  folder), ``utter_x`` → its ``text`` variants (buttons and images are not suggested).
- Which response answers which intent: the ``steps`` of ``rules:`` and ``stories:``: an
  ``- intent: x`` step directly followed by ``- action: utter_y`` links ``x`` to ``utter_y``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_ANNOTATION = re.compile(r"\[([^\]]*)\](?:\([^)]*\)|\{[^}]*\})")
_SPACES = re.compile(r"\s+")


class CorpusError(ValueError):
    """A training-data or domain file cannot be read; the message names the file."""


@dataclass(frozen=True)
class Example:
    text: str
    intent: str


@dataclass(frozen=True)
class Response:
    name: str  # utter_x
    text: str


@dataclass(frozen=True)
class Corpus:
    """Everything the index embeds, as plain data."""

    examples: tuple[Example, ...]
    responses: tuple[Response, ...]
    answers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # intent -> utter_*s

    @property
    def intents(self) -> tuple[str, ...]:
        return tuple(sorted({e.intent for e in self.examples}))


def plain_text(example: str) -> str:
    """An annotated NLU example as the customer typed it: ``cancel [123456](order_id)`` →
    ``cancel 123456``."""
    return _SPACES.sub(" ", _ANNOTATION.sub(r"\1", example)).strip()


def _load(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CorpusError(f"{path}: {exc}") from exc


def _yaml_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise CorpusError(f"{root}: no such file or folder")
    return sorted(p for p in root.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())


def _example_lines(block: Any, path: Path) -> Iterable[str]:
    if isinstance(block, list):  # examples given as a YAML list of {text: ...} or strings
        for item in block:
            text = item.get("text") if isinstance(item, dict) else item
            if isinstance(text, str):
                yield text
        return
    if not isinstance(block, str):
        raise CorpusError(f"{path}: examples must be a '- text' block, got {type(block).__name__}")
    for line in block.splitlines():
        line = line.strip()
        if line.startswith("- "):
            yield line[2:]


def read_examples(data: Path) -> list[Example]:
    """Every intent example under ``data`` (a folder or one file), in file order."""
    found: list[Example] = []
    for path in _yaml_files(data):
        document = _load(path)
        if not isinstance(document, dict) or not isinstance(document.get("nlu"), list):
            continue
        for item in document["nlu"]:
            if not isinstance(item, dict) or "intent" not in item:
                continue
            intent = str(item["intent"])
            for line in _example_lines(item.get("examples", ""), path):
                text = plain_text(line)
                if text:
                    found.append(Example(text, intent))
    return found


def read_responses(domain: Path) -> list[Response]:
    """Every text variant of every ``utter_*`` response in ``domain`` (a file or folder)."""
    found: list[Response] = []
    for path in _yaml_files(domain):
        document = _load(path)
        responses = document.get("responses") if isinstance(document, dict) else None
        if not isinstance(responses, dict):
            continue
        for name, variants in responses.items():
            for variant in variants or ():
                text = variant.get("text") if isinstance(variant, dict) else None
                if isinstance(text, str) and text.strip():
                    found.append(Response(str(name), text.strip()))
    return found


def read_answers(data: Path) -> dict[str, tuple[str, ...]]:
    """intent → the ``utter_*`` actions that directly follow it in rules and stories."""
    links: dict[str, list[str]] = {}
    for path in _yaml_files(data):
        document = _load(path)
        if not isinstance(document, dict):
            continue
        for key in ("rules", "stories"):
            for flow in document.get(key) or ():
                steps = flow.get("steps") if isinstance(flow, dict) else None
                for step, following in zip(steps or (), (steps or ())[1:]):
                    if not (isinstance(step, dict) and isinstance(following, dict)):
                        continue
                    intent, action = step.get("intent"), following.get("action")
                    if isinstance(intent, str) and isinstance(action, str) and \
                            action.startswith("utter_"):
                        names = links.setdefault(intent, [])
                        if action not in names:
                            names.append(action)
    return {intent: tuple(names) for intent, names in links.items()}


def read_corpus(data: Path, domain: Path) -> Corpus:
    """The examples, responses and intent → response links of a Rasa project."""
    examples = read_examples(data)
    if not examples:
        raise CorpusError(f"{data}: no NLU examples found")
    return Corpus(tuple(examples), tuple(read_responses(domain)), read_answers(data))
