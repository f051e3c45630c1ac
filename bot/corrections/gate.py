"""The gate new training data must pass before it replaces the project's: Rasa's validator
(what ``rasa data validate`` checks), the RulePolicy's contradiction check, and a real
``rasa train``.

Validation alone passes data that training rejects (a story contradicting a rule: RASA-NOTES),
so the rule check runs the RulePolicy's own training on the staged data — the step of
``rasa train`` that raises ``InvalidRule``, in seconds — and the full training run proves the
rest. Each check reports Rasa's own messages.

Given the model in service, the training run first tries ``rasa train --finetune`` from it.
Rasa refuses to fine-tune when the labels or the domain's actions changed (a new response or
intent: its ``FinetuningValidator``); then the same data is trained in full, and the report says
why (``mode``, ``fallback_reason``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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
from typing import AbstractSet, Any, Dict, List, Optional, Sequence, Set

from bot.corrections.project import CONFIG_FILE, DATA_DIR, DOMAIN_FILE, importer_for

# As the Makefile sets it: Rasa's training cache outlives clones and staged copies, so a
# training run retrains only what the corrections changed.
DEFAULT_CACHE = Path.home() / ".cache" / "northwind-assistant" / "rasa"
TRAIN_TIMEOUT = 1800
CODE_ROOT = Path(__file__).resolve().parents[2]  # where the bot package is
MODEL_NAME = "corrections-check"
# The part of the configured epochs a fine-tuning run trains (rasa train --epoch-fraction):
# the TEDPolicy starts from the model in service's weights instead of from random ones.
DEFAULT_EPOCH_FRACTION = 0.2
# What Rasa says when it will not fine-tune (rasa/graph_components/validators/
# finetuning_validator.py, rasa/model_training.py, the CountVectorsFeaturizer): the data
# or the configuration changed in a way the old model cannot absorb.
FINETUNE_REFUSALS = ("Cannot finetune", "No model for finetuning found",
                     "Finetuning is enabled but", "during incremental training",
                     "minimum compatible Rasa Version")


@dataclass
class CheckResult:
    name: str
    ok: bool
    seconds: float
    messages: List[str] = field(default_factory=list)
    details: Dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "seconds": round(self.seconds, 1), "messages": self.messages,
                **self.details}


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
            validator = Validator.from_importer(shared_importer(root))
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


def project_key(root: Path) -> str:
    """What Rasa's validator reads of the project at ``root`` (``config.yml``, ``domain.yml``,
    every file under ``data/``) and Rasa's version, as one hash."""
    import rasa

    digest = hashlib.sha256(f"rasa {rasa.__version__}\n".encode())
    files = [root / CONFIG_FILE, root / DOMAIN_FILE,
             *sorted(p for p in (root / DATA_DIR).rglob("*") if p.is_file())]
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


_IMPORTERS: Dict[Path, "tuple[str, Any]"] = {}  # root -> (project_key, importer): at most two


def shared_importer(root: Path, last_use: bool = False) -> Any:
    """Rasa's importer of the project at ``root``, one per content (:func:`project_key`):
    the validator, the rule check and the in-process training of one staged project read the
    same files, and Rasa's importer keeps what it has read and parsed (its methods are
    cached), so the 2,400 NLU examples, the stories and the domain are parsed once instead of
    three times (2-5 s each). ``last_use``: the caller may change what it reads (a training
    adds features to the NLU examples), so it is not handed out again."""
    key = project_key(root)
    found = _IMPORTERS.pop(root.resolve(), None)
    importer = found[1] if found is not None and found[0] == key else importer_for(root)
    if not last_use:
        _IMPORTERS[root.resolve()] = (key, importer)
        while len(_IMPORTERS) > 2:
            del _IMPORTERS[next(iter(_IMPORTERS))]
    return importer


class ValidatorResults:
    """Rasa's validator's verdict and messages per project content (:func:`project_key`), a
    JSON file each in ``folder``: the unchanged project a retraining compares with is, most
    of the time, the project the last retraining validated and wrote."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get(self, root: Path) -> tuple[str, Optional[tuple[bool, List[str]]]]:
        key = project_key(root)
        try:
            data = json.loads((self.folder / f"{key}.json").read_text("utf-8"))
            return key, (bool(data["ok"]), [str(m) for m in data["messages"]])
        except (OSError, ValueError, KeyError, TypeError):
            return key, None

    def put(self, key: str, ok: bool, messages: List[str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key}.json"
        scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        scratch.write_text(json.dumps({"ok": ok, "messages": messages}), "utf-8")
        os.replace(scratch, path)


def _validated(root: Path, kept: Optional[ValidatorResults]) -> tuple[bool, List[str], bool]:
    """Rasa's validator on ``root``: its verdict, its messages, and whether they were kept
    from an earlier run on the same content."""
    if kept is None:
        return (*_validator_messages(root), False)
    key, found = kept.get(root)
    if found is not None:
        return (*found, True)
    ok, messages = _validator_messages(root)
    kept.put(key, ok, messages)
    return ok, messages, False


def validate(stage: Path, baseline: Path, extended: AbstractSet[str] = frozenset(),
             kept: Optional[ValidatorResults] = None) -> CheckResult:
    """Rasa's validator on the staged project. Refused if a check fails or if it reports
    anything it did not already report for the unchanged project (except the merge of
    ``extended``: responses the corrections file gives more variations). With ``kept``, a
    project whose content was validated before is not validated again."""
    start = time.monotonic()
    try:
        _, before, reused = _validated(baseline, kept)
        ok, after, _ = _validated(stage, kept)
    except Exception as exc:  # Rasa's readers raise YamlException, InvalidDomain, ...
        return CheckResult("validator", False, time.monotonic() - start,
                           [f"{type(exc).__name__}: {exc}"])
    known: Set[str] = set(before)
    new = [m for m in dict.fromkeys(after) if m not in known and not _expected(m, extended)]
    return CheckResult("validator", ok and not new, time.monotonic() - start, new,
                       {"baseline_kept": reused} if kept is not None else {})


def check_rules(stage: Path) -> CheckResult:
    """Train the RulePolicy (as configured in config.yml) on the staged data: it raises
    ``InvalidRule`` for contradicting rules and stories, exactly as ``rasa train`` would."""
    from rasa.core.policies.rule_policy import InvalidRule, RulePolicy
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.shared.core.generator import TrainingDataGenerator

    start = time.monotonic()
    importer = shared_importer(stage)
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


def _train_in_process(stage: Path, model_dir: Path) -> CheckResult:
    """``rasa train`` (full, no validation: the caller validated) of the staged project into
    ``model_dir``, in this process: Rasa's own training graph (``rasa.model_training``'s
    ``_train_graph``, as ``train`` calls it; Rasa 3.6.21), Rasa's cache reused as the
    subprocess would (``RASA_CACHE_DIRECTORY``, default :data:`DEFAULT_CACHE`). What Rasa
    prints goes to stderr; its warnings and errors, and an exception it raises (an
    ``InvalidRule``, a component's error), are the result's messages."""
    from rasa.model_training import TrainingType, _check_unresolved_slots, _train_graph

    start = time.monotonic()
    handler = _Collect()
    logging.getLogger().addHandler(handler)
    had_cache = "RASA_CACHE_DIRECTORY" in os.environ
    os.environ.setdefault("RASA_CACHE_DIRECTORY", str(DEFAULT_CACHE))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            # rasa.model_training.train without its own importer: the validator's and the
            # rule check's (shared_importer) has read the files already. The project has
            # stories, NLU data and a domain (the validator checked them), so the training
            # type is train's for such a project: both, or end-to-end.
            importer = shared_importer(stage, last_use=True)
            nlu, stories = importer.get_nlu_data(), importer.get_stories()
            if stories.is_empty() or nlu.contains_no_pure_nlu_data() or \
                    importer.get_domain().is_empty():
                raise RuntimeError("the staged project lacks stories, NLU data or a domain")
            _check_unresolved_slots(importer.get_domain(), stories)
            result = _train_graph(
                importer, training_type=TrainingType.END_TO_END if nlu.has_e2e_examples()
                else TrainingType.BOTH, output_path=str(model_dir),
                fixed_model_name=MODEL_NAME, persist_nlu_training_data=False,
                finetuning_epoch_fraction=1.0)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 (Rasa exits on some errors)
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return CheckResult("training", False, time.monotonic() - start,
                           [*handler.messages[-20:], f"{type(exc).__name__}: "
                            f"{lines[0] if lines else ''}", *lines[1:30]])
    finally:
        logging.getLogger().removeHandler(handler)
        if not had_cache:
            os.environ.pop("RASA_CACHE_DIRECTORY", None)
    if result.code == 0 and model_file(model_dir) is not None:
        return CheckResult("training", True, time.monotonic() - start)
    return CheckResult("training", False, time.monotonic() - start,
                       handler.messages[-30:] or [f"rasa train failed (code {result.code})"])


def _train_once(stage: Path, project_root: Path, model_dir: Path,
                extra: Sequence[str] = ()) -> tuple[CheckResult, List[str]]:
    """One ``rasa train`` of the staged project into ``model_dir`` (Rasa's cache reused):
    the result and Rasa's whole output."""
    start = time.monotonic()
    env = {**os.environ, "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.setdefault("RASA_CACHE_DIRECTORY", str(DEFAULT_CACHE))
    # The pipeline names bot.nlu_components: the project's own package must be importable,
    # also when ``project_root`` is a candidate copy of the data (bot.retrain).
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(project_root), str(CODE_ROOT), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "rasa", "train", "--config", CONFIG_FILE, "--domain",
               "domain.yml", "--data", "data", "--out", str(model_dir),
               "--fixed-model-name", MODEL_NAME, *extra]
    try:
        result = subprocess.run(command, cwd=stage, env=env, capture_output=True, text=True,
                                timeout=TRAIN_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return CheckResult("training", False, time.monotonic() - start,
                           [f"rasa train did not finish within {TRAIN_TIMEOUT} s"]), []
    output = (result.stdout + result.stderr).splitlines()
    if result.returncode == 0 and model_file(model_dir) is not None:
        return CheckResult("training", True, time.monotonic() - start), output
    important = [ln for ln in output if any(k in ln for k in (
        "Error", "error", "InvalidRule", "contradict", "- the prediction", *FINETUNE_REFUSALS))]
    return CheckResult("training", False, time.monotonic() - start,
                       (important or output)[-30:]), output


def finetune_refusal(output: Sequence[str]) -> Optional[str]:
    """Rasa's reason for not fine-tuning, if that is why ``rasa train --finetune`` failed."""
    for line in output:
        for marker in FINETUNE_REFUSALS:
            if marker in line:
                return line[line.index(marker):].strip()
    return None


def train(stage: Path, project_root: Path, model_dir: Path,
          finetune_from: Optional[Path] = None,
          epoch_fraction: float = DEFAULT_EPOCH_FRACTION, validated: bool = False) -> CheckResult:
    """A real ``rasa train`` of the staged project into ``model_dir``. With ``finetune_from``
    (a model archive) it fine-tunes that model first; when Rasa will not fine-tune, it trains
    in full. ``details``: ``mode`` ("finetune" | "full") and, after a fallback,
    ``fallback_reason`` and ``finetune_seconds`` (the refused attempt).

    ``validated``: :func:`validate` passed on this very content, so ``rasa train`` skips its
    own run of the same checks (``--skip-validation``: ``rasa.cli.utils.validate_files`` runs
    the validator's domain, NLU and story-structure checks that :func:`validate` runs, and
    ``validate`` refuses on any error they report; 3-5 s of every training). A validated full
    training runs in this process (:func:`_train_in_process`): the process that ran the
    validator and the rule check has imported Rasa already, and ``rasa train``'s own start
    (5-10 s) is saved."""
    skip = ["--skip-validation"] if validated else []
    if finetune_from is None:
        if validated:  # what `rasa train` would do, without starting Rasa again
            result = _train_in_process(stage, model_dir)
        else:
            result, _ = _train_once(stage, project_root, model_dir, skip)
        result.details = {"mode": "full"}
        return result
    if not finetune_from.is_file():
        reason = f"no model file {finetune_from} to fine-tune"
        spent = 0.0
    else:
        tuned, output = _train_once(stage, project_root, model_dir, [
            "--finetune", str(finetune_from), "--epoch-fraction", str(epoch_fraction), *skip])
        tuned.details = {"mode": "finetune", "finetuned_from": finetune_from.name,
                         "epoch_fraction": epoch_fraction}
        if tuned.ok:
            return tuned
        # Rasa's own refusal; any other failure of the fine-tuning run is retried in full too,
        # so a full training is what decides that the data cannot be trained.
        reason = finetune_refusal(output) or "rasa train --finetune failed: " + (
            tuned.messages[-1] if tuned.messages else "no output")
        spent = tuned.seconds
    result, _ = _train_once(stage, project_root, model_dir, skip)
    result.seconds += spent
    result.details = {"mode": "full", "fallback_reason": reason,
                      "finetune_seconds": round(spent, 1)}
    return result


def model_file(model_dir: Path) -> Optional[Path]:
    path = model_dir / f"{MODEL_NAME}.tar.gz"
    return path if path.exists() else None
