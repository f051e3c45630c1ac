"""The gate new training data must pass before it replaces the project's: Rasa's validator
(what ``rasa data validate`` checks), the RulePolicy's contradiction check, and a real
``rasa train``.

Validation alone passes data that training rejects (a story contradicting a rule: RASA-NOTES),
so the rule check runs the RulePolicy's own training on the staged data — the step of
``rasa train`` that raises ``InvalidRule``, in seconds — and the full training run proves the
rest. Each check reports Rasa's own messages.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any, Dict, List, Optional, Set

from bot.corrections.project import CONFIG_FILE, importer_for

# As the Makefile sets it: Rasa's training cache outlives clones and staged copies, so a
# training run retrains only what the corrections changed.
DEFAULT_CACHE = Path.home() / ".cache" / "northwind-assistant" / "rasa"
TRAIN_TIMEOUT = 1800


@dataclass
class CheckResult:
    name: str
    ok: bool
    seconds: float
    messages: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "seconds": round(self.seconds, 1), "messages": self.messages}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _validator_messages(root: Path) -> tuple[bool, List[str]]:
    """Run the checks of ``rasa data validate`` on the project at ``root``."""
    from rasa.validator import Validator

    handler = _Collect()
    validator_log = logging.getLogger("rasa.validator")
    validator_log.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importer = importer_for(root)
            validator = Validator.from_importer(importer)
            ok = all([
                validator.verify_domain_validity(),
                validator.verify_actions_in_stories_rules(),
                validator.verify_forms_in_stories_rules(),
                validator.verify_form_slots(),
                validator.verify_slot_mappings(),
                validator.verify_nlu(True),
            ])
            structure_ok = validator.verify_story_structure(ignore_warnings=False)
    finally:
        validator_log.removeHandler(handler)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return ok and structure_ok, messages + handler.messages


DUPLICATED_RESPONSES = re.compile(
    r"The following duplicated responses have been found across multiple domain files: (.*)")


def _expected(message: str, extended: AbstractSet[str]) -> bool:
    """Rasa warns about every response defined both in domain.yml and in a data file; for the
    responses the corrections extend with variations that is the intended merge."""
    match = DUPLICATED_RESPONSES.fullmatch(message.strip())
    return match is not None and {n.strip() for n in match.group(1).split(",")} <= extended


def validate(stage: Path, baseline: Path, extended: AbstractSet[str] = frozenset()) -> CheckResult:
    """Rasa's validator on the staged project. Refused if a check fails or if it reports
    anything it did not already report for the unchanged project (except the merge of
    ``extended``: responses the corrections file gives more variations)."""
    start = time.monotonic()
    try:
        _, before = _validator_messages(baseline)
        ok, after = _validator_messages(stage)
    except Exception as exc:  # Rasa's readers raise YamlException, InvalidDomain, ...
        return CheckResult("validator", False, time.monotonic() - start,
                           [f"{type(exc).__name__}: {exc}"])
    known: Set[str] = set(before)
    new = [m for m in dict.fromkeys(after) if m not in known and not _expected(m, extended)]
    return CheckResult("validator", ok and not new, time.monotonic() - start, new)


def check_rules(stage: Path) -> CheckResult:
    """Train the RulePolicy (as configured in config.yml) on the staged data: it raises
    ``InvalidRule`` for contradicting rules and stories, exactly as ``rasa train`` would."""
    from rasa.core.policies.rule_policy import InvalidRule, RulePolicy
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.shared.core.generator import TrainingDataGenerator

    start = time.monotonic()
    importer = importer_for(stage)
    policies = importer.get_config().get("policies") or []
    configured = next((p for p in policies if p.get("name") in ("RulePolicy",
                                                                "rasa.core.policies.rule_policy.RulePolicy")), None)
    if configured is None:
        return CheckResult("rules", True, 0.0, ["no RulePolicy configured: nothing to check"])
    config = {**RulePolicy.get_default_config(),
              **{k: v for k, v in configured.items() if k != "name"}}
    try:
        domain = importer.get_domain()
        trackers = TrainingDataGenerator(
            importer.get_stories(), domain, remove_duplicates=True, augmentation_factor=0,
            use_story_concatenation=False).generate()
        with tempfile.TemporaryDirectory() as tmp:
            policy = RulePolicy.create(config, LocalModelStorage(Path(tmp)),
                                       Resource("corrections_rule_check"),
                                       ExecutionContext(GraphSchema({})))
            policy.train(trackers, domain)
    except InvalidRule as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return CheckResult("rules", False, time.monotonic() - start, lines)
    except Exception as exc:
        return CheckResult("rules", False, time.monotonic() - start,
                           [f"{type(exc).__name__}: {exc}"])
    return CheckResult("rules", True, time.monotonic() - start)


def train(stage: Path, project_root: Path, model_dir: Path) -> CheckResult:
    """A real ``rasa train`` of the staged project into ``model_dir`` (Rasa's cache reused)."""
    start = time.monotonic()
    env = {**os.environ, "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.setdefault("RASA_CACHE_DIRECTORY", str(DEFAULT_CACHE))
    # The pipeline names bot.nlu_components: the project's own package must be importable.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(project_root), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "rasa", "train", "--config", CONFIG_FILE, "--domain",
               "domain.yml", "--data", "data", "--out", str(model_dir),
               "--fixed-model-name", "corrections-check"]
    try:
        result = subprocess.run(command, cwd=stage, env=env, capture_output=True, text=True,
                                timeout=TRAIN_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return CheckResult("training", False, time.monotonic() - start,
                           [f"rasa train did not finish within {TRAIN_TIMEOUT} s"])
    model = model_dir / "corrections-check.tar.gz"
    if result.returncode == 0 and model.exists():
        return CheckResult("training", True, time.monotonic() - start)
    output = (result.stdout + result.stderr).splitlines()
    important = [ln for ln in output if any(k in ln for k in (
        "Error", "error", "InvalidRule", "contradict", "- the prediction"))]
    return CheckResult("training", False, time.monotonic() - start,
                       (important or output)[-30:])


def model_file(model_dir: Path) -> Optional[Path]:
    path = model_dir / "corrections-check.tar.gz"
    return path if path.exists() else None
