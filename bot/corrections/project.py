"""The Rasa project the corrections are written into: where generated data lives, and what the
project already contains (read with Rasa's own importer and readers)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import rasa.shared.utils.io
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, ActiveLoop, UserUttered
from rasa.shared.core.training_data.structures import RuleStep, StoryGraph
from rasa.shared.importers.importer import TrainingDataImporter
from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader
from rasa.shared.nlu.training_data.training_data import TrainingData

from contracts.masking import entity_examples

log = logging.getLogger(__name__)

# Paths relative to the project root. Everything generated lives under data/corrections/ (read by
# `rasa train` / `rasa data validate` with their default arguments) and tests/corrections/.
NLU_FILE = "data/corrections/nlu.yml"
STORIES_FILE = "data/corrections/stories.yml"
# Rules of intents the corrections added or answered ("new_intent").
RULES_FILE = "data/corrections/rules.yml"
# Responses in a training-data file: Rasa 3.6's importer (ResponsesSyncImporter) merges them into
# the domain, so `rasa train` picks them up without a --domain argument.
RESPONSES_FILE = "data/corrections/responses.yml"
# Drafts end in ".yml.draft": Rasa reads only .yml/.yaml/.json files, so they never train.
DRAFTS_DIR = "data/corrections/drafts"
TEST_STORIES_FILE = "tests/corrections/test_corrections.yml"
# The held-out NLU split (docs/assistant.md): never training data.
HOLDOUT_DIR = "tests/nlu_holdout"
DOMAIN_FILE = "domain.yml"
CONFIG_FILE = "config.yml"
DATA_DIR = "data"

# A variation a correction added carries this id prefix (Rasa's optional variation "id").
CORRECTION_ID_PREFIX = "correction-"


def importer_for(root: Path) -> TrainingDataImporter:
    return TrainingDataImporter.load_from_config(
        str(root / CONFIG_FILE), str(root / DOMAIN_FILE), [str(root / DATA_DIR)])


def read_yaml_list(path: Path, key: str) -> List[Dict[str, Any]]:
    """The items under ``key`` of a YAML file, [] when the file does not exist."""
    if not path.is_file():
        return []
    content = rasa.shared.utils.io.read_yaml_file(path) or {}
    items = content.get(key) if isinstance(content, dict) else None
    return list(items or [])


@dataclass
class Project:
    """What the writer needs to know about the project at ``root`` before changing it."""

    root: Path
    domain: Domain
    hand_responses: Dict[str, List[Dict[str, Any]]]
    nlu: TrainingData
    corrections_nlu: TrainingData
    overlay: Dict[str, List[Dict[str, Any]]]
    story_graph: StoryGraph
    domain_text: str
    stories: List[Dict[str, Any]] = field(default_factory=list)
    rules: List[Dict[str, Any]] = field(default_factory=list)
    test_stories: List[Dict[str, Any]] = field(default_factory=list)
    holdout: Set[str] = field(default_factory=set)

    @classmethod
    def load(cls, root: Path) -> "Project":
        importer = importer_for(root)
        domain_text = (root / DOMAIN_FILE).read_text(encoding="utf-8")
        hand = Domain.from_yaml(domain_text, str(root / DOMAIN_FILE))
        overlay_path = root / RESPONSES_FILE
        overlay: Dict[str, List[Dict[str, Any]]] = {}
        if overlay_path.exists():
            overlay = {k: [dict(v) for v in vs] for k, vs in
                       RasaYAMLReader().read(str(overlay_path)).responses.items()}
        nlu_path = root / NLU_FILE
        corrections_nlu = RasaYAMLReader().read(str(nlu_path)) if nlu_path.exists() \
            else TrainingData()
        return cls(
            root=root, domain=importer.get_domain(),
            hand_responses={k: [dict(v) for v in vs] for k, vs in hand.responses.items()},
            nlu=importer.get_nlu_data(), corrections_nlu=corrections_nlu, overlay=overlay,
            story_graph=importer.get_stories(), domain_text=domain_text,
            stories=read_yaml_list(root / STORIES_FILE, "stories"),
            rules=read_yaml_list(root / RULES_FILE, "rules"),
            test_stories=read_yaml_list(root / TEST_STORIES_FILE, "stories"),
            holdout={normalise(str(m.get("text", ""))) for path in sorted(
                (root / HOLDOUT_DIR).glob("*.yml")) for m in RasaYAMLReader().read(
                str(path)).intent_examples},
        )

    def entity_pool(self, entity: str) -> List[str]:
        """Values of ``entity`` in the hand-written examples (not the generated ones, so that
        masking stays the same from run to run)."""
        generated = {m.get("text") for m in self.corrections_nlu.training_examples}
        return entity_examples([m.data for m in self.nlu.training_examples
                                if m.get("text") not in generated], entity)

    def known_actions(self) -> set[str]:
        return set(self.domain.action_names_or_texts) | set(self.overlay)

    def rule_action_for_intent(self, intent: str) -> Optional[str]:
        """The action of the project's unconditional one-intent rule for ``intent``, if any."""
        for step in self.story_graph.story_steps:
            if not isinstance(step, RuleStep) or step.condition_events_indices:
                continue
            start = next((i for i, e in enumerate(step.events)
                          if isinstance(e, UserUttered)), None)
            events = step.events[start:] if start is not None else []
            if len(events) >= 2 and isinstance(events[0], UserUttered) and (
                    events[0].intent_name == intent) and isinstance(events[1], ActionExecuted):
                action: Optional[str] = events[1].action_name
                return action
        return None

    def submit_action(self, form: str) -> Optional[str]:
        """The last action of the rule that runs once ``form`` is done (condition: the form
        active; steps: the form, ``active_loop: null``, …, the action)."""
        for step in self.story_graph.story_steps:
            if not isinstance(step, RuleStep):
                continue
            conditions = [e for i, e in enumerate(step.events)
                          if i in step.condition_events_indices]
            if not any(isinstance(e, ActiveLoop) and e.name == form for e in conditions):
                continue
            steps = [e for i, e in enumerate(step.events)
                     if i not in step.condition_events_indices]
            actions = [e.action_name for e in steps if isinstance(e, ActionExecuted)
                       and e.action_name not in (form, "...", "action_listen")]
            if any(isinstance(e, ActiveLoop) and e.name is None for e in steps) and actions:
                action: Optional[str] = actions[-1]
                return action
        return None

    def example_intent(self, text: str) -> Optional[str]:
        """The intent an example with this text already has (case and spacing ignored)."""
        key = normalise(text)
        for message in self.nlu.intent_examples:
            if normalise(str(message.get("text", ""))) == key:
                intent: Any = message.get("intent")
                return str(intent) if intent else None
        return None


def normalise(text: str) -> str:
    return " ".join(text.lower().split())
