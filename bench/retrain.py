"""From 10 accepted corrections to a proven model: how long each stage takes.

    .venv/rasa/bin/python bench/retrain.py [--model models/X.tar.gz] [--rounds 3]
                                           [--training-rounds 1] [--epoch-fraction 0.2]
                                           [--live-rounds 1] [--only-live] [--no-deploy]

On a copy of the project in a temporary folder (the repository is never written):

1. **corrections**: the model in service (default: the newest in ``models/``) parses the
   held-out NLU examples (``tests/nlu_holdout/``); nine it gets wrong become relabels, as a
   trainer would accept them, and one edit of ``utter_delivery_period`` is accepted as a policy
   change. The copy has no held-out folder, so the writer takes those messages as it would
   any customer's.
2. **write**: ``python -m bot.corrections write --skip-training`` (read, plan, render, Rasa's
   validator, the RulePolicy check, the atomic replacement), ``--rounds`` times.
3. **training**: the writer with its real training check, fine-tuning the model in service
   (``--finetune-from``) and training in full, each from the same starting point: a fresh copy
   of the project and a copy of Rasa's training cache as ``make train`` left it.
4. **prove**: ``bot.prove.prove`` (Rasa's end-to-end story test) with the model in service and
   each new model, on the corrections' test stories and the hand-written ones.

5. **deploy**: the whole system as ``make run`` starts it (``python -m bot.serve``: action
   server, Rasa, the supervisor and the gateway) on the fully trained copy, serving the model
   in service; a trainer deploys the new model through the gateway's API, and the stage lasts
   until the gateway serves it (second Rasa server loaded, warmed up, switched, old one
   stopped).
6. **live**: accepted corrections → the gateway serves the new model, end to end on the whole
   system, each path from a fresh copy (with the held-out split, less the relabelled
   messages: the fallback's re-tuning reads it; and the model in service's results on the
   hand-written stories in ``var/story-results/``, as its own proof would have left them) and
   Rasa's cache as ``make train`` left it:
   the supervisor's retraining (what the console's Retrain button runs once the gateway has
   exported the accepted corrections), then a trainer's deploy through the gateway's API.
   Once ``in process`` (``bot.serve --prove-in-process``: the retraining loads each model it
   checks in its own process, the deploy starts a second Rasa server: the old path), once
   ``on the standby`` (the candidate loaded once, in the standby server, proven there, and
   that server promoted). The retraining's own ``seconds`` per step are listed under it.

``--no-deploy`` leaves out the two stages that start the whole system; ``--only-live`` runs
the corrections and the live stage alone. Prints a markdown table of the median seconds per stage and the before/after figures. Each
stage is one function of ``STAGES``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
CACHE = Path(os.environ.get("RASA_CACHE_DIRECTORY",
                            Path.home() / ".cache" / "northwind-assistant" / "rasa"))
RELABELS = 9
MODES = ("finetune", "full")
POLICY_INTENT, POLICY_RESPONSE = "delivery_period", "utter_delivery_period"
POLICY_TEXT = ("Orders ship within 1 business day. Standard delivery takes 2-4 business days, "
               "Express 1-2 business days, and international delivery 7-14 business days.")


@dataclass
class Bench:
    """What the stages share: the starting point, the records, the results."""

    work: Path
    model: Path
    rounds: int
    training_rounds: int
    epoch_fraction: float
    live_rounds: int = 1
    records: List[Dict[str, Any]] = field(default_factory=list)
    seconds: Dict[str, List[float]] = field(default_factory=dict)
    notes: Dict[str, str] = field(default_factory=dict)
    trained: Dict[str, Path] = field(default_factory=dict)  # mode → project the model is of
    models: Dict[str, Path] = field(default_factory=dict)
    proofs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    copies: int = 0

    def copy(self) -> Path:
        """A fresh copy of the project as it is before the corrections."""
        self.copies += 1
        target = self.work / f"project-{self.copies}"
        target.mkdir()
        shutil.copytree(PROJECT_ROOT / "data", target / "data",
                        ignore=shutil.ignore_patterns("corrections"))
        for name in ("domain.yml", "config.yml", "endpoints.yml"):
            shutil.copy2(PROJECT_ROOT / name, target / name)
        shutil.copytree(PROJECT_ROOT / "tests" / "stories", target / "tests" / "stories")
        return target

    def cache(self) -> Path:
        """A copy of Rasa's training cache as it is now: every training run starts from it.
        The cache's database holds absolute paths, rewritten to the copy."""
        self.copies += 1
        target = self.work / f"cache-{self.copies}"
        if not CACHE.is_dir():
            target.mkdir()
            return target
        shutil.copytree(CACHE, target)
        with sqlite3.connect(target / "cache.db") as db:
            db.execute("UPDATE cache_entry SET result_location = "
                       "replace(result_location, ?, ?)", (str(CACHE), str(target)))
        return target

    def time(self, stage: str, seconds: float) -> None:
        self.seconds.setdefault(stage, []).append(seconds)


def env(cache: Optional[Path] = None) -> Dict[str, str]:
    out = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    if cache is not None:
        out["RASA_CACHE_DIRECTORY"] = str(cache)
    return out


def write(bench: Bench, project: Path, *args: str,
          cache: Optional[Path] = None) -> tuple[float, Dict[str, Any]]:
    """The writer as the trainer runs it; its wall-clock seconds and its report."""
    source = bench.work / "corrections.json"
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "bot.corrections", "write", "--input", str(source),
         "--project", str(project), *args], cwd=project, env=env(cache),
        capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"the writer refused: {result.stdout}{result.stderr[-3000:]}")
    report: Dict[str, Any] = json.loads(result.stdout)
    return seconds, report


# --- the stages ------------------------------------------------------------------------------

def _event(kind: str, **extra: Any) -> Dict[str, Any]:
    return {"event": kind, "timestamp": time.time(), **extra}


def _turn(text: str, parse: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [_event("action", name="action_session_start"), _event("session_started"),
            _event("action", name="action_listen"),
            _event("user", text=text, parse_data=parse, input_channel="gateway")]


def stage_corrections(bench: Bench) -> None:
    """Nine held-out messages the model in service misreads (then its least sure ones) as
    relabels, and one policy change of a response's text."""
    import yaml

    from bot.tune_fallback import holdout_examples, parse_all

    start = time.monotonic()
    examples = holdout_examples(PROJECT_ROOT / "tests" / "nlu_holdout")  # (text, intent)
    parses = asyncio.run(parse_all(bench.model, [text for text, _ in examples] +
                                   ["how long does delivery take"]))
    policy_parse = parses.pop()
    scored = sorted(zip(examples, parses), key=lambda ep: (
        ep[1]["intent"]["name"] == ep[0][1], ep[1]["intent"]["confidence"]))
    wrong = sum(1 for (_, intent), p in scored if p["intent"]["name"] != intent)
    bench.notes["corrections"] = (f"the model misreads {wrong} of {len(examples)} held-out "
                                  f"messages; {RELABELS} relabels + 1 policy change")
    for cid, ((text, intent), parse) in enumerate(scored[:RELABELS], start=1):
        bench.records.append({
            "id": cid, "type": "relabelled", "conversation_id": f"bench-{cid}", "agent": "ann",
            "review_status": "accepted", "tracker_events": _turn(text, parse),
            "before": {"action_name": None, "intent": parse["intent"]["name"]},
            "after": {"action_name": None, "intent": intent}})
    domain = yaml.safe_load((PROJECT_ROOT / "domain.yml").read_text())
    [old] = [r["text"] for r in domain["responses"][POLICY_RESPONSE]]
    bench.records.append({
        "id": RELABELS + 1, "type": "edited", "conversation_id": "bench-policy", "agent": "ann",
        "review_status": "accepted",
        "tracker_events": _turn("how long does delivery take", policy_parse),
        "before": {"action_name": POLICY_RESPONSE, "messages": [{"text": old}],
                   "intent": POLICY_INTENT},
        "after": {"action_name": POLICY_RESPONSE, "messages": [{"text": POLICY_TEXT}],
                  "intent": POLICY_INTENT},
        "resolution": {"edited_as": "policy_changed"}})
    (bench.work / "corrections.json").write_text(json.dumps(bench.records, indent=1))
    bench.time("corrections (load model, parse held-out set)", time.monotonic() - start)
    # The model in service's results on the hand-written suite, as its own proof (when it was
    # a retraining's candidate) left them in var/story-results/: the live stage starts there.
    from bot.model_runs import InProcess
    from bot.prove import StoryResults, failing_stories, test_stories

    failing_stories(InProcess(bench.model), test_stories(PROJECT_ROOT / "tests" / "stories"),
                    StoryResults(bench.work / "story-results"))


def stage_write(bench: Bench) -> None:
    """Write + validator + rule check, no training."""
    for _ in range(bench.rounds):
        seconds, report = write(bench, bench.copy(), "--skip-training")
        bench.time("write + validate + rule check", seconds)
        checks = report["checks"]
        bench.notes["write + validate + rule check"] = (
            f"validator {checks['validation']['seconds']} s, rule check "
            f"{checks['rules']['seconds']} s; {len(report['files'])} files")


def stage_training(bench: Bench) -> None:
    """The writer with its training check, fine-tuning and in full, from the same start."""
    for _ in range(bench.training_rounds):
        for mode in MODES:
            project, cache = bench.copy(), bench.cache()
            args = ["--keep-model", str(project / "models")]
            if mode == "finetune":
                args += ["--finetune-from", str(bench.model),
                         "--epoch-fraction", str(bench.epoch_fraction)]
            seconds, report = write(bench, project, *args, cache=cache)
            training = report["checks"]["training"]
            label = f"write + checks + training ({mode})"
            bench.time(label, seconds)
            bench.time(f"training alone ({mode})", training["seconds"])
            bench.notes[label] = f"mode used: {training['mode']}" + (
                f" (fallback: {training['fallback_reason']})"
                if training.get("fallback_reason") else "")
            bench.trained[mode], bench.models[mode] = project, Path(report["model"])


def stage_prove(bench: Bench) -> None:
    """Before/after of each new model against the model in service (bot.prove)."""
    from bot.prove import prove

    for mode in MODES:
        start = time.monotonic()
        bench.proofs[mode] = prove(bench.trained[mode], bench.model, bench.models[mode])
        bench.time(f"prove ({mode})", time.monotonic() - start)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _api(url: str, method: str = "GET", body: Any = None,
         token: Optional[str] = None) -> Dict[str, Any]:
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=120) as resp:
        data: Dict[str, Any] = json.loads(resp.read())
        return data


@dataclass
class System:
    """``python -m bot.serve`` on a project copy, up: where to reach it."""

    url: str  # the gateway
    control_url: str  # the supervisor's control API
    rasa_token: str  # Rasa's and the supervisor's
    token: str  # the gateway's, an admin's
    process: subprocess.Popen[bytes]


@contextmanager
def serve(bench: Bench, project: Path, *options: str) -> Iterator[System]:
    """The whole system as ``make run`` starts it (``python -m bot.serve``: action server,
    Rasa, the supervisor and the gateway) on ``project``, serving the model in service, with
    an admin logged in; stopped as Ctrl-C would after the yield."""
    from actions.shop_db import seed

    shutil.copy2(PROJECT_ROOT / "credentials.yml", project / "credentials.yml")
    for package in ("bot", "actions", "contracts"):
        if not (project / package).exists():
            (project / package).symlink_to(PROJECT_ROOT / package)
    (project / "models").mkdir(exist_ok=True)
    shutil.copy2(bench.model, project / "models" / bench.model.name)
    actions_port, gateway_port, control_port = _free_port(), _free_port(), _free_port()
    (project / "endpoints.yml").write_text(
        f'action_endpoint:\n  url: "http://127.0.0.1:{actions_port}/webhook"\n'
        'tracker_store:\n  type: bot.tracker_store.SQLTrackerStore\n  dialect: "sqlite"\n  db: "var/rasa-tracker.db"\n')
    log_path = project.parent / f"serve-{project.name}.log"
    rasa_token = secrets.token_urlsafe(16)
    system_env = {
        **{k: v for k, v in env().items() if not k.startswith("HANDOFF_")},
        "RASA_TOKEN": rasa_token,
        "SHOP_DB_PATH": str(seed(project.parent / f"shop-{project.name}.db")),
        "HANDOFF_ENV_FILE": str(bench.work / "no.env"),
        "HANDOFF_DATABASE_URL": f"sqlite+aiosqlite:///{project.parent / (project.name + '.db')}",
        "HANDOFF_JWT_SECRET": secrets.token_urlsafe(40),
        "HANDOFF_TRIAGE_ENABLED": "false",
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.serve", "--project", str(project),
             "--model", str(project / "models" / bench.model.name),
             "--rasa-port", str(_free_port()), "--standby-port", str(_free_port()),
             "--control-port", str(control_port), "--actions-port", str(actions_port),
             "--gateway-port", str(gateway_port), *options],
            cwd=PROJECT_ROOT, env=system_env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while "The system is up." not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bot.serve did not start: see {log_path}")
            time.sleep(0.5)
        found = re.search(r"admin, password in (\S+) ", log_path.read_text(errors="replace"))
        assert found, "the gateway named no first password file"
        password = Path(found.group(1)).read_text().strip()
        url = f"http://127.0.0.1:{gateway_port}"
        token = _api(f"{url}/api/login", "POST",
                     {"username": "admin", "password": password})["token"]
        yield System(url, f"http://127.0.0.1:{control_port}", rasa_token, token, process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()


def deploy(system: System, model_file: str) -> float:
    """A trainer deploys ``model_file`` through the gateway's API; the seconds until the
    gateway serves it (the second Rasa server loaded or reused, warmed up, switched, the old
    one stopped)."""
    model = next(m for m in _api(f"{system.url}/api/models", token=system.token)["models"]
                 if m["file"] == model_file)
    start = time.monotonic()
    _api(f"{system.url}/api/models/{model['model_id']}/deploy", "POST", {}, system.token)
    while True:
        job = _api(f"{system.url}/api/models", token=system.token)["deploy"]
        if job and job["state"] != "running":
            break
        time.sleep(0.2)
    if job["state"] != "succeeded":
        raise RuntimeError(f"the deploy failed: {job['message']}")
    return time.monotonic() - start


def supervisor_retrain(system: System, records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The retraining the gateway's Retrain button runs once it has exported the accepted
    corrections: ``POST /retrain`` of the supervisor's control API, followed to its end.
    Its report."""
    request = urllib.request.Request(
        f"{system.control_url}/retrain", method="POST",
        data=json.dumps({"corrections": records, "job": "bench"}).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {system.rasa_token}"})
    report: Dict[str, Any] = {}
    with urllib.request.urlopen(request, timeout=1800) as resp:
        for raw in resp:
            item = json.loads(raw)
            if "log" in item:
                print(f"   | {item['log']}", file=sys.stderr, flush=True)
            elif "report" in item:
                report = item["report"] or {}
    return report


def stage_deploy(bench: Bench) -> None:
    """The fully trained model put live through the gateway, on the whole system."""
    with serve(bench, bench.trained["full"]) as system:
        seconds = deploy(system, bench.models["full"].name)
    bench.time("deploy: request → the gateway serves it", seconds)
    total = sum(statistics.median(bench.seconds[k]) for k in (
        "write + checks + training (full)", "prove (full)",
        "deploy: request → the gateway serves it"))
    bench.notes["deploy: request → the gateway serves it"] = (
        f"accepted corrections → new model live, full training: {total:.0f} s")


STORY_RESULTS = Path("var") / "story-results"
LIVE_PATHS = {"on the standby": (), "in process": ("--prove-in-process",)}


def holdout_without(project: Path, texts: Sequence[str]) -> None:
    """The held-out split in ``project`` (the fallback's re-tuning needs it), without the
    messages the bench relabels: a customer's message is not one of its examples (the writer
    would skip it as held-out)."""
    from rasa.shared.nlu.training_data.formats.rasa_yaml import (
        RasaYAMLReader,
        RasaYAMLWriter,
    )

    from bot.corrections.project import normalise

    left_out = {normalise(t) for t in texts}
    target = project / "tests" / "nlu_holdout"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted((PROJECT_ROOT / "tests" / "nlu_holdout").glob("*.yml")):
        data = RasaYAMLReader().read(path)
        data.training_examples = [m for m in data.training_examples
                                  if normalise(str(m.get("text", ""))) not in left_out]
        (target / path.name).write_text(RasaYAMLWriter().dumps(data), "utf-8")


def stage_live(bench: Bench) -> None:
    """Accepted corrections → the gateway serves the new model, end to end on the whole
    system, once per path from the same start (a fresh project copy, Rasa's training cache
    as ``make train`` left it): the retraining loading each model in its own process and the
    deploy starting a second Rasa server (``bot.serve --prove-in-process``, the old path), and
    the retraining proving on the standby server the deploy then switches to."""
    for _ in range(bench.live_rounds):
        for path, options in LIVE_PATHS.items():
            project, cache = bench.copy(), bench.cache()
            holdout_without(project, [r["tracker_events"][-1]["text"] for r in bench.records
                                      if r["type"] == "relabelled"])
            shutil.copytree(bench.work / "story-results", project / STORY_RESULTS)
            os.environ["RASA_CACHE_DIRECTORY"] = str(cache)  # bot.serve's retraining's
            try:
                with serve(bench, project, *options) as system:
                    start = time.monotonic()
                    report = supervisor_retrain(system, bench.records)
                    retrained = time.monotonic() - start
                    if report.get("outcome") != "written":
                        raise RuntimeError(f"the retraining ({path}) did not write a model: "
                                           f"{report.get('message')}")
                    deployed = deploy(system, report["write"]["model"])
            finally:
                os.environ.pop("RASA_CACHE_DIRECTORY", None)
            label = f"accepted corrections → the gateway serves the new model ({path})"
            bench.time(label, retrained + deployed)
            bench.time(f"  retraining ({path})", retrained)
            bench.time(f"  deploy ({path})", deployed)
            for stage, value in (report.get("seconds") or {}).items():
                bench.time(f"    {stage} ({path})", float(value))
            bench.notes[label] = (f"proof: {proof_summary(report.get('proof'))}; "
                                  f"standby: {report.get('standby')}")


def proof_summary(proof: Any) -> str:
    if not isinstance(proof, dict):
        return "none"
    c, s = proof.get("corrections") or {}, proof.get("suite") or {}
    return (f"corrections {c.get('before')} → {c.get('after')} of {c.get('total')}, stories "
            f"{s.get('before')} → {s.get('after')} of {s.get('total')}, regressions "
            f"{len(proof.get('regressions') or [])}")


Stage = Callable[[Bench], None]
# In order: each stage uses what the ones before it left in the Bench.
STAGES: List[Stage] = [stage_corrections, stage_write, stage_training, stage_prove,
                       stage_deploy, stage_live]


def table(bench: Bench) -> str:
    lines = ["| stage | median s | runs | notes |", "|---|---:|---:|---|"]
    for stage, values in bench.seconds.items():
        lines.append(f"| {stage} | {statistics.median(values):.1f} | {len(values)} | "
                     f"{bench.notes.get(stage, '')} |")
    if bench.proofs:
        lines += ["", "| model | corrections' test stories | hand-written test stories | "
                      "regressions | deploy |", "|---|---|---|---|---|"]
        for mode, proof in bench.proofs.items():
            c, s = proof["corrections"], proof["suite"]
            lines.append(f"| {mode} | {c['before']} → {c['after']} of {c['total']} | "
                         f"{s['before']} → {s['after']} of {s['total']} | "
                         f"{', '.join(proof['regressions']) or 0} | {proof['deploy']} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="the model in service (default: the newest in models/)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the write stage")
    parser.add_argument("--training-rounds", type=int, default=1,
                        help="rounds of the training stage (each trains twice)")
    parser.add_argument("--epoch-fraction", type=float, default=0.2,
                        help="rasa train --epoch-fraction for the fine-tuning run")
    parser.add_argument("--no-deploy", action="store_true",
                        help="leave out the stages that start the whole system (deploy, live)")
    parser.add_argument("--only-live", action="store_true",
                        help="the corrections, then only the end-to-end stage (both paths)")
    parser.add_argument("--live-rounds", type=int, default=1,
                        help="rounds of the end-to-end stage (each runs both paths)")
    args = parser.parse_args(argv)
    model = args.model or max((PROJECT_ROOT / "models").glob("*.tar.gz"),
                              key=lambda p: p.stat().st_mtime)
    # bot.prove runs `rasa test` in this environment: the pipeline names bot.nlu_components.
    os.environ["PYTHONPATH"] = env()["PYTHONPATH"]
    report_fd = os.dup(1)  # Rasa logs to stdout; the tables alone go there
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as tmp:
        bench = Bench(Path(tmp), model.resolve(), args.rounds, args.training_rounds,
                      args.epoch_fraction, args.live_rounds)
        stages = ([stage_corrections, stage_live] if args.only_live
                  else STAGES[:-2] if args.no_deploy else STAGES)
        for stage in stages:
            print(f"-- {stage.__name__}", file=sys.stderr, flush=True)
            stage(bench)
            print(table(bench), file=sys.stderr, flush=True)  # what is known so far
        with os.fdopen(report_fd, "w") as out:
            out.write(f"model in service: {model.name}; {bench.notes['corrections']}\n\n"
                      f"{table(bench)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
