"""``python -m bot.retrain --corrections var/corrections.json``: accepted corrections in, a
proven model out; the project's data changes only when the proof passes.

1. A **candidate**: a copy of the project's training data and tests in
   ``var/candidates/<UTC time>-<id>/`` (marked by its ``CANDIDATE.json``: never the project).
   The corrections become training data there (``bot.corrections``: masked, validated,
   checked against the rules), then the candidate is trained. The candidate's model is then
   loaded once: with ``--supervisor`` in the supervisor's standby Rasa server (the one a
   deploy switches to; it loads the model in service first and runs the test stories that
   model has no kept result for while the candidate trains: :mod:`bot.standby`), otherwise in
   this process. Steps 2 and 3 ask it wherever it is (:mod:`bot.model_runs`).
2. The fallback is re-tuned for the candidate's model on the held-out split
   (``bot.tune_fallback.retune``): a threshold and ambiguity threshold that score better than
   the configured ones go into the candidate's ``config.yml`` and the model is trained again
   with them (``--keep-fallback`` skips this).
3. ``bot.prove`` compares the candidate's model with the model in service (``--in-service``;
   default: the one ``bot.serve`` has live, else the newest in ``models/``) on the
   corrections' test stories and the hand-written ones, and says why each failing story fails.
4. Only when nothing regressed are the candidate's new files written into the project (all or
   none, as the writer writes) and its model kept as ``models/corrections-<UTC time>.tar.gz``,
   so every retraining leaves its own model to deploy or roll back to; the candidate folder is
   then removed. A refused candidate stays where it is, its ``CANDIDATE.json`` saying why, and
   ``data/``, ``domain.yml`` and ``tests/`` stay byte-for-byte as they were.

Prints one JSON report on stdout; progress goes to stderr (at WARNING unless ``LOG_LEVEL`` or
``--verbose`` raise it):

    {"outcome": "written" | "written_unproven" | "nothing_new" | "refused",
     "message": "what happened and why, in a sentence",
     "write": {"ok": <written into the project>, "stage", "files", "checks", "corrections",
               "errors", "model": <file name in models/ or null>},
     "proof": <bot.prove's report or null>,
     "fallback": {"changed", "before", "after", ...} | null,   # the re-tuning
     "candidate": {"path", "reason", "model"} | null,   # a refused candidate, kept
     "standby": {"url", "port", "model_id"} | {"error"} | null,  # where it was proven
     "seconds": {"write", "training", "loading the candidate's model", "fallback", "proof",
                 "commit", "total", ...}}

Exit codes: 0 written (proven, or nothing in service to prove against) or nothing new (every
correction is already in the data: nothing trained), 1 refused (by the writer's checks, the
training with a re-tuned fallback, the proof, or a project file changed meanwhile; the data is
unchanged), 2 unreadable corrections. ``make retrain`` exports the
accepted corrections from the gateway first and records them as exported after; the console's
"Retrain" button does the same through the gateway and the supervisor (``bot/control.py``),
which passes this output on line by line.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from bot.model_runs import Runner
    from bot.prove import StoryResults
    from bot.standby import Standby

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CANDIDATES_DIR = Path("var") / "candidates"
MARKER = "CANDIDATE.json"
# What a candidate holds of the project: what the writer reads and writes, and what the proof
# and the fallback's tuning read.
COPIED = ("data", "domain.yml", "config.yml", "tests/stories", "tests/nlu_holdout",
          "tests/corrections")
EXIT_OK, EXIT_REFUSED, EXIT_INPUT = 0, 1, 2
VALIDATOR_RESULTS = Path("var") / "validator-results"  # gate.ValidatorResults' folder


def log(line: str) -> None:
    """A progress line for the trainer (stderr; the supervisor passes it on)."""
    print(line, file=sys.stderr, flush=True)


def make_candidate(project: Path) -> Path:
    """A fresh candidate folder under the project's ``var/candidates/`` with a copy of what the
    corrections change and the proof reads."""
    name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    candidate = project / CANDIDATES_DIR / name
    candidate.mkdir(parents=True)
    for rel in COPIED:
        source = project / rel
        if source.is_dir():
            shutil.copytree(source, candidate / rel, symlinks=True)
        elif source.is_file():
            (candidate / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, candidate / rel)
    mark(candidate, {"state": "training"})
    return candidate


def tree(project: Path) -> List[str]:
    """The files of ``COPIED`` in ``project``, relative to it."""
    found: List[str] = []
    for rel in COPIED:
        path = project / rel
        if path.is_file():
            found.append(rel)
        elif path.is_dir():
            found += [str(p.relative_to(project)) for p in sorted(path.rglob("*")) if p.is_file()]
    return found


def mark(candidate: Path, fields: Dict[str, Any]) -> None:
    """(Re)write the candidate's marker: what it is and, once decided, why it was refused."""
    path = candidate / MARKER
    current: Dict[str, Any] = json.loads(path.read_text("utf-8")) if path.is_file() else {
        "note": "A candidate made by python -m bot.retrain: a copy of the project's training "
                "data with corrections the proof has not accepted. NOT the project's data; "
                "nothing reads it. Delete the folder when done with it (docs/corrections.md).",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.write_text(json.dumps({**current, **fields}, indent=2, ensure_ascii=False) + "\n",
                    "utf-8")


def why_refused(proof: Dict[str, Any]) -> str:
    """The proof's refusal in a sentence: each regression and why it fails now."""
    parts: List[str] = []
    reasons: Dict[str, Any] = {}
    for key in ("corrections", "suite"):
        section = proof.get(key)
        if isinstance(section, dict):
            reasons.update(section.get("why") or {})
    for name in proof.get("regressions") or []:
        why = reasons.get(name) or {}
        parts.append(f"'{name}' ({why.get('explanation') or 'no reason found'})")
    return (f"the proof refused the candidate: {len(parts)} test stor"
            f"{'y' if len(parts) == 1 else 'ies'} that passed with the model in service "
            f"fail{'s' if len(parts) == 1 else ''} with it: " + "; ".join(parts))


def retune_candidate(candidate: Path, model: Path, loaded: "Runner") -> Dict[str, Any]:
    """Re-tune the fallback for the candidate's model (``loaded``: where it is loaded) on
    its held-out split; when the threshold or ambiguity threshold changes, its
    ``config.yml`` says so and the model is trained again (Rasa's cache restores every
    component the FallbackClassifier's values do not touch). ``bot.tune_fallback.retune``'s
    report, ``seconds`` and, on failure, ``error``."""
    from bot.corrections import gate
    from bot.tune_fallback import retune

    start = time.monotonic()
    log("re-tuning the fallback for the candidate's model on the held-out split")
    try:
        tuned = retune(loaded, candidate / "tests" / "nlu_holdout", candidate / "config.yml")
    except Exception as exc:  # Rasa's loaders, the server, the config's shape: any refuses
        return {"changed": False, "error": f"{type(exc).__name__}: {exc}",
                "seconds": round(time.monotonic() - start, 1)}
    before, after = tuned["before"], tuned["after"]
    if tuned["changed"]:
        log(f"fallback re-tuned: threshold {before['threshold']} -> {after['threshold']}, "
            f"ambiguity threshold {before['ambiguity_threshold']} -> "
            f"{after['ambiguity_threshold']}; training the candidate again with them")
        # Only the FallbackClassifier's two values changed since the validator passed.
        result = gate.train(candidate, candidate, model.parent, validated=True)
        tuned["training"] = result.as_dict()
        trained = gate.model_file(model.parent)
        if not result.ok or trained is None:
            tuned["error"] = "; ".join(result.messages) or "rasa train failed"
        else:
            os.replace(trained, model)  # under the name it will be kept as
    else:
        log(f"fallback kept: threshold {before['threshold']}, ambiguity threshold "
            f"{before['ambiguity_threshold']} still score best on the held-out split")
    tuned["seconds"] = round(time.monotonic() - start, 1)
    return tuned


class Loader:
    """Where the candidate's model is loaded, once per training: the standby Rasa server when
    the supervisor gave one (:mod:`bot.standby`), else this process. A standby that fails is
    given up for the rest of the retraining, with the reason in :attr:`note`."""

    def __init__(self, standby: Optional["Standby"]) -> None:
        self.standby = standby
        self.note: Optional[Dict[str, Any]] = None

    def request(self, in_service: Optional[Path]) -> None:
        if self.standby is not None and in_service is not None:
            log(f"asking the supervisor for the standby Rasa server, on {in_service.name} "
                "first")
            self.standby.request(in_service)

    def old_on_standby(self, in_service: Path, candidate: Path,
                       results: "StoryResults") -> None:
        """The model in service runs, on the standby, the test stories it has not met yet
        (kept in ``results``), while the candidate trains."""
        from bot.model_runs import ServerError
        from bot.prove import SUITES, failing_stories, test_stories

        if self.standby is None or self.standby.ready() is None:
            return
        stories = [s for folder in SUITES.values() if (candidate / folder).is_dir()
                   for s in test_stories(candidate / folder)]
        try:
            failing_stories(self.standby.runner(in_service), stories, results)
        except (ServerError, RuntimeError) as exc:
            log(f"the model in service's story test on the standby failed ({exc}); it runs "
                "in this process instead")

    def load(self, model: Path) -> "Runner":
        from bot.model_runs import InProcess, ServerError
        from bot.standby import StandbyError

        if self.standby is not None:
            start = time.monotonic()
            try:
                loaded = self.standby.load(model)
                server = self.standby.server or {}
                self.note = {"url": server.get("url"), "port": server.get("port"),
                             "model_id": server.get("model_id")}
                log(f"the standby Rasa server :{server.get('port')} has the candidate's "
                    f"model loaded ({time.monotonic() - start:.1f} s)")
                return loaded
            except (StandbyError, ServerError) as exc:
                self.note = {"error": str(exc)}
                log(f"no standby Rasa server ({exc}): the candidate's model is loaded in "
                    "this process instead")
                self.standby = None
        return InProcess(model)


def retrain(corrections: List[Any], project: Path, models: Path, in_service: Optional[Path],
            finetune: bool = False, retune_fallback: bool = True,
            standby: Optional["Standby"] = None) -> Tuple[int, Dict[str, Any]]:
    """Candidate, training, proof and, on success, the project's files and ``models/``; the
    exit code and the report (module docstring). Holds the writer's lock on the project.
    With ``standby`` the candidate's model is loaded once, in the supervisor's standby Rasa
    server, and checked there (:class:`Loader`)."""
    from bot.corrections import gate
    from bot.corrections.writer import Options, commit, run
    from bot.model_runs import InProcess
    from bot.prove import STORY_RESULTS, StoryResults, prove_with

    started = time.monotonic()
    seconds: Dict[str, float] = {}

    def lap(stage: str, since: float) -> float:
        now = time.monotonic()
        seconds[stage] = round(seconds.get(stage, 0.0) + now - since, 1)
        return now

    loader = Loader(standby)
    fd = os.open(project, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the lock bot.corrections write takes on the project
        copied = {rel: hashlib.sha256((project / rel).read_bytes()).hexdigest()
                  for rel in tree(project)}
        candidate = make_candidate(project)
        relative = candidate.relative_to(project)
        log(f"candidate {relative}: writing {len(corrections)} correction(s) as training data "
            "there, then training")
        written = run(corrections, Options(project=candidate, skip_training=True,
                                           validator_results=project / VALIDATOR_RESULTS))
        write = {**written.as_dict(), "model": None}
        report: Dict[str, Any] = {"outcome": "", "message": "", "write": write, "proof": None,
                                  "candidate": None, "fallback": None, "standby": None,
                                  "seconds": seconds}
        clock = lap("write", started)

        def writer_refused() -> Tuple[int, Dict[str, Any]]:
            shutil.rmtree(candidate)
            write["ok"] = False
            report.update(outcome="refused", message=(
                f"the corrections were refused at the writer's {written.stage} stage, and the "
                "training data is unchanged: " + ("; ".join(written.errors) or "see the log")))
            return EXIT_REFUSED, report

        if not written.ok:
            return writer_refused()
        if not written.files:
            shutil.rmtree(candidate)
            skipped = sum(1 for c in written.corrections if c.get("skipped"))
            report.update(outcome="nothing_new", message=(
                f"nothing new: the {len(corrections)} correction(s) add nothing the training "
                f"data does not already have ({skipped} skipped, each with its reason in "
                "write.corrections), so nothing was trained and no file changed"
                if corrections else "nothing new: no corrections were given, so nothing was "
                "trained and no file changed"))
            return EXIT_OK, report

        # The standby server loads the model in service while the candidate trains, and runs
        # the test stories that model has not met; then it loads the candidate's model.
        results = StoryResults(project / STORY_RESULTS)
        loader.request(in_service)
        prefetch: Optional[threading.Thread] = None
        if in_service is not None and loader.standby is not None:
            prefetch = threading.Thread(target=loader.old_on_standby, daemon=True,
                                        args=(in_service, candidate, results))
            prefetch.start()
        written.stage = "training"
        # The writer's checks passed on this content: rasa train need not validate it again.
        training = gate.train(candidate, candidate, candidate / "models",
                              in_service if finetune else None,
                              validated=bool(written.checks.get("validation", {}).get("ok")))
        written.checks["training"] = training.as_dict()
        write.update(stage="training", checks=written.checks)
        if not training.ok:
            written.errors.extend(training.messages or ["rasa train failed"])
            write["errors"] = written.errors
            if prefetch is not None:
                prefetch.join()
            return writer_refused()
        trained = gate.model_file(candidate / "models")
        assert trained is not None, "the training succeeded, so it left a model"
        # Named as it will be kept in models/ (a name of its own: the next retraining must
        # not overwrite it) before any Rasa server loads it: Rasa's /status names the file a
        # server loaded, and the gateway records a model it finds live under that name.
        model = candidate / "models" / time.strftime("corrections-%Y%m%dT%H%M%SZ.tar.gz",
                                                     time.gmtime())
        os.replace(trained, model)
        write["stage"] = written.stage = "done"
        clock = lap("training", clock)
        if prefetch is not None:
            prefetch.join()
            clock = lap("waiting for the standby", clock)

        def refuse(reason: str, stage: str = "fallback") -> Tuple[int, Dict[str, Any]]:
            """Keep the candidate, marked with ``reason``; the project is left as it was."""
            assert model is not None
            mark(candidate, {"state": "refused", "reason": reason,
                             "model": str(model.relative_to(candidate)),
                             "corrections": [c.get("id") for c in written.corrections],
                             "fallback": report.get("fallback"), "proof": report["proof"]})
            write.update(ok=False, stage=stage, errors=[
                *written.errors, f"{reason}. The candidate (its data and model) is kept in "
                                 f"{relative}"])
            report["candidate"] = {"path": str(relative), "reason": reason,
                                   "model": str(model.relative_to(project))}
            report["standby"] = loader.note
            report.update(outcome="refused", message=(
                f"{reason}. The project's training data is unchanged; the candidate is kept "
                f"in {relative} for a trainer to inspect"))
            log(report["message"])
            return EXIT_REFUSED, report

        loaded = loader.load(model)
        clock = lap("loading the candidate's model", clock)
        if retune_fallback:
            tuned = retune_candidate(candidate, model, loaded)
            report["fallback"] = tuned
            if tuned.get("error"):
                return refuse(f"the fallback could not be re-tuned: {tuned['error']}")
            if tuned["changed"]:
                write["files"] = written.files = sorted({*written.files, "config.yml"})
                clock = lap("fallback", clock)
                loaded = loader.load(model)  # trained again with the re-tuned values
                clock = lap("loading the candidate's model", clock)
            clock = lap("fallback", clock)
        new_results: Dict[str, bool] = {}
        if in_service is not None:
            log(f"proving {relative}'s model against {in_service.name}")
            try:
                proof, new_results = prove_with(candidate, InProcess(in_service), loaded,
                                                results)
            except RuntimeError as exc:  # rasa's story test itself failed
                proof = {"deploy": False, "error": str(exc), "regressions": []}
            report["proof"] = proof
            clock = lap("proof", clock)
            if not proof.get("deploy"):
                return refuse(f"the proof could not run: {proof['error']}" if proof.get("error")
                              else why_refused(proof), "proof")
        files = {rel: (candidate / rel).read_text("utf-8") for rel in written.files}
        # The project's files as the candidate copied them: a change since refuses the commit.
        expected = {rel: copied.get(rel) for rel in written.files}
        try:
            commit(project, files, expected)
        except (OSError, RuntimeError) as exc:
            return refuse(f"not written into the project: {exc}", "commit")
        models.mkdir(parents=True, exist_ok=True)
        named = models / model.name
        shutil.move(str(model), named)
        shutil.rmtree(candidate)
        if new_results:  # the next retraining's model in service, if it goes live
            results.put(loaded.model_id, new_results)
        write.update(ok=True, stage="done", model=named.name)
        report["standby"] = loader.note
        if report["proof"] is not None:
            report["proof"]["new_model"] = named.name
        if in_service is None:
            report.update(outcome="written_unproven", message=(
                f"written into the project ({len(written.files)} file(s)) and trained as "
                f"{named.name}; not proven: there is no model in service to compare with"))
        else:
            report.update(outcome="written", message=(
                f"proven and written into the project ({len(written.files)} file(s)); the new "
                f"model is {named.name}"))
        lap("commit", clock)
        return EXIT_OK, report
    finally:
        seconds["total"] = round(time.monotonic() - started, 1)
        os.close(fd)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.retrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corrections", required=True, type=Path)
    parser.add_argument("--project", default=PROJECT_ROOT, type=Path)
    parser.add_argument("--in-service", type=Path,
                        help="the live model to compare with (default: the one bot.serve "
                             "has live, var/live-model, else the newest in --models)")
    parser.add_argument("--models", type=Path, help="where models are kept (default: "
                        "the project's models/)")
    parser.add_argument("--finetune", action="store_true",
                        help="fine-tune the model in service where Rasa allows it (full "
                             "training otherwise; slower than a cached full training for "
                             "relabels and text edits: docs/performance.md)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log at INFO (-vv: DEBUG) instead of LOG_LEVEL (default WARNING)")
    parser.add_argument("--supervisor", metavar="URL",
                        help="the supervisor's control API (bot/control.py; its token in "
                             "$SUPERVISOR_TOKEN): the candidate's model is loaded and proven "
                             "on its standby Rasa server, which stays up for the deploy")
    parser.add_argument("--keep-fallback", action="store_true",
                        help="ship the configured fallback threshold and ambiguity threshold "
                             "instead of re-tuning them for the new model")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    report_fd = os.dup(1)  # Rasa and TensorFlow print to stdout; the report alone goes there
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from bot import log_level

    log_level.configure(args.verbose)

    from bot.corrections.records import RecordError, parse_records
    from bot.processes import StartupError, model_in_service

    models = (args.models or project / "models").resolve()
    try:
        in_service: Optional[Path] = (args.in_service or model_in_service(project, models)
                                      ).resolve()
    except StartupError:  # no model yet: the data is written, nothing to prove against
        in_service = None
    report: Dict[str, Any]
    try:
        corrections = parse_records(json.loads(args.corrections.read_text("utf-8")))
    except (OSError, ValueError) as exc:  # unreadable input, bad JSON, RecordError
        message = str(exc) if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"
        code, report = EXIT_INPUT, {
            "outcome": "refused", "message": f"the corrections could not be read: {message}",
            "write": {"ok": False, "stage": "input", "files": [], "checks": {},
                      "corrections": [], "errors": [message], "model": None},
            "proof": None, "candidate": None}
    else:
        standby = None
        if args.supervisor:
            from bot.standby import TOKEN_ENV, Standby

            standby = Standby(args.supervisor, os.environ.pop(TOKEN_ENV, ""))
        code, report = retrain(corrections, project, models, in_service, args.finetune,
                               retune_fallback=not args.keep_fallback, standby=standby)
    with os.fdopen(report_fd, "w") as out:
        json.dump(report, out, indent=2, ensure_ascii=False)
        out.write("\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
